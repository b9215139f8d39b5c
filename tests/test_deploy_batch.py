"""Batch deploy against a real OpenSSH sshd on 127.0.0.1: no program on the device for a deploy that
goes well, at most one for one that resumes.

``deploy_files`` looks at what is there, makes directories and reads free space through SFTP;
``SSHTransport.put_many`` renames a file sent whole (hashed as sent, fsynced by the server) over SFTP
and verifies, renames and fsyncs the others (resumed ones) with one program run; a redeploy that
finds everything starts none. The "device" is this machine, so the tests look at the remote
side directly.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from conftest import missing_prerequisite
from support_faultproxy import FaultProxy
from support_sshd import SshServer, pin_host_key

from edgeq.devices.deploy import RemoteFile, deploy_files, remote_checks
from edgeq.devices.transports.local import LocalTransport
from edgeq.devices.transports.ssh import PART_SUFFIX, ConnectionLost, RetryPolicy, SSHTransport
from edgeq.devices.transports.transport import CommandResult
from edgeq.errors import DeviceError

DEVICE_PYTHON = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable
FAST = RetryPolicy(attempts=3, initial_delay_s=0.05, max_delay_s=0.2, transfer_stalls=4)


class Counting(SSHTransport):
    """The real transport, recording each command it starts on the device (argv[0] and the first
    word of a ``-c`` program's mode) so a test can say how many process starts a deploy cost."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.started: list[list[str]] = []

    def run(self, argv: Sequence[str], *args: Any, **kwargs: Any) -> CommandResult:
        self.started.append([str(a) for a in argv])
        return super().run(argv, *args, **kwargs)


def make(server: SshServer, workdir: Path, cls: type[SSHTransport] = Counting, **kw: Any) -> Any:
    opts: dict[str, Any] = {
        "port": server.port,
        "user": server.user,
        "identity_file": server.client_key,
        "workdir": str(workdir),
        "python": DEVICE_PYTHON,
        "retry": FAST,
    }
    opts.update(kw)
    return cls(server.host, **opts)


@pytest.fixture
def files(tmp_path: Path) -> list[Path]:
    """A model-sized file, a runner-sized one and a small one, with names a shell would trip on."""
    d = tmp_path / "local"
    d.mkdir()
    out = []
    for name, size in (("model $(touch x).tflite", 600_000), ("runner.pyz", 250_000), ("lib;ls.so", 3_000)):
        p = d / name
        p.write_bytes(os.urandom(size))
        out.append(p)
    return out


def sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def leftovers(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.endswith(PART_SUFFIX)]


def test_first_deploy_and_a_redeploy_start_no_program(
    trusted: SshServer, tmp_path: Path, files: list[Path]
) -> None:
    """What is there, the directories and the free space go through SFTP; uploads sent whole are
    fsynced and renamed through SFTP too. A file at its content address with its size is not sent
    again; one of another size (damaged on the device) is, alone."""
    wd = tmp_path / "device"
    kinds = [(files[0], "models"), (files[1], "runner"), (files[2], "lib")]
    with make(trusted, wd) as t:
        first = deploy_files(t, DEVICE_PYTHON, str(wd), kinds)
        assert t.started == [], [a[:4] for a in t.started]
        assert [d.bytes_sent for d in first] == [f.stat().st_size for f in files]
        for d, f, (_, kind) in zip(first, files, kinds, strict=True):
            assert d.remote_path == f"{wd}/{kind}/{sha(f)}/{f.name}" and d.sha256 == sha(f)
            assert Path(d.remote_path).read_bytes() == f.read_bytes()
        assert leftovers(wd) == [] and not (Path.cwd() / "x").exists()
        t.started.clear()
        again = deploy_files(t, DEVICE_PYTHON, str(wd), kinds)
        assert t.started == [] and [d.bytes_sent for d in again] == [0, 0, 0]
        assert [d.remote_path for d in again] == [d.remote_path for d in first]
        # one file damaged on the device: only that file sent
        Path(first[1].remote_path).write_bytes(b"damaged on the device")
        fixed = deploy_files(t, DEVICE_PYTHON, str(wd), kinds)
        assert t.started == [] and [d.bytes_sent for d in fixed] == [0, files[1].stat().st_size, 0]
        assert Path(first[1].remote_path).read_bytes() == files[1].read_bytes()


def test_an_absolute_workdir_needs_no_home_lookup(
    trusted: SshServer, tmp_path: Path, files: list[Path]
) -> None:
    """The redeploy path starts no process and never asks for the home directory."""
    wd = tmp_path / "device"
    with make(trusted, wd) as t:
        deploy_files(t, DEVICE_PYTHON, t.workdir, [(files[2], "lib")])
    with make(trusted, wd) as t:
        assert deploy_files(t, DEVICE_PYTHON, t.workdir, [(files[2], "lib")])[0].bytes_sent == 0
        assert t.started == [] and t._home is None


class NoStatvfs(Counting):
    """An SFTP server without OpenSSH's statvfs@openssh.com (as the transport finds it on one)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._statvfs_ext = False


def test_a_server_that_cannot_tell_free_space_gets_one_check_program(
    trusted: SshServer, tmp_path: Path, files: list[Path]
) -> None:
    """Without statvfs over SFTP the missing files' directories and free space come from the shell
    check (one program for all of them); a redeploy starts none."""
    wd = tmp_path / "device"
    kinds = [(files[0], "models"), (files[2], "lib")]
    with make(trusted, wd, NoStatvfs) as t:
        first = deploy_files(t, DEVICE_PYTHON, str(wd), kinds)
        assert [a[0] for a in t.started] == ["/bin/sh"]
        assert all(
            Path(d.remote_path).read_bytes() == f.read_bytes() for d, (f, _) in zip(first, kinds, strict=True)
        )
        t.started.clear()
        assert [d.bytes_sent for d in deploy_files(t, DEVICE_PYTHON, str(wd), kinds)] == [0, 0]
        assert t.started == []


def test_free_space_over_sftp_is_the_directory_s_own(trusted: SshServer, tmp_path: Path) -> None:
    """prepare_dirs makes the directories (and the workdir) and reads statvfs through SFTP: the free
    bytes os.statvfs sees there (give or take what others write meanwhile), one file system each."""
    wd = tmp_path / "device"
    with make(trusted, wd) as t:
        spaces = t.prepare_dirs([f"{wd}/models/abc", f"{wd}/lib/def/ghi"])
        assert t.started == []
    assert (wd / "models" / "abc").is_dir() and (wd / "lib" / "def" / "ghi").is_dir()
    st = os.statvfs(wd / "models" / "abc")
    assert spaces is not None and len(spaces) == 2
    assert abs(spaces[0].free_bytes - st.f_bavail * st.f_frsize) < 64 << 20
    assert spaces[0].device == spaces[1].device


class NoRenameNoFsync(Counting):
    """An SFTP server without posix-rename@openssh.com, or without fsync@openssh.com."""

    def __init__(self, *args: Any, rename: bool = True, fsync: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._rename_ext = None if rename else False
        self._fsync_ext = None if fsync else False


@pytest.mark.parametrize("rename, fsync", [(False, True), (True, False)])
def test_without_sftp_rename_or_fsync_the_program_finishes(
    trusted: SshServer, tmp_path: Path, files: list[Path], rename: bool, fsync: bool
) -> None:
    """A file sent whole is renamed over SFTP only when the server also fsynced it; otherwise one
    program (fsync, sha256, rename, directory fsync) finishes all of them."""
    wd = tmp_path / "device"
    with make(trusted, wd, NoRenameNoFsync, rename=rename, fsync=fsync) as t:
        assert t.put_many([(files[1], "a/r.pyz"), (files[2], "l.so")]) == [250_000, 3_000]
        assert [a[0] for a in t.started] == [DEVICE_PYTHON]
    assert (wd / "a" / "r.pyz").read_bytes() == files[1].read_bytes()
    assert (wd / "l.so").read_bytes() == files[2].read_bytes() and leftovers(wd) == []


def test_a_file_that_changed_after_it_was_hashed_never_gets_its_name(
    trusted: SshServer, tmp_path: Path, files: list[Path]
) -> None:
    """The bytes sent are hashed as they go: a local file rewritten between hashing and sending is
    not renamed over SFTP; the device's sha256 refuses it twice and the upload fails in one line,
    leaving neither the final name nor a partial."""
    wd = tmp_path / "device"
    f = files[2]
    was = sha(f)
    f.write_bytes(os.urandom(3_000))  # same size, other bytes
    with make(trusted, wd) as t:
        with pytest.raises(DeviceError, match=r"arrived damaged on .* twice") as e:
            t.put_many([(f, "models/x.tflite")], sha256s=[was])
        assert len(t.started) == 2 and "\n" not in str(e.value)
    assert not (wd / "models" / "x.tflite").exists() and leftovers(wd) == []


def test_a_link_that_goes_silent_while_looking_is_one_connection_lost(
    trusted: SshServer, tmp_path: Path, files: list[Path]
) -> None:
    """The pipelined SFTP requests wait io_timeout_s for their answers, then one ConnectionLost line."""
    wd = tmp_path / "device"
    with FaultProxy((trusted.host, trusted.port)) as px:
        pin_host_key(Path(os.environ["HOME"]), trusted, port=px.port)
        with make(trusted, wd, port=px.port, io_timeout_s=1.0) as t:
            assert t.file_sizes([f"{wd}/lib/x"]) == [None]
            px.freeze()
            t0 = time.monotonic()
            with pytest.raises(ConnectionLost, match="lost while looking at files") as e:
                deploy_files(t, DEVICE_PYTHON, str(wd), [(files[2], "lib")])
            assert time.monotonic() - t0 < 10 and "\n" not in str(e.value)
            assert t.started == []


def test_a_workdir_whose_parent_is_missing_is_made_by_the_check_program(
    trusted: SshServer, tmp_path: Path, files: list[Path]
) -> None:
    """SFTP makes directories inside the workdir only; when the workdir's own parent is missing the
    shell check's ``mkdir -p`` makes the whole path, and the deploy goes on."""
    wd = tmp_path / "not" / "yet" / "device"
    with make(trusted, wd) as t:
        got = deploy_files(t, DEVICE_PYTHON, str(wd), [(files[2], "lib")])
        assert [a[0] for a in t.started] == ["/bin/sh"]
    assert Path(got[0].remote_path).read_bytes() == files[2].read_bytes()


def test_a_file_listed_twice_is_sent_once(trusted: SshServer, tmp_path: Path, files: list[Path]) -> None:
    wd = tmp_path / "device"
    with make(trusted, wd) as t:
        got = deploy_files(t, DEVICE_PYTHON, str(wd), [(files[2], "lib"), (files[2], "lib")])
    assert [d.bytes_sent for d in got] == [files[2].stat().st_size, 0]
    assert got[0].remote_path == got[1].remote_path


def test_put_many_resumes_one_partial_and_restarts_a_torn_one(
    trusted: SshServer, tmp_path: Path, files: list[Path]
) -> None:
    wd = tmp_path / "device"
    wd.mkdir()
    good, torn = files[0], files[1]
    good_part = wd / f".{good.name}.{sha(good)[:16]}{PART_SUFFIX}"
    torn_part = wd / f".{torn.name}.{sha(torn)[:16]}{PART_SUFFIX}"
    good_part.write_bytes(good.read_bytes()[:250_000])  # left by a dropped upload
    torn_part.write_bytes(torn.read_bytes()[:100_000] + b"garbage!" * 100)  # its tail does not match
    with make(trusted, wd) as t:
        sent = t.put_many([(good, good.name), (torn, torn.name)])
        assert len(t.started) == 1  # the resumed one is finished by the program, the other over SFTP
    assert sent == [good.stat().st_size - 250_000, torn.stat().st_size]
    assert t.last_transfer.resumes == 1 and t.last_transfer.attempts == 1
    assert (wd / good.name).read_bytes() == good.read_bytes()
    assert (wd / torn.name).read_bytes() == torn.read_bytes()
    assert leftovers(wd) == []


def test_a_partial_that_is_wrong_inside_is_sent_again_and_never_renamed(
    trusted: SshServer, tmp_path: Path, files: list[Path]
) -> None:
    """The tail matches, the middle does not: the device's sha256 catches it, removes the partial and
    the file is sent whole once more."""
    wd = tmp_path / "device"
    wd.mkdir()
    f = files[0]
    data = bytearray(f.read_bytes()[:300_000])
    data[1000:1010] = b"0123456789"
    (wd / f".{f.name}.{sha(f)[:16]}{PART_SUFFIX}").write_bytes(bytes(data))
    with make(trusted, wd) as t:
        assert t.put_many([(f, f.name)]) == [f.stat().st_size - 300_000 + f.stat().st_size]
    assert t.last_transfer.restarts == 1 and (wd / f.name).read_bytes() == f.read_bytes()
    assert leftovers(wd) == []


def test_put_many_without_python_on_the_device(trusted: SshServer, tmp_path: Path, files: list[Path]) -> None:
    """A device with no Python (exit 127): sha256sum, sync and SFTP's rename finish a resumed upload."""
    wd = tmp_path / "device"
    (wd / "a").mkdir(parents=True)
    (wd / "a" / f".r.pyz.{sha(files[1])[:16]}{PART_SUFFIX}").write_bytes(files[1].read_bytes()[:100_000])
    with make(trusted, wd, python="/nonexistent/python3") as t:
        assert t.put_many([(files[1], "a/r.pyz"), (files[2], "b/l.so")]) == [150_000, 3_000]
        assert [a[0] for a in t.started] == ["/nonexistent/python3"] * 2 + ["sha256sum", "sync"]
    assert (wd / "a" / "r.pyz").read_bytes() == files[1].read_bytes()
    assert (wd / "b" / "l.so").read_bytes() == files[2].read_bytes()
    assert leftovers(wd) == []


def test_free_space_is_added_up_per_file_system(trusted: SshServer, tmp_path: Path) -> None:
    """Two files that each fit in a 256 KiB tmpfs but not together are refused before anything is
    sent, in one line naming both; one of them alone deploys."""
    if os.geteuid() != 0:
        missing_prerequisite("mounting a tmpfs for the free-space test needs root")
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)], check=True)
    try:
        a, b = tmp_path / "a.tflite", tmp_path / "b.tflite"
        a.write_bytes(os.urandom(150_000))
        b.write_bytes(os.urandom(150_000))
        wd = mnt / "device"
        with make(trusted, wd) as t:
            with pytest.raises(DeviceError, match=r"free in .*, a\.tflite, b\.tflite need 0\.3 MiB"):
                deploy_files(t, DEVICE_PYTHON, str(wd), [(a, "models"), (b, "models")])
            assert t.started == [] and [p for p in mnt.rglob("*") if p.is_file()] == []
            assert deploy_files(t, DEVICE_PYTHON, str(wd), [(a, "models")])[0].bytes_sent == 150_000
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_local_transport_deploys_a_batch_and_checks_it_after(tmp_path: Path, files: list[Path]) -> None:
    """A transport without put_many (the local device): put each, then one checking program."""
    wd = tmp_path / "device"
    calls: list[str] = []

    class Local(LocalTransport):
        def run(self, argv: Sequence[str], *args: Any, **kwargs: Any) -> CommandResult:
            calls.append(str(argv[4]))  # python -S -c PROGRAM mode ...
            return super().run(argv, *args, **kwargs)

    with Local() as t:
        first = deploy_files(t, sys.executable, str(wd), [(f, "models") for f in files])
        assert calls == ["sync"]
        again = deploy_files(t, sys.executable, str(wd), [(f, "models") for f in files])
    assert [d.bytes_sent for d in first] == [f.stat().st_size for f in files]
    assert [d.bytes_sent for d in again] == [0, 0, 0] and calls == ["sync"]
    assert all(Path(d.remote_path).read_bytes() == f.read_bytes() for d, f in zip(first, files, strict=True))


def test_a_batch_through_random_cuts_ends_whole_or_with_one_clean_error(
    trusted: SshServer, tmp_path: Path
) -> None:
    """Three files through a link cut 8 times at random offsets: every file complete and verified, or
    one clean DeviceError; never a partial file under a final name."""
    wd = tmp_path / "device"
    local = []
    for i, size in enumerate((1_500_000, 700_000, 900_000)):
        p = tmp_path / f"f{i}.bin"
        p.write_bytes(os.urandom(size))
        local.append(p)
    finals = [wd / "models" / p.name for p in local]
    bad_sizes: list[int] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            for p, f in zip(local, finals, strict=True):
                try:
                    size = f.stat().st_size
                except FileNotFoundError:
                    continue
                if size != p.stat().st_size:
                    bad_sizes.append(size)
            time.sleep(0.0005)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    with FaultProxy((trusted.host, trusted.port), cuts=8, max_offset=400_000, seed=7) as px:
        pin_host_key(Path(os.environ["HOME"]), trusted, port=px.port)
        retry = RetryPolicy(attempts=5, initial_delay_s=0.01, max_delay_s=0.1, transfer_stalls=6)
        t = make(trusted, wd, port=px.port, retry=retry)
        try:
            sent = t.put_many([(p, t.path("models", p.name)) for p in local])
            outcome = "ok"
        except DeviceError as exc:
            outcome, sent = f"DeviceError: {exc}", []
        finally:
            t.close()
    stop.set()
    watcher.join()
    print(f"\nbatch through cuts: {outcome}; cuts {sorted(px.stats.cut_offsets)}; {t.last_transfer}")
    assert not bad_sizes, f"a partial file appeared under a final name: sizes {bad_sizes[:5]}"
    if outcome == "ok":
        assert all(f.read_bytes() == p.read_bytes() for p, f in zip(local, finals, strict=True))
        assert sum(sent) >= sum(p.stat().st_size for p in local) and t.last_transfer.resumes >= 1
    else:
        assert "\n" not in outcome and not any(f.exists() for f in finals)


def _fresh_python(code: str, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, **(env or {})}
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_invoke_is_not_loaded_by_connecting_and_match_exec_still_works(tmp_path: Path) -> None:
    """paramiko imports `invoke` for `Match exec` alone: the SSH transport defers it (a start-up cost
    of every deploy) and a config with `Match exec` still resolves through it."""
    loaded = _fresh_python(
        "import sys, edgeq.devices.transports.ssh as s; "
        "m = sys.modules.get('invoke'); print(m is None or type(m).__name__)"
    )
    assert loaded in ("True", "_DeferredModule")
    cfg = tmp_path / "ssh_config"
    cfg.write_text('Match host lab-pi exec "test -d /"\n    HostName 10.9.8.7\n    Port 2222\n')
    found = _fresh_python(
        "import edgeq.devices.transports.ssh, sys; "
        "from edgeq.devices.transports.ssh_config import lookup; "
        "c = lookup('lab-pi'); print(c.hostname, c.port, type(sys.modules['invoke']).__name__)",
        {"EDGEQ_SSH_CONFIG": str(cfg)},
    )
    assert found == "10.9.8.7 2222 module"


def test_a_device_without_sha256sum_is_checked_by_python(
    tmp_path: Path, files: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The shell check needs sha256sum; where there is none (an empty PATH here) Python does it."""
    wd = tmp_path / "device"
    with LocalTransport() as t:
        first = deploy_files(t, sys.executable, str(wd), [(files[2], "lib")])
        empty = tmp_path / "empty-bin"
        empty.mkdir()
        monkeypatch.setenv("PATH", str(empty))
        calls: list[str] = []
        real_run = t.run

        def run(argv: Sequence[str], *args: Any, **kwargs: Any) -> CommandResult:
            calls.append(str(argv[0]))
            return real_run(argv, *args, **kwargs)

        monkeypatch.setattr(t, "run", run)
        found = remote_checks(t, sys.executable, [first[0].remote_path], expected_bytes=3_000)
    assert calls == ["/bin/sh", sys.executable]
    assert found == [RemoteFile(sha(files[2]))]


def test_some_files_together_and_others_alone_in_one_call(
    trusted: SshServer, tmp_path: Path, files: list[Path]
) -> None:
    """An IR's two files share a directory named by both; the runner keeps its own; one finish."""
    wd = tmp_path / "device"
    xml, bin_ = files[2], files[0]
    joint = hashlib.sha256((sha(xml) + sha(bin_)).encode()).hexdigest()
    with make(trusted, wd) as t:
        got = deploy_files(
            t,
            DEVICE_PYTHON,
            str(wd),
            [(files[1], "runner"), (xml, "models"), (bin_, "models")],
            together={xml, bin_},
        )
        assert t.started == []
    assert got[0].remote_path == f"{wd}/runner/{sha(files[1])}/{files[1].name}"
    assert [d.remote_path for d in got[1:]] == [
        f"{wd}/models/{joint}/{xml.name}",
        f"{wd}/models/{joint}/{bin_.name}",
    ]
    assert [d.sha256 for d in got] == [sha(files[1]), sha(xml), sha(bin_)]


def test_names_sha256sum_would_escape_are_checked_right(trusted: SshServer, tmp_path: Path) -> None:
    """GNU sha256sum marks a line whose file name has a backslash; the shell check reads it right."""
    wd = tmp_path / "device"
    f = tmp_path / "a\\b c.tflite"
    f.write_bytes(os.urandom(1000))
    with make(trusted, wd) as t:
        first = deploy_files(t, DEVICE_PYTHON, str(wd), [(f, "models")])
        t.started.clear()
        found = remote_checks(
            t, DEVICE_PYTHON, [first[0].remote_path, f"{wd}/models/x/y"], expected_bytes=1000
        )
        assert t.started[0][0] == "/bin/sh" and len(t.started) == 1
    assert first[0].bytes_sent == 1000 and found[0] == RemoteFile(sha(f)) and found[1].sha256 is None
    assert Path(first[0].remote_path).read_bytes() == f.read_bytes()
