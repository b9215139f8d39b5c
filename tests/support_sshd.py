"""A real OpenSSH sshd on 127.0.0.1 for tests: free port, per-run host and user keys, torn down after.

Use the fixtures ``sshd`` (one server per test session), ``sshd_factory`` (start more, e.g. with another
host key) and ``ssh_env`` (a private HOME / EDGEQ_HOME so no test touches the real known_hosts). The
"device" is this machine: the remote user is the current user, files land in the per-run tmp dirs.

sshd missing: the tests that need it are skipped with the install command, except under CI=true,
where they fail, so a CI image without openssh-server cannot pass silently.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

SSHD = Path(os.environ.get("EDGEQ_TEST_SSHD", "/usr/sbin/sshd"))
SSH_KEYGEN = shutil.which("ssh-keygen") or "/usr/bin/ssh-keygen"


@dataclass
class SshServer:
    """One running sshd. ``host_key_pub`` is the OpenSSH public key line of its ed25519 host key."""

    host: str
    port: int
    user: str
    client_key: Path
    host_key: Path
    host_key_pub: str
    root: Path
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def log(self) -> str:
        path = self.root / "sshd.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


def require_sshd() -> None:
    """Skip (or fail under CI=true) when OpenSSH's sshd is not installed."""
    if SSHD.exists() and Path(SSH_KEYGEN).exists():
        return
    msg = (
        f"OpenSSH sshd not found at {SSHD}: install it with 'apt-get install -y openssh-server' "
        "(or point EDGEQ_TEST_SSHD at an sshd binary)"
    )
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(msg, pytrace=False)
    pytest.skip(msg)


def keygen(path: Path, comment: str = "edgeq-test") -> str:
    """Make an unencrypted ed25519 key pair at ``path``; return the public key line."""
    subprocess.run(
        [SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
        capture_output=True,
    )
    return Path(f"{path}.pub").read_text().strip()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_banner(port: int, proc: subprocess.Popen[bytes], deadline_s: float) -> bool:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if proc.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                if s.recv(64).startswith(b"SSH-2.0"):
                    return True
        except OSError:
            time.sleep(0.02)
    return False


def start_sshd(
    root: Path,
    client_key: Path,
    host_key: Path | None = None,
    port: int | None = None,
    extra: tuple[str, ...] = (),
) -> SshServer:
    """Start sshd with its own config under ``root``; ``host_key`` defaults to a fresh one; ``extra``
    lines are appended to its sshd_config (e.g. ``"AllowTcpForwarding no"``)."""
    require_sshd()
    root.mkdir(parents=True, exist_ok=True)
    if host_key is None:
        host_key = root / "ssh_host_ed25519_key"
        keygen(host_key, "edgeq-test-host")
    host_key_pub = Path(f"{host_key}.pub").read_text().strip()
    authorized = root / "authorized_keys"
    authorized.write_text(Path(f"{client_key}.pub").read_text())
    os.chmod(authorized, 0o600)
    Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # privilege-separation dir sshd insists on
    user = getpass.getuser()
    last_log = ""
    for _ in range(5):  # the free port can be taken between probing and binding: try another
        p = port or free_port()
        conf = root / "sshd_config"
        conf.write_text(
            "\n".join(
                [
                    f"Port {p}",
                    "ListenAddress 127.0.0.1",
                    f"HostKey {host_key}",
                    f"PidFile {root / 'sshd.pid'}",
                    f"AuthorizedKeysFile {authorized}",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "PubkeyAuthentication yes",
                    "PermitRootLogin prohibit-password",
                    f"AllowUsers {user}",
                    "UsePAM no",
                    "StrictModes no",
                    "UseDNS no",
                    "MaxStartups 100",
                    "MaxSessions 50",
                    "LogLevel ERROR",
                    "Subsystem sftp internal-sftp",
                    *extra,
                    "",
                ]
            )
        )
        log = open(root / "sshd.log", "ab")  # noqa: SIM115 - lives as long as the server
        proc = subprocess.Popen(
            [str(SSHD), "-D", "-e", "-f", str(conf)], stdout=log, stderr=log, stdin=subprocess.DEVNULL
        )
        log.close()
        if _wait_banner(p, proc, 10.0):
            return SshServer("127.0.0.1", p, user, client_key, host_key, host_key_pub, root, proc)
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        last_log = (root / "sshd.log").read_text(errors="replace")
        if port is not None:
            break
    pytest.fail(f"sshd did not start: {last_log.strip()[-500:]}", pytrace=False)


@pytest.fixture(scope="session")
def sshd_keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The per-run client key (ed25519, no passphrase)."""
    require_sshd()
    d = tmp_path_factory.mktemp("sshkeys")
    key = d / "id_ed25519"
    keygen(key, "edgeq-test-client")
    return key


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory, sshd_keys: Path) -> Iterator[SshServer]:
    """One sshd for the whole session (starting one costs ~50 ms, but tests share it happily)."""
    server = start_sshd(tmp_path_factory.mktemp("sshd"), sshd_keys)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def sshd_factory(tmp_path: Path, sshd_keys: Path) -> Iterator[object]:
    """``sshd_factory(host_key=None, port=None, extra=()) -> SshServer``; every server is stopped after
    the test."""
    servers: list[SshServer] = []

    def make(host_key: Path | None = None, port: int | None = None, extra: tuple[str, ...] = ()) -> SshServer:
        root = Path(tempfile.mkdtemp(dir=tmp_path, prefix="sshd-"))
        server = start_sshd(root, sshd_keys, host_key, port, extra)
        servers.append(server)
        return server

    try:
        yield make
    finally:
        for s in servers:
            s.stop()


@pytest.fixture
def ssh_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private HOME and EDGEQ_HOME: known_hosts files start empty and stay in tmp."""
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("EDGEQ_HOME", str(home / ".cache" / "edgeq"))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)  # keys only from the test, never a real agent
    monkeypatch.delenv("EDGEQ_PROFILES", raising=False)
    return home


@pytest.fixture
def trusted(sshd: SshServer, ssh_env: Path) -> SshServer:
    """The session sshd with its host key pinned in this test's private EDGEQ_HOME."""
    pin_host_key(ssh_env, sshd)
    return sshd


@pytest.fixture
def wd(tmp_path: Path) -> Path:
    """A work directory for the "device" (this machine over SSH)."""
    d = tmp_path / "device-workdir"
    d.mkdir()
    return d


def pin_host_key(home: Path, server: SshServer, line: str | None = None, port: int | None = None) -> None:
    """Write ``server``'s host key (or another key ``line``) into the private EDGEQ_HOME known_hosts,
    for its own port or ``port`` (a proxy in front of it)."""
    kh = home / ".cache" / "edgeq" / "known_hosts"
    kh.parent.mkdir(parents=True, exist_ok=True)
    keytype, b64 = (line or server.host_key_pub).split()[:2]
    with open(kh, "a") as f:
        f.write(f"[{server.host}]:{port or server.port} {keytype} {b64}\n")


@contextlib.contextmanager
def running_sshd(root: Path, client_key: Path) -> Iterator[SshServer]:
    """Context-manager form for scripts and benchmarks."""
    server = start_sshd(root, client_key)
    try:
        yield server
    finally:
        server.stop()


def loopback_profile(server: SshServer, d: Path, python: str, **extra: str) -> Path:
    """A profile file for ``server`` (generic-x86_64 underneath) in ``d``; returns its path."""
    d.mkdir(parents=True, exist_ok=True)
    lines = [
        'extends = "generic-x86_64"',
        f'host = "{server.host}"',
        f"port = {server.port}",
        f'user = "{server.user}"',
        f'identity_file = "{server.client_key}"',
        f'workdir = "{d / "workdir"}"',
        f'python = "{python}"',
        "connect_retries = 2",
        "retry_delay_s = 0.05",
        *(f"{k} = {v}" for k, v in extra.items()),
    ]
    p = d / "loop.toml"
    p.write_text("\n".join(lines) + "\n")
    return p
