"""Open a device by name: profile → transport → the runner's Python and workdir on the device."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from edgeq.devices.probe import venv_python
from edgeq.devices.profile import DeviceProfile, load_profile
from edgeq.devices.transports import Transport, open_transport


@dataclass(frozen=True)
class DeviceTarget:
    """How to name a device on the command line: a profile, where to find it, how to trust it."""

    name: str = "local"
    profiles: tuple[Path, ...] = ()
    host: str | None = None  # [user@]host[:port] for a built-in board profile
    trust_new_host: bool = False

    def resolve(self) -> DeviceProfile:
        """Load and validate the profile without connecting (bad names fail before any work)."""
        p = load_profile(self.name, list(self.profiles))
        if self.host:
            p = p.with_target(self.host)
        if not p.is_local:
            p.require_address()
        return p


@dataclass(frozen=True)
class DeviceSession:
    profile: DeviceProfile
    transport: Transport
    python: str
    workdir: str


def device_python(transport: Transport, profile: DeviceProfile, workdir: str) -> str:
    """The interpreter the runner uses: edgeq's own on the local device; on a board the venv that
    ``devices setup`` made, else the profile's ``python``."""
    if transport.is_local:
        return sys.executable if profile.board.python in ("auto", "") else profile.board.python
    vpy = venv_python(workdir)
    return vpy if transport.is_executable(vpy) else profile.board.python


@contextlib.contextmanager
def open_device(target: DeviceTarget, profile: DeviceProfile | None = None) -> Iterator[DeviceSession]:
    """Connect to ``target`` and yield what the runner needs; the connection closes afterwards."""
    prof = profile or target.resolve()
    with open_transport(prof, trust_new_host=target.trust_new_host) as transport:
        workdir = transport.workdir
        yield DeviceSession(prof, transport, device_python(transport, prof, workdir), workdir)
