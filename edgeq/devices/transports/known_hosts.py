"""Host-key checking: the user's ``~/.ssh/known_hosts`` plus edgeq's own pinned keys.

An unknown host is refused (its key type and SHA256 fingerprint are shown, with the flag that trusts
it); ``--trust-new-host`` pins it into ``$EDGEQ_HOME/known_hosts``; a key that differs from a known one
is always refused, whatever the flags. The files are read with a small OpenSSH-compatible parser
(hashed names, ``[host]:port``, ``*``/``?`` patterns, ``!`` negation, ``@revoked``) rather than
paramiko's ``HostKeys``, which does not understand patterns or markers. Nothing here imports
paramiko (commands that never connect do not pay for it); the policy object paramiko calls lives in
``ssh.py``.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import fcntl
import hashlib
import hmac
import os
import re
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from edgeq.errors import DeviceError
from edgeq.home import edgeq_home

if TYPE_CHECKING:
    import paramiko

TRUST_FLAG = "--trust-new-host"


def host_id(host: str, port: int) -> str:
    """The name OpenSSH files a key under: ``host`` on port 22, ``[host]:port`` otherwise."""
    return host if port == 22 else f"[{host}]:{port}"


def fingerprint(key_blob: bytes) -> str:
    """OpenSSH's ``SHA256:...`` fingerprint of a public key blob (as ``ssh-keygen -lf`` prints it)."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(key_blob).digest()).decode().rstrip("=")


@dataclass(frozen=True)
class KnownKey:
    """One host-key line that applies to a host: where it is, its type and blob, and any marker."""

    keytype: str
    blob: bytes
    source: Path
    lineno: int
    marker: str = ""  # "", "@revoked" or "@cert-authority"

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.blob)

    def describe(self) -> str:
        return f"{self.keytype} {self.fingerprint} ({self.source}:{self.lineno})"


def _hashed_match(pattern: str, name: str) -> bool:
    # |1|base64(salt)|base64(HMAC-SHA1(salt, name)) as written by HashKnownHosts / ssh-keygen -H.
    try:
        _, _, salt_b64, digest_b64 = pattern.split("|", 3)
        salt = base64.b64decode(salt_b64)
        digest = base64.b64decode(digest_b64)
    except (ValueError, binascii.Error):
        return False
    return hmac.compare_digest(hmac.new(salt, name.encode(), hashlib.sha1).digest(), digest)


def _glob(pattern: str, name: str) -> bool:
    """OpenSSH's host patterns: only ``*`` and ``?`` are special (``[`` is literal, as in [host]:port)."""
    rx = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(rx, name, re.DOTALL) is not None


def _names_match(field: str, name: str) -> bool:
    """OpenSSH host-pattern semantics: any positive match and no negated match."""
    matched = False
    for pat in field.split(","):
        if not pat:
            continue
        negate = pat.startswith("!")
        if negate:
            pat = pat[1:]
        hit = _hashed_match(pat, name) if pat.startswith("|1|") else _glob(pat.lower(), name.lower())
        if hit and negate:
            return False
        matched = matched or hit
    return matched


def read_known_hosts(path: Path, name: str) -> list[KnownKey]:
    """The keys in ``path`` that apply to ``name`` (``host`` or ``[host]:port``); unreadable → none."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return []
    found: list[KnownKey] = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        marker = ""
        if fields[0].startswith("@"):
            marker, fields = fields[0], fields[1:]
        if len(fields) < 3 or not _names_match(fields[0], name):
            continue
        try:
            blob = base64.b64decode(fields[2], validate=True)
        except binascii.Error:
            continue
        found.append(KnownKey(fields[1], blob, path, lineno, marker))
    return found


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Serialise writers of ``path`` (two edgeq processes pinning at once must not lose a key)."""
    lock = path.with_name(path.name + ".lock")
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def atomic_write_text(path: Path, text: str, mode: int = 0o600) -> None:
    """Write ``text`` to a temporary file beside ``path``, fsync, rename: readers see old or new."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


# Host-key algorithms a known key type can be negotiated as (RSA keys sign with SHA-2 nowadays).
_ALGORITHMS = {"ssh-rsa": ("rsa-sha2-512", "rsa-sha2-256")}


class KnownHosts:
    """The host keys edgeq trusts: ``user_file`` (read only) and ``edgeq_file`` (where pins go)."""

    def __init__(self, user_file: Path | None = None, edgeq_file: Path | None = None) -> None:
        self.user_file = user_file if user_file is not None else Path.home() / ".ssh" / "known_hosts"
        self.edgeq_file = edgeq_file if edgeq_file is not None else edgeq_home() / "known_hosts"
        # (file, name) -> (the file's (mtime_ns, size, inode) when read, its keys for name): a connection
        # asks twice (key types to offer, then the key presented), and a long hashed file costs an
        # HMAC per line and name. A file that changed is read again.
        self._read: dict[tuple[Path, str], tuple[tuple[int, int, int] | None, list[KnownKey]]] = {}

    def lookup(self, host: str, port: int) -> list[KnownKey]:
        name = host_id(host, port)
        return self._keys(self.edgeq_file, name) + self._keys(self.user_file, name)

    def _keys(self, path: Path, name: str) -> list[KnownKey]:
        try:
            st = path.stat()
            stamp: tuple[int, int, int] | None = (st.st_mtime_ns, st.st_size, st.st_ino)
        except OSError:
            stamp = None
        cached = self._read.get((path, name))
        if cached is not None and cached[0] == stamp and stamp is not None:
            return list(cached[1])
        keys = read_known_hosts(path, name)
        self._read[(path, name)] = (stamp, keys)
        return list(keys)

    def preferred_algorithms(self, host: str, port: int, offered: Sequence[str]) -> list[str]:
        """``offered`` host-key algorithms reordered so a type already known for the host comes first.

        Without this a server with several host keys could answer with a type we never pinned, which
        would look like a changed key.
        """
        first: list[str] = []
        for k in self.lookup(host, port):
            if k.marker:
                continue
            for alg in _ALGORITHMS.get(k.keytype, (k.keytype,)):
                if alg in offered and alg not in first:
                    first.append(alg)
        return first + [a for a in offered if a not in first]

    def verify(self, host: str, port: int, key: paramiko.PKey, trust_new_host: bool = False) -> str:
        """Accept ``key`` for ``host:port`` or raise DeviceError. Returns "known" or "pinned"."""
        name = host_id(host, port)
        blob = key.asbytes()
        keytype = key.get_name()
        fp = fingerprint(blob)
        known = self.lookup(host, port)
        for k in known:
            if k.marker == "@revoked" and k.blob == blob:
                raise DeviceError(
                    f"host key {keytype} {fp} of {name} is marked @revoked in {k.source}:{k.lineno}",
                    "the device's key was revoked on purpose: do not connect until it has a new key",
                )
        plain = [k for k in known if not k.marker]
        if any(k.blob == blob for k in plain):
            return "known"
        if plain:
            was = "; ".join(k.describe() for k in plain)
            raise DeviceError(
                f"host key of {name} has CHANGED: it now presents {keytype} {fp}, known was {was}",
                "this can be an attack; if the device was reinstalled, check the new fingerprint on its "
                "console (ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub), then remove the "
                f"old entry with: ssh-keygen -R '{name}' -f {plain[0].source}",
            )
        if not trust_new_host:
            raise DeviceError(
                f"unknown host key for {name}: {keytype} {fp}",
                f"check this fingerprint on the device (ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub), then "
                f"rerun with {TRUST_FLAG} to pin it in {self.edgeq_file}",
            )
        self.pin(host, port, key)
        return "pinned"

    def pin(self, host: str, port: int, key: paramiko.PKey) -> None:
        """Add ``key`` for ``host:port`` to edgeq's known-hosts file (atomically, under a lock)."""
        self.edgeq_file.parent.mkdir(parents=True, exist_ok=True)
        line = f"{host_id(host, port)} {key.get_name()} {key.get_base64()}\n"
        with _locked(self.edgeq_file):
            try:
                old = self.edgeq_file.read_text()
            except FileNotFoundError:
                old = ""
            if line in old.splitlines(keepends=True):
                return
            if old and not old.endswith("\n"):
                old += "\n"
            atomic_write_text(self.edgeq_file, old + line)
