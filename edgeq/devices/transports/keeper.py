"""Kept SSH connections: the next command on the same board skips the SSH handshake.

This is OpenSSH's ControlMaster with ControlPersist (as Ansible and labgrid use it). A command that
connected to a board leaves a *keeper* behind when it ends: a small process of its own that connects
to that board with the same route, user, key and known-hosts files, listens on a Unix socket, and
goes away after ``persist_s`` seconds without a client, or as soon as its connection dies. The next
edgeq command for that board finds the socket and asks the keeper for channels instead of
connecting: a command (``exec``: its stdout, stderr and exit status come back in frames) or the SFTP
subsystem (the bytes both ways, spoken by paramiko's own SFTPClient). Everything else stays in the
command: paths confined to the workdir, quoting, timeouts, liveness pings, retries. A handshake
(key exchange, authentication, the server setting up the session) takes several round trips, ~0.1 s
on a LAN and ~0.4 s with 80 ms round trips; a channel of a kept connection takes one.

Safety:

* The socket lives in ``$XDG_RUNTIME_DIR/edgeq``, else ``/tmp/edgeq-UID``: a directory that must be
  this user's own with mode 0700, or no keeper is used. The keeper also checks each peer's uid
  (``SO_PEERCRED``). Only this user can ask a keeper for anything.
* The keeper verifies the board's host key like any connection, without trust on first use: it
  connects after a command did, so the key is known (or pinned by that command) already. It tells
  each command the key of every hop, and the command checks them against its known-hosts files as
  they are then: a key removed, revoked or changed there since is refused as for a new connection
  (the keeper is told to quit and the command connects itself, which says what is wrong).
* The socket's name is a hash of everything that decides what is reached and as whom: the route
  (every hop's host, port, user, key file), the agent socket, the known-hosts files and this module
  (an upgraded edgeq never talks to an old keeper).
* A keeper that cannot open a channel (its link died and it has not noticed yet) leaves the command
  to open it over a connection of its own: nothing ran yet. One that fails while a command uses it
  (the link dies, the keeper is killed) is a lost connection for that command, as a dropped link is.
  Either way the keeper is told to quit, so the next command connects afresh.
* A farm run keeps one connection per board of its own and uses no keeper.

``persist_s`` comes from the device profile (``persist_s``, default 60; 0 turns keepers off) or the
environment (``EDGEQ_SSH_PERSIST_S``, which wins). ``edgeq devices disconnect`` stops every keeper.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import select
import socket
import stat
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeq.errors import UserInputError

if TYPE_CHECKING:
    from edgeq.devices.transports.ssh import SSHTransport

ENV = "EDGEQ_SSH_PERSIST_S"
DEFAULT_PERSIST_S = 60.0
_ANSWER_TIMEOUT_S = 10.0  # a keeper that takes longer to answer a request is not used
# Commands served at once; more connect themselves. Each uses up to three channels (SFTP, a command,
# a kill or a lock), and OpenSSH's sshd allows ten per connection (MaxSessions).
_MAX_ATTACHED = 3
_MAX_LINE = 1 << 16
# Frames from the keeper to a command's channel: kind (1 byte), length (4 bytes), payload.
_OUT, _ERR, _EXIT = b"o", b"e", b"x"
# ... and from the channel to the keeper: end of the command's stdin.
_EOF = b"w"
_HEAD = struct.Struct(">cI")
_keepers: list[subprocess.Popen[bytes]] = []  # started by this process and still running


def persist_s(profile_value: float) -> float:
    """How long a connection is kept after a command: ``EDGEQ_SSH_PERSIST_S`` if set, else the
    profile's value."""
    raw = os.environ.get(ENV)
    if raw is None:
        return profile_value
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds < float("inf"):
        raise UserInputError(
            f"{ENV}={raw!r} is not a number of seconds",
            f"set {ENV} to how long a connection is kept after a command (0: never), or unset it",
        )
    return seconds


def directory() -> Path | None:
    """Where the sockets live, or None when no safe place exists (then nothing is kept)."""
    base = os.environ.get("XDG_RUNTIME_DIR")
    d = Path(base) / "edgeq" if base else Path(f"/tmp/edgeq-{os.getuid()}")
    try:
        with contextlib.suppress(FileExistsError):
            d.mkdir(mode=0o700)
        st = os.lstat(d)
    except OSError:
        return None
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
        return None
    return d


def spec(t: SSHTransport) -> dict[str, Any]:
    """What a keeper needs to make the same connection as ``t`` (host names already resolved)."""

    def hop(h: tuple[str, int, str, Path | None]) -> list[Any]:
        return [h[0], h[1], h[2], str(h[3]) if h[3] is not None else None]

    return {
        "route": [hop(h) for h in [*t._hops, (t.host, t.port, t.user, t.identity_file)]],
        "agent": os.environ.get("SSH_AUTH_SOCK") if t.allow_agent else None,
        "allow_agent": t.allow_agent,
        "known_hosts": [str(t.known_hosts.user_file), str(t.known_hosts.edgeq_file)],
        "name": t.name,
        "connect_timeout_s": t.connect_timeout_s,
        "keepalive_s": t.keepalive_s,
        "dead_after_s": t.dead_after_s,
    }


def _paths(what: dict[str, Any]) -> tuple[Path, Path] | None:
    d = directory()
    if d is None:
        return None
    mine = Path(__file__).stat()
    identity = {k: what[k] for k in ("route", "agent", "allow_agent", "known_hosts")}
    identity["module"] = [mine.st_mtime_ns, mine.st_size]
    key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:24]
    sock = d / f"{key}.sock"
    if len(os.fsencode(sock)) > 100:  # sun_path holds 108 bytes
        return None
    return sock, d / f"{key}.lock"


# ---------------------------------------------------------------------------------- the command's side


def attach(t: SSHTransport) -> KeptClient | None:
    """A client of the keeper for ``t``'s board, or None when there is none (or it does not answer)."""
    paths = _paths(spec(t))
    if paths is None or not paths[0].exists():
        return None
    client = KeptClient(str(paths[0]))
    try:
        client.hello()
    except (OSError, EOFError, ValueError):
        client.close()
        return None
    return client


def start(t: SSHTransport, seconds: float) -> None:
    """Leave a keeper for ``t``'s board behind, unless one is there or starting (it holds the lock)."""
    what = spec(t)
    paths = _paths(what)
    if paths is None:
        return
    sock, lock = paths
    try:
        with held(str(lock)) as free:  # a keeper holds it for its lifetime (starting up included)
            if not free:
                return
    except OSError:
        return
    _keepers[:] = [k for k in _keepers if k.poll() is None]  # reaps those that ended
    request = json.dumps({**what, "socket": str(sock), "lock": str(lock), "persist_s": seconds})
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "edgeq.devices.transports.keeperd"],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=Path(__file__).parents[3],  # where edgeq is imported from, whatever the command's cwd
            start_new_session=True,  # not in the command's process group: Ctrl-C there is not for it
        )
        assert proc.stdin is not None
        proc.stdin.write(request.encode())
        proc.stdin.close()
        _keepers.append(proc)
    except OSError:
        return


def stop_all() -> list[str]:
    """Ask every keeper of this user to quit; the boards they held (by profile name). The lock
    files of keepers no longer running are removed."""
    d = directory()
    stopped: list[str] = []
    if d is None:
        return stopped
    for sock in sorted(d.glob("*.sock")):
        client = KeptClient(str(sock))
        try:
            stopped.append(str(client.hello().get("name", sock.stem)))
            client.quit()
        except (OSError, EOFError, ValueError):
            pass
        finally:
            client.close()
    for lock in d.glob("*.lock"):  # tidy up after keepers that are gone (one still starting holds its lock)
        with contextlib.suppress(OSError), held(str(lock)) as free:
            if free:
                lock.unlink()
    return stopped


def _send_line(conn: socket.socket, obj: dict[str, Any]) -> None:
    conn.sendall(json.dumps(obj).encode() + b"\n")


def _read_line(conn: socket.socket) -> dict[str, Any]:
    buf = b""
    while not buf.endswith(b"\n"):
        got = conn.recv(1)  # byte by byte: what follows the line belongs to the channel
        if not got:
            raise EOFError("the keeper closed the connection")
        buf += got
        if len(buf) > _MAX_LINE:
            raise ValueError("answer too long")
    answer = json.loads(buf)
    if not isinstance(answer, dict):
        raise ValueError("not an answer")
    return answer


class KeptClient:
    """Stands in for ``paramiko.SSHClient`` when a keeper holds the connection: ``get_transport()``,
    ``open_sftp()`` and ``close()`` are all SSHTransport asks of it. One Unix connection (the
    *control*) stays open while the command is attached, so the keeper never idles out under it and
    its end (the keeper gone, its link dead) is seen at once."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.control: socket.socket | None = None
        self.info: dict[str, Any] = {}  # the keeper's hello: pid, name, host keys
        self.transport = KeptTransport(self)

    def request(self, obj: dict[str, Any], timeout: float = _ANSWER_TIMEOUT_S) -> socket.socket:
        """A new connection to the keeper with ``obj`` asked and answered ok; OSError otherwise."""
        return self._ask(obj, timeout)[0]

    def _ask(self, obj: dict[str, Any], timeout: float) -> tuple[socket.socket, dict[str, Any]]:
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            conn.settimeout(timeout)
            conn.connect(self.path)
            _send_line(conn, obj)
            answer = _read_line(conn)
            if not answer.get("ok"):
                raise ConnectionError(str(answer.get("error") or "the keeper refused"))
            return conn, answer
        except (EOFError, ValueError) as exc:
            conn.close()
            raise ConnectionError(f"the keeper did not answer: {exc}") from exc
        except BaseException:
            conn.close()
            raise

    def hello(self) -> dict[str, Any]:
        self.control, self.info = self._ask({"op": "hello"}, _ANSWER_TIMEOUT_S)
        self.control.setblocking(False)
        return self.info

    def quit(self) -> None:
        with contextlib.suppress(OSError):
            self.request({"op": "quit"}, timeout=2.0).close()

    def get_transport(self) -> KeptTransport:
        return self.transport

    def open_sftp(self) -> Any:
        import paramiko

        stream: Any = _Stream(self.request({"op": "sftp"}))  # what paramiko asks of a channel
        return paramiko.SFTPClient(stream)

    def close(self) -> None:
        if self.control is not None:
            self.control.close()
            self.control = None
        self.transport.lost = True


class KeptTransport:
    """Stands in for ``paramiko.Transport``: ``is_active``, ``open_session``, ``global_request``."""

    def __init__(self, client: KeptClient) -> None:
        self.client = client
        self.lost = False

    def is_active(self) -> bool:
        ctl = self.client.control
        if self.lost or ctl is None:
            return False
        try:
            if ctl.recv(1, socket.MSG_PEEK) == b"":  # the keeper closed it: gone, or its link died
                self.lost = True
        except BlockingIOError:
            pass
        except OSError:
            self.lost = True
        return not self.lost

    def set_keepalive(self, interval: int) -> None:
        return None  # the keeper's own connection has one

    def open_session(self, timeout: float | None = None) -> KeptChannel:
        return KeptChannel(self, timeout)

    def global_request(self, kind: str, data: Any = None, wait: bool = True) -> Any:
        """An SSH-level ping through the keeper: True when the board answered, else None."""
        try:
            self.client.request({"op": "ping"}, timeout=3600.0).close()
            return True
        except OSError:
            self.lost = True
            return None


class KeptChannel:
    """Stands in for an exec ``paramiko.Channel``: the calls SSHTransport and the board lock make."""

    def __init__(self, transport: KeptTransport, timeout: float | None) -> None:
        self.transport = transport
        self.open_timeout = timeout or _ANSWER_TIMEOUT_S
        self.conn: socket.socket | None = None
        self.timeout: float | None = None
        self.raw = bytearray()
        self.out = bytearray()
        self.err = bytearray()
        self.exit_status = -1
        self.done = False
        self.closed = False

    def exec_command(self, command: str) -> None:
        self.conn = self.transport.client.request({"op": "exec", "command": command}, self.open_timeout)

    def get_transport(self) -> KeptTransport:
        return self.transport

    def settimeout(self, timeout: float | None) -> None:
        self.timeout = timeout

    def _pump(self, wait: float | None) -> None:
        """File what has arrived, waiting up to ``wait`` seconds (None: for ever) for something."""
        if self.done or self.conn is None:
            return
        self.conn.settimeout(wait)
        try:
            data = self.conn.recv(1 << 16)
        except (BlockingIOError, TimeoutError):
            return
        except OSError:
            data = b""
        if not data:  # the keeper went away in the middle of the command
            self.done = self.transport.lost = True
            return
        self.raw += data
        while len(self.raw) >= _HEAD.size:
            kind, n = _HEAD.unpack_from(self.raw)
            if len(self.raw) < _HEAD.size + n:
                break
            payload = bytes(self.raw[_HEAD.size : _HEAD.size + n])
            del self.raw[: _HEAD.size + n]
            if kind == _OUT:
                self.out += payload
            elif kind == _ERR:
                self.err += payload
            elif kind == _EXIT:
                self.exit_status = struct.unpack(">i", payload[:4])[0]
                self.done = True
                if payload[4:5] == b"L":  # the keeper's connection died under the command
                    self.transport.lost = True

    def _wait_for(self, buf: bytearray) -> None:
        """Until ``buf`` has something or the command is done; TimeoutError after the timeout (a
        timeout of 0 looks once), as a paramiko channel's reads do."""
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        while not buf and not self.done:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            self._pump(left)
            if not buf and not self.done and deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError("timed out")

    def _take(self, buf: bytearray, n: int) -> bytes:
        got = bytes(buf[:n])
        del buf[:n]
        return got

    def recv(self, n: int) -> bytes:
        self._wait_for(self.out)
        return self._take(self.out, n)

    def recv_stderr(self, n: int) -> bytes:
        self._wait_for(self.err)
        return self._take(self.err, n)

    def recv_stderr_ready(self) -> bool:
        self._pump(0.0)
        return bool(self.err)

    def exit_status_ready(self) -> bool:
        self._pump(0.0)
        return self.done

    def recv_exit_status(self) -> int:
        while not self.done:
            self._pump(None)
        return self.exit_status

    def shutdown_write(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(OSError):
                self.conn.sendall(_HEAD.pack(_EOF, 0))

    def close(self) -> None:
        self.closed = True
        if self.conn is not None:
            self.conn.close()


class _Stream:
    """A Unix connection as paramiko's SFTP classes use a channel (send, recv, recv_ready, timeouts,
    close, a name for its log). Not a socket.socket on purpose: for one of those paramiko waits
    for answers in a loop that ignores the timeout."""

    def __init__(self, conn: socket.socket) -> None:
        self.conn = conn
        self.send = conn.send
        self.recv = conn.recv
        self.settimeout = conn.settimeout
        self.gettimeout = conn.gettimeout
        self.setblocking = conn.setblocking
        self.close = conn.close

    def recv_ready(self) -> bool:
        return bool(select.select([self.conn], [], [], 0)[0])

    def get_name(self) -> str:
        return "edgeq-keeper"


# ---------------------------------------------------------------------------------- the keeper's side


class Keeper:
    """The keeper's side: serves the connection of ``t`` (an SSHTransport made from the request
    ``start`` sent; keeperd.py) on the request's socket until idle or its link dies."""

    def __init__(self, t: SSHTransport, request: dict[str, Any]) -> None:
        self.t = t
        self.persist_s = float(request["persist_s"])
        self.path = request["socket"]
        self.users = 0
        self.attached = 0
        self.idle_since = time.monotonic()
        self.mutex = threading.Lock()
        self.quit = threading.Event()

    def serve(self) -> None:
        self.ssh = self.t._transport()  # connects, or raises
        # Each hop's host key, for a command to check against its known hosts as they are now.
        hops = [c.get_transport() for c in [*self.t._jump_clients, self.t._client]]
        self.keys = [[k.get_name(), k.get_base64()] for k in (h.get_remote_server_key() for h in hops)]
        tmp = f"{self.path}.{os.getpid()}"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(tmp)
        os.chmod(tmp, 0o600)
        server.listen(64)
        os.replace(tmp, self.path)  # a stale socket of a killed keeper is replaced
        mine = os.stat(self.path).st_ino
        server.settimeout(0.5)
        try:
            while not self.quit.is_set() and self.ssh.is_active():
                with self.mutex:
                    if not self.users and time.monotonic() - self.idle_since > self.persist_s:
                        break
                try:
                    conn, _ = server.accept()
                except TimeoutError:
                    continue
                if not _same_user(conn):
                    conn.close()
                    continue
                with self.mutex:
                    self.users += 1
                threading.Thread(target=self.handle, args=(conn,), daemon=True).start()
        finally:
            with contextlib.suppress(OSError):
                if os.stat(self.path).st_ino == mine:
                    os.unlink(self.path)
            server.close()
            self.t.close()

    def handle(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(_ANSWER_TIMEOUT_S)
            request = _read_line(conn)
            conn.settimeout(None)
            op = request.get("op")
            if op == "hello":
                with self.mutex:
                    room = self.attached < _MAX_ATTACHED and self.ssh.is_active()
                    self.attached += room
                if not room:
                    _send_line(conn, {"ok": False, "error": "busy, or the connection is gone"})
                    return
                try:
                    _send_line(
                        conn, {"ok": True, "pid": os.getpid(), "name": self.t.name, "host_keys": self.keys}
                    )
                    while conn.recv(1 << 10):  # held by the command until it is done
                        pass
                finally:
                    with self.mutex:
                        self.attached -= 1
            elif op == "ping":
                self.ssh.global_request("keepalive@openssh.com", wait=True)
                _send_line(conn, {"ok": self.ssh.is_active()})
            elif op == "quit":
                self.quit.set()
                _send_line(conn, {"ok": True})
            elif op in ("exec", "sftp"):
                chan = self.ssh.open_session(timeout=self.t.connect_timeout_s)
                try:
                    if op == "exec":
                        chan.exec_command(str(request["command"]))
                    else:
                        chan.invoke_subsystem("sftp")
                except BaseException:
                    chan.close()  # an open channel counts against the server's MaxSessions
                    raise
                _send_line(conn, {"ok": True})
                (self.relay_exec if op == "exec" else self.relay_bytes)(conn, chan)
            else:
                _send_line(conn, {"ok": False, "error": f"unknown request {op!r}"})
        except Exception as exc:  # answered if the command still listens; the keeper goes on
            with contextlib.suppress(Exception):
                _send_line(conn, {"ok": False, "error": str(exc)[:200] or type(exc).__name__})
        finally:
            conn.close()
            with self.mutex:
                self.users -= 1
                self.idle_since = time.monotonic()

    def relay_bytes(self, conn: socket.socket, chan: Any) -> None:
        """SFTP: the bytes both ways until either side closes."""

        def upstream() -> None:
            with contextlib.suppress(OSError):
                while data := conn.recv(1 << 16):
                    chan.sendall(data)
            chan.close()

        threading.Thread(target=upstream, daemon=True).start()
        with contextlib.suppress(OSError):
            while data := chan.recv(1 << 16):
                conn.sendall(data)
        chan.close()

    def relay_exec(self, conn: socket.socket, chan: Any) -> None:
        """A command: stdout and stderr as they come (each its own thread: paramiko's reads block),
        then the exit status, with ``L`` when the keeper's connection died under it. The command
        closing its end closes the channel (the device-side watcher then stops what runs there)."""
        sending = threading.Lock()

        def frame(kind: bytes, payload: bytes) -> None:
            with sending, contextlib.suppress(OSError):
                conn.sendall(_HEAD.pack(kind, len(payload)) + payload)

        def stderr() -> None:
            with contextlib.suppress(OSError):
                while data := chan.recv_stderr(1 << 16):
                    frame(_ERR, data)

        def downstream() -> None:
            with contextlib.suppress(OSError):
                while head := conn.recv(_HEAD.size):
                    if head[:1] == _EOF:
                        chan.shutdown_write()
            chan.close()

        errs = threading.Thread(target=stderr, daemon=True)
        errs.start()
        threading.Thread(target=downstream, daemon=True).start()
        with contextlib.suppress(OSError):
            while data := chan.recv(1 << 16):
                frame(_OUT, data)
        errs.join()
        status = chan.recv_exit_status()
        lost = b"" if self.ssh.is_active() else b"L"
        frame(_EXIT, struct.pack(">i", status) + lost)
        chan.close()


def _same_user(conn: socket.socket) -> bool:
    option = getattr(socket, "SO_PEERCRED", None)
    if option is None:  # not Linux: the directory's mode keeps others out
        return True
    _pid, uid, _gid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, option, struct.calcsize("3i")))
    return uid == os.getuid()


@contextlib.contextmanager
def held(lock: str) -> Iterator[bool]:
    """The board's keeper lock, taken without waiting: True when this process holds it."""
    fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            yield False
            return
        yield True
    finally:
        os.close(fd)
