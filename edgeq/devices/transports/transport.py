"""What every transport offers: run a command, copy a file (the ``Transport`` protocol).

Every command is an argument list, never a shell string built from user input.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Protocol, TypeVar

_T = TypeVar("_T", bound="ClosingContext")


@dataclass(frozen=True)
class CommandResult:
    exit_code: int
    stdout: str
    stderr: str


@dataclass(frozen=True)
class FreeSpace:
    """Bytes an unprivileged writer may still use in a directory, and which file system it is on
    (``device``: equal for two directories on one file system, so sizes add up per file system)."""

    free_bytes: int
    device: str


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

    def is_executable(self, remote: str) -> bool:
        """Whether ``remote`` is a regular file (links followed) with an execute bit, asked without
        starting a process on the device."""
        ...

    def file_sizes(self, remotes: Sequence[str]) -> list[int | None]:
        """For each path, the size of the regular file there (links followed), None when there is
        none; asked without starting a process on the device."""
        ...

    def prepare_dirs(self, remotes: Sequence[str]) -> list[FreeSpace] | None:
        """``mkdir -p`` of each directory and its free space, without starting a process on the
        device; None when the device cannot tell that way."""
        ...

    def connect(self) -> str:
        """Connect now (transports connect lazily otherwise); one line saying how it went."""
        ...

    @property
    def workdir(self) -> str:
        """The profile's workdir as an absolute path on the device (``~`` resolved there)."""
        ...

    @property
    def is_local(self) -> bool:
        """The host itself (no connection, its Python and files are edgeq's own)."""
        ...

    def close(self) -> None: ...

    def __enter__(self) -> Transport: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


class ClosingContext:
    """``with transport:`` closes it afterwards (shared by every transport)."""

    def close(self) -> None:
        return None

    def __enter__(self: _T) -> _T:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


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
