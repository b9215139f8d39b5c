"""OpenVINO through edgeq against OpenVINO's own benchmark_app, and against LiteRT, on the digits.

    .venv/bin/python scripts/bench_openvino.py [--model student.tflite] [--rounds 15] [--runs 5000]
                                              [--warmup 300] [--epochs 6]

Without ``--model`` it trains edgeq's student on the digits (edgeq's own API, ~20 s) and converts it
to full int8. Then, all on this machine's CPU:

* ``agreement``: top-1 agreement of OpenVINO's CPU device with LiteRT (ai-edge-litert, XNNPACK) on
  the digits test split, both run through edgeq's runner (``python -m edgeq.runner run
  --test-data --save-outputs``), which quantizes the float test data with the model's input scale
  and zero point.
* latency, in rounds that alternate the order of the sides: edgeq's runner with delegate openvino
  (device CPU), ``benchmark_app -m model.tflite -d CPU -hint latency -shape [1,8,8,1] -niter N
  -json_stats -report_folder DIR`` (the same model, static shape as edgeq compiles it; its median is
  read from its log, which prints it to 0.01 us where the JSON report rounds to 10 us), and edgeq's
  runner on LiteRT. benchmark_app does not accept
  ``-nthreads`` with ``-hint latency``; the thread count the hint picks (printed by benchmark_app as
  INFERENCE_NUM_THREADS) is given to edgeq, so both run the same threads. ``ratio_vs_benchmark_app``
  is the ratio of the medians over rounds; ``paired_ratio_vs_benchmark_app`` the median of the
  per-round ratios (which cancels slow drift on a shared machine).

Progress goes to stderr; the last stdout line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def log(message: str) -> None:
    print(f"[bench_openvino] {message}", file=sys.stderr, flush=True)


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def build_student(dest: Path, epochs: int) -> Path:
    from edgeq.data import load_dataset
    from edgeq.export.convert import to_int8_tflite
    from edgeq.models.zoo import build_model
    from edgeq.train.core import FitConfig, train_float

    data = load_dataset(None)
    model = build_model("student", data.input_shape, data.num_classes)
    train_float(model, data, FitConfig(epochs=epochs))
    dest.write_bytes(to_int8_tflite(model, data.x_train))
    return dest


def test_split(dest: Path) -> Path:
    from edgeq.data import load_dataset

    data = load_dataset(None)
    np.savez(dest, x=data.x_test.astype(np.float32), y=data.y_test)
    return dest


def runner(model: Path, spec: dict[str, Any], *extra: str) -> dict[str, Any]:
    """One run of edgeq's runner (the code a board runs) and its result object."""
    argv = [
        sys.executable,
        "-m",
        "edgeq.runner",
        "run",
        "--model",
        str(model),
        "--spec",
        json.dumps(spec),
        *extra,
    ]
    proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=600)
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    for event in events:
        if event.get("event") == "result":
            return dict(event["result"])
    raise SystemExit(f"the runner failed ({proc.returncode}): {events[-1:] or proc.stderr[-500:]}")


def benchmark_app(model: Path, shape: list[int], niter: int, work: Path) -> tuple[float, int]:
    """benchmark_app's median latency in microseconds, and the threads the latency hint chose."""
    exe = shutil.which("benchmark_app", path=str(Path(sys.executable).parent)) or shutil.which(
        "benchmark_app"
    )
    if exe is None:
        raise SystemExit("benchmark_app not found (pip install openvino ships it)")
    report = Path(tempfile.mkdtemp(prefix="ba-", dir=work))
    argv = [
        exe, "-m", str(model), "-d", "CPU", "-hint", "latency", "-shape", json.dumps(shape).replace(" ", ""),
        "-niter", str(niter), "-json_stats", "-report_type", "no_counters", "-report_folder", str(report),
    ]  # fmt: skip
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise SystemExit(f"benchmark_app failed: {proc.stdout[-800:]}{proc.stderr[-800:]}")
    # The JSON report rounds latencies to 0.01 ms (10 us steps, a third of this model's latency); the
    # log prints the same median to 0.01 us, so it is read from there.
    json.loads((report / "benchmark_report.json").read_text())["execution_results"]
    median = re.search(r"Median:\s+([\d.]+)\s+(us|ms)", proc.stdout)
    if median is None:
        raise SystemExit("benchmark_app printed no median latency")
    median_us = float(median.group(1)) * (1000.0 if median.group(2) == "ms" else 1.0)
    threads = re.search(r"INFERENCE_NUM_THREADS: (\d+)", proc.stdout)
    if threads is None:
        raise SystemExit("benchmark_app did not print INFERENCE_NUM_THREADS")
    return median_us, int(threads.group(1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, help="a full-int8 .tflite (default: train the digits student)")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--runs", type=int, default=5000)
    ap.add_argument("--warmup", type=int, default=300)
    ap.add_argument("--epochs", type=int, default=6)
    args = ap.parse_args()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-openvino-") as tmp:
        work = Path(tmp)
        if args.model is None:
            log(f"training edgeq's student on the digits ({args.epochs} epochs) and converting to int8")
            model = build_student(work / "model.tflite", args.epochs)
        else:
            model = work / "model.tflite"
            shutil.copyfile(args.model, model)
        test = test_split(work / "test.npz")

        from edgeq.runner.delegates.openvino import open_model
        from edgeq.runner.measure_spec import MeasureSpec

        probe = open_model(str(model), MeasureSpec(delegate="openvino", runtime="openvino"))
        shape = [int(n) for n in probe.interp.get_input_details()[0]["shape"]]
        del probe

        _, threads = benchmark_app(model, shape, 100, work)
        log(f"benchmark_app's latency hint runs {threads} thread(s) here; edgeq runs the same")
        ov_spec = {"delegate": "openvino", "runtime": "openvino", "threads": threads}
        lite_spec = {"delegate": "xnnpack", "runtime": "ai-edge-litert", "threads": threads}

        log("top-1 agreement on the digits test split, both through edgeq's runner")
        ov_acc = runner(
            model,
            dict(ov_spec, runs=1, warmup=0),
            "--test-data",
            str(test),
            "--save-outputs",
            str(work / "ov.npy"),
        )
        lite_acc = runner(
            model,
            dict(lite_spec, runs=1, warmup=0),
            "--test-data",
            str(test),
            "--save-outputs",
            str(work / "lite.npy"),
        )
        ov_out, lite_out = np.load(work / "ov.npy"), np.load(work / "lite.npy")
        agreement = float(
            (
                ov_out.reshape(len(ov_out), -1).argmax(1) == lite_out.reshape(len(lite_out), -1).argmax(1)
            ).mean()
        )
        max_lsb = int(np.abs(ov_out.astype(np.int32) - lite_out.astype(np.int32)).max())

        timing = {"runs": args.runs, "warmup": args.warmup, "return_samples": 0}
        edgeq_p50: list[float] = []
        app_p50: list[float] = []
        lite_p50: list[float] = []
        last: dict[str, Any] = {}
        for r in range(args.rounds):

            def edgeq_side() -> None:
                nonlocal last
                last = runner(model, dict(ov_spec, **timing))
                edgeq_p50.append(float(last["latency_us"]["p50"]))

            def app_side() -> None:
                app_p50.append(benchmark_app(model, shape, args.runs, work)[0])

            for side in (edgeq_side, app_side) if r % 2 == 0 else (app_side, edgeq_side):
                side()
            lite_p50.append(float(runner(model, dict(lite_spec, **timing))["latency_us"]["p50"]))
            log(
                f"round {r + 1}/{args.rounds}: edgeq openvino {edgeq_p50[-1]:.2f} us, benchmark_app "
                f"{app_p50[-1]:.2f} us, LiteRT {lite_p50[-1]:.2f} us"
            )
        execution = last.get("execution", {})
        ov_median = statistics.median(edgeq_p50)
        app_median = statistics.median(app_p50)
        out = {
            "agreement": round(agreement, 4),
            "max_output_diff_lsb": max_lsb,
            "test_samples": int(ov_out.shape[0]),
            "openvino_top1": ov_acc["accuracy"]["top1"],
            "litert_top1": lite_acc["accuracy"]["top1"],
            "openvino_p50_us": round(ov_median, 3),
            "benchmark_app_p50_us": round(app_median, 3),
            "ratio_vs_benchmark_app": round(ov_median / app_median, 4),
            "paired_ratio_vs_benchmark_app": round(
                statistics.median(a / b for a, b in zip(edgeq_p50, app_p50, strict=True)), 4
            ),
            "litert_p50_us": round(statistics.median(lite_p50), 3),
            "openvino_rounds_p50_us": [round(v, 2) for v in edgeq_p50],
            "benchmark_app_rounds_p50_us": [round(v, 2) for v in app_p50],
            "threads": threads,
            "rounds": args.rounds,
            "runs_per_round": args.runs,
            "openvino_version": last.get("device", {}).get("runtime_version"),
            "openvino_binding": execution.get("binding"),
            "inference_precision": execution.get("inference_precision"),
            "litert": f"ai-edge-litert {lite_acc['device']['runtime_version']} (XNNPACK)",
            "measured_through": "edgeq's runner (python -m edgeq.runner run), delegate openvino, device CPU",
            "cpu": cpu_name(),
            "wall_s": round(time.monotonic() - started, 1),
        }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
