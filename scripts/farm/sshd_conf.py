#!/usr/bin/env python3
"""Write an sshd_config for one farm host: key-only logins, its own host keys, no PAM.

Used by farm.py; usable alone, e.g. for a pytest fixture that runs one sshd on loopback:

    python3 scripts/farm/sshd_conf.py --listen 127.0.0.1:2222 --host-key /tmp/f/ssh_host_ed25519_key \\
        --authorized-keys /tmp/f/authorized_keys --out /tmp/f/sshd_config
    /usr/sbin/sshd -D -e -f /tmp/f/sshd_config

Standard library only.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Mapping, Sequence


def render(
    listen: Sequence[tuple[str, int]],
    host_keys: Sequence[str],
    authorized_keys: str,
    set_env: Mapping[str, str] | None = None,
    log_level: str = "INFO",
) -> str:
    """Return the text of an sshd_config. Paths are as sshd will see them (inside a chroot if any)."""
    lines = ["# Written by edgeq scripts/farm/sshd_conf.py"]
    lines += [
        f"ListenAddress {addr}:{port}" if ":" not in addr else f"ListenAddress [{addr}]:{port}"
        for addr, port in listen
    ]
    lines += [f"HostKey {key}" for key in host_keys]
    lines += [
        f"AuthorizedKeysFile {authorized_keys}",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "UsePAM no",
        "PermitRootLogin prohibit-password",
        # Keys may live under a world-writable directory such as /tmp (pytest's tmp_path).
        "StrictModes no",
        "Subsystem sftp internal-sftp",
        # Several instances share the host's /run: none of them may write the default pid file.
        "PidFile none",
        "UseDNS no",
        "PrintMotd no",
        "PrintLastLog no",
        "X11Forwarding no",
        # Farm tests open many connections at once; the default 10:30:100 drops some.
        "MaxStartups 64",
        "MaxSessions 32",
        f"LogLevel {log_level}",
    ]
    if set_env:
        lines.append("SetEnv " + " ".join(f"{k}={v}" for k, v in set_env.items()))
    return "\n".join(lines) + "\n"


def write(path: str, text: str) -> None:
    """Write atomically: sshd (or a reader) never sees a half-written config."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".sshd_config.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def _listen(value: str) -> tuple[str, int]:
    addr, _, port = value.rpartition(":")
    return addr.strip("[]"), int(port)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--listen", type=_listen, action="append", required=True, help="ADDR:PORT (repeatable)")
    p.add_argument("--host-key", action="append", required=True, help="private host key path (repeatable)")
    p.add_argument("--authorized-keys", required=True)
    p.add_argument("--set-env", action="append", default=[], help="NAME=VALUE for every session")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    env = dict(item.split("=", 1) for item in args.set_env)
    write(args.out, render(args.listen, args.host_key, args.authorized_keys, env))


if __name__ == "__main__":
    main()
