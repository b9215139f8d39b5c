"""Content-addressed deploy: a file lands at ``<workdir>/<kind>/<sha256>/<basename>`` on the device.

A file gets that name only once its bytes are known to hash to it and are fsynced: hashed on the host as
they were sent (a file sent whole over SSH, renamed over SFTP) or on the device (a resumed upload, the
local device; the device then fsyncs the directory too). One already there with the expected size is
not sent again.
Before anything is sent, the free space where it goes is checked (one line naming both sizes when it
does not fit).

:func:`deploy_files` does all of this for several files. What is there, the directories and the free
space are asked without starting a process on the device (``file_sizes`` and ``prepare_dirs``, SFTP
on SSH), so an unchanged redeploy starts none; the upload is finished by the transport's ``put_many``
(SSH: over SFTP, or one program on the device for resumed files) or by one check after plain ``put``s. A device whose SFTP
server cannot tell free space gets one check program before the transfer instead: a POSIX shell
script with ``sha256sum`` for small files (a process start costs a few ms, the device's Python tens
of ms), a Python program for large ones, where OpenSSL's hashing in Python wins.
Commands are argument lists; remote paths are POSIX paths and always stay inside ``workdir``.
"""

from __future__ import annotations

import hashlib
import posixpath
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from edgeq.devices.paths import SHA256_HEX, check_workdir, remote_path_for
from edgeq.devices.transports.transport import Transport
from edgeq.errors import DeviceError, UserInputError
from edgeq.files import sha256_file

__all__ = [
    "CHECK_PROGRAM",
    "CHECK_SCRIPT",
    "Deployed",
    "RemoteFile",
    "deploy_file",
    "deploy_files",
    "remote_check",
    "remote_checks",
    "remote_path_for",
    "remove_remote",
]

# Runs with the device's Python (-S: the standard library is all it needs, and site costs a third of
# its start). argv[1] is "check" or "sync", then the paths, never part of the program text. Prints
# one line per path, in order: "have SHA256", or "missing FREE DEV" after creating its directory (so a
# put has somewhere to land; FREE: bytes an unprivileged writer may still use there, DEV: the
# directory's st_dev, so sizes add up per file system). With "sync" the directories of the files
# that are there are fsynced first: a rename that put a file there is durable only then.
CHECK_PROGRAM = """\
import hashlib, os, sys
mode, paths = sys.argv[1], sys.argv[2:]
if mode == "sync":
    done = set()
    for path in paths:
        directory = os.path.dirname(path)
        if directory not in done and os.path.isfile(path):
            done.add(directory)
            fd = os.open(directory, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
for path in paths:
    if os.path.isfile(path):
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        print("have " + h.hexdigest())
    else:
        directory = os.path.dirname(path)
        os.makedirs(directory, exist_ok=True)
        st = os.statvfs(directory)
        print("missing %d dev%d" % (st.f_bavail * st.f_frsize, os.stat(directory).st_dev))
"""

# The same check without starting Python, for "check" mode: argv is "check" then the paths. Looks
# once at which paths are files and prints "flags F" (F: one letter per path, h for a file, m for a
# missing one); then one sha256sum for all the files (its lines in order) and one mkdir and one df
# for the directories of all the missing ones ("free FREE FS:MOUNT" each, in order). Prints "nosha"
# alone when the device has no sha256sum (CHECK_PROGRAM runs instead).
CHECK_SCRIPT = """\
command -v sha256sum >/dev/null 2>&1 || { echo nosha; exit 0; }
shift
flags=
for p in "$@"; do
    if [ -f "$p" ]; then flags="${flags}h"; else flags="${flags}m"; fi
done
echo "flags $flags"
case $flags in *h*)
    (
        n=$# f=$flags
        for p in "$@"; do
            case $f in h*) set -- "$@" "$p" ;; esac
            f=${f#?}
        done
        shift $n
        exec sha256sum -- "$@"
    ) || exit 1
esac
case $flags in *m*)
    (
        n=$# f=$flags
        for p in "$@"; do
            case $f in m*) set -- "$@" "${p%/*}" ;; esac
            f=${f#?}
        done
        shift $n
        mkdir -p -- "$@" || exit 1
        df -Pk -- "$@" 2>/dev/null | awk 'NR > 1 { printf "free %.0f %s:%s\\n", $4 * 1024, $1, $6 }'
    ) || exit 1
esac
exit 0
"""
_SHELL_HASH_MAX_BYTES = 16 << 20  # above this Python's hashlib (OpenSSL) beats its start-up cost

REMOVE_PROGRAM = """\
import os, sys
for path in sys.argv[1:]:
    try:
        os.remove(path)
    except OSError:
        pass
"""

_CHECK_TIMEOUT_S = 300.0
_CHECK_BATCH = 64  # paths per CHECK_PROGRAM run (keeps the command line short)


@dataclass(frozen=True)
class Deployed:
    remote_path: str
    sha256: str
    bytes_sent: int


@dataclass(frozen=True)
class RemoteFile:
    sha256: str | None  # None: there is no such file
    free_bytes: int | None = None  # when missing: free space in its directory
    device: str | None = None  # when missing: names its directory's file system


@runtime_checkable
class VerifiedBatchPut(Protocol):
    """A transport whose ``put_many`` checks each file's sha256 (on the host as it is sent, or on the
    device) and fsyncs it before renaming it onto its final name (SSHTransport): no check is needed
    afterwards."""

    def put_many(
        self, items: Sequence[tuple[Path, str]], sha256s: Sequence[str] | None = None
    ) -> list[int]: ...


def remote_checks(
    transport: Transport,
    python: str,
    remote_paths: Sequence[str],
    sync: bool = False,
    expected_bytes: int | None = None,
) -> list[RemoteFile]:
    """For each of ``remote_paths``: its sha256 on the device, or, when there is no such file, the free
    space where it would go (its directory is made). With ``sync`` the directories of the files that
    are there are fsynced first. One program run on the device per 64 paths: a shell script when
    ``expected_bytes`` (what there is to hash, at most) is small, else ``python``."""
    shell = not sync and expected_bytes is not None and expected_bytes <= _SHELL_HASH_MAX_BYTES
    found: list[RemoteFile] = []
    for i in range(0, len(remote_paths), _CHECK_BATCH):
        group = list(remote_paths[i : i + _CHECK_BATCH])
        out = None
        if shell:
            out = _run_check(transport, python, ["/bin/sh", "-c", CHECK_SCRIPT, "edgeq-check"], group)
        if out is None:
            py = [python, "-S", "-c", CHECK_PROGRAM]
            out = _run_check(transport, python, py, group, "sync" if sync else "check")
        if out is None:
            raise DeviceError(f"unexpected answer from device {transport.name!r}: 'nosha'", "")
        found += out
    return found


def _run_check(
    transport: Transport, python: str, argv: list[str], group: list[str], mode: str = "check"
) -> list[RemoteFile] | None:
    """What the device answers for each path of ``group`` (None: the device has no sha256sum)."""
    res = transport.run([*argv, mode, *group], timeout=_CHECK_TIMEOUT_S)
    out = [line.strip() for line in res.stdout.splitlines() if line.strip()]
    if res.exit_code == 0 and out[-1:] == ["nosha"]:
        return None
    found = _script_answers(transport, out, len(group)) if res.exit_code == 0 else None
    if found is None and res.exit_code == 0:
        found = _program_answers(transport, out, len(group))
    if found is None:
        tail = (res.stderr.strip().splitlines() or ["no output"])[-1]
        raise DeviceError(
            f"cannot check {group[0]} on device {transport.name!r}: {tail}",
            f"check that {python!r} runs on the device and that its workdir is writable",
        )
    return found


def _script_answers(transport: Transport, out: list[str], n: int) -> list[RemoteFile] | None:
    """CHECK_SCRIPT's answer: ``flags``, the sha256sum lines, the free lines (None: not that form)."""
    starts = [i for i, line in enumerate(out) if line.startswith("flags ")]
    if not starts:
        return None
    rest = out[starts[-1] :]  # a chatty login shell may print lines first
    flags = rest[0].split(" ", 1)[1]
    hashes = [line.lstrip("\\")[:64] for line in rest[1:] if not line.startswith("free ")]
    free = [line.split(" ", 2)[1:] for line in rest[1:] if line.startswith("free ")]
    if len(flags) != n or set(flags) - set("hm") or len(hashes) != flags.count("h"):
        return None
    found = []
    for flag in flags:
        if flag == "h":
            found.append(_parse_answer(transport, f"have {hashes.pop(0)}"))
        else:
            amount, fs = free.pop(0) if free else ("?", "?")
            found.append(_parse_answer(transport, f"missing {amount} {fs}"))
    return found


def _program_answers(transport: Transport, out: list[str], n: int) -> list[RemoteFile] | None:
    """CHECK_PROGRAM's answer: one line per path, the last ``n`` lines (None: too few)."""
    if len(out) < n:
        return None
    return [_parse_answer(transport, answer) for answer in out[-n:]]


def _parse_answer(transport: Transport, answer: str) -> RemoteFile:
    missing = re.fullmatch(r"missing (\d+|\?) (.+)", answer)
    if missing:
        free = missing.group(1)
        return RemoteFile(None, None if free == "?" else int(free), missing.group(2))
    word, _, sha = answer.partition(" ")
    if word != "have" or not SHA256_HEX.match(sha):
        raise DeviceError(f"unexpected answer from device {transport.name!r}: {answer[:80]!r}", "")
    return RemoteFile(sha)


def remote_check(transport: Transport, python: str, remote_path: str, sync: bool = False) -> RemoteFile:
    """:func:`remote_checks` for one path."""
    return remote_checks(transport, python, [remote_path], sync)[0]


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


@dataclass(frozen=True)
class _Local:
    path: Path
    kind: str
    sha256: str
    size: int
    remote: str


def deploy_files(
    transport: Transport,
    python: str,
    workdir: str,
    files: Sequence[tuple[Path, str]],
    *,
    together: bool | Collection[Path] = False,
) -> list[Deployed]:
    """Put each ``(local_path, kind)`` on the device unless the same content is already there.

    With ``together`` (True: all the files; or the local paths of some of them) those files land in
    one directory, addressed by the sha256 of all of them (files that must sit side by side, as an
    OpenVINO IR's ``.xml`` and ``.bin``); each is still verified by its own sha256. So a run's runner,
    library and a two-file model deploy in one call: ``together={xml, bin}``.

    What is there is looked up by size at its content address (see :func:`_look`); only the missing
    ones are sent, after a free-space check that adds their sizes per file system; then their sha256 is
    checked (by the transport's ``put_many`` when it has one, else by one program run on the device).

    ``deploy_files(t, "python3", "/home/pi/edgeq", [(Path("runner.pyz"), "runner"),
    (Path("m.tflite"), "models")])`` gives ``[Deployed("/home/pi/edgeq/runner/<sha>/runner.pyz", "<sha>",
    254770), Deployed(".../models/<sha>/m.tflite", "<sha>", 606528)]``, and ``bytes_sent=0`` for both
    the second time. A file listed twice is deployed once.
    """
    wanted: list[_Local] = []
    for path, _ in files:
        if not Path(path).is_file():
            raise UserInputError(f"file not found: {path}", "check the path")
    shas = [sha256_file(Path(path)) for path, _ in files]
    members = (
        [together is True or Path(path) in together for path, _ in files]
        if together is not False
        else [False] * len(files)
    )
    joint = [sha for sha, member in zip(shas, members, strict=True) if member]
    group = hashlib.sha256("".join(joint).encode()).hexdigest() if joint else None
    for (path, kind), sha, member in zip(files, shas, members, strict=True):
        local = Path(path)
        remote = remote_path_for(workdir, kind, (group if member else None) or sha, local.name)
        wanted.append(_Local(local, kind, sha, local.stat().st_size, remote))
    unique = list({w.remote: w for w in wanted}.values())
    there = _look(transport, python, unique)
    missing = [w for w in unique if there[w.remote].sha256 != w.sha256]
    _check_free_space(transport, missing, there)
    sent: dict[str, int] = {}
    if missing:
        items = [(w.path, w.remote) for w in missing]
        if isinstance(transport, VerifiedBatchPut):
            counts = transport.put_many(items, [w.sha256 for w in missing])  # hashed above already
        else:
            counts = [transport.put(local, remote) for local, remote in items]
            landed = remote_checks(transport, python, [w.remote for w in missing], sync=True)
            for w, found in zip(missing, landed, strict=True):
                if found.sha256 != w.sha256:
                    raise DeviceError(
                        f"{w.path.name} arrived damaged on device {transport.name!r} "
                        f"(sha256 {found.sha256 or 'missing'}, expected {w.sha256})",
                        "check the device's free space and retry",
                    )
        sent = {w.remote: n for w, n in zip(missing, counts, strict=True)}
    result: list[Deployed] = []
    for w in wanted:
        result.append(Deployed(w.remote, w.sha256, sent.pop(w.remote, 0)))  # a repeat was sent once
    return result


def _look(transport: Transport, python: str, unique: Sequence[_Local]) -> dict[str, RemoteFile]:
    """What the device has of ``unique``, asked without starting a process there when it can be.

    A file at its content address with the expected size is the one wanted: it got that name only
    once its sha256 was checked (as rsync trusts size and mtime, no byte is read again). For
    the others their directory is made and its free space asked (SFTP on SSH); a device that cannot
    say its free space that way gets one check program for them, which also hashes what is there."""
    sizes = transport.file_sizes([w.remote for w in unique])
    there = {w.remote: RemoteFile(w.sha256) for w, n in zip(unique, sizes, strict=True) if n == w.size}
    missing = [w for w in unique if w.remote not in there]
    directories = list(dict.fromkeys(posixpath.dirname(w.remote) for w in missing))
    spaces = transport.prepare_dirs(directories) if missing else []
    if spaces is None:
        size = sum(w.size for w in missing)
        checked = remote_checks(transport, python, [w.remote for w in missing], expected_bytes=size)
        return there | {w.remote: found for w, found in zip(missing, checked, strict=True)}
    space = dict(zip(directories, spaces, strict=True))
    for w in missing:
        free = space[posixpath.dirname(w.remote)]
        there[w.remote] = RemoteFile(None, free.free_bytes, free.device)
    return there


def _check_free_space(transport: Transport, missing: list[_Local], there: dict[str, RemoteFile]) -> None:
    """Refuse before anything is sent when the files to send do not fit where they go (per file system)."""
    by_device: dict[str | None, list[_Local]] = {}
    for w in missing:
        by_device.setdefault(there[w.remote].device, []).append(w)
    for group in by_device.values():
        free = min((f for f in (there[w.remote].free_bytes for w in group) if f is not None), default=None)
        need = sum(w.size for w in group)
        if free is None or free >= need:
            continue
        names = ", ".join(w.path.name for w in group)
        raise DeviceError(
            f"device {transport.name!r} has {_mib(free)} free in "
            f"{posixpath.dirname(group[0].remote)}, {names} {'needs' if len(group) == 1 else 'need'} "
            f"{_mib(need)}",
            "free space on the device (earlier deploys live under its workdir) or set a workdir on a "
            "larger filesystem in the device profile",
        )


def deploy_file(transport: Transport, python: str, workdir: str, local_path: Path, kind: str) -> Deployed:
    """Put ``local_path`` on the device unless the same content is already there (see
    :func:`deploy_files`, which does several files for the cost of one).

    ``deploy_file(LocalTransport(), sys.executable, "/tmp/w", Path("m.tflite"), "models")`` gives
    ``Deployed("/tmp/w/models/<sha256>/m.tflite", "<sha256>", 2160)``, and ``bytes_sent=0`` the
    second time.
    """
    return deploy_files(transport, python, workdir, [(local_path, kind)])[0]


def remove_remote(transport: Transport, python: str, workdir: str, *paths: str) -> None:
    """Best-effort removal of files edgeq itself created inside ``workdir``."""
    root = check_workdir(workdir)
    inside = [p for p in paths if posixpath.normpath(p) == p and p.startswith(root + "/")]
    if inside:
        transport.run([python, "-S", "-c", REMOVE_PROGRAM, *inside], timeout=_CHECK_TIMEOUT_S)
