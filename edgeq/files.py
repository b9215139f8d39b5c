"""Files on the host: atomic writes, hashes, JSON. Every file edgeq writes goes through here.

Nothing is ever visible half-written: data goes to a temporary name in the destination directory,
is fsynced, then renamed over the final name (and the directory is fsynced). Temporary names are
short and independent of the final name, so a legal 255-byte file name still works. Files get the
permissions a plain ``open()`` would give them (0666 minus the umask), not mkstemp's 0600.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edgeq.errors import UserInputError

TMP_PREFIX = ".edgeq-"
TMP_SUFFIX = ".part"
NAME_MAX = 255  # bytes in one path component on the file systems edgeq runs on


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):  # not every file system lets a directory be opened
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write(path: Path, data: bytes | str) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same directory, then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, suffix=TMP_SUFFIX, dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """For writers that need a file name (Keras ``save``, ``savefig``, ``np.save``): yields a path
    with the same name inside a temporary directory next to ``path``; on success it is renamed to
    ``path``, on failure it is removed.

    >>> with atomic_path(out / "plot.png") as tmp:
    ...     figure.savefig(tmp)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmpdir = Path(tempfile.mkdtemp(prefix=TMP_PREFIX, dir=path.parent))
    try:
        tmp = tmpdir / path.name
        yield tmp
        if tmp.is_file():
            os.chmod(tmp, 0o666 & ~_umask())
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


def json_default(o: Any) -> Any:
    """JSON for NumPy scalars and arrays, paths, and records with ``to_dict``."""
    import numpy as np

    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "to_dict"):
        return o.to_dict()
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def dumps(obj: Any) -> str:
    return json.dumps(obj, indent=2, default=json_default) + "\n"


def write_json(path: Path, obj: Any) -> None:
    atomic_write(path, dumps(obj))


def read_json(path: Path, what: str, hint: str) -> Any:
    """Parsed JSON of ``path``; a missing or malformed file is one UserInputError naming ``what``."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserInputError(f"{what} not found: {path}", hint) from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise UserInputError(f"cannot read {what} {path}: {exc}", hint) from None


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path | str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_writable_file(path: Path, what: str = "output") -> Path:
    """Before any work: ``path`` can be created or replaced as a file. One UserInputError otherwise.

    Catches an existing directory of that name, a name longer than the file system allows, a parent
    that is a file, and a directory the user cannot write.
    """
    path = Path(path)
    if len(os.fsencode(path.name)) > NAME_MAX:
        raise UserInputError(
            f"{what} name is {len(os.fsencode(path.name))} bytes long; file names are at most {NAME_MAX}",
            "pass a shorter name",
        )
    if path.is_dir():
        raise UserInputError(f"{what} {path} is a directory", "pass a file name, e.g. DIR/model.tflite")
    check_writable_dir(path.parent, f"the directory of {what} {path.name}")
    return path


def check_writable_dir(directory: Path, what: str = "output directory") -> Path:
    """``directory`` exists and is writable, or can be created. One UserInputError otherwise."""
    directory = Path(directory)
    probe = directory
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if len(os.fsencode(directory.name)) > NAME_MAX:
        raise UserInputError(f"{what} name {directory.name[:40]}… is too long", "pass a shorter name")
    if probe.exists() and not probe.is_dir():
        raise UserInputError(f"{what} {directory}: {probe} is a file, not a directory", "pass a directory")
    if not os.access(probe, os.W_OK | os.X_OK):
        where = "" if probe == directory else f" (its nearest existing parent {probe})"
        raise UserInputError(
            f"{what} {directory} is not writable{where}", "pass a directory you can write to"
        )
    return directory


MANIFEST = "manifest.json"
MANIFEST_SCHEMA = "edgeq.manifest/1"
LOCK = ".edgeq.lock"


class OutputDir:
    """An output directory that belongs to one run at a time, and whose contents are known.

    ``with OutputDir(out, "pipeline", known=(...)) as od:`` takes an exclusive lock
    (``.edgeq.lock``, held while the run lasts: a second run into the same directory is refused at
    once, naming the first); removes what the previous run wrote there (the files its
    ``manifest.json`` lists, or the ``known`` output names of a run from before manifests), so two
    runs never mix; and on exit writes ``manifest.json``: every file this run wrote (via
    :meth:`file`), with sizes and sha256. Files edgeq did not write are never touched.
    """

    def __init__(self, path: Path, command: str, known: tuple[str, ...] = ()) -> None:
        self.path = Path(path)
        self.command = command
        self.known = known
        self.written: list[str] = []
        self._fd: int | None = None
        self.started = ""

    def __enter__(self) -> OutputDir:
        import fcntl
        import socket
        import time

        check_writable_dir(self.path, "--out")
        self.path.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path / LOCK, os.O_RDWR | os.O_CREAT, 0o666 & ~_umask())
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise UserInputError(
                f"--out {self.path} is being written by another edgeq run ({holder})",
                "wait for it to finish, or pass another --out directory",
            ) from None
        self._fd = fd
        self.started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}, since {self.started}\n".encode(), 0)
        self._clear_previous()
        return self

    def _clear_previous(self) -> None:
        manifest = self.path / MANIFEST
        names: list[str] = list(self.known)
        if manifest.is_file():
            with contextlib.suppress(UserInputError, AttributeError, TypeError):
                names = list(read_json(manifest, "manifest", "").get("files", {}))
        for name in [*names, MANIFEST]:
            p = self.path / name
            if p.parent == self.path and p.is_file():  # only plain files right here, by name
                p.unlink()

    def file(self, name: str) -> Path:
        """The path of output ``name``, recorded as written by this run."""
        if name not in self.written:
            self.written.append(name)
        return self.path / name

    def __exit__(self, *exc: object) -> None:
        try:
            files = {}
            for name in self.written:
                p = self.path / name
                if p.is_file():
                    files[name] = {"size_bytes": p.stat().st_size, "sha256": sha256_file(p)}
            write_json(
                self.path / MANIFEST,
                {
                    "schema": MANIFEST_SCHEMA,
                    "command": self.command,
                    "started": self.started,
                    "complete": exc[0] is None,
                    "files": files,
                },
            )
        finally:
            if self._fd is not None:
                os.close(self._fd)  # releases the lock
                self._fd = None
