"""The one rule for remote paths: everything edgeq touches on a device stays inside its workdir.

A profile's ``workdir`` is absolute or starts with ``~/`` (the remote home), has no ``..`` and is a
directory of edgeq's own (not ``/`` or ``~``). Once the home is known it becomes an absolute POSIX
path, and every path below it is built with :func:`remote_path` (or checked with :func:`confine`),
which refuse ``..``, absolute components, NUL and control characters. Transports and deploy use
only these functions.
"""

from __future__ import annotations

import posixpath
import re

from edgeq.errors import UserInputError

_KIND = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")


def check_workdir_spec(workdir: str) -> str:
    """A profile's workdir as written (absolute or ``~/...``), checked; returned normalised."""
    if not workdir or "\x00" in workdir:
        raise UserInputError(f"bad device workdir {workdir!r}", "set workdir to an absolute path or ~/...")
    if not (workdir.startswith("/") or workdir.startswith("~/")):
        raise UserInputError(
            f"device workdir must be absolute or start with ~/, got {workdir!r}",
            'set for example workdir = "~/edgeq" in the device profile',
        )
    if ".." in workdir.split("/"):
        raise UserInputError(
            f"device workdir must not contain '..': {workdir!r}", "write the path out in full"
        )
    root = posixpath.normpath(workdir)
    if root.startswith("//"):
        root = "/" + root.lstrip("/")
    if root in ("/", "~"):
        raise UserInputError(
            f"device workdir must be a directory of edgeq's own, not {workdir!r}", 'use e.g. "~/edgeq"'
        )
    return root


def resolve_workdir(workdir: str, home: str) -> str:
    """``workdir`` (absolute or ``~/...``) as an absolute path, ``~`` being ``home``."""
    spec = check_workdir_spec(workdir)
    if spec.startswith("~/"):
        return remote_path(check_workdir(home), spec[2:])
    return check_workdir(spec)


def check_workdir(workdir: str) -> str:
    """An absolute, normalised POSIX directory (``~`` already expanded by whoever knows the home)."""
    if not workdir or "\x00" in workdir or not posixpath.isabs(workdir):
        raise UserInputError(
            f"device workdir must be an absolute POSIX path, got {workdir!r}",
            "set the device's workdir to an absolute path such as /home/pi/.cache/edgeq",
        )
    if ".." in workdir.split("/"):
        raise UserInputError(
            f"device workdir must not contain '..': {workdir!r}", "write the path out in full"
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
    if not SHA256_HEX.match(sha256):
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


def remote_path(workdir: str, *parts: str) -> str:
    """``workdir`` joined with ``parts``, refusing anything that could leave ``workdir``.

    ``remote_path("/home/pi/edgeq", "models", "a b;$(x).tflite")`` gives
    ``"/home/pi/edgeq/models/a b;$(x).tflite"``; ``".."``, absolute parts and NUL raise
    UserInputError. ``workdir`` is absolute (see :func:`resolve_workdir`).
    """
    root = check_workdir(workdir)
    comps: list[str] = []
    for part in parts:
        if not isinstance(part, str) or "\x00" in part:
            raise UserInputError(f"bad remote path component {part!r}", "use a plain file name")
        if part.startswith("/"):
            raise UserInputError(
                f"remote path component {part!r} is absolute", "give paths relative to the workdir"
            )
        for comp in part.split("/"):
            if comp in ("", "."):
                continue
            if comp == "..":
                raise UserInputError(
                    f"remote path component {part!r} contains '..'",
                    "paths must stay inside the device workdir",
                )
            comps.append(comp)
    return "/".join([root, *comps])


def is_inside(workdir: str, path: str) -> bool:
    """True when normalised ``path`` is ``workdir`` or below it (both absolute POSIX paths)."""
    if "\x00" in path or not path.startswith("/"):
        return False
    norm = posixpath.normpath(path)
    root = posixpath.normpath(workdir)
    return norm == root or norm.startswith(root.rstrip("/") + "/")


def confine(workdir: str, remote: str) -> str:
    """``remote`` (relative to ``workdir``, or absolute) checked to be strictly inside ``workdir``."""
    if not isinstance(remote, str) or not remote or "\x00" in remote:
        raise UserInputError(f"bad remote path {remote!r}", "build remote paths with remote_path()")
    root = check_workdir(workdir)
    full = remote if remote.startswith("/") else posixpath.join(root, remote)
    if remote.startswith("~") or not is_inside(root, full) or posixpath.normpath(full) == root:
        raise UserInputError(
            f"remote path {remote!r} is outside the device workdir {root}",
            "edgeq only writes inside the workdir of the device profile",
        )
    return posixpath.normpath(full)
