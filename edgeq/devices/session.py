"""Open a device by name: profile → transport → the runner's Python and workdir on the device."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from edgeq.devices.profiles import DeviceProfile, load_profile
from edgeq.devices.transport import Transport


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


@contextlib.contextmanager
def open_device(target: DeviceTarget, profile: DeviceProfile | None = None) -> Iterator[DeviceSession]:
    """Connect to ``target`` and yield what the runner needs; the connection closes afterwards."""
    import sys

    from edgeq.devices import manage

    prof = profile or target.resolve()
    with manage.open_transport(prof, trust_new_host=target.trust_new_host) as transport:
        if prof.is_local:
            python = sys.executable if prof.python in ("auto", "") else prof.python
            workdir = manage.device_workdir(transport, prof)
        else:
            workdir = manage.device_workdir(transport, prof)
            python = manage.device_python(transport, prof, workdir)
        yield DeviceSession(prof, transport, python, workdir)
