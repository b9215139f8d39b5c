"""How the host talks to a device: a :class:`Transport` (run a command, copy a file).

``local`` (this machine, subprocesses) and ``ssh`` (paramiko); callers ask the protocol what they
need (``connect()``, ``workdir``, ``is_local``), never which class it is. Adding a transport (say,
labgrid's): one module here with a class that satisfies :class:`Transport`, and one branch in
:func:`open_transport`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

from edgeq.devices.transports.transport import CommandResult, Transport, stop_process

if TYPE_CHECKING:
    from edgeq.devices.profile import DeviceProfile
    from edgeq.devices.transports.known_hosts import KnownHosts

__all__ = ["CommandResult", "Transport", "open_transport", "stop_process", "using"]


@contextlib.contextmanager
def using(
    profile: DeviceProfile,
    transport: Transport | None = None,
    *,
    trust_new_host: bool = False,
    known_hosts: KnownHosts | None = None,
) -> Iterator[Transport]:
    """``transport`` as given (left open: it is the caller's), or one opened for ``profile`` and
    closed afterwards."""
    if transport is not None:
        yield transport
        return
    with open_transport(profile, trust_new_host=trust_new_host, known_hosts=known_hosts) as t:
        yield t


def open_transport(
    profile: DeviceProfile,
    *,
    trust_new_host: bool = False,
    known_hosts: KnownHosts | None = None,
    persist: bool = True,
) -> Transport:
    """The transport for ``profile`` (not yet connected). ``persist``: an SSH connection may be
    taken from, and handed on to, a keeper (the profile's ``persist_s``; see ssh's keeper.py)."""
    if profile.is_local:
        from edgeq.devices.transports.local import LocalTransport

        return LocalTransport(profile.endpoint.workdir, profile.name)
    from edgeq.devices.transports.ssh import SSHTransport

    return SSHTransport.from_profile(
        profile, trust_new_host=trust_new_host, known_hosts=known_hosts, persist=persist
    )
