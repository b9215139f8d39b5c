"""Run the real ``edgeq`` command in a subprocess and check the error contract."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

EDGEQ = [sys.executable, "-m", "edgeq"]


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str


def edgeq(
    *args: str | Path, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 600
) -> Run:
    full_env = {**os.environ, **(env or {}), "COLUMNS": "200"}
    p = subprocess.run(
        [*EDGEQ, *map(str, args)], capture_output=True, text=True, cwd=cwd, env=full_env, timeout=timeout
    )
    return Run(p.returncode, p.stdout, p.stderr)


def assert_clean_error(run: Run, code: int, *needles: str) -> None:
    """It ends with one line of what is wrong and one of what to do (progress lines may come before),
    exits with the documented code, and prints no traceback."""
    assert run.code == code, (run.code, run.stdout, run.stderr)
    assert "Traceback" not in run.stderr + run.stdout
    lines = [ln for ln in run.stderr.splitlines() if ln.strip()]
    assert sum(ln.startswith("error: ") for ln in lines) == 1, lines
    lines = lines[-2:]
    assert lines[0].startswith("error: "), lines
    assert lines[1].startswith("what to do: "), lines
    for n in needles:
        assert n in lines[0], (n, lines[0])


def _session_pipeline(factory: pytest.TempPathFactory, name: str, *options: str) -> Path:
    out = factory.mktemp(name) / "out"
    home = factory.mktemp(f"edgeq-home-{name}")
    run = edgeq(
        "pipeline", "--out", out, *options, "--max-accuracy-drop", "100", env={"EDGEQ_HOME": str(home)}
    )
    assert run.code == 0, run.stderr
    return out


@pytest.fixture(scope="session")
def pipeline_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One default pipeline on a small epoch budget; its outputs serve many tests."""
    return _session_pipeline(
        tmp_path_factory,
        "pipeline",
        *("--teacher-epochs", "3", "--student-epochs", "3", "--qat-epochs", "1"),
        *("--runs", "50", "--warmup", "5"),
    )


@pytest.fixture(scope="session")
def ternary_pipeline_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``pipeline --weights ternary`` on the smallest budget (1-2 epochs): for behaviour, not accuracy."""
    return _session_pipeline(
        tmp_path_factory,
        "pipeline-ternary",
        *("--weights", "ternary", "--teacher-epochs", "1", "--student-epochs", "2", "--qat-epochs", "1"),
        *("--runs", "20", "--warmup", "2"),
    )
