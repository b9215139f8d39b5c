"""The pytest plugin as a user meets it: `pytest --edgeq-farm FARM.toml` in a project of their own (a
subprocess pytest finding the plugin through its pytest11 entry point), over the local device and a
board on a loopback sshd; `edgeq_requires` skips boards without a capability; the measurements are
in the results store."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest
from conftest import missing_prerequisite
from support_farm_run import board_profile, farm_toml
from support_sshd import pin_host_key

from edgeq.farm.store import open_store

BOARD_TESTS = """
import pytest


def test_latency(edgeq_board):
    r = edgeq_board.measure("tiny", runs=40)
    assert r.latency_us.n == 40
    assert r.device.name == edgeq_board.name


@pytest.mark.edgeq_requires("edgetpu")
def test_needs_a_coral(edgeq_board):
    edgeq_board.measure("tiny")


@pytest.mark.edgeq_requires("camera", "x86_64")
def test_needs_a_camera(edgeq_board, edgeq_farm):
    r = edgeq_board.measure("tiny", runs=20, threads=2)
    assert r.execution.threads == 2
    assert edgeq_farm.plan.name == "plugin-farm"
"""


def _pytest(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:labgrid", "-rs", "-v", *args],
        cwd=root, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def test_board_tests_are_ordinary_pytest(sshd: Any, ssh_env: Path, tmp_path: Path, tiny_model: Path) -> None:
    if not any(
        e.name == "edgeq" and e.value == "edgeq.farm.pytest_plugin" for e in entry_points(group="pytest11")
    ):
        missing_prerequisite("edgeq's pytest11 entry point is not installed: pip install -e .")
    root = tmp_path / "project"
    root.mkdir()
    (root / "test_boards.py").write_text(textwrap.dedent(BOARD_TESTS))
    pin_host_key(ssh_env, sshd)
    prof = board_profile(sshd, tmp_path, "pi")
    db = tmp_path / "results.db"
    farm = farm_toml(
        root / "FARM.toml",
        [{"path": tiny_model, "name": "tiny"}],
        [{"profile": "local"}, {"profile": prof, "name": "lab-pi", "capabilities": ["camera"]}],
        name="plugin-farm",
        extra="[measure]\nwarmup = 2\n",
    )

    run = _pytest(root, "--edgeq-farm", str(farm), "--edgeq-db", str(db))
    assert run.returncode == 0, run.stdout + run.stderr
    out = run.stdout
    for test, outcome in [
        ("test_latency[local]", "PASSED"),
        ("test_latency[lab-pi]", "PASSED"),
        ("test_needs_a_coral[local]", "SKIPPED"),
        ("test_needs_a_coral[lab-pi]", "SKIPPED"),
        ("test_needs_a_camera[local]", "SKIPPED"),
        ("test_needs_a_camera[lab-pi]", "PASSED"),
    ]:
        assert f"{test} {outcome}" in out, (test, out)
    assert "board lab-pi lacks edgetpu" in out and "board local lacks camera" in out
    assert "edgeq: 3 measurement(s), 0 failure(s) in run 1" in out

    with open_store(str(db)) as store:
        (info,) = store.runs()
        assert info.farm == "plugin-farm" and info.status == "finished" and info.meta["pytest"] is True
        rows = store.results(info.id)
    assert sorted((r.model, r.device, r.metrics.latency_n) for r in rows) == [
        ("tiny", "lab-pi", 20), ("tiny", "lab-pi", 40), ("tiny", "local", 40),
    ]  # fmt: skip
    assert all(r.ok and r.hashes.model and r.hashes.runner for r in rows)

    # without a farm the board tests are skipped, not failed
    bare = _pytest(root)
    assert bare.returncode == 0 and "no --edgeq-farm FARM.toml given" in bare.stdout


def test_a_bad_farm_file_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "test_x.py").write_text("def test_x(edgeq_board):\n    pass\n")
    (tmp_path / "FARM.toml").write_text("roundz = 1\n")
    run = _pytest(tmp_path, "--edgeq-farm", "FARM.toml")
    assert run.returncode == 4, run.stdout + run.stderr
    assert "unknown key 'roundz'" in run.stderr and "Traceback" not in run.stderr


@pytest.fixture(autouse=True)
def _home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEQ_HOME", str(tmp_path / "edgeq-home"))
    monkeypatch.delenv("EDGEQ_DB", raising=False)
