"""Content-addressed deploy: a file lands at ``<workdir>/<kind>/<sha256>/<basename>`` on the device.

A file already there with the same sha256 is not sent again. Before a file is sent, the free space
where it goes is checked (one line naming both sizes when it does not fit); after it landed, its
directory is fsynced so that the final rename survives a power cut. Only ``transport.run`` (with argument
lists), ``transport.put`` and ``transport.get`` are used, so any Transport works. Remote paths are
POSIX paths and always stay inside ``workdir``.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from pathlib import Path

from edgeq.devices.paths import SHA256_HEX, check_workdir, remote_path_for
from edgeq.devices.transports.transport import Transport
from edgeq.errors import DeviceError, UserInputError
from edgeq.files import sha256_file

# Runs with the device's Python; the path is sys.argv[1], never part of the program text. Prints the
# file's sha256, or "missing FREE" (after creating its directory, so put() has somewhere to land;
# FREE: bytes an unprivileged writer may still use there). With argv[2] == "sync" the directory is
# fsynced first: the rename that put the file there is durable only then.
CHECK_PROGRAM = """\
import hashlib, os, sys
path = sys.argv[1]
directory = os.path.dirname(path)
if os.path.isfile(path):
    if sys.argv[2:3] == ["sync"]:
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    print(h.hexdigest())
else:
    os.makedirs(directory, exist_ok=True)
    st = os.statvfs(directory)
    print("missing %d" % (st.f_bavail * st.f_frsize))
"""

REMOVE_PROGRAM = """\
import os, sys
for path in sys.argv[1:]:
    try:
        os.remove(path)
    except OSError:
        pass
"""

_CHECK_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class Deployed:
    remote_path: str
    sha256: str
    bytes_sent: int


@dataclass(frozen=True)
class RemoteFile:
    sha256: str | None  # None: there is no such file
    free_bytes: int | None = None  # when missing: free space in its directory


def remote_check(transport: Transport, python: str, remote_path: str, sync: bool = False) -> RemoteFile:
    """The sha256 of ``remote_path`` on the device (its directory fsynced first with ``sync``), or,
    when there is no such file, the free space where it would go."""
    argv = [python, "-c", CHECK_PROGRAM, remote_path] + (["sync"] if sync else [])
    res = transport.run(argv, timeout=_CHECK_TIMEOUT_S)
    out = res.stdout.strip().splitlines()
    if res.exit_code != 0 or not out:
        tail = (res.stderr.strip().splitlines() or ["no output"])[-1]
        raise DeviceError(
            f"cannot check {remote_path} on device {transport.name!r}: {tail}",
            f"check that {python!r} runs on the device and that its workdir is writable",
        )
    answer = out[-1].strip()
    missing = re.fullmatch(r"missing (\d+)", answer)
    if missing:
        return RemoteFile(None, int(missing.group(1)))
    if not SHA256_HEX.match(answer):
        raise DeviceError(f"unexpected answer from device {transport.name!r}: {answer[:80]!r}", "")
    return RemoteFile(answer)


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def deploy_file(transport: Transport, python: str, workdir: str, local_path: Path, kind: str) -> Deployed:
    """Put ``local_path`` on the device unless the same content is already there.

    ``deploy_file(LocalTransport(), sys.executable, "/tmp/w", Path("m.tflite"), "models")`` gives
    ``Deployed("/tmp/w/models/<sha256>/m.tflite", "<sha256>", 2160)``, and ``bytes_sent=0`` the
    second time.
    """
    local_path = Path(local_path)
    if not local_path.is_file():
        raise UserInputError(f"file not found: {local_path}", "check the path")
    sha = sha256_file(local_path)
    remote = remote_path_for(workdir, kind, sha, local_path.name)
    there = remote_check(transport, python, remote)
    if there.sha256 == sha:
        return Deployed(remote, sha, 0)
    size = local_path.stat().st_size
    if there.free_bytes is not None and there.free_bytes < size:
        raise DeviceError(
            f"device {transport.name!r} has {_mib(there.free_bytes)} free in {posixpath.dirname(remote)}, "
            f"{local_path.name} needs {_mib(size)}",
            "free space on the device (earlier deploys live under its workdir) or set a workdir on a "
            "larger filesystem in the device profile",
        )
    sent = transport.put(local_path, remote)
    landed = remote_check(transport, python, remote, sync=True).sha256
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
