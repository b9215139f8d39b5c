"""What a new user ran into (issue 13), each symptom removed for good: measurements that disagreed or
misled, work lost or mixed up, tracebacks and misleading lines, the report and the command line.

Each test names the item of the issue it guards.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from support_cli import EDGEQ, assert_clean_error, edgeq
from support_profile import profile

from edgeq import api, tflite
from edgeq.devices.connect import DeviceTarget
from edgeq.errors import UserInputError

FAST = ("--teacher-epochs", "1", "--student-epochs", "1", "--qat-epochs", "1", "--max-accuracy-drop", "100")


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    h = tmp_path / "edgeq-home"
    monkeypatch.setenv("EDGEQ_HOME", str(h))
    return h


def _profiles(d: Path, **keys: str) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "mine.toml").write_text('extends = "local"\n' + "".join(f"{k} = {v}\n" for k, v in keys.items()))
    return d


# ------------------------------------------------------------------------------ the pipeline, once


@pytest.fixture(scope="module")
def pipeline_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One small pipeline on a profile with its own measurement defaults, into a directory that holds
    a previous run's stale file; a second pipeline into the same directory while it runs."""
    root = tmp_path_factory.mktemp("new-user")
    profiles = _profiles(root / "profiles", runs="7", warmup_runs="2", threads="2")
    out = root / "out"
    out.mkdir()
    # A previous run wrote model_int8_builtin.tflite (a ternary run); this int8 run must not leave it.
    (out / "model_int8_builtin.tflite").write_bytes(b"from an earlier run")
    (out / "manifest.json").write_text(json.dumps({"files": {"model_int8_builtin.tflite": {}}}))
    (out / "notes.txt").write_text("the user's own file")
    env = {**os.environ, "EDGEQ_HOME": str(root / "home"), "COLUMNS": "200"}
    first = subprocess.Popen(
        [*EDGEQ, "pipeline", "--out", str(out), "--device", "mine", "--profiles", str(profiles), *FAST],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    deadline = time.monotonic() + 120
    while not (out / ".edgeq.lock").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(0.5)
    second = edgeq("pipeline", "--out", out, *FAST, env={"EDGEQ_HOME": str(root / "home")})
    stdout, stderr = first.communicate(timeout=900)
    return {
        "out": out,
        "code": first.returncode,
        "stderr": stderr,
        "second": second,
        "profiles": profiles,
        "root": root,
    }


def test_item1_pipeline_and_profile_measure_the_same_from_the_same_profile(pipeline_run: dict) -> None:
    assert pipeline_run["code"] == 0, pipeline_run["stderr"]
    report = json.loads((pipeline_run["out"] / "report.json").read_text())
    spec = report["profile"]["spec"]
    assert (spec["runs"], spec["warmup"], spec["threads"]) == (7, 2, 2)
    assert report["profile"]["latency_us"]["n"] == 7
    run = edgeq(
        "profile",
        pipeline_run["out"] / "model.tflite",
        "--device",
        "mine",
        "--profiles",
        pipeline_run["profiles"],
        "--json",
        env={"EDGEQ_HOME": str(pipeline_run["root"] / "home")},
    )
    assert run.code == 0, run.stderr
    assert json.loads(run.stdout)["spec"] == spec


def test_item8_one_run_per_output_directory_and_no_stale_files(pipeline_run: dict) -> None:
    assert_clean_error(pipeline_run["second"], 2, "is being written by another edgeq run", "pid")
    out = pipeline_run["out"]
    assert not (out / "model_int8_builtin.tflite").exists()  # the earlier run's file is gone
    assert (out / "notes.txt").read_text() == "the user's own file"  # files edgeq did not write stay
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] is True
    for name, entry in manifest["files"].items():
        assert (out / name).stat().st_size == entry["size_bytes"]
    assert set(manifest["files"]) >= {"model.tflite", "report.json", "report.md", "teacher.keras"}
    report = json.loads((out / "report.json").read_text())
    assert report["size_bytes"]["student_int8"] == manifest["files"]["model.tflite"]["size_bytes"]


def test_item20_the_report_shows_what_a_user_decides_from(pipeline_run: dict) -> None:
    out = pipeline_run["out"]
    report = json.loads((out / "report.json").read_text())
    md = (out / "report.md").read_text()
    confusion = report["profile"]["accuracy"]["confusion"]
    assert len(confusion) == 10 and sum(map(sum, confusion)) == report["profile"]["accuracy"]["n"]
    assert sum(confusion[i][i] for i in range(10)) == report["profile"]["accuracy"]["correct"]
    assert "Per class" in md and "Confusion matrix" in md and "most often mistaken for" in md
    assert report["profile_float"]["latency_us"]["n"] == 7  # the float student, same device, same spec
    assert "| metric | int8 | float |" in md and "int8 p50 / float p50 on this device" in md
    assert (out / "latency.png").stat().st_size > 1000 and "![latency per invoke](latency.png)" in md
    assert "drops -" not in md and ("gains" in md or "loses" in md)


def test_item20_gain_and_loss_are_worded_as_such() -> None:
    from edgeq.report.markdown import _drop

    assert _drop(-0.279) == "gains 0.28 points" and _drop(1.39) == "loses 1.39 points"
    assert _drop(0.0) == "loses nothing"


# ------------------------------------------------------------------------------ measurements


def test_item2_peak_memory_is_the_models_not_the_runners_bookkeeping(tiny_model: Path, home: Path) -> None:
    small = profile(tiny_model, runs=100, warmup=0)["memory"]
    large = profile(tiny_model, runs=1_000_000, warmup=0, return_samples=100)["memory"]
    assert abs(large["peak_rss_kb"] - small["peak_rss_kb"]) < 5 * 1024, (small, large)
    assert 0 < small["model_peak_rss_kb"] < small["peak_rss_kb"]
    assert small["runner_baseline_rss_kb"] > 10_000


def test_item3_threads_really_used_are_recorded_and_too_many_warn(tiny_model: Path, home: Path) -> None:
    events: list[dict] = []
    many = (os.cpu_count() or 1) * 8
    res = profile(tiny_model, runs=5, threads=many, on_event=events.append)
    assert res["execution"]["threads"] == many
    warns = [e for e in events if e.get("event") == "warning"]
    assert any(w["code"] == "threads.oversubscribed" and f"{many} threads" in w["message"] for w in warns)


def test_item3_custom_op_path_records_threads_not_set(tmp_path: Path, tiny_model: Path, home: Path) -> None:
    from edgeq.ops import rewrite

    ternary = tmp_path / "ternary.tflite"
    rewrite.rewrite_file(tiny_model, ternary)
    events: list[dict] = []
    res = profile(ternary, runs=5, threads=2, on_event=events.append)
    assert res["config"]["threads"] is None and "threads" not in res["execution"]
    assert any(e.get("code") == "threads.not_settable" for e in events)


def test_item7_power_without_a_sensor_is_one_warning_and_the_profile_completes(
    tiny_model: Path, tmp_path: Path
) -> None:
    run = edgeq("profile", tiny_model, "--power", "--runs", "10", env={"EDGEQ_HOME": str(tmp_path / "h")})
    assert run.code == 0, run.stderr
    assert "latency µs" in run.stdout
    assert sum("power and energy are not measured" in ln for ln in run.stderr.splitlines()) == 1
    assert "--power-source" in run.stderr


def test_item17_plot_without_a_sensor_does_not_say_measure_with_power(
    tiny_model: Path, tmp_path: Path
) -> None:
    plot = tmp_path / "p.png"
    run = edgeq(
        "profile",
        tiny_model,
        "--power",
        "--runs",
        "10",
        "--plot",
        plot,
        env={"EDGEQ_HOME": str(tmp_path / "h")},
    )
    assert run.code == 0 and not plot.exists()
    assert "measure with --power" not in run.stderr and "no power sensor" in run.stderr


def test_item17_hints_speak_flags_not_modules_or_api_arguments(tiny_model: Path, home: Path) -> None:
    with pytest.raises(UserInputError) as info:
        api.profile(tiny_model, measure={"power": {"source": "ina2xx", "rate": 5}})
    text = info.value.message + " " + info.value.hint
    assert "edgeq.runner" not in text and "power='" not in text
    run = edgeq("profile", tiny_model, "--power-idle", "2")
    assert_clean_error(run, 2, "--power-idle")
    assert "--power" in run.stderr.splitlines()[-1]


# ------------------------------------------------------------------------------ work lost


def test_item6_an_unreachable_device_fails_before_any_training(tmp_path: Path) -> None:
    out = tmp_path / "out"
    t0 = time.monotonic()
    run = edgeq(
        "pipeline", "--out", out, "--device", "rpi4", "--host", "pi@127.0.0.1:1", *FAST,
        env={"EDGEQ_HOME": str(tmp_path / "h")},
    )  # fmt: skip
    assert_clean_error(run, 3, "127.0.0.1")
    assert time.monotonic() - t0 < 60
    assert "training teacher" not in run.stderr
    assert not (out / "teacher.keras").exists()


@pytest.mark.slow
def test_item6_a_late_failure_still_writes_the_report(tmp_path: Path) -> None:
    out = tmp_path / "out"
    run = edgeq(
        "pipeline", "--out", out, *FAST, "--runs", "1", "--min-seconds", "30", "--timeout", "3",
        env={"EDGEQ_HOME": str(tmp_path / "h")},
    )  # fmt: skip
    assert_clean_error(run, 3, "timed out", "the report in")
    report = json.loads((out / "report.json").read_text())
    assert report["failure"]["stage"] == "profile" and report["failure"]["exit_code"] == 3
    assert "profile" not in report
    assert report["accuracy"]["student_int8_qat"] > 0  # what was done before the failure is there
    assert "Stopped at profile" in (out / "report.md").read_text()
    assert json.loads((out / "manifest.json").read_text())["complete"] is False


# ------------------------------------------------------------------------------ outputs


def test_item9_output_problems_are_found_before_the_work(tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    env = {"EDGEQ_HOME": str(tmp_path / "h")}
    try:
        if os.geteuid() == 0:  # root writes anywhere: use a directory under a file instead
            (tmp_path / "file").write_text("x")
            bad_out = tmp_path / "file" / "out"
        else:
            bad_out = ro / "out"
        t0 = time.monotonic()
        run = edgeq("pipeline", "--out", bad_out, *FAST, env=env)
        assert_clean_error(run, 2, "--out")
        assert time.monotonic() - t0 < 60 and "training" not in run.stderr
    finally:
        ro.chmod(0o755)
    (tmp_path / "adir.keras").mkdir()
    assert_clean_error(
        edgeq("train", "--out", tmp_path / "adir.keras", "--epochs", "1", env=env), 2, "is a directory"
    )
    assert_clean_error(edgeq("inspect", tmp_path / ("m" * 300 + ".tflite")), 2, "File name too long")


def test_item9_a_legal_240_character_name_is_written(tiny_model: Path, tmp_path: Path) -> None:
    long = tmp_path / ("n" * 232 + ".tflite")  # 240 bytes: legal; ".NAME.xxxxxxxx.part" was not
    from edgeq.files import atomic_write

    atomic_write(long, tiny_model.read_bytes())
    assert long.read_bytes() == tiny_model.read_bytes()
    assert [p.name for p in tmp_path.iterdir()] == [long.name]


def test_item10_plot_and_outputs_follow_the_umask(tiny_model: Path, tmp_path: Path, home: Path) -> None:
    from edgeq.report.plot import plot_latency
    from edgeq.result import Result

    old = os.umask(0o022)
    try:
        x = np.random.default_rng(0).uniform(0, 1, (6, 8, 8, 1)).astype(np.float32)
        saved = tmp_path / "outputs.npy"
        res = profile(tiny_model, runs=20, test_data=(x, np.zeros(6, np.int64)), save_outputs=saved)
        png = plot_latency({"int8": Result.from_dict(res)}, tmp_path / "lat.png")
        assert png is not None
        for p in (saved, png):
            assert stat.S_IMODE(p.stat().st_mode) == 0o644, p
    finally:
        os.umask(old)


# ------------------------------------------------------------------------------ inputs


def test_item12_timeouts_of_zero_or_less_are_usage_errors(tiny_model: Path) -> None:
    for value in ("0", "-5"):
        assert_clean_error(edgeq("profile", tiny_model, "--timeout", value), 2, "--timeout")


def _custom_op_model(tiny_model: Path, dest: Path) -> Path:
    from edgeq.ops import rewrite

    rewrite.rewrite_file(tiny_model, dest)
    return dest


def _damaged(good: bytes, tmp: Path) -> list[Path]:
    """60 damaged copies: flipped bytes in the packed weight blocks, truncated custom options."""
    f = tflite.parse(good)
    sg, model = f.subgraph, f.model
    rng = np.random.default_rng(3)
    files = []
    for op in sg.operators:
        name = tflite.op_name(model, op)
        if not name.startswith("EDGEQ_"):
            continue
        buf = model.buffers[sg.tensors[op.inputs[1]].buffer]
        packed = bytes(bytearray(buf.data))
        start, size = (int(buf.offset), int(buf.size)) if buf.offset else (good.find(packed), len(packed))
        assert start > 0 and size > 0 and good[start : start + size] == packed
        made = 0
        while made < 20:
            data = bytearray(good)
            at = start + int(rng.integers(0, size))
            data[at] ^= 0xFF
            p = tmp / f"{name}-flip{at}.tflite"
            p.write_bytes(bytes(data))
            try:
                from edgeq.ops import rewrite

                rewrite.read_ternary_ops(bytes(data))
            except UserInputError:
                files.append(p)  # a flip the format can see (unused code or a padding bit)
                made += 1
            else:
                p.unlink()  # a flip that yields other valid weights: indistinguishable from a model
        for cut in range(1, 11):
            from edgeq.ops import rewrite

            m = tflite.parse(good).model
            msg = m.subgraphs[0]
            target = msg.operators[list(sg.operators).index(op)]
            target.customOptions = list(target.customOptions)[: -cut * 4]
            aligned = sorted(
                {msg.tensors[o.inputs[i]].buffer for o in msg.operators if len(o.inputs) == 3 for i in (1, 2)}
            )
            p = tmp / f"{name}-options{cut}.tflite"
            p.write_bytes(rewrite._serialize_aligned(m, aligned))
            files.append(p)
    return files


def test_item16_damaged_custom_op_models_are_bad_models_named_on_the_host(
    tiny_model: Path, tmp_path: Path, home: Path
) -> None:
    good = _custom_op_model(tiny_model, tmp_path / "good.tflite").read_bytes()
    damaged = _damaged(good, tmp_path)
    assert len(damaged) == 60
    for path in damaged:
        with pytest.raises(UserInputError) as info:
            api.profile(path, DeviceTarget("local"), measure={"runs": 1})
        msg = info.value.message
        assert "EDGEQ_TERNARY_" in msg and " op " in msg and "node '" in msg and "\n" not in msg, msg
    assert not (home / "devices" / "local" / "models").exists()  # nothing was deployed
    run = edgeq("inspect", damaged[0])
    assert_clean_error(run, 2, "EDGEQ_TERNARY_", "node")


def test_item16_a_runner_failure_names_a_log_with_its_traceback(
    tiny_model: Path, tmp_path: Path, home: Path
) -> None:
    from edgeq.devices.transports.local import LocalTransport
    from edgeq.errors import DeviceError
    from edgeq.remote import run_runner

    script = tmp_path / "crash.py"
    script.write_text(
        "import sys\nsys.stderr.write('Traceback (most recent call last):\\n  boom\\n')\nsys.exit(3)\n"
    )
    with pytest.raises(DeviceError) as info:
        run_runner(LocalTransport(), [sys.executable, str(script)], "local")
    log = Path(info.value.hint.split("the runner's log: ")[1])
    assert log.is_file() and "Traceback" in log.read_text() and log.parent == home / "logs"


# ------------------------------------------------------------------------------ the command line


def test_item21_version_help_and_flags() -> None:
    from importlib.metadata import version

    run = edgeq("--version")
    assert run.code == 0 and run.stdout.strip() == f"edgeq {version('edgeq')}"
    for cmd in ("pipeline", "profile", "inspect", "train", "distill", "qat", "export", "deploy"):
        run = edgeq(cmd, "-h")
        assert run.code == 0 and "Usage" in run.stdout, cmd
        assert "<bool>" not in run.stdout, cmd  # booleans are flags
    help_text = edgeq("pipeline", "-h").stdout
    for option in ("--runs", "--warmup", "--threads", "--teacher-epochs", "--student-epochs", "--qat-epochs"):
        line = next(ln for ln in help_text.splitlines() if option + " " in ln)
        assert len(line.split(option, 1)[1].replace("<int>", "").strip(" │")) > 10, line  # described
    runtime = next(ln for ln in edgeq("profile", "-h").stdout.splitlines() if "--runtime" in ln)
    from edgeq.runner.runtimes import CHOICES

    flat = " ".join(edgeq("profile", "-h").stdout.split())
    assert all(name in flat for name in CHOICES), runtime


def test_item21_devices_check_prints_its_details_on_stdout() -> None:
    run = edgeq("devices", "check", "local")
    assert "connect" in run.stdout and "runtime" in run.stdout and "arch" in run.stdout
