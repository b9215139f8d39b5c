"""The keeper process (keeper.py): ``python -m edgeq.devices.transports.keeperd``, its request (JSON:
the route and files to connect with, the socket, the lock, ``persist_s``) on stdin. Started by a
command that connected to a board, detached from it; exits quietly when another keeper holds the
board's lock or the connection cannot be made (the next command then connects itself)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from edgeq.devices.transports import keeper
from edgeq.devices.transports.known_hosts import KnownHosts
from edgeq.devices.transports.ssh import RetryPolicy, SSHTransport


def main() -> int:
    request = json.loads(sys.stdin.read())
    with keeper.held(request["lock"]) as mine:
        if not mine:
            return 0  # another keeper serves this board
        *hops, (host, port, user, identity) = request["route"]
        t = SSHTransport(
            host,
            port=port,
            user=user,
            identity_file=identity,
            use_ssh_config=False,
            name=request["name"],
            known_hosts=KnownHosts(*(Path(p) for p in request["known_hosts"])),
            allow_agent=request["allow_agent"],
            connect_timeout_s=request["connect_timeout_s"],
            keepalive_s=request["keepalive_s"],
            dead_after_s=request["dead_after_s"],
            retry=RetryPolicy(attempts=1),
        )
        t._hops = [(h, p, u, Path(i) if i else None) for h, p, u, i in hops]
        try:
            keeper.Keeper(t, request).serve()
        except Exception:
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
