"""How the host talks to a device: run a command, copy a file.

Every command is an argument list, never a shell string built from user input.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Protocol

from edgeq.errors import DeviceError


@dataclass(frozen=True)
class CommandResult:
    exit_code: int
    stdout: str
    stderr: str


class Transport(Protocol):
    """What every transport (local subprocess, SSH) offers."""

    name: str

    def run(
        self,
        argv: Sequence[str],
        timeout: float | None = None,
        on_stdout_line: Callable[[str], None] | None = None,
    ) -> CommandResult:
        """Run ``argv`` on the device; ``on_stdout_line`` sees each stdout line as it arrives."""
        ...

    def put(self, local: Path, remote: str) -> int:
        """Copy ``local`` to ``remote`` atomically (temporary name, fsync, rename); return bytes sent."""
        ...

    def get(self, remote: str, local: Path) -> None:
        """Copy ``remote`` from the device to ``local``."""
        ...

    def close(self) -> None: ...

    def __enter__(self) -> Transport: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


STOP_GRACE_S = 3.0  # how long a stopped device-side process gets to clean up before SIGKILL


def stop_process(proc: subprocess.Popen[str], grace_s: float = STOP_GRACE_S) -> None:
    """TERM first, so that the runner can clean up (restore the governor, remove partial files),
    then KILL if it is still there after ``grace_s``. Returns once the process has exited."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class LocalTransport:
    """The host itself as a device: subprocesses and local file copies."""

    name = "local"

    def run(
        self,
        argv: Sequence[str],
        timeout: float | None = None,
        on_stdout_line: Callable[[str], None] | None = None,
    ) -> CommandResult:
        try:
            proc = subprocess.Popen(
                list(argv),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                bufsize=1,
            )
        except OSError as exc:
            raise DeviceError(
                f"cannot start {argv[0]!r} on the local device: {exc.strerror}",
                "check that the program exists and is executable",
            ) from exc
        out_lines: list[str] = []
        try:
            if on_stdout_line is None:
                out, err = proc.communicate(timeout=timeout)
                return CommandResult(proc.returncode, out, err)
            # Stream stdout line by line; stderr is collected by a helper thread so neither pipe blocks.
            import threading

            err_chunks: list[str] = []
            assert proc.stderr is not None and proc.stdout is not None
            stderr = proc.stderr
            t = threading.Thread(target=lambda: err_chunks.append(stderr.read()), daemon=True)
            t.start()
            timer = None
            timed_out = threading.Event()
            if timeout is not None:

                def on_timeout() -> None:
                    timed_out.set()
                    stop_process(proc)

                timer = threading.Timer(timeout, on_timeout)
                timer.start()
            try:
                for line in proc.stdout:
                    out_lines.append(line)
                    on_stdout_line(line.rstrip("\n"))
                proc.wait()
            finally:
                if timer is not None:
                    timer.cancel()
            t.join(timeout=5)
            if timed_out.is_set() and timeout:
                raise subprocess.TimeoutExpired(list(argv), timeout)
            return CommandResult(proc.returncode, "".join(out_lines), "".join(err_chunks))
        except subprocess.TimeoutExpired as exc:
            stop_process(proc)
            raise DeviceError(
                f"command timed out after {timeout:.0f} s on the local device: {argv[0]}",
                "raise the timeout or lower --runs / --min-seconds",
            ) from exc
        except BaseException:
            # Ctrl-C (or any error) on the host stops the device-side process too.
            stop_process(proc)
            raise

    def put(self, local: Path, remote: str) -> int:
        dest = Path(remote)
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".edgeq-", suffix=".part", dir=dest.parent)
        try:
            with os.fdopen(fd, "wb") as out, open(local, "rb") as src:
                shutil.copyfileobj(src, out, 1 << 20)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, dest)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return dest.stat().st_size

    def get(self, remote: str, local: Path) -> None:
        self.put(Path(remote), str(local))

    def close(self) -> None:
        return None

    def __enter__(self) -> LocalTransport:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
