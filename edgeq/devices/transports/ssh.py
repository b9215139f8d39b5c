"""SSHTransport: a device reached over SSH (paramiko), with the same protocol as LocalTransport.

Design points a caller can rely on:

* **Commands** are argument lists. The remote side has a shell, so every element is quoted with
  ``shlex.quote`` and the list runs under a fixed ``/bin/sh`` wrapper that (1) prints its pid so a
  timeout or Ctrl-C on the host can kill the whole remote process group, and (2) keeps a watcher on
  the session's stdin, so when the SSH session goes away for any reason (host crashed, link died)
  the remote processes are killed too. A process killed by a signal reports ``128 + N`` (as the
  remote shell sees it; LocalTransport reports ``-N``).
* **Uploads** (``put``) go to ``.<name>.<sha256[:16]>.edgeq-part`` in the destination directory, are
  resumed after a dropped connection (the tail of the partial file is compared with the local file
  first; if it differs the upload restarts from zero), fsynced (``fsync@openssh.com``, else the
  device's Python) and only then renamed (``posix-rename@openssh.com``) onto the final name: a file
  sent whole in one go, its bytes hashed to the expected sha256 as they were sent, is renamed over
  SFTP (no process on the device); a resumed one is verified by sha256 on the device first. A partial
  file never has the final name.
* **Connections** use keys or an agent only, never a password. Refused / timed-out / dropped
  connections are retried with exponential backoff (``RetryPolicy``); then one DeviceError line.
  TCP keepalive, ``TCP_USER_TIMEOUT`` and an SSH-level liveness probe make a vanished device a
  DeviceError within ``dead_after_s``, never a hang.
* **Paths**: ``put``/``get`` refuse any remote path outside the device's workdir; build paths with
  ``remote_path(workdir, *parts)`` (or ``transport.path(*parts)``).
* **Host keys**: see ``edgeq.devices.known_hosts`` (unknown refused unless trusted, changed always
  refused).
"""

from __future__ import annotations

import base64
import contextlib
import errno
import hashlib
import logging
import os
import posixpath
import shlex
import socket
import stat
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from edgeq.devices.transports import keeper, ssh_config

ssh_config.defer_invoke()  # before paramiko's first import: see defer_invoke

import paramiko  # noqa: E402
from paramiko.sftp import (  # noqa: E402
    CMD_ATTRS,
    CMD_EXTENDED,
    CMD_EXTENDED_REPLY,
    CMD_MKDIR,
    CMD_STAT,
    CMD_STATUS,
    SFTP_OK,
    SFTP_OP_UNSUPPORTED,
)

from edgeq.devices.paths import (  # noqa: E402
    check_workdir,
    check_workdir_spec,
    confine,
    remote_path,
    resolve_workdir,
)
from edgeq.devices.transports.known_hosts import KnownHosts  # noqa: E402
from edgeq.devices.transports.transport import ClosingContext, CommandResult, FreeSpace  # noqa: E402
from edgeq.errors import DeviceError, UserInputError  # noqa: E402
from edgeq.files import sha256_file  # noqa: E402

if TYPE_CHECKING:
    from edgeq.devices.profile import DeviceProfile

# paramiko logs dropped sockets at ERROR; without this they reach stderr through logging's last resort.
# Applications that configure logging still see them.
logging.getLogger("paramiko").addHandler(logging.NullHandler())

DEFAULT_WORKDIR = "~/edgeq"
PART_SUFFIX = ".edgeq-part"
_CHUNK = 32 * 1024  # paramiko splits SFTP writes at 32 KiB anyway
_TAIL_CHECK = 64 * 1024  # bytes of a partial upload compared with the local file before resuming

# The wrapper every command runs under (POSIX sh). "$@" is the caller's argv, untouched by any shell.
# fd 3 keeps the session's stdin for the watcher: a background job's own stdin is /dev/null.
_WRAPPER = (
    'echo "edgeq-pid $$"; '
    "exec 3<&0; "
    "( cat <&3 >/dev/null 2>&1; kill -s TERM -- -$$ 2>/dev/null || kill -s TERM $$ ) >/dev/null 2>&1 & "
    'exec 3<&-; "$@" </dev/null; exit $?'
)
_PID_MARKER = b"edgeq-pid "

# Stops a remote process group: TERM, up to 3 s grace, then KILL. $1 is the pid (from the wrapper).
# Members count as gone once they are zombies (their reaper may be slow); /proc is read directly
# because minimal images have no ps. Without /proc, kill -0 decides.
_KILL = r"""
p=$1
kill -s TERM -- -"$p" 2>/dev/null || kill -s TERM "$p" 2>/dev/null
alive() {
  if [ -r /proc/self/stat ]; then
    for s in /proc/[0-9]*/stat; do
      read -r l < "$s" 2>/dev/null || continue
      set -- ${l##*) }
      [ "$1" != Z ] && [ "$3" = "$p" ] && return 0
    done
    return 1
  fi
  kill -s 0 -- -"$p" 2>/dev/null || kill -s 0 "$p" 2>/dev/null
}
i=0
while [ $i -lt 30 ]; do
  alive || exit 0
  sleep 0.1
  i=$((i+1))
done
kill -s KILL -- -"$p" 2>/dev/null
kill -s KILL "$p" 2>/dev/null
exit 0
"""

# sha256 of a file on the device; argv[1] = path, argv[2] = "fsync" to fsync it first. Python >= 3.8.
SHA256_PROGRAM = """\
import hashlib, os, sys
path = sys.argv[1]
if not os.path.isfile(path):
    print("missing")
    sys.exit(0)
h = hashlib.sha256()
with open(path, "rb") as f:
    if sys.argv[2:3] == ["fsync"]:
        os.fsync(f.fileno())
    for block in iter(lambda: f.read(1 << 20), b""):
        h.update(block)
print(h.hexdigest())
"""


# Finishes uploaded partial files; argv: (part, final, sha256, synced) per file, synced "1" when
# fsync@openssh.com already did it. For each: fsync (unless synced), sha256; a match is renamed onto
# its final name ("ok SHA"), a mismatch removed ("bad SHA"), a missing part is "missing". Then the
# directories of the renamed files are fsynced (the renames are durable only then) and "synced" printed.
FINISH_PROGRAM = """\
import hashlib, os, sys
args = sys.argv[1:]
dirs = []
for i in range(0, len(args), 4):
    part, final, want, synced = args[i:i + 4]
    try:
        f = open(part, "rb")
    except FileNotFoundError:
        print("missing", flush=True)
        continue
    with f:
        if synced != "1":
            os.fsync(f.fileno())
        h = hashlib.sha256()
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    got = h.hexdigest()
    if got == want:
        os.rename(part, final)
        if os.path.dirname(final) not in dirs:
            dirs.append(os.path.dirname(final))
        print("ok " + got, flush=True)
    else:
        os.remove(part)
        print("bad " + got, flush=True)
for d in dirs:
    fd = os.open(d, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
print("synced")
"""
_FINISH_BATCH = 64  # files per FINISH_PROGRAM run (keeps the command line short)


@dataclass(frozen=True)
class TransferStats:
    """What the last ``put`` went through (for reports and benchmarks)."""

    bytes_sent: int = 0
    attempts: int = 0  # 1 when nothing went wrong
    resumes: int = 0  # attempts that continued a partial file
    restarts: int = 0  # partial files that could not be trusted and were started over
    seconds: float = 0.0


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try. Connection attempts back off ``initial_delay_s * factor**k`` (capped).

    A transfer keeps going while it makes progress: it gives up after ``transfer_stalls`` attempts
    in a row that did not get more bytes onto the device, or after ``max_transfer_attempts``.
    """

    attempts: int = 4
    initial_delay_s: float = 0.5
    factor: float = 2.0
    max_delay_s: float = 8.0
    transfer_stalls: int = 4
    max_transfer_attempts: int = 60

    def delay(self, failures: int) -> float:
        """Seconds to wait after the ``failures``-th failure in a row (1-based)."""
        return min(self.max_delay_s, self.initial_delay_s * self.factor ** max(0, failures - 1))


def file_digest(path: Path) -> tuple[int, str]:
    """(size in bytes, sha256 hex) of a local file."""
    return path.stat().st_size, sha256_file(path)


class ConnectionLost(DeviceError):
    """The SSH connection went away (mid-command, or before it could start). Transfers retry on it;
    a command is never re-run automatically (it may not be idempotent)."""


class CommandTimeout(DeviceError):
    """A remote command ran past its timeout; its process group on the device was stopped."""


# Errors that mean "the connection (or its attempt) failed", as opposed to a refusal by the server.
_T = TypeVar("_T")

_NET_ERRORS: tuple[type[BaseException], ...] = (
    OSError,  # ConnectionRefusedError, ConnectionResetError, TimeoutError/socket.timeout, EHOSTUNREACH
    EOFError,
    paramiko.SSHException,
)


_LINK_ERRNOS = {
    errno.ECONNRESET,
    errno.ECONNABORTED,
    errno.ECONNREFUSED,
    errno.EPIPE,
    errno.ETIMEDOUT,
    errno.ENOTCONN,
    errno.EHOSTUNREACH,
    errno.ENETUNREACH,
    errno.ENETDOWN,
    errno.EBADF,
}
_RETRYABLE: tuple[type[BaseException], ...] = (ConnectionLost, *_NET_ERRORS)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, paramiko.ssh_exception.NoValidConnectionsError):
        return "connection refused"
    if isinstance(exc, EOFError):
        return "connection closed by the other side"
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if isinstance(exc, OSError) and exc.strerror:
        text = exc.strerror
    return text[:200]


class SSHTransport(ClosingContext):
    """A device over SSH. Connects lazily; not thread-safe (one command or transfer at a time).

    ``with SSHTransport("10.0.0.5", user="pi", workdir="~/edgeq") as t:``
    ``t.run(["uname", "-m"]).stdout`` → ``"aarch64\\n"``;
    ``t.put(Path("m.tflite"), t.path("models", "m.tflite"))`` → bytes sent.
    """

    def __init__(
        self,
        host: str,
        *,
        port: int | None = None,
        user: str | None = None,
        identity_file: Path | str | None = None,
        proxy_jump: str | None = None,
        use_ssh_config: bool = True,
        workdir: str = DEFAULT_WORKDIR,
        python: str = "python3",
        name: str | None = None,
        trust_new_host: bool = False,
        known_hosts: KnownHosts | None = None,
        allow_agent: bool = True,
        connect_timeout_s: float = 10.0,
        io_timeout_s: float = 60.0,
        keepalive_s: float = 5.0,
        dead_after_s: float = 20.0,
        retry: RetryPolicy | None = None,
        persist_s: float = 0.0,
    ) -> None:
        if not host:
            raise UserInputError("no host given for the SSH device", "set host in the device profile")
        # ~/.ssh/config fills in what the caller leaves open (edgeq/devices/ssh_config.py), for the
        # device and for every ProxyJump hop, once here: a reconnect does not read the file again.
        (self.host, self.port, self.user, self.identity_file), jump = _endpoint(
            host, port, user, identity_file, use_ssh_config
        )
        jumps = proxy_jump or jump
        self.jumps = ssh_config.parse_jumps(jumps) if jumps else []
        self._hops = [_endpoint(h.host, h.port, h.user, None, use_ssh_config)[0] for h in self.jumps]
        check_workdir_spec(workdir)  # validate early
        self._workdir_spec = workdir
        self.python = python
        self.name = name or f"{self.user}@{self.host}:{self.port}"
        self.trust_new_host = trust_new_host
        self.known_hosts = known_hosts or KnownHosts()
        self.allow_agent = allow_agent
        self.connect_timeout_s = connect_timeout_s
        self.io_timeout_s = io_timeout_s
        self.keepalive_s = keepalive_s
        self.dead_after_s = dead_after_s
        self.retry = retry or RetryPolicy()
        # Seconds a keeper holds this connection after close() for the next command (keeper.py).
        self.persist_s = persist_s
        self.kept = False  # connected through a keeper
        self._keeper_failed = False  # one failed under us: this transport connects itself from now on
        self._client: Any = None  # a paramiko.SSHClient, or a keeper.KeptClient standing in for one
        self._jump_clients: list[paramiko.SSHClient] = []
        self._hop = (self.host, self.port, self.user, self.identity_file)  # the one being connected
        self._sftp: paramiko.SFTPClient | None = None
        self._home: str | None = None
        self._workdir: str | None = None
        self._fsync_ext: bool | None = None  # does the server do fsync@openssh.com?
        self._statvfs_ext: bool | None = None  # and statvfs@openssh.com?
        self._rename_ext: bool | None = None  # and posix-rename@openssh.com?
        self.host_key_outcome = ""  # "known" or "pinned" after the first connection
        self.connects = 0  # successful connections (a resumed transfer reconnects)
        self.connect_failures = 0  # failed connection attempts, all retried or reported
        self.last_transfer = TransferStats()

    @classmethod
    def from_profile(
        cls,
        profile: DeviceProfile,
        *,
        trust_new_host: bool = False,
        known_hosts: KnownHosts | None = None,
        retry: RetryPolicy | None = None,
        persist: bool = True,
    ) -> SSHTransport:
        """The transport for an SSH device profile (``profile.require_address()`` must hold);
        ``persist``: use and leave keepers as the profile's ``persist_s`` says (see keeper.py)."""
        profile.require_address()
        assert profile.endpoint.host is not None
        return cls(
            profile.endpoint.host,
            port=profile.endpoint.port
            if profile.endpoint.port != 22
            else None,  # else ~/.ssh/config's Port, or 22
            user=profile.endpoint.user,
            identity_file=profile.endpoint.identity_file,
            workdir=profile.endpoint.workdir,
            python=profile.board.python,
            name=profile.name,
            trust_new_host=trust_new_host or profile.endpoint.host_key_policy == "accept-new",
            known_hosts=known_hosts,
            connect_timeout_s=profile.endpoint.connect_timeout_s,
            retry=retry
            or RetryPolicy(
                attempts=profile.endpoint.connect_retries, initial_delay_s=profile.endpoint.retry_delay_s
            ),
            persist_s=keeper.persist_s(profile.endpoint.persist_s) if persist else 0.0,
        )

    # ------------------------------------------------------------------ connection

    @property
    def target(self) -> str:
        return f"{self.user}@{self.host}:{self.port}"

    @property
    def connected(self) -> bool:
        t = self._client.get_transport() if self._client is not None else None
        return t is not None and t.is_active()

    is_local = False

    def connect(self) -> str:
        """Connect now (otherwise the first command does): retries, then one DeviceError line.
        Returns how it went, e.g. ``pi@10.0.0.7:22 in 74 ms (host key pinned now)``."""
        started = time.monotonic()
        self._ensure()
        pinned = " (host key pinned now)" if self.host_key_outcome == "pinned" else ""
        kept = f" (kept connection, keeper pid {self._client.info.get('pid')})" if self.kept else ""
        return f"{self.target} in {1000 * (time.monotonic() - started):.0f} ms{pinned}{kept}"

    def _ensure(self) -> Any:
        if self._client is not None and self.connected:
            return self._client
        self._drop()
        if self.persist_s > 0 and not self._keeper_failed:
            kept = keeper.attach(self)
            if kept is not None:
                self._client, self.kept = kept, True
                if self._trusts(kept.info.get("host_keys")):
                    self.host_key_outcome = "known"
                    self.connects += 1
                    return kept
                self._drop()  # not trusted now: the keeper goes; a connection says what is wrong
        if self.identity_file is not None and not self.identity_file.is_file():
            raise UserInputError(
                f"identity file {self.identity_file} does not exist",
                "fix identity_file in the device profile, or remove it to use ssh-agent / ~/.ssh keys",
            )
        started = time.monotonic()
        failures = 0
        while True:
            try:
                self._client = self._connect_once()
                self.connects += 1
                return self._client
            except DeviceError:
                raise
            except paramiko.PasswordRequiredException as exc:
                raise DeviceError(
                    f"identity file {self.identity_file} is encrypted and edgeq never asks for passphrases",
                    f"load it into ssh-agent (ssh-add {self.identity_file}) and keep SSH_AUTH_SOCK set",
                ) from exc
            except paramiko.AuthenticationException as exc:
                host, port, user, identity = self._hop
                keys = str(identity) if identity else "ssh-agent and ~/.ssh/id_*"
                raise DeviceError(
                    f"authentication failed for {user}@{host}:{port}: no key was accepted (tried {keys})",
                    "install your public key on the device "
                    f"(ssh-copy-id -p {port} {user}@{host}) "
                    "or set identity_file in the profile; passwords are not supported",
                ) from exc
            except socket.gaierror as exc:
                raise DeviceError(
                    f"cannot resolve host name {self._hop[0]!r}: {exc.strerror}",
                    "check host in the device profile (or use the device's IP address)",
                ) from exc
            except _NET_ERRORS as exc:
                failures += 1
                self.connect_failures += 1
                if failures >= self.retry.attempts:
                    host, port, user, _ = self._hop
                    hop = f"{user}@{host}:{port}"
                    via = "" if hop == self.target else f" (jump host for {self.target})"
                    raise DeviceError(
                        f"cannot connect to {hop}{via} after {failures} attempts in "
                        f"{time.monotonic() - started:.1f} s: {_reason(exc)}",
                        "check that the device is on, reachable and running sshd "
                        f"(edgeq devices check {self.name})",
                    ) from exc
                time.sleep(self.retry.delay(failures))

    def _trusts(self, keys: Any) -> bool:
        """Do the host keys a keeper's connection was made with (one per hop) pass our known-hosts
        files as they are now (no trust on first use)?"""
        route = [*self._hops, (self.host, self.port, self.user, self.identity_file)]
        if not isinstance(keys, list) or len(keys) != len(route):
            return False
        try:
            for (host, port, _, _), (kind, b64) in zip(route, keys, strict=True):
                key = paramiko.PKey.from_type_string(kind, base64.b64decode(b64))
                self.known_hosts.verify(host, port, key, trust_new_host=False)
        except (DeviceError, paramiko.SSHException, ValueError, TypeError):
            return False
        return True

    def _connect_once(self) -> paramiko.SSHClient:
        """Connect hop by hop: TCP to the first, then each next one through a direct-tcpip channel of
        the previous (OpenSSH's ProxyJump). Every hop's host key goes through the same policy."""
        route = [*self._hops, (self.host, self.port, self.user, self.identity_file)]
        clients: list[paramiko.SSHClient] = []
        sock: Any = None
        try:
            for i, hop in enumerate(route):
                self._hop = hop
                host, port, user, identity = hop
                if sock is None:
                    sock = socket.create_connection((host, port), timeout=self.connect_timeout_s)
                    _tune_socket(sock, self.keepalive_s, self.dead_after_s)
                client, outcome = self._login(host, port, user, identity, sock)
                clients.append(client)
                t = client.get_transport()
                assert t is not None
                t.set_keepalive(max(1, int(self.keepalive_s)))
                if i == len(route) - 1:
                    self.host_key_outcome = outcome
                    self._jump_clients = clients[:-1]
                    return client
                nxt = route[i + 1]
                try:
                    sock = t.open_channel(
                        "direct-tcpip", (nxt[0], nxt[1]), ("127.0.0.1", 0), timeout=self.connect_timeout_s
                    )
                except paramiko.ChannelException as exc:
                    raise DeviceError(
                        f"jump host {user}@{host}:{port} did not forward to {nxt[0]}:{nxt[1]}: {exc.text}",
                        "check ProxyJump in ~/.ssh/config and that the jump host allows TCP forwarding "
                        "(AllowTcpForwarding) to the device",
                    ) from exc
        except BaseException:
            for c in clients:
                c.close()
            if sock is not None:
                sock.close()
            raise
        raise AssertionError("unreachable")

    def _login(
        self, host: str, port: int, user: str, identity: Path | None, sock: Any
    ) -> tuple[paramiko.SSHClient, str]:
        """SSH over ``sock`` to one host: its key checked against our known_hosts, keys or agent only."""
        client = paramiko.SSHClient()
        # The client's own key cache stays empty: every server key goes through our policy.
        policy = EdgeqHostKeyPolicy(self.known_hosts, host, port, self.trust_new_host)
        client.set_missing_host_key_policy(policy)
        try:
            client.connect(
                host,
                port=port,
                username=user,
                password=None,
                key_filename=str(identity) if identity else None,
                allow_agent=self.allow_agent,
                look_for_keys=identity is None,
                timeout=self.connect_timeout_s,
                banner_timeout=self.connect_timeout_s,
                auth_timeout=self.connect_timeout_s,
                channel_timeout=self.connect_timeout_s,
                sock=sock,
                transport_factory=transport_factory(self.known_hosts, host, port),
            )
        except BaseException:
            client.close()
            raise
        return client, policy.outcome

    def _drop(self, lost: bool = True) -> None:
        """Forget the current connection (closing what is left of it). ``lost``: it failed; a keeper
        that held it is told to quit and this transport connects itself from now on."""
        sftp, client, jumps = self._sftp, self._client, self._jump_clients
        self._sftp = None
        self._client = None
        self._jump_clients = []
        if self.kept and lost:
            self._keeper_failed = True
            client.quit()
        self.kept = False
        if sftp is not None:
            with contextlib.suppress(Exception):
                sftp.close()
        for c in [client, *reversed(jumps)]:
            if c is not None:
                with contextlib.suppress(Exception):
                    c.close()

    def close(self) -> None:
        """Close the connection; one made here (not a keeper's) is handed on: a keeper connects
        for the next command, when ``persist_s`` says so."""
        hand_on = self.persist_s > 0 and not self.kept and not self._keeper_failed and self.connected
        self._drop(lost=False)
        if hand_on:
            keeper.start(self, self.persist_s)

    def _transport(self) -> Any:
        t = self._ensure().get_transport()
        assert t is not None
        return t

    def open_command(self, argv: Sequence[str], timeout_s: float = 60.0) -> paramiko.Channel:
        """A command on this connection left running for the caller to talk to (e.g. a lock keeper
        that holds a lock while its channel is open); arguments quoted one by one."""
        chan = self._exec(shlex.join([str(a) for a in argv]), timeout_s)
        chan.settimeout(timeout_s)
        return chan

    def _exec(self, command: str, timeout_s: float) -> Any:
        """A session channel running ``command``."""

        def start() -> Any:
            chan = self._transport().open_session(timeout=timeout_s)
            chan.exec_command(command)
            return chan

        return self._opened(start)

    def _opened(self, open_channel: Callable[[], _T]) -> _T:
        """``open_channel()``; when a keeper cannot open the channel (its link died and it has not
        noticed yet), nothing has run there: it is opened again over a connection of our own."""
        try:
            return open_channel()
        except _NET_ERRORS:
            if not self.kept:
                raise
            self._drop()
        return open_channel()

    def _sftp_client(self) -> paramiko.SFTPClient:
        if self._sftp is None or not self.connected:
            sftp: paramiko.SFTPClient = self._opened(lambda: self._ensure().open_sftp())
            channel = sftp.get_channel()
            if channel is not None:
                # Every SFTP request must be answered within io_timeout_s, so a stalled link cannot hang us.
                channel.settimeout(self.io_timeout_s)
            self._sftp = sftp
        return self._sftp

    # ------------------------------------------------------------------ paths

    @property
    def home(self) -> str:
        """The remote user's home directory (absolute)."""
        if self._home is None:
            self._home = self._sftp_client().normalize(".")
        return self._home

    @property
    def workdir(self) -> str:
        """The profile's workdir as an absolute path on the device (``~`` resolved). Asks the device
        for its home only when the workdir starts with ``~/``: an absolute one needs no round trip."""
        if self._workdir is None:
            spec = self._workdir_spec
            self._workdir = resolve_workdir(spec, self.home) if spec.startswith("~") else check_workdir(spec)
        return self._workdir

    def path(self, *parts: str) -> str:
        """``remote_path(self.workdir, *parts)``."""
        return remote_path(self.workdir, *parts)

    def _confine(self, remote: str) -> str:
        return confine(self.workdir, remote)

    # ------------------------------------------------------------------ commands

    def run(
        self,
        argv: Sequence[str],
        timeout: float | None = None,
        on_stdout_line: Callable[[str], None] | None = None,
    ) -> CommandResult:
        """Run ``argv`` on the device. Timeout → DeviceError (the remote process group is killed);
        Ctrl-C → the remote process group is killed, then KeyboardInterrupt propagates."""
        argv = [str(a) for a in argv]
        if not argv:
            raise ValueError("empty argv")
        command = " ".join(shlex.quote(a) for a in ["/bin/sh", "-c", _WRAPPER, "edgeq", *argv])
        try:
            chan = self._exec(command, self.io_timeout_s)
        except _NET_ERRORS as exc:
            self._drop()
            raise ConnectionLost(
                f"connection to {self.name} lost before {argv[0]!r} could start: {_reason(exc)}",
                f"retry; if it persists check the device with: edgeq devices check {self.name}",
            ) from exc
        return _CommandSession(self, chan, argv, timeout, on_stdout_line).wait()

    def _kill_remote(self, pid: int, grace_s: float = 5.0) -> None:
        """TERM then KILL the remote process group ``pid`` (best effort, bounded in time)."""
        if not self.connected:
            return
        try:
            t = self._transport()
            chan = t.open_session(timeout=grace_s)
            chan.settimeout(grace_s)
            chan.exec_command(
                " ".join(shlex.quote(a) for a in ["/bin/sh", "-c", _KILL, "edgeq-kill", str(pid)])
            )
            end = time.monotonic() + grace_s
            while not chan.exit_status_ready() and time.monotonic() < end:
                time.sleep(0.02)
            chan.close()
        except Exception:  # the watcher on the device still stops it when the session ends
            pass

    def _alive(self, started: list[float], done: threading.Event) -> None:
        """Send one SSH-level ping (a global request the server must answer)."""
        t = self._client.get_transport() if self._client else None
        started.append(time.monotonic())

        def probe() -> None:
            try:
                if t is not None:
                    t.global_request("keepalive@openssh.com", wait=True)
            except Exception:  # a dead transport is what we are looking for
                pass
            finally:
                done.set()

        threading.Thread(target=probe, name="edgeq-ssh-ping", daemon=True).start()

    # ------------------------------------------------------------------ small file helpers

    def sha256(self, remote: str, fsync: bool = False) -> str | None:
        """sha256 of a file on the device (None when missing), computed there."""
        path = self._confine(remote)
        return self._remote_sha256(path, fsync)

    def _remote_sha256(self, path: str, fsync: bool = False) -> str | None:
        args = [self.python, "-S", "-c", SHA256_PROGRAM, path] + (["fsync"] if fsync else [])
        res = self.run(args, timeout=self.io_timeout_s * 10)
        if res.exit_code == 127:  # no Python on the device: coreutils can do it
            if fsync:
                self.run(["sync", "--", path], timeout=self.io_timeout_s)
            res = self.run(["sha256sum", "--", path], timeout=self.io_timeout_s * 10)
            if res.exit_code != 0:
                return None
            return res.stdout.split()[0] if res.stdout.split() else None
        answer = res.stdout.strip().splitlines()[-1:] if res.exit_code == 0 else []
        if not answer:
            tail = (res.stderr.strip().splitlines() or ["no output"])[-1]
            raise DeviceError(
                f"cannot hash {path} on {self.name}: {tail}", f"check that {self.python!r} runs there"
            )
        return None if answer[0] == "missing" else answer[0]

    def is_executable(self, remote: str) -> bool:
        """``test -x`` through SFTP: no shell or process start on the device (a login shell's rc
        files alone can cost 100 ms and more per command)."""
        path = self._confine(remote)
        try:
            st = self._sftp_client().stat(path)
        except OSError:
            return False
        mode = st.st_mode or 0
        return stat.S_ISREG(mode) and bool(mode & 0o111)

    def file_sizes(self, remotes: Sequence[str]) -> list[int | None]:
        """The size of each regular file: SFTP stats, all in one round trip, no process started."""
        answers = self._pipelined([(CMD_STAT, (self._confine(r),)) for r in remotes])
        attrs: Any = paramiko.SFTPAttributes  # its _from_msg reads an ATTRS answer (else it is a status)
        sizes: list[int | None] = []
        for kind, msg in answers:
            st = attrs._from_msg(msg) if kind == CMD_ATTRS else None
            sizes.append(st.st_size if st is not None and stat.S_ISREG(st.st_mode or 0) else None)
        return sizes

    def prepare_dirs(self, remotes: Sequence[str]) -> list[FreeSpace] | None:
        """``mkdir`` of each directory and of those between it and the workdir, then OpenSSH's
        ``statvfs@openssh.com`` of each: all in one round trip of SFTP requests (the server answers
        them in order, so a directory is made before it is looked at). None when the server has no
        statvfs or a directory is still not there (say, the workdir's parent is missing): the caller
        falls back to a program on the device, whose ``mkdir -p`` says what is wrong."""
        if self._statvfs_ext is False:
            return None
        root = self.workdir
        leaves = [self._confine(r) for r in remotes]
        making: list[str] = [root]
        for leaf in leaves:
            chain = []
            while leaf not in making and leaf.startswith(root + "/"):
                chain.append(leaf)
                leaf = posixpath.dirname(leaf)
            making += reversed(chain)
        mode = paramiko.SFTPAttributes()
        mode.st_mode = 0o777  # less the umask, as mkdir -p does; an existing one answers "failure"
        requests: list[tuple[int, tuple[Any, ...]]] = [(CMD_MKDIR, (d, mode)) for d in making]
        # PROTOCOL in OpenSSH: string "statvfs@openssh.com", string path; the reply is eleven uint64:
        # bsize, frsize, blocks, bfree, bavail, files, ffree, favail, fsid, flag, namemax.
        requests += [(CMD_EXTENDED, ("statvfs@openssh.com", d)) for d in leaves]
        spaces = []
        for kind, msg in self._pipelined(requests)[len(making) :]:
            if kind != CMD_EXTENDED_REPLY:
                if msg.get_int() == SFTP_OP_UNSUPPORTED:
                    self._statvfs_ext = False
                return None
            _bsize, frsize, _blocks, _bfree, bavail, _files, _ffree, _favail, fsid = (
                msg.get_int64() for _ in range(9)
            )
            spaces.append(FreeSpace(bavail * frsize, f"fsid{fsid}"))
        self._statvfs_ext = True
        return spaces

    def _pipelined(self, requests: Sequence[tuple[int, tuple[Any, ...]]]) -> list[tuple[int, Any]]:
        """Send every SFTP request at once and collect each one's answer ``(type, message)``: one round
        trip for all (on a link with 80 ms of latency, ten calls one after the other take most of a
        second). paramiko has no public call for this; the plumbing is the one its file prefetch
        uses: each answer is handed to the object its request was sent with."""
        sftp: Any = self._sftp_client()
        replies = _Replies()
        try:
            numbers = [sftp._async_request(replies, kind, *args) for kind, args in requests]
            while len(replies.got) < len(numbers):
                sftp._read_response()
        except _NET_ERRORS as exc:
            self._drop()
            raise ConnectionLost(
                f"connection to {self.name} lost while looking at files: {_reason(exc)}",
                f"retry; if it persists check the device with: edgeq devices check {self.name}",
            ) from exc
        return [replies.got[n] for n in numbers]

    def remove(self, remote: str) -> None:
        """Remove a file inside the workdir; a missing file is fine."""
        path = self._confine(remote)
        with contextlib.suppress(FileNotFoundError):
            self._sftp_client().remove(path)

    def _sftp_makedirs(self, sftp: paramiko.SFTPClient, path: str) -> None:
        try:
            sftp.stat(path)
            return
        except FileNotFoundError:
            pass
        parent = posixpath.dirname(path)
        if parent and parent != path:
            self._sftp_makedirs(sftp, parent)
        try:
            sftp.mkdir(path)
        except OSError:
            sftp.stat(path)  # created meanwhile by someone else is fine; otherwise raises

    # ------------------------------------------------------------------ transfers

    def put(self, local: Path, remote: str) -> int:
        """Copy ``local`` to ``remote`` atomically and verified; return the bytes sent over the link
        (counting resent bytes). Survives dropped connections by resuming."""
        return self.put_many([(local, remote)])[0]

    def put_many(self, items: Sequence[tuple[Path, str]], sha256s: Sequence[str] | None = None) -> list[int]:
        """Copy each ``(local, remote)`` as :meth:`put` does: those sent whole and fsynced are renamed
        over SFTP, the others (resumed, or not fsynced by the server) finished by one program on the
        device for all of them (fsync, sha256 compared, rename, directory fsync), so a second file
        costs no extra process start on the device. Returns the bytes sent for each, in order.
        ``sha256s``: the files' digests when the caller has them (else each file is read once more)."""
        uploads: list[_Upload] = []
        by_final: dict[str, _Upload] = {}
        for i, (local, remote) in enumerate(items):
            local = Path(local)
            if not local.is_file():
                raise UserInputError(f"file not found: {local}", "check the path")
            size, sha = (local.stat().st_size, sha256s[i]) if sha256s is not None else file_digest(local)
            final = self._confine(remote)
            same = by_final.get(final)
            if same is not None and same.sha != sha:
                raise UserInputError(f"two different files to put at {final}", "give each its own name")
            if same is None:
                directory, base = posixpath.split(final)
                part = posixpath.join(directory, f".{base}.{sha[:16]}{PART_SUFFIX}")
                same = by_final[final] = _Upload(self, local, size, sha, final, part)
            uploads.append(same)
        batch = _Batch(self, list(by_final.values()))
        started = time.monotonic()
        try:
            batch.run()
        finally:
            self.last_transfer = TransferStats(
                sum(u.sent for u in batch.uploads),
                batch.attempts,
                sum(u.resumes for u in batch.uploads),
                sum(u.restarts for u in batch.uploads),
                time.monotonic() - started,
            )
        seen: set[str] = set()
        counts = []
        for u in uploads:  # a file listed twice was sent once
            counts.append(0 if u.final in seen else u.sent)
            seen.add(u.final)
        return counts

    def _finish_parts(self, uploads: Sequence[_Upload]) -> list[str | None]:
        """Run FINISH_PROGRAM on the device for ``uploads``: each one's sha256 (None: no partial file);
        a partial that matches is renamed onto its final name, one that does not is removed, and the
        directories of the renamed ones are fsynced."""
        args: list[str] = []
        for u in uploads:
            args += [u.part, u.final, u.sha, "1" if u.synced else "0"]
        res = self.run([self.python, "-S", "-c", FINISH_PROGRAM, *args], timeout=self.io_timeout_s * 10)
        if res.exit_code == 127:  # no Python on the device: coreutils and SFTP can do it
            return self._finish_without_python(uploads)
        answers = res.stdout.split("\n")
        answers = [a.strip() for a in answers if a.strip()][-(len(uploads) + 1) :]
        if res.exit_code != 0 or answers[-1:] != ["synced"] or len(answers) != len(uploads) + 1:
            tail = (res.stderr.strip().splitlines() or ["no output"])[-1]
            raise DeviceError(
                f"cannot verify the upload on {self.name}: {tail}",
                f"check free space (df -h), permissions of the workdir, and that {self.python!r} runs there",
            )
        digests: list[str | None] = []
        for answer in answers[:-1]:
            word, _, digest = answer.partition(" ")
            digests.append(digest if word in ("ok", "bad") else None)
        return digests

    def _finish_without_python(self, uploads: Sequence[_Upload]) -> list[str | None]:
        sftp = self._sftp_client()
        digests: list[str | None] = []
        directories: list[str] = []
        for u in uploads:
            digest = self._remote_sha256(u.part, fsync=not u.synced)
            if digest == u.sha:
                sftp.posix_rename(u.part, u.final)
                if posixpath.dirname(u.final) not in directories:
                    directories.append(posixpath.dirname(u.final))
            elif digest is not None:
                self.remove(u.part)
            digests.append(digest)
        if directories:
            self.run(["sync", "--", *directories], timeout=self.io_timeout_s)
        return digests

    def get(self, remote: str, local: Path) -> None:
        """Copy ``remote`` from the device to ``local`` (temporary name, fsync, rename), resuming a
        dropped transfer."""
        local = Path(local)
        src = self._confine(remote)
        local.parent.mkdir(parents=True, exist_ok=True)
        part = local.with_name(f".{local.name}{PART_SUFFIX}")
        best = -1
        stalls = attempts = 0
        resumed = verified_once = False
        while True:
            attempts += 1
            try:
                sftp = self._sftp_client()
                try:
                    total = int(sftp.stat(src).st_size or 0)
                except FileNotFoundError as exc:
                    raise DeviceError(f"no file {src} on {self.name}", "check the remote path") from exc
                have = part.stat().st_size if part.exists() else 0
                if have > total:
                    have = 0
                resumed = resumed or have > 0
                if have > best:
                    best, stalls = have, 0
                with sftp.open(src, "rb") as rf, open(part, "r+b" if have else "wb") as out:
                    rf.seek(have)
                    out.seek(have)
                    out.truncate()
                    rf.prefetch(total)  # from the current offset up to ``total``
                    while True:
                        block = rf.read(1 << 20)
                        if not block:
                            break
                        out.write(block)
                    out.flush()
                    os.fsync(out.fileno())
                if part.stat().st_size != total:
                    raise ConnectionLost(f"short read of {src}", "")
                # A resumed download may have started before the remote file changed: check the whole.
                if resumed and self._remote_sha256(src) != file_digest(part)[1]:
                    part.unlink()
                    if verified_once:
                        raise DeviceError(f"{src} on {self.name} keeps changing while read", "retry later")
                    verified_once, resumed = True, False
                    continue
                os.replace(part, local)
                return
            except _RETRYABLE as exc:
                if not self._is_link_failure(exc):
                    raise DeviceError(
                        f"cannot read {src} on {self.name}: {_reason(exc)}", "check the remote path"
                    ) from exc
                self._drop()
                stalls += 1
                if stalls >= self.retry.transfer_stalls or attempts >= self.retry.max_transfer_attempts:
                    raise DeviceError(
                        f"download of {src} from {self.name} failed after {attempts} attempts: "
                        f"{_reason(exc)}",
                        "check the link to the device and retry; the partial download is kept and resumed",
                    ) from exc
                time.sleep(self.retry.delay(stalls))

    def _is_link_failure(self, exc: BaseException) -> bool:
        """Did ``exc`` come from the link (retry) rather than from the server refusing (give up)?

        SFTP status errors (no such file, permission denied, disk full) are OSErrors too; they arrive
        on a connection that is still up.
        """
        if isinstance(exc, EOFError | paramiko.SSHException | TimeoutError | ConnectionLost):
            return True
        if isinstance(exc, OSError) and exc.errno in _LINK_ERRNOS:
            return True
        if not self.connected:
            return True
        time.sleep(0.05)  # the transport thread may not have noticed a dead socket yet
        return not self.connected

    def _fsync_handle(self, sftp: paramiko.SFTPClient, f: paramiko.SFTPFile) -> bool:
        """fsync an open remote file with OpenSSH's ``fsync@openssh.com``; False if unsupported."""
        if self._fsync_ext is False:
            return False
        # paramiko has no public call for this extension; the request is the documented one
        # (PROTOCOL in OpenSSH: string "fsync@openssh.com", string handle).
        request: Any = sftp._request  # type: ignore[attr-defined]
        try:
            request(CMD_EXTENDED, "fsync@openssh.com", f.handle)
        except OSError:
            if not self.connected:
                raise
            self._fsync_ext = False
            return False
        self._fsync_ext = True
        return True


class _Replies:
    """Where paramiko puts the answers to pipelined SFTP requests (see SSHTransport._pipelined)."""

    def __init__(self) -> None:
        self.got: dict[int, tuple[int, Any]] = {}

    def _async_response(self, kind: int, msg: Any, number: int) -> None:
        self.got[number] = (kind, msg)


class _CommandSession:
    """One running remote command: stream stdout lines, collect stderr, watch time and liveness."""

    def __init__(
        self,
        owner: SSHTransport,
        chan: paramiko.Channel,
        argv: list[str],
        timeout: float | None,
        on_line: Callable[[str], None] | None,
    ) -> None:
        self.owner = owner
        self.chan = chan
        self.argv = argv
        self.timeout = timeout
        self.on_line = on_line
        self.pid: int | None = None
        self.out = bytearray()
        self.err = bytearray()
        self.pending = b""  # stdout bytes after the last newline
        self.preamble = bytearray()  # lines a chatty login shell printed before our wrapper started

    def _stdout(self, data: bytes) -> None:
        self.pending += data
        if self.pid is None:
            if b"\n" not in self.pending:
                return
            while self.pid is None and b"\n" in self.pending:
                first, self.pending = self.pending.split(b"\n", 1)
                if first.startswith(_PID_MARKER) and first[len(_PID_MARKER) :].isdigit():
                    self.pid = int(first[len(_PID_MARKER) :])
                else:
                    self.preamble += first + b"\n"
            if self.pid is None:
                return
        while b"\n" in self.pending:
            line, self.pending = self.pending.split(b"\n", 1)
            self.out += line + b"\n"
            if self.on_line is not None:
                self.on_line(line.decode("utf-8", "replace"))

    def _lost(self, why: str) -> ConnectionLost:
        self.owner._drop()
        return ConnectionLost(
            f"connection to {self.owner.name} lost while running {self.argv[0]!r}: {why}",
            "the device may have rebooted or the network dropped; the remote process is stopped when "
            f"sshd notices. Check with: edgeq devices check {self.owner.name}",
        )

    def wait(self) -> CommandResult:
        chan, owner = self.chan, self.owner
        t = chan.get_transport()
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        chan.settimeout(0.05)
        last_rx = time.monotonic()
        pings: list[float] = []
        pong = threading.Event()
        stdout_eof = False
        try:
            while True:
                got = False
                if not stdout_eof:
                    try:
                        data = chan.recv(65536)
                    except TimeoutError:
                        data = None
                    if data:
                        got = True
                        self._stdout(data)
                    elif data == b"":
                        stdout_eof = True
                while chan.recv_stderr_ready():
                    self.err += chan.recv_stderr(65536)
                    got = True
                now = time.monotonic()
                if got:
                    last_rx = now
                if stdout_eof and chan.exit_status_ready():
                    break
                if not t.is_active():
                    raise self._lost("the SSH transport closed")
                if deadline is not None and now > deadline:
                    raise _Timeout()
                # Liveness: after keepalive_s of silence, ping; no answer within dead_after_s → gone.
                if pings and pong.is_set():
                    pings.clear()
                    pong.clear()
                    last_rx = now
                elif pings and now - pings[0] > owner.dead_after_s:
                    raise self._lost(f"no answer for {owner.dead_after_s:.0f} s")
                elif not pings and now - last_rx > owner.keepalive_s:
                    owner._alive(pings, pong)
                if stdout_eof and not got:
                    time.sleep(0.01)
        except _Timeout:
            self._stop()
            raise CommandTimeout(
                f"command timed out after {self.timeout:g} s on {owner.name}: {self.argv[0]}",
                "raise the timeout or lower --runs / --min-seconds",
            ) from None
        except ConnectionLost:
            raise
        except BaseException:
            # Ctrl-C (or a failing callback) on the host stops the device-side process too.
            self._stop()
            raise
        while chan.recv_stderr_ready():
            self.err += chan.recv_stderr(65536)
        if self.pid is None and self.preamble:  # never saw the wrapper start: show what came
            self.out = self.preamble + self.out
        if self.pending:
            self.out += self.pending
            if self.on_line is not None:
                self.on_line(self.pending.decode("utf-8", "replace"))
            self.pending = b""
        status = chan.exit_status
        chan.close()
        if status == -1:
            if not t.is_active():
                raise self._lost("the SSH transport closed")
            status = -1  # the wrapper shell itself was killed by a signal (paramiko drops exit-signal)
        return CommandResult(status, self.out.decode("utf-8", "replace"), self.err.decode("utf-8", "replace"))

    def _stop(self) -> None:
        if self.pid is not None and self.pid > 0:
            self.owner._kill_remote(self.pid)
        with contextlib.suppress(Exception):
            self.chan.close()


class _Timeout(Exception):
    pass


class _Upload:
    """One file of a ``put_many``: where its partial stands, and sending the rest of it."""

    def __init__(self, owner: SSHTransport, local: Path, size: int, sha: str, final: str, part: str) -> None:
        self.o = owner
        self.local = local
        self.size = size
        self.sha = sha
        self.final = final
        self.part = part
        self.sent = 0
        self.best = -1  # the most bytes found on the device at the start of an attempt
        self.restarts = 0  # verification failures (partial could not be trusted after all)
        self.resumes = 0  # attempts that continued a partial file
        self.synced = False  # fsynced through fsync@openssh.com after the last byte
        self.whole = False  # sent whole in this attempt, the bytes sent hashing to ``sha``
        self.maybe_renamed = False
        self.done = False

    def prepare(self) -> int | None:
        """How many bytes of the partial file can be kept (0: start over); None: already done."""
        sftp = self.o._sftp_client()
        try:
            have = int(sftp.stat(self.part).st_size or 0)
        except FileNotFoundError:
            if self.maybe_renamed and self.o._remote_sha256(self.final) == self.sha:
                return None
            return 0
        if have == 0 or have > self.size:
            return 0
        # A torn last write is the realistic way a partial goes bad: compare its tail with ours.
        n = min(_TAIL_CHECK, have)
        with sftp.open(self.part, "rb") as rf:
            rf.seek(have - n)
            theirs = rf.read(n)
        with open(self.local, "rb") as lf:
            lf.seek(have - n)
            ours = lf.read(n)
        if theirs != ours:
            return 0
        self.resumes += 1
        return have

    def send(self, offset: int) -> None:
        """Write the file from ``offset`` on (pipelined: no round trip per block), then fsync it."""
        o = self.o
        sftp = o._sftp_client()
        try:
            f = sftp.open(self.part, "r+" if offset else "w")
        except FileNotFoundError:  # its directory is not there yet (stat'ing it first costs a round trip)
            o._sftp_makedirs(sftp, posixpath.dirname(self.final))
            f = sftp.open(self.part, "r+" if offset else "w")
        # From zero, the bytes are hashed as they go: the file may have changed since it was hashed.
        digest = hashlib.sha256() if offset == 0 else None
        sent = 0
        with f, open(self.local, "rb") as src:
            f.set_pipelined(True)
            f.seek(offset)
            src.seek(offset)
            while True:
                block = src.read(_CHUNK)
                if not block:
                    break
                f.write(block)
                if digest is not None:
                    digest.update(block)
                sent += len(block)
                self.sent += len(block)
            f.flush()
            self.synced = o._fsync_handle(sftp, f)
        self.whole = digest is not None and sent == self.size and digest.hexdigest() == self.sha


class _Batch:
    """One ``put_many``: every file resumed and sent, then renamed over SFTP (sent whole) or by one
    program on the device that verifies the rest (fsync where the server could not, sha256, rename,
    directory fsync); retried across dropped connections while it makes progress."""

    def __init__(self, owner: SSHTransport, uploads: list[_Upload]) -> None:
        self.o = owner
        self.uploads = uploads
        self.attempts = 0

    def run(self) -> None:
        o = self.o
        stalls = 0
        todo = [u for u in self.uploads if not u.done]
        while todo:
            self.attempts += 1
            try:
                sent: list[_Upload] = []
                for u in todo:
                    offset = u.prepare()
                    if offset is None:  # an earlier attempt had renamed it already
                        u.done = True
                        continue
                    if offset > u.best:
                        u.best, stalls = offset, 0
                    u.send(offset)
                    sent.append(u)
                sent = self._rename_whole(sent)
                for i in range(0, len(sent), _FINISH_BATCH):
                    group = sent[i : i + _FINISH_BATCH]
                    for u in group:
                        u.maybe_renamed = True
                    for u, digest in zip(group, o._finish_parts(group), strict=True):
                        if digest == u.sha:
                            u.done = True
                            continue
                        u.maybe_renamed = False
                        u.restarts += 1
                        if u.restarts > 1:
                            raise DeviceError(
                                f"{u.local.name} arrived damaged on {o.name} twice "
                                f"(sha256 {digest}, expected {u.sha})",
                                "check the device's storage and free space",
                            )
                todo = [u for u in todo if not u.done]
            except _RETRYABLE as exc:
                if not o._is_link_failure(exc):
                    names = ", ".join(u.part for u in todo[:3])
                    raise DeviceError(
                        f"cannot write {names} on {o.name}: {_reason(exc)}",
                        "check free space (df -h) and permissions of the workdir on the device",
                    ) from exc
                o._drop()
                stalls += 1
                if stalls >= o.retry.transfer_stalls or self.attempts >= o.retry.max_transfer_attempts:
                    names = ", ".join(u.local.name for u in todo[:3]) + (" ..." if len(todo) > 3 else "")
                    raise DeviceError(
                        f"upload of {names} to {o.name} failed after {self.attempts} attempts "
                        f"({sum(u.sent for u in self.uploads)} bytes sent): {_reason(exc)}",
                        "check the link to the device and retry; the next upload resumes the partial file",
                    ) from exc
                time.sleep(o.retry.delay(stalls))

    def _rename_whole(self, sent: list[_Upload]) -> list[_Upload]:
        """Rename each upload that went whole, hashed as sent and fsynced, onto its final name with
        ``posix-rename@openssh.com`` (all in one round trip): no program on the device has anything
        to add (the SSH channel's MAC already vouches for the bytes, and the board would hash its own
        page cache). Returns the uploads still to be finished by the program: resumed ones (their
        first part came in an earlier attempt), unsynced ones, and any the server would not rename.
        Only the directory is not fsynced: a power cut within the file system's commit interval can
        undo the rename, never expose a torn file, and the next deploy finds the whole partial and
        finishes it without resending."""
        o = self.o
        whole = [u for u in sent if u.whole and u.synced] if o._rename_ext is not False else []
        if not whole:
            return sent
        for u in whole:
            u.maybe_renamed = True
        answers = o._pipelined([(CMD_EXTENDED, ("posix-rename@openssh.com", u.part, u.final)) for u in whole])
        for u, (kind, msg) in zip(whole, answers, strict=True):
            code = msg.get_int() if kind == CMD_STATUS else None
            if code == SFTP_OK:
                u.done = True
            elif code == SFTP_OP_UNSUPPORTED:
                o._rename_ext = False
        return [u for u in sent if not u.done]


class EdgeqHostKeyPolicy(paramiko.MissingHostKeyPolicy):
    """Every server key reaches this policy (the client's own key cache is left empty on purpose), so
    the comparison with both known-hosts files is always edgeq's, never paramiko's auto-add."""

    def __init__(self, known: KnownHosts, host: str, port: int, trust_new_host: bool = False) -> None:
        self.known = known
        self.host = host
        self.port = port
        self.trust_new_host = trust_new_host
        self.outcome = ""

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        # ``hostname`` is paramiko's "[host]:port"; we use the exact pair we dialled instead.
        self.outcome = self.known.verify(self.host, self.port, key, self.trust_new_host)


def transport_factory(known: KnownHosts, host: str, port: int) -> Any:
    """A paramiko ``transport_factory`` that prefers host-key types already known for this host."""

    def make(sock: Any, **kwargs: Any) -> paramiko.Transport:
        t = paramiko.Transport(sock, **kwargs)
        opts = t.get_security_options()
        opts.key_types = known.preferred_algorithms(host, port, list(opts.key_types))
        return t

    return make


_Endpoint = tuple[str, int, str, Path | None]  # host, port, user, identity file


def _endpoint(
    alias: str, port: int | None, user: str | None, identity: Path | str | None, use_config: bool
) -> tuple[_Endpoint, str | None]:
    """Where ``alias`` is and how to log in: the given values, else ~/.ssh/config's, else port 22
    and the local user; and the config's ProxyJump."""
    cfg = ssh_config.lookup(alias) if use_config else ssh_config.HostConfig(alias)
    key = identity or cfg.identity_file
    found = (
        cfg.hostname,
        int(port) if port is not None else (cfg.port or 22),
        user or cfg.user or _local_user(),
        Path(key).expanduser() if key else None,
    )
    return found, cfg.proxy_jump


def _local_user() -> str:
    import getpass

    return getpass.getuser()


def _tune_socket(sock: socket.socket, keepalive_s: float, dead_after_s: float) -> None:
    """TCP keepalive and TCP_USER_TIMEOUT: a peer that vanished is noticed by the kernel too.
    TCP_NODELAY: small requests (open a channel, one SFTP call) must not wait for delayed ACKs."""
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, max(1, int(keepalive_s)))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, max(1, int(keepalive_s)))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 3)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, int(dead_after_s * 1000))
    sock.settimeout(None)
