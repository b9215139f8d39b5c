"""Kept SSH connections (edgeq/devices/transports/keeper.py) against a real OpenSSH sshd on 127.0.0.1.

A transport that connected hands its board on to a keeper process when closed; the next transport
for the same board takes its channels from the keeper instead of connecting. Everything a direct
connection does must hold through a keeper: exit codes, stdout and stderr, streaming, timeouts and
Ctrl-C stopping the remote process, SFTP transfers, a dying link. The "device" is this machine.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import stat
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import missing_prerequisite
from support_cli import assert_clean_error, edgeq
from support_faultproxy import FaultProxy
from support_sshd import SshServer, keygen, loopback_profile, pin_host_key
from test_ssh import DEVICE_PYTHON, LOOP, lost_mid_command, make, pids_with, wait_until

from edgeq.devices.deploy import deploy_files
from edgeq.devices.transports import keeper
from edgeq.devices.transports.ssh import CommandTimeout, SSHTransport
from edgeq.errors import EXIT_BAD_INPUT, DeviceError


@pytest.fixture
def runtime(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A private XDG_RUNTIME_DIR (the keepers' sockets go to its edgeq/); keepers left at the end
    are stopped."""
    d = Path(f"/tmp/eqk-{uuid.uuid4().hex[:8]}")  # short: a socket path holds 108 bytes
    d.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(d))
    monkeypatch.setenv(keeper.ENV, "30")
    yield d
    keeper.stop_all()
    for p in keeper_pids(d):
        os.kill(p, signal.SIGKILL)
    subprocess.run(["rm", "-rf", str(d)], check=False)


def keeper_pids(runtime: Path) -> list[int]:
    """Keeper processes started under ``runtime`` (their environment names it)."""
    found = []
    for d in Path("/proc").iterdir():
        try:
            mine = f"XDG_RUNTIME_DIR={runtime}".encode()
            if (
                d.name.isdigit()
                and b"keeperd" in (d / "cmdline").read_bytes()
                and mine in (d / "environ").read_bytes().split(b"\0")
            ):
                found.append(int(d.name))
        except OSError:
            continue
    return found


def sockets(runtime: Path) -> list[Path]:
    return sorted((runtime / "edgeq").glob("*.sock")) if (runtime / "edgeq").exists() else []


def handed_on(server: SshServer, wd: Path, runtime: Path, **kw: object) -> SSHTransport:
    """Connect once and close (a keeper starts and takes over); return a new transport for the
    same board, which will take the keeper's connection."""
    with make(server, wd, persist_s=30.0, **kw) as first:
        first.connect()
        assert not first.kept
    wait_until(lambda: len(sockets(runtime)) == 1, 15)
    return make(server, wd, persist_s=30.0, **kw)


def test_the_next_transport_takes_the_kept_connection(trusted: SshServer, wd: Path, runtime: Path) -> None:
    """Commands through a keeper: exit codes, stdout, stderr, a signal, output without a newline and
    a megabyte of it, all as a direct connection gives them; the socket is private."""
    t = handed_on(trusted, wd, runtime)
    with t:
        said = t.connect()
        assert t.kept and "kept connection, keeper pid" in said, said
        r = t.run(["sh", "-c", "echo out; echo err >&2; exit 7"])
        assert (r.exit_code, r.stdout, r.stderr) == (7, "out\n", "err\n")
        assert t.run(["no-such-program-edgeq"]).exit_code == 127
        assert t.run(["sh", "-c", "kill -9 $$"]).exit_code == 128 + 9
        assert t.run(["printf", "no newline"]).stdout == "no newline"
        big = t.run(
            [DEVICE_PYTHON, "-c", "import sys; sys.stdout.write('x' * 1_000_000 + '\\n' + 'y' * 70_000)"]
        )
        assert big.stdout == "x" * 1_000_000 + "\n" + "y" * 70_000
        assert t.connects == 1 and t.kept
    # closing a kept transport starts no second keeper
    time.sleep(0.5)
    assert len(keeper_pids(runtime)) == 1 and len(sockets(runtime)) == 1
    d = runtime / "edgeq"
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    assert stat.S_IMODE(sockets(runtime)[0].stat().st_mode) == 0o600


def test_streaming_timeouts_and_ctrl_c_through_a_keeper(trusted: SshServer, wd: Path, runtime: Path) -> None:
    token = f"edgeq-test-{uuid.uuid4().hex}"
    seen: list[tuple[str, float]] = []
    prog = "import time\nfor i in range(3):\n    print('line', i, flush=True)\n    time.sleep(0.4)\n"
    with handed_on(trusted, wd, runtime) as t:
        t.connect()
        t0 = time.monotonic()
        t.run([DEVICE_PYTHON, "-c", prog], on_stdout_line=lambda s: seen.append((s, time.monotonic() - t0)))
        total = time.monotonic() - t0
        assert [s for s, _ in seen] == ["line 0", "line 1", "line 2"] and seen[0][1] < total - 0.6
        with pytest.raises(CommandTimeout, match="timed out after 1 s"):
            t.run([DEVICE_PYTHON, "-c", LOOP, token], timeout=1)
        wait_until(lambda: not pids_with(token), 3)
        main = threading.main_thread().ident
        assert main is not None

        def on_line(line: str) -> None:
            if line == "started":
                threading.Timer(0.2, signal.pthread_kill, (main, signal.SIGINT)).start()

        with pytest.raises(KeyboardInterrupt):
            t.run([DEVICE_PYTHON, "-c", LOOP, token], on_stdout_line=on_line)
        assert not pids_with(token)
        assert t.run(["true"]).exit_code == 0 and t.kept


def test_sftp_through_a_keeper_deploys_and_reads_back(
    trusted: SshServer, wd: Path, runtime: Path, tmp_path: Path
) -> None:
    """Uploads (pipelined writes, fsync and rename extensions), pipelined lookups, a download, and a
    redeploy that starts no process: the same through a keeper's SFTP channel."""
    model = tmp_path / "m.tflite"
    model.write_bytes(os.urandom(700_000))
    with handed_on(trusted, wd, runtime) as t:
        first = deploy_files(t, DEVICE_PYTHON, str(wd), [(model, "models")])
        assert t.kept and first[0].bytes_sent == 700_000
        assert Path(first[0].remote_path).read_bytes() == model.read_bytes()
        assert deploy_files(t, DEVICE_PYTHON, str(wd), [(model, "models")])[0].bytes_sent == 0
        t.get(first[0].remote_path, tmp_path / "back.tflite")
        assert (tmp_path / "back.tflite").read_bytes() == model.read_bytes()
        assert t.file_sizes([first[0].remote_path, f"{wd}/nothing"]) == [700_000, None]


def test_a_link_dying_under_a_kept_command_is_one_lost_connection(
    trusted: SshServer, wd: Path, runtime: Path
) -> None:
    """The keeper's link cut mid-command: ConnectionLost, the remote process stopped, the keeper gone
    (its socket removed), and the same transport goes on over a connection of its own."""
    with FaultProxy((trusted.host, trusted.port)) as px:
        pin_host_key(Path(os.environ["HOME"]), trusted, port=px.port)
        with handed_on(trusted, wd, runtime, port=px.port) as t:
            lost_mid_command(t, px)
            wait_until(lambda: not sockets(runtime) and not keeper_pids(runtime), 10)
            assert t.run(["true"]).exit_code == 0 and not t.kept


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        try:
            if d.name.isdigit():
                children.setdefault(int((d / "stat").read_text().rsplit(")", 1)[1].split()[1]), []).append(
                    int(d.name)
                )
        except OSError:
            continue
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def test_a_keeper_whose_link_stalled_is_left_for_a_connection_of_our_own(
    sshd_factory: Any, ssh_env: Path, wd: Path, runtime: Path
) -> None:
    """The server's end of the keeper's connection stops answering before the keeper notices: the
    channel it cannot open is opened over a new connection instead (nothing had run), and the
    command goes through; the keeper is told to quit."""
    server = sshd_factory()
    pin_host_key(ssh_env, server)
    t = handed_on(server, wd, runtime, connect_timeout_s=1.0)
    assert server.proc is not None
    frozen = descendants(server.proc.pid)  # the sshd processes of the keeper's connection
    assert frozen
    for pid in frozen:
        os.kill(pid, signal.SIGSTOP)
    try:
        with t:
            t0 = time.monotonic()
            assert t.run(["echo", "hi"]).stdout == "hi\n"
            assert not t.kept and time.monotonic() - t0 < 10
        wait_until(lambda: not keeper_pids(runtime), 15)
    finally:
        for pid in frozen:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                os.kill(pid, signal.SIGCONT)


def test_an_idle_keeper_leaves_and_a_killed_one_is_replaced(
    trusted: SshServer, wd: Path, runtime: Path
) -> None:
    with make(trusted, wd, persist_s=1.0) as t:
        t.connect()
    wait_until(lambda: len(sockets(runtime)) == 1, 15)
    took = wait_until(lambda: not sockets(runtime) and not keeper_pids(runtime), 10)
    assert took < 5
    # kill -9 leaves a stale socket: the next transport connects itself and a new keeper replaces it
    t = handed_on(trusted, wd, runtime)
    stale = sockets(runtime)[0]
    inode = stale.stat().st_ino
    (pid,) = keeper_pids(runtime)
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not keeper_pids(runtime), 5)
    assert stale.exists()
    with t:
        assert t.run(["true"]).exit_code == 0 and not t.kept
    wait_until(lambda: stale.exists() and stale.stat().st_ino != inode, 15)
    with make(trusted, wd, persist_s=30.0) as again:
        again.connect()
        assert again.kept and keeper_pids(runtime) != [pid]


def test_a_host_key_no_longer_trusted_is_refused_through_a_keeper(
    trusted: SshServer, wd: Path, runtime: Path, ssh_env: Path, tmp_path: Path
) -> None:
    """The keeper's connection was verified; the known-hosts file has changed since (the device's key
    replaced by another): the next command refuses it as a new connection would, and the keeper goes."""
    handed_on(trusted, wd, runtime).close()
    other = tmp_path / "otherkey"
    keygen(other, "not-the-device")
    known = ssh_env / ".cache" / "edgeq" / "known_hosts"
    known.write_text(
        f"[{trusted.host}]:{trusted.port} " + " ".join(Path(f"{other}.pub").read_text().split()[:2])
    )
    with make(trusted, wd, persist_s=30.0) as t:
        with pytest.raises(DeviceError, match="CHANGED"):
            t.connect()
        assert not t.kept
    wait_until(lambda: not sockets(runtime) and not keeper_pids(runtime), 10)


def test_nobody_else_gets_in(trusted: SshServer, wd: Path, runtime: Path) -> None:
    """Another user can reach neither the directory nor, when its mode is opened up, the keeper
    (it checks the peer's uid); a directory that is not private turns keepers off."""
    if os.geteuid() != 0 or not Path("/usr/bin/python3").exists():
        missing_prerequisite("switching to another user needs root and the system's /usr/bin/python3")
    handed_on(trusted, wd, runtime).close()
    path = str(sockets(runtime)[0])
    probe = """
import socket, sys
s = socket.socket(socket.AF_UNIX)
try:
    s.connect(sys.argv[1])
except OSError as e:
    print("refused", e.errno)
    sys.exit()
try:
    s.sendall(b'{"op": "hello"}\\n')
    got = s.recv(100)
except OSError:
    got = b""
print("answer", repr(got))
"""

    def as_nobody() -> str:
        p = subprocess.run(
            ["/usr/bin/python3", "-c", probe, path], user="nobody", capture_output=True, text=True, timeout=30
        )
        return p.stdout.strip() + p.stderr.strip()[-300:]

    assert as_nobody().startswith("refused")
    os.chmod(runtime, 0o711)
    os.chmod(runtime / "edgeq", 0o711)
    os.chmod(path, 0o666)
    assert as_nobody() == "answer b''"  # accepted by the kernel, closed by the keeper
    # a directory others may enter is not used at all
    assert keeper.directory() is None
    with make(trusted, wd, persist_s=30.0) as t:
        assert t.run(["true"]).exit_code == 0 and not t.kept


def test_a_fourth_command_at_once_connects_itself(trusted: SshServer, wd: Path, runtime: Path) -> None:
    """A keeper serves three commands at once (sshd allows ten channels per connection); more
    connect themselves."""
    held = [handed_on(trusted, wd, runtime)]
    held += [make(trusted, wd, persist_s=30.0) for _ in range(2)]
    try:
        for t in held:
            t.connect()
            assert t.kept
        with make(trusted, wd, persist_s=30.0) as fourth:
            assert fourth.run(["true"]).exit_code == 0 and not fourth.kept
    finally:
        for t in held:
            t.close()


def test_the_cli_keeps_the_connection_between_commands(
    trusted: SshServer, runtime: Path, tmp_path: Path, tiny_model: Path
) -> None:
    """edgeq deploy, then a redeploy through the keeper the first left; devices disconnect ends it;
    EDGEQ_SSH_PERSIST_S=0 leaves none."""
    prof = loopback_profile(trusted, tmp_path / "prof", DEVICE_PYTHON)
    model = tiny_model
    first = edgeq("deploy", model, "--device", prof, "--json")
    assert first.code == 0, first.stderr
    assert json.loads(first.stdout)["bytes_sent"] >= model.stat().st_size
    wait_until(lambda: len(sockets(runtime)) == 1, 15)
    check = edgeq("devices", "check", prof)
    assert "kept connection, keeper pid" in check.stdout, check.stdout
    again = edgeq("deploy", model, "--device", prof, "--json")
    assert again.code == 0 and json.loads(again.stdout)["bytes_sent"] == 0, again.stderr
    stop = edgeq("devices", "disconnect")
    assert stop.code == 0 and stop.stdout.strip() == "closed: loop", stop.stdout
    wait_until(lambda: not sockets(runtime) and not keeper_pids(runtime), 10)
    assert edgeq("devices", "disconnect").stdout.strip() == "no kept connections"
    assert list((runtime / "edgeq").iterdir()) == []  # the gone keeper's lock file tidied up too
    for bad in ("soon", "-5", "nan"):
        assert_clean_error(
            edgeq("deploy", model, "--device", prof, env={keeper.ENV: bad}), EXIT_BAD_INPUT, keeper.ENV
        )
    off = edgeq("deploy", model, "--device", prof, env={keeper.ENV: "0"})
    assert off.code == 0, off.stderr
    time.sleep(1.0)
    assert not keeper_pids(runtime) and not sockets(runtime)


def test_keeper_answers_nothing_but_its_requests(trusted: SshServer, wd: Path, runtime: Path) -> None:
    """A request it does not know, or one that is not JSON, gets an error (or the door), and the
    keeper goes on serving."""
    handed_on(trusted, wd, runtime).close()
    path = str(sockets(runtime)[0])
    for line in (b'{"op": "format-disk"}\n', b"not json\n"):
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(10)
            s.connect(path)
            s.sendall(line)
            got = s.recv(200)
        assert got == b"" or not json.loads(got)["ok"], got
    with make(trusted, wd, persist_s=30.0) as t:
        assert t.run(["true"]).exit_code == 0 and t.kept
