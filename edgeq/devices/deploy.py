"""Content-addressed deploy: a file lands at ``<workdir>/<kind>/<sha256>/<basename>`` on the device.

A file already there with the same sha256 is not sent again. Only ``transport.run`` (with argument
lists), ``transport.put`` and ``transport.get`` are used, so any Transport works. Remote paths are
POSIX paths and always stay inside ``workdir``.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from pathlib import Path

from edgeq.devices.transport import Transport
from edgeq.errors import DeviceError, UserInputError
from edgeq.runner.measure import file_sha256  # the device computes it the same way

# Runs with the device's Python; the path is sys.argv[1], never part of the program text. Prints the
# file's sha256, or "missing" (after creating its directory, so put() has somewhere to land).
CHECK_PROGRAM = """\
import hashlib, os, sys
path = sys.argv[1]
if os.path.isfile(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    print(h.hexdigest())
else:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    print("missing")
"""

REMOVE_PROGRAM = """\
import os, sys
for path in sys.argv[1:]:
    try:
        os.remove(path)
    except OSError:
        pass
"""

_KIND = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_CHECK_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class Deployed:
    remote_path: str
    sha256: str
    bytes_sent: int


def check_workdir(workdir: str) -> str:
    """An absolute, normalised POSIX directory (``~`` must be expanded by whoever knows the home)."""
    if not workdir or "\x00" in workdir or not posixpath.isabs(workdir):
        raise UserInputError(
            f"device workdir must be an absolute POSIX path, got {workdir!r}",
            "set the device's workdir to an absolute path such as /home/pi/.cache/edgeq",
        )
    norm = posixpath.normpath(workdir)
    if norm.startswith("//"):
        norm = "/" + norm.lstrip("/")
    if norm == "/":
        raise UserInputError("device workdir must not be /", "use a directory of its own")
    return norm


def remote_path_for(workdir: str, kind: str, sha256: str, basename: str) -> str:
    """``<workdir>/<kind>/<sha256>/<basename>``, refusing anything that could leave ``workdir``."""
    root = check_workdir(workdir)
    if not _KIND.match(kind) or kind in (".", ".."):
        raise ValueError(f"bad deploy kind {kind!r}")  # chosen by edgeq, not by the user
    if not _SHA256.match(sha256):
        raise ValueError(f"bad sha256 {sha256!r}")
    if (
        not basename
        or basename in (".", "..")
        or "/" in basename
        or any(ord(c) < 32 or ord(c) == 127 for c in basename)
    ):
        raise UserInputError(
            f"cannot deploy a file named {basename!r}",
            "rename it: no '/', no control characters, not '.' or '..'",
        )
    path = posixpath.join(root, kind, sha256, basename)
    if posixpath.normpath(path) != path or not path.startswith(root + "/"):
        raise UserInputError(f"cannot deploy {basename!r}: its path would leave the workdir", "rename it")
    return path


def remote_sha256(transport: Transport, python: str, remote_path: str) -> str | None:
    """The sha256 of ``remote_path`` on the device, or None when there is no such file."""
    res = transport.run([python, "-c", CHECK_PROGRAM, remote_path], timeout=_CHECK_TIMEOUT_S)
    out = res.stdout.strip().splitlines()
    if res.exit_code != 0 or not out:
        tail = (res.stderr.strip().splitlines() or ["no output"])[-1]
        raise DeviceError(
            f"cannot check {remote_path} on device {transport.name!r}: {tail}",
            f"check that {python!r} runs on the device and that its workdir is writable",
        )
    answer = out[-1].strip()
    if answer == "missing":
        return None
    if not _SHA256.match(answer):
        raise DeviceError(f"unexpected answer from device {transport.name!r}: {answer[:80]!r}", "")
    return answer


def deploy_file(transport: Transport, python: str, workdir: str, local_path: Path, kind: str) -> Deployed:
    """Put ``local_path`` on the device unless the same content is already there.

    ``deploy_file(LocalTransport(), sys.executable, "/tmp/w", Path("m.tflite"), "models")`` gives
    ``Deployed("/tmp/w/models/<sha256>/m.tflite", "<sha256>", 2160)``, and ``bytes_sent=0`` the
    second time.
    """
    local_path = Path(local_path)
    if not local_path.is_file():
        raise UserInputError(f"file not found: {local_path}", "check the path")
    sha = file_sha256(str(local_path))
    remote = remote_path_for(workdir, kind, sha, local_path.name)
    if remote_sha256(transport, python, remote) == sha:
        return Deployed(remote, sha, 0)
    sent = transport.put(local_path, remote)
    landed = remote_sha256(transport, python, remote)
    if landed != sha:
        raise DeviceError(
            f"{local_path.name} arrived damaged on device {transport.name!r} "
            f"(sha256 {landed or 'missing'}, expected {sha})",
            "check the device's free space and retry",
        )
    return Deployed(remote, sha, sent)


def remove_remote(transport: Transport, python: str, workdir: str, *paths: str) -> None:
    """Best-effort removal of files edgeq itself created inside ``workdir``."""
    root = check_workdir(workdir)
    inside = [p for p in paths if posixpath.normpath(p) == p and p.startswith(root + "/")]
    if inside:
        transport.run([python, "-c", REMOVE_PROGRAM, *inside], timeout=_CHECK_TIMEOUT_S)
