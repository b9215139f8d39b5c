"""The host itself as a device: subprocesses and local file copies."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

from edgeq.devices.paths import check_workdir
from edgeq.devices.transports.transport import ClosingContext, CommandResult, FreeSpace, stop_process
from edgeq.errors import DeviceError
from edgeq.files import atomic_path


class LocalTransport(ClosingContext):
    """The host itself as a device: subprocesses and local file copies."""

    def __init__(self, workdir: str | None = None, name: str = "local") -> None:
        self.name = name
        self._workdir = workdir

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

    is_local = True

    def connect(self) -> str:
        return "local device (no SSH)"

    @property
    def workdir(self) -> str:
        if self._workdir is None:
            raise ValueError("this LocalTransport was made without a workdir")
        return check_workdir(str(Path(self._workdir).expanduser()))

    def put(self, local: Path, remote: str) -> int:
        dest = Path(remote)
        with atomic_path(dest) as tmp, open(local, "rb") as src, open(tmp, "wb") as out:
            shutil.copyfileobj(src, out, 1 << 20)
        return dest.stat().st_size

    def get(self, remote: str, local: Path) -> None:
        self.put(Path(remote), str(local))

    def is_executable(self, remote: str) -> bool:
        return Path(remote).is_file() and os.access(remote, os.X_OK)

    def file_sizes(self, remotes: Sequence[str]) -> list[int | None]:
        return [os.stat(r).st_size if os.path.isfile(r) else None for r in remotes]

    def prepare_dirs(self, remotes: Sequence[str]) -> list[FreeSpace]:
        spaces = []
        for remote in remotes:
            os.makedirs(remote, exist_ok=True)
            st = os.statvfs(remote)
            spaces.append(FreeSpace(st.f_bavail * st.f_frsize, f"dev{os.stat(remote).st_dev}"))
        return spaces
