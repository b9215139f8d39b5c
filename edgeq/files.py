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
