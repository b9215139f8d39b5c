"""What OpenSSH's client config says about a host: HostName, Port, User, IdentityFile, ProxyJump.

The file is ``~/.ssh/config`` (``EDGEQ_SSH_CONFIG`` names another one; ``EDGEQ_SSH_CONFIG=none``
reads none). Parsing and ``Host`` / ``Match`` matching are paramiko's ``SSHConfig``; edgeq uses only
the five keys above. paramiko is imported only when a config file is read, and :func:`defer_invoke`
keeps its optional ``invoke`` import (used for ``Match exec`` alone) from costing every start-up. A device profile's own values win: its ``user`` and ``identity_file`` when set,
its ``port`` when it is not 22.

``lookup("lab-pi")`` with ``Host lab-pi / HostName 10.0.0.7 / User pi / ProxyJump gw`` gives
``HostConfig(hostname="10.0.0.7", port=None, user="pi", identity_file=None, proxy_jump="gw")``.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeq.errors import UserInputError


@dataclass(frozen=True)
class HostConfig:
    hostname: str
    port: int | None = None
    user: str | None = None
    identity_file: Path | None = None
    proxy_jump: str | None = None  # comma-separated [user@]host[:port] hops; None: direct


@dataclass(frozen=True)
class Hop:
    """One ProxyJump hop, as written (its host is looked up in the config again)."""

    host: str
    port: int | None
    user: str | None


class _DeferredModule(types.ModuleType):
    """Stands in ``sys.modules`` for a module not loaded yet; the first attribute asked of it imports
    the real one (which then replaces it there) and answers from it. ``__spec__`` is None, so an
    ``import`` statement that finds it here does not load it."""

    def __getattr__(self, attr: str) -> Any:
        if sys.modules.get(self.__name__) is self:
            del sys.modules[self.__name__]
        real = importlib.import_module(self.__name__)
        return getattr(real, attr)


def defer_invoke() -> None:
    """Make ``import invoke`` cheap (idempotent): the module loads on its first attribute access.

    paramiko's ``config`` module (imported by ``import paramiko``) imports ``invoke`` eagerly, yet
    uses it only to evaluate ``Match exec`` lines; loading it costs ~60 ms of CPU on every command
    that connects. Call this before paramiko is first imported; ``Match exec`` keeps working.
    """
    if "invoke" in sys.modules or importlib.util.find_spec("invoke") is None:
        return  # loaded already, or not installed (paramiko copes; Match exec then says so)
    sys.modules["invoke"] = _DeferredModule("invoke")


def config_path() -> Path | None:
    value = os.environ.get("EDGEQ_SSH_CONFIG")
    if value is not None and value.strip().lower() == "none":
        return None
    return Path(value or "~/.ssh/config").expanduser()


def lookup(alias: str, path: Path | None = None) -> HostConfig:
    """The config's answer for ``alias`` (only the alias itself when there is no config file)."""
    path = config_path() if path is None else path
    if path is None or not path.is_file():
        return HostConfig(alias)
    defer_invoke()
    import paramiko

    try:
        found = paramiko.SSHConfig.from_path(str(path)).lookup(alias)
    except (OSError, UnicodeDecodeError, ValueError, paramiko.ssh_exception.ConfigParseError) as exc:
        raise UserInputError(
            f"cannot read the SSH config {path}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}",
            "fix that file, or set EDGEQ_SSH_CONFIG=none to ignore it",
        ) from exc
    port = found.get("port")
    try:
        port_number = int(port) if port is not None else None
    except ValueError:
        raise UserInputError(
            f"Port {port!r} for host {alias!r} in {path} is not a number", "fix it in that file"
        ) from None
    listed: Any = found.get("identityfile") or []  # paramiko gives a list of paths
    identities = [listed] if isinstance(listed, str) else list(listed)
    jump = found.get("proxyjump")
    return HostConfig(
        hostname=found.get("hostname", alias),
        port=port_number,
        user=found.get("user"),
        identity_file=Path(identities[0]).expanduser() if identities else None,
        proxy_jump=None if jump is None or jump.strip().lower() == "none" else jump.strip(),
    )


def parse_jumps(spec: str) -> list[Hop]:
    """``"gw,admin@10.0.0.1:2222"`` → two hops. Raises UserInputError on a malformed hop."""
    hops = []
    for raw in spec.split(","):
        item = raw.strip()
        user, _, rest = item.rpartition("@")
        host, port = rest, None
        if rest.startswith("["):  # [ipv6]:port
            close = rest.find("]")
            host, tail = rest[1:close], rest[close + 1 :]
            port = tail[1:] if tail.startswith(":") else None
        elif rest.count(":") == 1:
            host, port = rest.split(":")
        if not host or (port is not None and not port.isdigit()) or any(c.isspace() for c in item):
            raise UserInputError(
                f"ProxyJump hop {item!r} is not [user@]host[:port]", "fix ProxyJump in the SSH config"
            )
        hops.append(Hop(host, int(port) if port else None, user or None))
    return hops
