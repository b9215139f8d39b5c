"""Board locks: one on the host (``$EDGEQ_HOME/locks/boards/``), one on the board (its workdir).

Both are ``flock`` locks held by a live process, so a lock left by a killed run is provably stale:
the kernel drops an ``flock`` when its holder dies, and nothing else can hold it.

* **Host lock**: ``fcntl.flock`` on one file per board address (``host:port``; ``local`` for the
  local device) under ``$EDGEQ_HOME/locks/boards``: two edgeq processes on this machine.
* **Board lock**: a small keeper program runs on the board over the run's own SSH connection: it
  creates ``<workdir>/.edgeq-farm.lock`` (``O_CREAT``, atomic), takes ``flock`` on it, writes who
  holds it (run, host, pid, time) to ``.edgeq-farm.lock.json`` (temporary name, rename) and then
  waits for its stdin to close. When the host process ends for any reason — a normal release, a
  crash, ``kill -9``, a lost link — the SSH channel closes, the keeper exits and the board's kernel
  drops the lock. A later run finding the ``.json`` but no ``flock`` holder takes the lock over and
  says whose it was; a run finding the ``flock`` held waits (``[timeouts] lock_wait_s``) and then
  reports the board busy, naming the holder. Two edgeq processes on two machines are serialised
  here.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import posixpath
import re
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeq.devices.profile import DeviceProfile
from edgeq.errors import DeviceError
from edgeq.home import edgeq_home

LOCK_NAME = ".edgeq-farm.lock"
POLL_S = 0.5

# Runs on the board (Python >= 3.8, standard library). argv: lock path, holder JSON.
KEEPER_PROGRAM = r"""
import fcntl, json, os, sys
lock, info = sys.argv[1], sys.argv[2]
meta = lock + ".json"
os.makedirs(os.path.dirname(lock), exist_ok=True)
fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
def holder():
    try:
        with open(meta) as f:
            return json.load(f)
    except Exception:
        return None
try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
except OSError:
    sys.stdout.write(json.dumps({"edgeq_lock": "busy", "holder": holder()}) + "\n")
    sys.stdout.flush()
    sys.exit(0)
previous = holder()
tmp = "%s.%d.tmp" % (meta, os.getpid())
with open(tmp, "w") as f:
    f.write(info)
    f.flush()
    os.fsync(f.fileno())
os.replace(tmp, meta)
sys.stdout.write(json.dumps({"edgeq_lock": "locked", "previous": previous}) + "\n")
sys.stdout.flush()
try:
    sys.stdin.read()
finally:
    try:
        if holder() == json.loads(info):
            os.remove(meta)
    except Exception:
        pass
"""


class BoardBusy(DeviceError):
    """Another edgeq run holds the board (on this host or on the board itself)."""

    def __init__(self, message: str, hint: str, holder: dict[str, Any] | None = None) -> None:
        super().__init__(message, hint)
        self.holder = holder


def holder_info(run: str) -> dict[str, Any]:
    """Who takes a lock: the run, this host, this process, since when."""
    return {
        "run": run,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def describe(holder: dict[str, Any] | None) -> str:
    if not holder:
        return "another edgeq process"
    return (
        f"edgeq run {holder.get('run', '?')} (pid {holder.get('pid', '?')} on {holder.get('host', '?')}, "
        f"since {holder.get('since', '?')})"
    )


def board_key(profile: DeviceProfile) -> str:
    """The board's identity on this host: its address (two profiles of one board share it)."""
    if profile.is_local:
        return "local"
    e = profile.endpoint
    return f"{(e.host or '').lower()}:{e.port}"


# ------------------------------------------------------------------------------------- host lock


class HostLock:
    """``flock`` on ``$EDGEQ_HOME/locks/boards/<board>.lock`` for as long as it is held."""

    def __init__(self, key: str, info: dict[str, Any]) -> None:
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", key)[:100]
        self.path = edgeq_home() / "locks" / "boards" / f"{safe}.lock"
        self.info = info
        self.fd: int | None = None

    def try_acquire(self) -> dict[str, Any] | None:
        """Take the lock; None on success, else who holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            try:
                raw = os.pread(fd, 4096, 0).decode("utf-8", "replace")
                holder = json.loads(raw) if raw.strip() else {}
            except (OSError, ValueError):
                holder = {}
            os.close(fd)
            return holder
        data = json.dumps(self.info).encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)
        self.fd = fd
        return None

    def release(self) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, 0)
            os.close(self.fd)  # closing the descriptor drops the flock
            self.fd = None


# ------------------------------------------------------------------------------------ board lock


@dataclass
class _Held:
    channel: Any  # paramiko.Channel of the keeper
    previous: dict[str, Any] | None


class BoardLock:
    """The lock in the board's workdir, kept by a program on the board over the run's connection.

    ``transport`` is an SSH transport (the keeper runs on one channel of its connection). The
    local device has no board lock: the host lock covers it.
    """

    def __init__(self, transport: Any, python: str, workdir: str, info: dict[str, Any]) -> None:
        self.transport = transport
        self.python = python
        self.path = posixpath.join(workdir, LOCK_NAME)
        self.info = info
        self.held: _Held | None = None

    def try_acquire(self, timeout_s: float = 60.0) -> dict[str, Any] | None:
        """Take the lock; None on success (``previous`` then says whose stale lock was taken
        over), else who holds it."""
        import paramiko

        # On the board's one connection; the keeper holds the lock while this channel stays open.
        chan: paramiko.Channel = self.transport.open_command(
            [self.python, "-c", KEEPER_PROGRAM, self.path, json.dumps(self.info)], timeout_s
        )
        buf = b""
        deadline = time.monotonic() + timeout_s
        answer: dict[str, Any] | None = None
        while answer is None:
            if time.monotonic() > deadline:
                chan.close()
                raise DeviceError(
                    f"the board lock on {self.transport.name} did not answer within {timeout_s:.0f} s",
                    f"check that {self.python!r} runs on the device (edgeq devices check)",
                )
            try:
                data = chan.recv(4096)
            except TimeoutError:
                continue
            if not data:
                err = b""
                while chan.recv_stderr_ready():
                    err += chan.recv_stderr(4096)
                chan.close()
                tail = err.decode("utf-8", "replace").strip().splitlines()[-1:] or ["no answer"]
                raise DeviceError(
                    f"cannot take the board lock {self.path} on {self.transport.name}: {tail[0]}",
                    "check that the workdir is writable and the device's Python runs",
                )
            buf += data
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                with contextlib.suppress(ValueError):
                    obj = json.loads(line)
                    if isinstance(obj, dict) and "edgeq_lock" in obj:
                        answer = obj
                        break
        if answer["edgeq_lock"] == "busy":
            chan.close()
            holder = answer.get("holder")
            return holder if isinstance(holder, dict) else {}
        chan.settimeout(None)
        prev = answer.get("previous")
        self.held = _Held(chan, prev if isinstance(prev, dict) else None)
        return None

    @property
    def alive(self) -> bool:
        """Still held: the keeper runs and its channel is open (False after a lost connection)."""
        h = self.held
        return h is not None and not h.channel.closed and not h.channel.exit_status_ready()

    @property
    def took_over(self) -> dict[str, Any] | None:
        """The holder of a stale lock this one replaced (its process was gone), or None."""
        return self.held.previous if self.held else None

    def release(self, timeout_s: float = 5.0) -> None:
        h, self.held = self.held, None
        if h is None:
            return
        with contextlib.suppress(Exception):
            h.channel.shutdown_write()  # EOF on the keeper's stdin: it cleans up and exits
            end = time.monotonic() + timeout_s
            while not h.channel.exit_status_ready() and time.monotonic() < end:
                time.sleep(0.02)
        with contextlib.suppress(Exception):
            h.channel.close()


def wait_for(
    try_acquire: Callable[[], dict[str, Any] | None],
    wait_s: float,
    what: str,
    should_stop: Callable[[], bool] = lambda: False,
    on_wait: Callable[[dict[str, Any]], None] | None = None,
) -> None:
    """Call ``try_acquire`` until it succeeds; after ``wait_s`` raise :class:`BoardBusy`."""
    deadline = time.monotonic() + wait_s
    told = False
    while True:
        holder = try_acquire()
        if holder is None:
            return
        if not told and on_wait is not None:
            on_wait(holder)
            told = True
        if time.monotonic() >= deadline or should_stop():
            raise BoardBusy(
                f"{what} is busy: held by {describe(holder)}"
                + (f"; waited {wait_s:.0f} s" if wait_s > 0 else ""),
                "wait for that run to finish (or raise [timeouts] lock_wait_s in FARM.toml); a lock "
                "whose holder died is taken over automatically",
                holder,
            )
        time.sleep(POLL_S)


def host_lock_path(profile: DeviceProfile) -> Path:
    return HostLock(board_key(profile), {}).path
