"""Ternary custom ops against int8: digits accuracy and model size, and kernel latency.

Digits: ``edgeq pipeline`` twice with the same teacher — the int8 student (8-bit weights) and the
ternary student (``--weights ternary``, EDGEQ_TERNARY_* custom ops) — on the pipeline's default
epochs; ``accuracy_drop`` is int8 minus ternary test accuracy in points (the ternary model's accuracy
measured through the runner's custom-op path), ``size_ratio`` ternary ``.tflite`` / int8 ``.tflite``.
``--reuse DIR`` keeps the two runs in DIR and reuses them when they are there.

Kernels: EDGEQ_TERNARY_FC (C kernel, registered through LiteRT's C API) against the builtin int8
FULLY_CONNECTED of the same shape, in the same runtime (LiteRT CompiledModel, CPU, default options),
timed in alternating rounds (``--rounds``) so that drift in the machine's speed hits both alike.

Each shape becomes a one-op Keras model, converted to full int8; its ternary twin is the same
model rewritten by ``edgeq.ops.rewrite``. Both run through ``edgeq.runner.native.LiteRtSession``; the
timed region is LiteRtRunCompiledModel alone. Prints a table, then as its last line a JSON object
with ``size_ratio``, ``accuracy_drop`` and ``kernel_latency_ratio`` (custom / builtin, median).

    .venv/bin/python scripts/bench_ternary.py [--repeat 3000] [--rounds 10] [--shapes 512x64,1024x1024] [--reuse runs/bt]
    .venv/bin/python scripts/bench_ternary.py --no-digits     # kernels only (size_ratio of the headline shape)
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _fc_model(k_in: int, n_out: int, seed: int) -> bytes:
    from edgeq import tfenv
    from edgeq.export.convert import to_int8_tflite

    k = tfenv.keras()
    tfenv.set_seed(seed)
    inp = k.Input((k_in,))
    model = k.Model(inp, k.layers.Dense(n_out)(inp))
    x = np.random.default_rng(seed).normal(size=(64, k_in)).astype(np.float32)
    return to_int8_tflite(model, x)


def _time(session: object, x: bytes, repeat: int, warmup: int) -> list[float]:
    from edgeq.runner.native import LiteRtSession

    assert isinstance(session, LiteRtSession)
    session.set_inputs([x])
    for _ in range(warmup):
        session.invoke()
    return [session.invoke() / 1000.0 for _ in range(repeat)]


def _digits(args: argparse.Namespace) -> dict[str, Any]:
    """The int8 and the ternary student on digits, same teacher, same epochs (pipeline defaults)."""
    from edgeq import api

    root = Path(args.reuse) if args.reuse else Path(tempfile.mkdtemp(prefix="bench-ternary-"))
    budget = {
        "teacher_epochs": args.teacher_epochs,
        "student_epochs": args.student_epochs,
        "qat_epochs": args.qat_epochs,
    }
    reports = {}
    for weights in ("int8", "ternary"):
        out = root / weights
        if not (out / "report.json").exists():
            teacher = root / "int8" / "teacher.keras" if weights == "ternary" else None
            opts = api.PipelineOptions(
                teacher=teacher, weights=weights, runs=50, warmup=5, max_accuracy_drop=100.0, **budget
            )
            api.pipeline(out, opts)  # the gate cannot fail at 100 points
        reports[weights] = api.load_report(out / "report.json")
    i8, tn = reports["int8"], reports["ternary"]
    return {
        "dir": str(root),
        "epochs": budget,
        "int8_accuracy": i8["accuracy"]["student_int8_qat"],
        "ternary_accuracy": tn["accuracy"]["student_int8_qat"],
        "ternary_accuracy_on_device": tn["profile"]["accuracy"]["top1"],
        "ternary_float_accuracy": tn["accuracy"]["student_float"],
        "int8_bytes": i8["size_bytes"]["student_int8"],
        "ternary_bytes": tn["size_bytes"]["student_int8"],
        "int8_p50_us": i8["profile"]["latency_us"]["p50"],
        "ternary_p50_us": tn["profile"]["latency_us"]["p50"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3000, help="timed runs per model, over all rounds")
    ap.add_argument("--warmup", type=int, default=30, help="untimed runs before each round")
    ap.add_argument("--rounds", type=int, default=10, help="alternating builtin/ternary rounds")
    ap.add_argument("--shapes", default="512x64,1024x1024,2048x2048", help="KxN input x output sizes")
    ap.add_argument("--headline", default="1024x1024", help="the shape reported as kernel_latency_ratio")
    ap.add_argument("--no-digits", action="store_true", help="kernels only (no training)")
    ap.add_argument("--reuse", default=None, help="keep/reuse the two digits runs in this directory")
    ap.add_argument("--teacher-epochs", type=int, default=10)
    ap.add_argument("--student-epochs", type=int, default=15)
    ap.add_argument("--qat-epochs", type=int, default=4)
    args = ap.parse_args()

    from edgeq.ops import rewrite
    from edgeq.ops.build import build_library
    from edgeq.runner.native import LiteRtSession, TernaryKernels
    from edgeq.tfenv import quiet_native

    lib = build_library()
    isa = TernaryKernels(lib).isa
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, shape in enumerate(args.shapes.split(",")):
            k_in, n_out = (int(v) for v in shape.lower().split("x"))
            int8 = _fc_model(k_in, n_out, i)
            ternary, _ = rewrite.to_ternary_ops(int8)
            p8, pt = Path(tmp) / f"{shape}_int8.tflite", Path(tmp) / f"{shape}_ternary.tflite"
            p8.write_bytes(int8)
            pt.write_bytes(ternary)
            x = np.random.default_rng(i).integers(-128, 128, size=k_in).astype(np.int8).tobytes()
            builtin: list[float] = []
            custom: list[float] = []
            per_round = max(1, args.repeat // args.rounds)
            with quiet_native(), LiteRtSession(lib, p8) as s8, LiteRtSession(lib, pt) as st:
                # Alternating rounds, so that drift in the machine's speed hits both alike.
                for _ in range(args.rounds):
                    builtin += _time(s8, x, per_round, args.warmup)
                    custom += _time(st, x, per_round, args.warmup)
                assert st.kernel_runs(0) == args.rounds * (per_round + args.warmup)
            b50, c50 = statistics.median(builtin), statistics.median(custom)
            rows.append(
                {
                    "shape": f"1x{k_in}->{n_out}",
                    "key": shape,
                    "builtin_p50_us": round(b50, 2),
                    "builtin_p90_us": round(float(np.percentile(builtin, 90)), 2),
                    "ternary_p50_us": round(c50, 2),
                    "ternary_p90_us": round(float(np.percentile(custom, 90)), 2),
                    "latency_ratio": round(c50 / b50, 3),
                    "int8_model_bytes": len(int8),
                    "ternary_model_bytes": len(ternary),
                }
            )
    print(f"ternary kernel inner loop: {isa}; runtime: LiteRT CompiledModel (CPU, default options)")
    print(f"{'shape':>18} {'builtin p50/p90 us':>20} {'ternary p50/p90 us':>20} {'ratio':>7} {'size':>6}")
    for r in rows:
        print(
            f"{r['shape']:>18} {r['builtin_p50_us']:>9.2f}/{r['builtin_p90_us']:<9.2f} "
            f"{r['ternary_p50_us']:>9.2f}/{r['ternary_p90_us']:<9.2f} {r['latency_ratio']:>7.3f} "
            f"{r['ternary_model_bytes'] / r['int8_model_bytes']:>6.3f}"
        )
    head = next((r for r in rows if r["key"] == args.headline), rows[-1])
    digits = None if args.no_digits else _digits(args)
    if digits is not None:
        print(
            f"digits (epochs {digits['epochs']}): int8 student {digits['int8_accuracy']:.4f} "
            f"({digits['int8_bytes']} B), ternary student {digits['ternary_accuracy']:.4f} "
            f"({digits['ternary_bytes']} B, float {digits['ternary_float_accuracy']:.4f}); runs in {digits['dir']}"
        )
        size_ratio = round(float(digits["ternary_bytes"]) / float(digits["int8_bytes"]), 4)
        accuracy_drop = round(100.0 * (float(digits["int8_accuracy"]) - float(digits["ternary_accuracy"])), 3)
    else:
        size_ratio = round(head["ternary_model_bytes"] / head["int8_model_bytes"], 4)
        accuracy_drop = None
    print(
        json.dumps(
            {
                "size_ratio": size_ratio,
                "size_ratio_of": "digits students" if digits else f"headline FC {head['shape']}",
                "accuracy_drop": accuracy_drop,
                "accuracy_drop_unit": "points (int8 student − ternary student, digits test set)",
                "digits": digits,
                "kernel_latency_ratio": head["latency_ratio"],
                "headline_shape": head["shape"],
                "isa": isa,
                "shapes": rows,
            }
        )
    )


if __name__ == "__main__":
    main()
