"""A farm board from a real labgrid coordinator and exporter on loopback: the place is acquired, its
NetworkService (a real loopback sshd) is profiled, and the place is released — also on SIGTERM; a
place someone else holds is skipped with one line or waited for, and a second edgeq asking for the
same place waits for the first."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import missing_prerequisite
from support_cli import assert_clean_error, edgeq
from support_farm_run import farm_toml, intervals, json_lines, overlaps
from support_sshd import SshServer, free_port, loopback_profile, pin_host_key

from edgeq.farm.store import open_store

BIN = Path(sys.executable).parent


@dataclass
class Lab:
    coordinator: str
    place: str
    root: Path
    env: dict[str, str]

    def client(self, *args: str, user: str | None = None) -> subprocess.CompletedProcess[str]:
        env = {**self.env, **({"LG_USERNAME": user} if user else {})}
        return subprocess.run(
            [str(BIN / "labgrid-client"), "-x", self.coordinator, *args],
            capture_output=True, text=True, env=env, timeout=60, stdin=subprocess.DEVNULL,
        )  # fmt: skip

    def acquired_by(self) -> str | None:
        out = self.client("-p", self.place, "show").stdout
        line = next(ln for ln in out.splitlines() if ln.strip().startswith("acquired:"))
        who = line.split(":", 1)[1].strip()
        return None if who == "None" else who


def _start(argv: list[str], cwd: Path, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as f:
        # its own session: a signal meant for the test's process group does not stop it
        return subprocess.Popen(
            argv, cwd=cwd, stdout=f, stderr=f, stdin=subprocess.DEVNULL, start_new_session=True
        )


def _stop(p: subprocess.Popen[bytes]) -> None:
    if p.poll() is None:
        p.terminate()
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


@pytest.fixture
def lab(sshd: SshServer, ssh_env: Path, tmp_path: Path) -> Iterator[Lab]:
    """labgrid-coordinator on 127.0.0.1, an exporter publishing the loopback sshd as a NetworkService,
    and a place matching it (made the way an admin would, with labgrid-client)."""
    if not (BIN / "labgrid-coordinator").exists() or shutil.which("labgrid-client", path=str(BIN)) is None:
        missing_prerequisite("labgrid is not installed in this venv: pip install -e '.[test]'")
    root = tmp_path / "lab"
    root.mkdir()
    port = free_port()
    coordinator = f"127.0.0.1:{port}"
    env = {**os.environ, "LG_COORDINATOR": coordinator}
    coord = _start([str(BIN / "labgrid-coordinator"), "-l", coordinator], root, root / "coordinator.log")
    exporter = None
    try:
        (root / "exporter.yaml").write_text(
            f"board:\n  NetworkService:\n    address: 127.0.0.1\n    username: {sshd.user}\n    port: {sshd.port}\n"
        )
        deadline = time.monotonic() + 120  # a loaded 2-core machine starts Python slowly
        # The exporter gives up when the coordinator is not there yet: start it once it listens.
        while True:
            assert coord.poll() is None, (root / "coordinator.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "labgrid-coordinator did not start listening"
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.2)
        argv = [str(BIN / "labgrid-exporter"), "-c", coordinator, "-n", "exp", "--hostname", "127.0.0.1",
                str(root / "exporter.yaml")]  # fmt: skip
        exporter = _start(argv, root, root / "exporter.log")
        lab = Lab(coordinator, "edgeq-board", root, env)
        while "exp/board/NetworkService" not in lab.client("resources").stdout:
            assert time.monotonic() < deadline, (root / "exporter.log").read_text()[-2000:]
            assert coord.poll() is None, (root / "coordinator.log").read_text()[-2000:]
            if exporter.poll() is not None:  # it lost the coordinator while starting: again
                exporter = _start(argv, root, root / "exporter.log")
            time.sleep(0.3)
        assert lab.client("-p", lab.place, "create").returncode == 0
        assert lab.client("-p", lab.place, "add-match", "exp/board/*").returncode == 0
        pin_host_key(ssh_env, sshd)
        yield lab
    finally:
        if exporter is not None:
            _stop(exporter)
        _stop(coord)


def _farm(lab: Lab, sshd: SshServer, tmp_path: Path, model: Path, name: str, **labgrid: Any) -> Path:
    # The profile says what the board is; its address comes from the place (the profile's own host is
    # a placeholder that must not be used).
    prof = loopback_profile(sshd, tmp_path / name, sys.executable)
    text = (
        prof.read_text()
        .replace('host = "127.0.0.1"', 'host = "from-the-place.invalid"')
        .replace(f"port = {sshd.port}", "port = 1")
    )
    prof.write_text(text)
    lg = {"coordinator": lab.coordinator, "busy": "wait", "wait_s": 60, **labgrid}
    extra = "[labgrid]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in lg.items())
    extra += "[measure]\nruns = 30\nwarmup = 2\n"
    return farm_toml(tmp_path / f"{name}.toml", [{"path": model}],
                     [{"profile": prof, "name": "lab-board", "labgrid_place": lab.place}], extra=extra)  # fmt: skip


def test_a_place_is_acquired_profiled_and_released(
    lab: Lab, sshd: SshServer, tmp_path: Path, tiny_model: Path
) -> None:
    farm = _farm(lab, sshd, tmp_path, tiny_model, "one")
    db = tmp_path / "r.db"
    run = edgeq("farm", "run", farm, "--db", db, "--json", timeout=300)
    assert run.code == 0, run.stderr
    events = json_lines(run.stdout)
    states = [e.get("state") for e in events if e["event"] == "board"]
    assert states.index("acquired") < states.index("released")
    acquired = next(e for e in events if e.get("state") == "acquired")
    assert f"{sshd.user}@127.0.0.1:{sshd.port}" in acquired["message"]
    assert lab.acquired_by() is None  # released
    with open_store(str(db)) as store:
        (row,) = store.results(events[-1]["run"]["id"])
    assert row.ok and row.device == "lab-board" and row.result is not None
    assert row.result.device.name == "lab-board" and row.metrics.latency_n == 30


@pytest.mark.slow
def test_a_place_someone_else_holds_is_skipped_or_waited_for(
    lab: Lab, sshd: SshServer, tmp_path: Path, tiny_model: Path
) -> None:
    assert lab.client("-p", lab.place, "acquire", user="alice").returncode == 0
    try:
        skip = edgeq("farm", "run", _farm(lab, sshd, tmp_path, tiny_model, "skip", busy="skip"), "--db",
                     tmp_path / "r.db", "--json", timeout=120)  # fmt: skip
        assert skip.code == 0, skip.stderr
        skipped = [ln for ln in skip.stderr.splitlines() if "skipped" in ln]
        assert len(skipped) == 1 and "held by someone else" in skipped[0]
        summary = json_lines(skip.stdout)[-1]
        assert summary["boards"]["lab-board"]["state"] == "skipped" and summary["incomplete"] == [
            ["tiny_int8", "lab-board"]
        ]

        t0 = time.monotonic()
        wait = edgeq("farm", "run", _farm(lab, sshd, tmp_path, tiny_model, "wait", wait_s=2), "--db",
                     tmp_path / "r.db", timeout=120)  # fmt: skip
        assert time.monotonic() - t0 >= 2
        assert_clean_error(wait, 3, "labgrid place edgeq-board is busy: acquired by", "/alice")
        assert lab.acquired_by() is not None and lab.acquired_by().endswith("/alice")  # not taken from alice
    finally:
        lab.client("-p", lab.place, "release", user="alice")

    # alice releases it while edgeq waits: edgeq goes on
    assert lab.client("-p", lab.place, "acquire", user="alice").returncode == 0
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgeq", "farm", "run", str(_farm(lab, sshd, tmp_path, tiny_model, "later")),
         "--db", str(tmp_path / "r.db"), "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    time.sleep(3)
    assert lab.client("-p", lab.place, "release", user="alice").returncode == 0
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    states = [e.get("state") for e in json_lines(out) if e["event"] == "board"]
    assert states.index("waiting") < states.index("acquired") < states.index("released")


@pytest.mark.slow
def test_a_second_edgeq_waits_for_the_first_and_sigterm_releases_the_place(
    lab: Lab, sshd: SshServer, tmp_path: Path, tiny_model: Path
) -> None:
    procs = []
    for name in ("first", "second"):
        farm = _farm(lab, sshd, tmp_path / name, tiny_model, name)
        with open(farm, "a") as f:
            f.write("min_seconds = 1\n")
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "edgeq",
                    "farm",
                    "run",
                    str(farm),
                    "--db",
                    str(tmp_path / f"{name}.db"),
                    "--json",
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )  # fmt: skip
        )
        time.sleep(0.5)
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [e for _, e in outs]
    a, b = (intervals(json_lines(o)) for o, _ in outs)
    assert a and b and not overlaps(a, b)
    assert any(e.get("state") == "waiting" for o, _ in outs for e in json_lines(o))
    assert lab.acquired_by() is None

    # SIGTERM while the board is busy: the run stops and the place is released
    farm = _farm(lab, sshd, tmp_path / "term", tiny_model, "term")
    with open(farm, "a") as f:
        f.write("min_seconds = 60\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgeq", "farm", "run", str(farm), "--db", str(tmp_path / "term.db"), "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    for line in proc.stdout:
        if json.loads(line).get("event") == "measure":
            break
    time.sleep(1)
    assert lab.acquired_by() is not None
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    assert proc.returncode == 130
    assert lab.acquired_by() is None
    with open_store(str(tmp_path / "term.db")) as store:
        assert store.runs()[0].status == "interrupted"
