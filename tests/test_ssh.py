"""SSHTransport, host keys and `devices check/setup` against a real OpenSSH sshd on 127.0.0.1.

The "device" is this machine reached over SSH, so the tests can look at the remote side directly
(files in tmp dirs, processes in /proc).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import pwd
import signal
import subprocess
import sys
import threading
import time
import uuid
import zipfile
from collections.abc import Callable
from pathlib import Path

import paramiko
import pytest
from support_faultproxy import FaultProxy
from support_sshd import SshServer, free_port, keygen, loopback_profile, pin_host_key
from typer.testing import CliRunner

from edgeq.cli.devices_commands import app as devices_app
from edgeq.devices import check as device_check
from edgeq.devices import setup as device_setup
from edgeq.devices.connect import device_python
from edgeq.devices.paths import check_workdir_spec, is_inside, remote_path, resolve_workdir
from edgeq.devices.profile import load_profile
from edgeq.devices.transports.known_hosts import fingerprint
from edgeq.devices.transports.local import LocalTransport
from edgeq.devices.transports.ssh import (
    PART_SUFFIX,
    CommandTimeout,
    ConnectionLost,
    RetryPolicy,
    SSHTransport,
)
from edgeq.errors import DeviceError, UserInputError

DEVICE_PYTHON = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable
FAST = RetryPolicy(attempts=3, initial_delay_s=0.05, max_delay_s=0.2, transfer_stalls=4)


def make(server: SshServer, workdir: Path, **kw: object) -> SSHTransport:
    opts: dict[str, object] = {
        "port": server.port,
        "user": server.user,
        "identity_file": server.client_key,
        "workdir": str(workdir),
        "python": DEVICE_PYTHON,
        "retry": FAST,
    }
    opts.update(kw)
    return SSHTransport(server.host, **opts)  # type: ignore[arg-type]


def ssh_keygen_fingerprint(pub_line: str, tmp: Path) -> str:
    """What OpenSSH itself prints for a key (to compare our fingerprint with)."""
    f = tmp / f"k{uuid.uuid4().hex}.pub"
    f.write_text(pub_line + "\n")
    out = subprocess.run(["ssh-keygen", "-lf", str(f)], capture_output=True, text=True, check=True).stdout
    return out.split()[1]


def pids_with(token: str) -> list[int]:
    """Processes whose command line contains ``token`` (the remote side is this machine)."""
    found = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            cmdline = (d / "cmdline").read_bytes()
            state = (d / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if token.encode() in cmdline and state != "Z":
            found.append(int(d.name))
    return found


def wait_until(cond: Callable[[], bool], timeout: float = 5.0) -> float:
    """Seconds until ``cond()`` held; fails after ``timeout``."""
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            pytest.fail(f"condition not met within {timeout} s")
        time.sleep(0.02)
    return time.monotonic() - t0


LOOP = "import sys, time\nprint('started', flush=True)\nwhile True:\n    time.sleep(0.05)\n"


# ------------------------------------------------------------------------------------ paths


def test_remote_path_confines_to_workdir() -> None:
    assert remote_path("/w", "models", "a b;$(x).tflite") == "/w/models/a b;$(x).tflite"
    assert remote_path("/w/", "./a//b/", "c") == "/w/a/b/c"
    assert resolve_workdir("~/edgeq", "/home/pi") == "/home/pi/edgeq"
    assert resolve_workdir("/srv/e", "/home/pi") == "/srv/e"
    for bad in (("..",), ("a/../../etc",), ("/etc/passwd",), ("a\x00b",)):
        with pytest.raises(UserInputError):
            remote_path("/w", *bad)
    for bad_root in ("relative", "/", "", "/a/../b", "~other/x", "~/edgeq"):
        with pytest.raises(UserInputError):
            remote_path(bad_root, "x")
    for bad_spec in ("relative", "/", "~", "~/", "", "~/a/../b", "~other/x"):
        with pytest.raises(UserInputError):
            check_workdir_spec(bad_spec)
    assert is_inside("/w", "/w/a") and not is_inside("/w", "/wx/a") and not is_inside("/w", "/w/../etc")


def test_is_executable_asks_sftp_without_starting_a_process(
    trusted: SshServer, wd: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What ``test -x`` answers, through SFTP: no command (and no login shell's rc files) on the device."""
    (wd / "venv" / "bin").mkdir(parents=True)
    exe, plain = wd / "venv" / "bin" / "python", wd / "data.txt"
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    plain.write_text("x")
    (wd / "link").symlink_to(exe)
    with make(trusted, wd) as t:
        t.connect()
        _ = t.workdir
        commands: list[str] = []
        real_exec = paramiko.Channel.exec_command
        monkeypatch.setattr(
            paramiko.Channel, "exec_command", lambda ch, cmd: (commands.append(cmd), real_exec(ch, cmd))[1]
        )
        assert t.is_executable(str(exe)) and t.is_executable(str(wd / "link"))
        assert not t.is_executable(str(plain)) and not t.is_executable(str(wd / "venv"))
        assert not t.is_executable(str(wd / "missing"))
        with pytest.raises(UserInputError):
            t.is_executable("/bin/sh")  # outside the workdir
        assert commands == []
        assert t.run(["true"]).exit_code == 0 and len(commands) == 1  # the counter does count


def test_put_and_get_refuse_paths_outside_the_workdir(trusted: SshServer, wd: Path, tmp_path: Path) -> None:
    src = tmp_path / "f.bin"
    src.write_bytes(b"x")
    with make(trusted, wd) as t:
        for bad in ("../escape.bin", "/etc/edgeq-escape", str(wd), f"{wd}/../escape.bin", "~/escape"):
            with pytest.raises(UserInputError, match="outside the device workdir"):
                t.put(src, bad)
        with pytest.raises(UserInputError):
            t.get("/etc/hostname", tmp_path / "h")
        assert t.put(src, "rel/f.bin") == 1 and (wd / "rel" / "f.bin").read_bytes() == b"x"
    assert not (wd.parent / "escape.bin").exists()


# ------------------------------------------------------------------------------------ run


def test_run_exit_codes_stdout_stderr(trusted: SshServer, wd: Path) -> None:
    with make(trusted, wd) as t:
        r = t.run(["sh", "-c", "echo out; echo err >&2; exit 7"])
        assert (r.exit_code, r.stdout, r.stderr) == (7, "out\n", "err\n")
        assert t.run(["true"]).exit_code == 0
        assert t.run(["no-such-program-edgeq"]).exit_code == 127
        assert t.run(["sh", "-c", "kill -9 $$"]).exit_code == 128 + 9
        assert t.run(["printf", "no newline"]).stdout == "no newline"


def test_arguments_arrive_verbatim_and_nothing_is_executed(
    trusted: SshServer, wd: Path, tmp_path: Path
) -> None:
    canary = tmp_path / f"x-{uuid.uuid4().hex}"
    weird = [
        "a b",
        "",
        "'",
        '"',
        "\\",
        f"$(touch {canary})",
        f"`touch {canary}`",
        f"; touch {canary}",
        f"&& touch {canary}",
        f"| touch {canary}",
        "$HOME",
        "*",
        "-n",
        "line1\nline2",
        "tab\there",
        "ünïcødé ✓",
        "a b;$(touch x).tflite",
    ]
    remote_x = Path(pwd.getpwuid(os.getuid()).pw_dir) / "x"  # where a bare `touch x` would land
    x_before = remote_x.exists()
    with make(trusted, wd) as t:
        r = t.run([DEVICE_PYTHON, "-c", "import json, sys; print(json.dumps(sys.argv[1:]))", *weird])
        # and through a program that is not Python
        assert t.run(["printf", "%s|", *weird[:5]]).stdout == "|".join(weird[:5]) + "|"
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout) == weird
    assert not canary.exists()
    assert remote_x.exists() == x_before


def test_stdout_lines_stream_as_they_come(trusted: SshServer, wd: Path) -> None:
    seen: list[tuple[str, float]] = []
    prog = "import time\nfor i in range(3):\n    print('line', i, flush=True)\n    time.sleep(0.4)\n"
    with make(trusted, wd) as t:
        t.connect()
        t0 = time.monotonic()
        r = t.run(
            [DEVICE_PYTHON, "-c", prog], on_stdout_line=lambda s: seen.append((s, time.monotonic() - t0))
        )
        total = time.monotonic() - t0
    assert [s for s, _ in seen] == ["line 0", "line 1", "line 2"] and r.stdout == "line 0\nline 1\nline 2\n"
    # the first line arrived long before the command ended
    assert seen[0][1] < total - 0.6, (seen, total)


def test_timeout_kills_the_remote_process(trusted: SshServer, wd: Path) -> None:
    token = f"edgeq-test-{uuid.uuid4().hex}"
    with make(trusted, wd) as t:
        t0 = time.monotonic()
        with pytest.raises(CommandTimeout, match="timed out after 1 s"):
            t.run([DEVICE_PYTHON, "-c", LOOP, token], timeout=1)
        assert time.monotonic() - t0 < 6
        wait_until(lambda: not pids_with(token), 3)
        assert t.run(["true"]).exit_code == 0  # the connection is still usable
        # a process that ignores SIGTERM gets SIGKILL after the grace period
        stubborn = "import signal\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n" + LOOP
        t0 = time.monotonic()
        with pytest.raises(DeviceError, match="timed out"):
            t.run([DEVICE_PYTHON, "-c", stubborn, token], timeout=0.5)
        assert not pids_with(token) and time.monotonic() - t0 < 8


def test_ctrl_c_stops_the_remote_process(trusted: SshServer, wd: Path) -> None:
    token = f"edgeq-test-{uuid.uuid4().hex}"
    main = threading.main_thread().ident
    assert main is not None

    def on_line(line: str) -> None:
        if line == "started":
            assert pids_with(token), "remote process should be running"
            threading.Timer(0.2, signal.pthread_kill, (main, signal.SIGINT)).start()

    with make(trusted, wd) as t:
        t0 = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            t.run([DEVICE_PYTHON, "-c", LOOP, token], on_stdout_line=on_line)
        took = time.monotonic() - t0
        # by the time KeyboardInterrupt reaches us, the remote process group has been stopped
        assert not pids_with(token), "Ctrl-C must kill the remote process"
        assert took < 8
        assert t.run(["true"]).exit_code == 0


def test_connection_vanishing_mid_command_is_a_device_error_and_kills_remote(
    trusted: SshServer, wd: Path
) -> None:
    with FaultProxy((trusted.host, trusted.port)) as px, make(trusted, wd, port=px.port) as t:
        # the proxy's [host]:port has the same server key
        pin_host_key(Path(os.environ["HOME"]), trusted, port=px.port)
        assert "edgeq devices check" in lost_mid_command(t, px).hint


def lost_mid_command(t: SSHTransport, px: FaultProxy) -> ConnectionLost:
    """Cut every connection through ``px`` while ``t`` runs a command: one ConnectionLost line within
    10 s, and the command stopped on the device (sshd notices the session is gone and the wrapper's
    watcher stops it)."""
    token = f"edgeq-test-{uuid.uuid4().hex}"

    def on_line(line: str) -> None:
        if line == "started":
            threading.Timer(0.3, px.cut_all).start()

    t0 = time.monotonic()
    with pytest.raises(ConnectionLost, match="lost while running") as e:
        t.run([DEVICE_PYTHON, "-c", LOOP, token], on_stdout_line=on_line, timeout=60)
    assert time.monotonic() - t0 < 10 and "\n" not in str(e.value)
    wait_until(lambda: not pids_with(token), 5)
    return e.value


def test_a_silent_link_is_detected_not_waited_on(trusted: SshServer, wd: Path) -> None:
    token = f"edgeq-test-{uuid.uuid4().hex}"
    with FaultProxy((trusted.host, trusted.port)) as px:
        pin_host_key(Path(os.environ["HOME"]), trusted, port=px.port)
        t = make(trusted, wd, port=px.port, keepalive_s=0.5, dead_after_s=2.0)

        def on_line(line: str) -> None:
            if line == "started":
                px.freeze()

        t0 = time.monotonic()
        with pytest.raises(ConnectionLost, match="no answer for 2 s"):
            t.run([DEVICE_PYTHON, "-c", LOOP, token], on_stdout_line=on_line, timeout=60)
        assert time.monotonic() - t0 < 8
        t.close()
        px.thaw()
        px.cut_all()
        wait_until(lambda: not pids_with(token), 5)


# ------------------------------------------------------------------------------------ files


def test_put_get_round_trip(trusted: SshServer, wd: Path, tmp_path: Path) -> None:
    data = os.urandom(1_500_000)
    src = tmp_path / "model.tflite"
    src.write_bytes(data)
    name = "a b;$(touch x).tflite"
    with make(trusted, wd) as t:
        remote = t.path("models", "abc", name)
        assert remote == f"{wd}/models/abc/{name}"
        assert t.put(src, remote) == len(data)
        assert t.last_transfer.attempts == 1 and t.last_transfer.resumes == 0
        assert (wd / "models" / "abc" / name).read_bytes() == data
        assert not list((wd / "models" / "abc").glob(f"*{PART_SUFFIX}"))
        assert t.sha256(remote) == hashlib.sha256(data).hexdigest()
        assert t.file_sizes([remote, t.path("nope")]) == [len(data), None]
        back = tmp_path / "back" / "m.tflite"
        t.get(remote, back)
        assert back.read_bytes() == data
        # a partial download is resumed; one that belongs to other content is started over
        partial = back.with_name(f".m.tflite{PART_SUFFIX}")
        back.unlink()
        partial.write_bytes(data[:700_000])
        t.get(remote, back)
        assert back.read_bytes() == data and not partial.exists()
        partial.write_bytes(b"stale" * 1000)
        t.get(remote, back)
        assert back.read_bytes() == data and not partial.exists()
        # overwrite with other content: the final name goes from old to new, never partial
        src.write_bytes(b"small")
        assert t.put(src, remote) == 5 and (wd / "models" / "abc" / name).read_bytes() == b"small"
        with pytest.raises(DeviceError, match="no file"):
            t.get(t.path("missing"), tmp_path / "x")
        with pytest.raises(UserInputError, match="file not found"):
            t.put(tmp_path / "missing", t.path("m"))
    assert not (wd / "x").exists() and not (wd / "models" / "abc" / "x").exists()


def test_a_refusing_server_is_not_retried(trusted: SshServer, wd: Path, tmp_path: Path) -> None:
    src = tmp_path / "m.bin"
    src.write_bytes(b"data")
    (wd / "blocker").write_text("a file where a directory should be")
    with make(trusted, wd) as t:
        t0 = time.monotonic()
        with pytest.raises(DeviceError, match="cannot write") as e:
            t.put(src, "blocker/m.bin")
        assert time.monotonic() - t0 < 3 and t.last_transfer.attempts == 1
        assert "free space" in e.value.hint


def test_put_resumes_a_trustworthy_partial_and_restarts_a_bad_one(
    trusted: SshServer, wd: Path, tmp_path: Path
) -> None:
    data = os.urandom(600_000)
    src = tmp_path / "m.bin"
    src.write_bytes(data)
    sha = hashlib.sha256(data).hexdigest()
    part = wd / f".m.bin.{sha[:16]}{PART_SUFFIX}"
    with make(trusted, wd) as t:
        part.write_bytes(data[:250_000])  # left by a dropped upload
        assert t.put(src, "m.bin") == len(data) - 250_000
        assert t.last_transfer.resumes == 1 and (wd / "m.bin").read_bytes() == data and not part.exists()
        part.write_bytes(data[:200_000] + b"garbage!" * 100)  # torn: its tail does not match
        assert t.put(src, "m.bin") == len(data) and t.last_transfer.resumes == 0
        assert (wd / "m.bin").read_bytes() == data


def test_upload_through_20_random_cuts(trusted: SshServer, wd: Path, tmp_path: Path) -> None:
    """Acceptance: an upload whose connection is cut 20 times at random offsets ends with a complete,
    verified file or a clean DeviceError, and never a truncated file under the final name."""
    data = os.urandom(4 * 1024 * 1024)
    src = tmp_path / "big.bin"
    src.write_bytes(data)
    final = wd / "models" / "big.bin"
    seen_sizes: list[int] = []
    stop = threading.Event()

    def watch() -> None:  # the device is this machine: look at the final name all the time
        while not stop.is_set():
            try:
                size = final.stat().st_size
            except FileNotFoundError:
                pass
            else:
                if size != len(data):
                    seen_sizes.append(size)
            time.sleep(0.0005)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    seed = int(os.environ.get("EDGEQ_FAULT_SEED", "20"))
    with FaultProxy((trusted.host, trusted.port), cuts=20, max_offset=len(data) // 10, seed=seed) as px:
        pin_host_key(Path(os.environ["HOME"]), trusted, port=px.port)
        retry = RetryPolicy(attempts=5, initial_delay_s=0.01, max_delay_s=0.1, transfer_stalls=6)
        t = make(trusted, wd, port=px.port, retry=retry)
        t0 = time.monotonic()
        outcome = "ok"
        try:
            sent = t.put(src, t.path("models", "big.bin"))
        except DeviceError as exc:
            outcome = f"DeviceError: {exc}"
            sent = -1
        took = time.monotonic() - t0
        t.close()
    stop.set()
    watcher.join()
    stats = t.last_transfer
    print(
        f"\nfault-proxy upload: {outcome}; {len(px.stats.cut_offsets)} cuts at "
        f"{sorted(px.stats.cut_offsets)}; connections {px.stats.connections}; attempts {stats.attempts}, "
        f"resumes {stats.resumes}, restarts {stats.restarts}; connect failures retried {t.connect_failures}; "
        f"{sent} bytes sent for {len(data)}; {took:.2f} s"
    )
    assert not seen_sizes, f"a partial file appeared under the final name: sizes {seen_sizes[:5]}"
    if outcome == "ok":
        assert final.read_bytes() == data
        assert len(px.stats.cut_offsets) == 20, "all 20 cuts happened during the upload"
        assert stats.resumes >= 10
    else:
        assert not final.exists()
        assert "\n" not in outcome


def test_a_link_that_never_lets_a_handshake_through_fails_cleanly(
    trusted: SshServer, wd: Path, tmp_path: Path
) -> None:
    src = tmp_path / "m.bin"
    src.write_bytes(os.urandom(100_000))
    with FaultProxy((trusted.host, trusted.port), cuts=100, max_offset=1500, seed=3) as px:
        pin_host_key(Path(os.environ["HOME"]), trusted, port=px.port)
        t = make(trusted, wd, port=px.port)
        t0 = time.monotonic()
        with pytest.raises(DeviceError) as e:
            t.put(src, "m.bin")
        assert "after 3 attempts" in e.value.message and "\n" not in e.value.message
        assert time.monotonic() - t0 < 5
    assert not (wd / "m.bin").exists()


# ------------------------------------------------------------------------------------ connections


def test_unknown_host_is_refused_with_fingerprint_then_pinned(
    sshd: SshServer, ssh_env: Path, wd: Path
) -> None:
    expected_fp = ssh_keygen_fingerprint(sshd.host_key_pub, ssh_env)
    edgeq_kh = ssh_env / ".cache" / "edgeq" / "known_hosts"
    with pytest.raises(DeviceError) as e:
        make(sshd, wd).connect()
    msg = e.value.message
    assert f"[127.0.0.1]:{sshd.port}" in msg and "ssh-ed25519" in msg and expected_fp in msg
    assert "--trust-new-host" in e.value.hint and "\n" not in msg
    assert not edgeq_kh.exists()

    t = make(sshd, wd, trust_new_host=True)
    t.connect()
    assert t.host_key_outcome == "pinned"
    t.close()
    line = edgeq_kh.read_text().strip()
    assert line == f"[127.0.0.1]:{sshd.port} {' '.join(sshd.host_key_pub.split()[:2])}"
    assert (edgeq_kh.stat().st_mode & 0o777) == 0o600

    t = make(sshd, wd)  # no flag: now known
    assert t.run(["true"]).exit_code == 0 and t.host_key_outcome == "known"
    t.close()


def _ssh_config(home: Path, **hosts: dict[str, object]) -> None:
    """Write ``~/.ssh/config`` in the test's private HOME: one ``Host`` block per keyword."""
    lines = []
    for alias, opts in hosts.items():
        lines.append(f"Host {alias}")
        lines += [f"    {key} {value}" for key, value in opts.items()]
    (home / ".ssh" / "config").write_text("\n".join(lines) + "\n")


def test_ssh_config_gives_host_name_port_user_and_key(trusted: SshServer, ssh_env: Path, wd: Path) -> None:
    """A profile whose host is an alias of ~/.ssh/config connects with that file's HostName, Port,
    User and IdentityFile; the host key is checked for the real address."""
    _ssh_config(
        ssh_env,
        **{
            "lab-board": {
                "HostName": trusted.host,
                "Port": trusted.port,
                "User": trusted.user,
                "IdentityFile": trusted.client_key,
            }
        },
    )
    profiles = wd.parent / "profiles"
    profiles.mkdir()
    (profiles / "lab.toml").write_text(
        f'extends = "generic-x86_64"\nhost = "lab-board"\nworkdir = "{wd}"\npython = "{DEVICE_PYTHON}"\n'
    )
    t = SSHTransport.from_profile(load_profile("lab", [profiles]), retry=FAST)
    assert (t.host, t.port, t.user, t.identity_file) == (
        trusted.host,
        trusted.port,
        trusted.user,
        trusted.client_key,
    )
    assert t.run(["echo", "via config"]).stdout == "via config\n" and t.host_key_outcome == "known"
    t.close()


def _jump_config(home: Path, jump: SshServer, device: SshServer) -> None:
    """``board`` is ``device`` reached through ``gw``, which is ``jump``."""
    key = device.client_key
    _ssh_config(
        home,
        gw={"HostName": jump.host, "Port": jump.port, "IdentityFile": key},
        board={"HostName": device.host, "Port": device.port, "IdentityFile": key, "ProxyJump": "gw"},
    )


def test_proxy_jump_connects_through_the_jump_host(
    sshd_factory: Callable[..., SshServer], ssh_env: Path, wd: Path
) -> None:
    jump, device = sshd_factory(), sshd_factory()
    pin_host_key(ssh_env, jump)
    pin_host_key(ssh_env, device)
    _jump_config(ssh_env, jump, device)
    t = SSHTransport("board", workdir=str(wd), python=DEVICE_PYTHON, retry=FAST)
    assert [h.host for h in t.jumps] == ["gw"]
    assert t.run(["echo", "jumped"]).stdout == "jumped\n"
    t.close()
    # The route really is through the jump host: without it the device cannot be reached.
    jump.stop()
    with pytest.raises(
        DeviceError, match=rf"cannot connect to .*:{jump.port} \(jump host for .*:{device.port}\)"
    ):
        SSHTransport("board", workdir=str(wd), python=DEVICE_PYTHON, retry=FAST).connect()


def test_proxy_jump_failures_are_one_clear_line(
    sshd_factory: Callable[..., SshServer], ssh_env: Path, wd: Path
) -> None:
    """A jump host that does not forward, and a jump host whose key is unknown, each give one line
    naming the jump host; nothing is trusted silently along the way."""
    no_forward, device = sshd_factory(extra=("AllowTcpForwarding no",)), sshd_factory()
    pin_host_key(ssh_env, no_forward)
    pin_host_key(ssh_env, device)
    _jump_config(ssh_env, no_forward, device)
    with pytest.raises(DeviceError) as e:
        SSHTransport("board", workdir=str(wd), python=DEVICE_PYTHON, retry=FAST).connect()
    assert f":{no_forward.port} did not forward to 127.0.0.1:{device.port}" in e.value.message
    assert "AllowTcpForwarding" in e.value.hint and "\n" not in e.value.message

    unknown = sshd_factory()  # its host key is not pinned
    _jump_config(ssh_env, unknown, device)
    with pytest.raises(DeviceError, match=rf"\[127\.0\.0\.1\]:{unknown.port}"):
        SSHTransport("board", workdir=str(wd), python=DEVICE_PYTHON, retry=FAST).connect()
    with pytest.raises(UserInputError, match="ProxyJump hop 'a b'"):
        SSHTransport("board", proxy_jump="a b", workdir=str(wd), python=DEVICE_PYTHON)


def test_user_known_hosts_hashed_entries_are_honoured(sshd: SshServer, ssh_env: Path, wd: Path) -> None:
    kh = ssh_env / ".ssh" / "known_hosts"
    kh.write_text(f"[{sshd.host}]:{sshd.port} {sshd.host_key_pub}\n")
    subprocess.run(["ssh-keygen", "-H", "-f", str(kh)], check=True, capture_output=True)
    assert kh.read_text().startswith("|1|")
    with make(sshd, wd) as t:
        assert t.run(["true"]).exit_code == 0 and t.host_key_outcome == "known"


def test_changed_host_key_is_refused_even_with_trust(
    sshd_factory: Callable[..., SshServer], ssh_env: Path, wd: Path
) -> None:
    first = sshd_factory()
    with make(first, wd, trust_new_host=True) as t:
        t.connect()
    port = first.port
    first.stop()
    second = sshd_factory(port=port)  # same address, new host key: a reinstalled board, or an attacker
    old_fp = ssh_keygen_fingerprint(first.host_key_pub, ssh_env)
    new_fp = ssh_keygen_fingerprint(second.host_key_pub, ssh_env)
    kh = ssh_env / ".cache" / "edgeq" / "known_hosts"
    before = kh.read_text()
    for trust in (False, True):
        with pytest.raises(DeviceError) as e:
            make(second, wd, trust_new_host=trust).connect()
        assert "CHANGED" in e.value.message and old_fp in e.value.message and new_fp in e.value.message
        assert "ssh-keygen -R" in e.value.hint
    assert kh.read_text() == before, "a changed key is never pinned"


def test_revoked_key_and_other_key_types(sshd: SshServer, ssh_env: Path, wd: Path, tmp_path: Path) -> None:
    kh = ssh_env / ".ssh" / "known_hosts"
    kh.write_text(f"@revoked * {sshd.host_key_pub}\n")
    with pytest.raises(DeviceError, match="revoked"):
        make(sshd, wd, trust_new_host=True).connect()
    # only a key of another type is known: treated as changed (OpenSSH's strict checking agrees)
    keygen(tmp_path / "rsa_other", "x")
    other = (tmp_path / "rsa_other.pub").read_text().split()
    kh.write_text(f"[{sshd.host}]:{sshd.port} ecdsa-sha2-nistp256 {other[1]}\n")
    with pytest.raises(DeviceError, match="CHANGED"):
        make(sshd, wd, trust_new_host=True).connect()
    blob = base64.b64decode(sshd.host_key_pub.split()[1])
    assert fingerprint(blob) == ssh_keygen_fingerprint(sshd.host_key_pub, tmp_path)


def test_refused_connections_are_retried_a_bounded_number_of_times(
    ssh_env: Path, wd: Path, tmp_path: Path
) -> None:
    key = tmp_path / "id"
    keygen(key)
    port = free_port()  # nothing listens here
    t = SSHTransport(
        "127.0.0.1",
        port=port,
        identity_file=key,
        workdir=str(wd),
        retry=RetryPolicy(attempts=4, initial_delay_s=0.1, factor=2.0, max_delay_s=1.0),
    )
    t0 = time.monotonic()
    with pytest.raises(DeviceError) as e:
        t.run(["true"])
    took = time.monotonic() - t0
    assert "after 4 attempts" in e.value.message and "connection refused" in e.value.message
    assert "\n" not in e.value.message and t.connect_failures == 4
    assert 0.7 <= took < 2.5, took  # waits 0.1 + 0.2 + 0.4 s between the four attempts, then gives up


def test_auth_failure_is_immediate_and_passwords_never_used(
    sshd: SshServer, ssh_env: Path, wd: Path, tmp_path: Path
) -> None:
    pin_host_key(ssh_env, sshd)
    stranger = tmp_path / "stranger"
    keygen(stranger)
    t0 = time.monotonic()
    with pytest.raises(DeviceError, match="authentication failed") as e:
        make(sshd, wd, identity_file=stranger).connect()
    assert time.monotonic() - t0 < 3 and "ssh-copy-id" in e.value.hint
    with pytest.raises(UserInputError, match="does not exist"):
        make(sshd, wd, identity_file=tmp_path / "missing").connect()
    enc = tmp_path / "encrypted"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "secret", "-f", str(enc)], check=True)
    with pytest.raises(DeviceError, match="encrypted") as e:
        make(sshd, wd, identity_file=enc).connect()
    assert "ssh-add" in e.value.hint


def test_from_profile(trusted: SshServer, wd: Path, tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="has no host"):
        SSHTransport.from_profile(load_profile("rpi4"))
    prof = tmp_path / "p" / "loop.toml"
    prof.parent.mkdir()
    prof.write_text(
        f'extends = "generic-x86_64"\nhost = "{trusted.host}"\nport = {trusted.port}\nuser = "{trusted.user}"\n'
        f'identity_file = "{trusted.client_key}"\nworkdir = "~/edgeq-test-{uuid.uuid4().hex}"\n'
    )
    p = load_profile(str(prof))
    with SSHTransport.from_profile(p) as t:
        assert t.workdir == f"{t.home}/{p.endpoint.workdir[2:]}" and t.workdir.startswith("/")
        assert t.name == "loop" and t.run(["true"]).exit_code == 0


# ------------------------------------------------------------------------------------ devices check / setup


def test_devices_check_local() -> None:
    report = device_check.check_device(load_profile("local"))
    items = {i.name: i for i in report.items}
    assert report.ok, [i for i in report.items if i.status == "FAIL"]
    assert items["connect"].detail.startswith("local") and items["arch"].status == "OK"
    assert items["runtime"].status == "OK" and "ai-edge-litert 2.3.0" in items["runtime"].detail
    assert items["delegate"].detail.startswith("xnnpack")
    for name in ("python", "os", "numpy", "governor", "thermal", "power", "workdir"):
        assert name in items, name
    assert report.facts["machine"] == os.uname().machine
    res = CliRunner().invoke(devices_app, ["check", "local", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["status"] in ("OK", "WARN")


def test_devices_check_over_ssh_and_the_cli_host_key_flow(
    sshd: SshServer, ssh_env: Path, tmp_path: Path
) -> None:
    prof = loopback_profile(sshd, tmp_path / "p", sys.executable)  # edgeq's venv has ai-edge-litert
    runner = CliRunner()
    res = runner.invoke(devices_app, ["check", str(prof), "--json"])
    assert res.exit_code == 3
    report = json.loads(res.stdout)
    connect = next(i for i in report["items"] if i["name"] == "connect")
    assert (
        connect["status"] == "FAIL"
        and "unknown host key" in connect["detail"]
        and "SHA256:" in connect["detail"]
    )
    assert "--trust-new-host" in connect["hint"]

    res = runner.invoke(devices_app, ["check", str(prof), "--trust-new-host", "--json"])
    assert res.exit_code == 0, res.stdout
    items = {i["name"]: i for i in json.loads(res.stdout)["items"]}
    assert "host key pinned now" in items["connect"]["detail"]
    assert items["arch"]["status"] == "OK" and items["runtime"]["status"] == "OK"
    assert items["venv"]["status"] == "WARN" and "devices setup" in items["venv"]["hint"]

    res = runner.invoke(devices_app, ["check", str(prof)])  # pinned now: no flag needed
    assert res.exit_code == 0 and "pinned now" not in res.output


def _fake_wheel(d: Path) -> Path:
    """A tiny pure-Python wheel, so setup's pip install runs offline."""
    d.mkdir(parents=True, exist_ok=True)
    name, ver = "edgeq_fake_runtime", "1.0"
    files = {
        f"{name}/__init__.py": b"VERSION = '1.0'\n",
        f"{name}-{ver}.dist-info/METADATA": b"Metadata-Version: 2.1\nName: edgeq-fake-runtime\nVersion: 1.0\n",
        f"{name}-{ver}.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: edgeq-test\nRoot-Is-Purelib: true\n"
        b"Tag: py3-none-any\n",
    }
    record = []
    for path, content in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(content).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(content)}")
    record.append(f"{name}-{ver}.dist-info/RECORD,,")
    whl = d / f"{name}-{ver}-py3-none-any.whl"
    with zipfile.ZipFile(whl, "w") as z:
        for path, content in files.items():
            z.writestr(path, content)
        z.writestr(f"{name}-{ver}.dist-info/RECORD", "\n".join(record) + "\n")
    return d


def test_devices_setup_is_idempotent(trusted: SshServer, tmp_path: Path) -> None:
    wheels = _fake_wheel(tmp_path / "wheels")
    prof = loopback_profile(
        trusted, tmp_path / "p", DEVICE_PYTHON, pip_args=f'["--no-index", "--find-links", "{wheels}"]'
    )
    p = load_profile(str(prof))
    kw = {"requirements": ["edgeq-fake-runtime==1.0"], "module": "edgeq_fake_runtime"}
    pip_lines: list[str] = []
    first = device_setup.setup_device(p, on_output=pip_lines.append, **kw)  # type: ignore[arg-type]
    steps = {s.name: s for s in first.steps}
    assert first.ok, first.steps
    assert steps["workdir"].status == "done" and steps["venv"].status == "done"
    assert steps["packages"].status == "done" and "edgeq-fake-runtime 1.0" in steps["packages"].detail
    assert steps["runtime"].status == "ok"
    assert any("Successfully installed" in line for line in pip_lines)
    venv_py = tmp_path / "p" / "workdir" / "venv" / "bin" / "python"
    assert first.python == str(venv_py) and venv_py.exists()
    cfg = (venv_py.parent.parent / "pyvenv.cfg").read_text()
    assert "include-system-site-packages = true" in cfg

    second = device_setup.setup_device(p, **kw)  # type: ignore[arg-type]
    assert second.ok and not second.changed, second.steps
    assert [s.status for s in second.steps] == ["ok"] * len(second.steps)
    assert "already installed" in {s.name: s for s in second.steps}["packages"].detail

    with SSHTransport.from_profile(p) as t:
        assert device_python(t, p, t.workdir) == str(venv_py)


def test_setup_reports_failures_as_steps(trusted: SshServer, tmp_path: Path) -> None:
    prof = loopback_profile(trusted, tmp_path / "p", "/no/such/python3")
    report = device_setup.setup_device(load_profile(str(prof)))
    assert not report.ok and report.steps[-1].name == "python" and "not found" in report.steps[-1].detail
    template = device_setup.setup_device(load_profile("rpi4"))
    assert not template.ok and "--host" in template.steps[0].hint


def test_local_transport_satisfies_the_same_calls(tmp_path: Path) -> None:
    # what check and setup rely on works the same through LocalTransport
    p = load_profile("local")
    t = LocalTransport(p.endpoint.workdir)
    assert t.workdir == p.endpoint.workdir and t.is_local and t.connect() == "local device (no SSH)"
    assert device_python(t, p, t.workdir) == sys.executable
