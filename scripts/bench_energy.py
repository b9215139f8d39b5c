"""Does edgeq's energy per inference follow the work? Two int8 models, one k× the other's MACs.

    .venv/bin/python scripts/bench_energy.py [--k 4] [--pairs 6] [--idle-s 1.0] [--min-seconds 2.0]
                                             [--util-source auto|cgroup|proc-stat]

Both models are stacks of identical int8 3×3 convolutions (56×56×32 → 56×56×32); the heavy one has
k times as many layers, so k times the multiply-accumulates. ``work_ratio`` is that MAC ratio,
counted from the converted .tflite graphs (CONV_2D output size × filter size). Each model is then
profiled through the real host path (``edgeq.api.profile(..., measure={"power": ...})`` → runner.pyz →
background sampling thread) against the emulated INA219 of ``edgeq.testing.emulated_sensors``, in
alternating order (light, heavy / heavy, light ...) for ``--pairs`` pairs. ``energy_ratio`` is the
ratio of the median energies per inference (net of idle); ``paired_energy_ratio`` the median of the
per-pair ratios. Progress goes to stderr; the last stdout line is one JSON object.

What the emulated sensor implies, honestly: its power is P = idle + load · u, with u the share of
all CPUs busy (see edgeq/testing/emulated_sensors.py). The net energy of a window is therefore
load · (CPU seconds used) / (number of CPUs): energy per inference ∝ CPU time per inference. So this
benchmark does not show that silicon spends energy in proportion to MACs (on a real board memory traffic,
clocks and idle states break that). What it does test is the whole measuring chain, against a
notion of work obtained independently (the graph's MACs): files in the kernel's units written
by another process, a 100 Hz sampling thread running beside the interpreter, the idle baseline
(2 W here, larger than the ~1 W the model adds, so forgetting or mis-scaling it ruins the ratio),
the sensor lag, the window integration, the automatic lengthening of the window, and the division
by the number of invokes. A wrong unit, a window off by the sensor's lag, an idle baseline taken
at the wrong time or a mis-counted invoke all move the ratio. Two time ratios are printed beside
it, so a deviation can be split into "the runtime's time is not ∝ MACs" and "the energy is not ∝
time": ``cpu_time_ratio`` (the runner's CPU time per inference in the window, which is what the
emulated sensor integrates, so energy_ratio should match it closely) and ``busy_time_ratio`` (median
wall-clock latency; on a loaded machine a long invoke is preempted more often than a short one, which
inflates it for the heavy model).

On a shared machine, the whole-machine utilisation (/proc/stat) is the neighbours' as much as ours:
with both cores saturated by others, u stays at 1 through idle and run alike and every net energy
reads zero. ``--util-source auto`` therefore makes the emulated board a cgroup (cgroup v1 cpuacct
or v2 cpu.stat) that this script and its runner subprocesses join, and the sensor follows that
cgroup's CPU time; ``proc-stat`` keeps the whole-machine reading (right on a quiet machine). The
emulator's own writer stays outside the board either way.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from edgeq.testing.emulated_sensors import (
    EmulatedSensors,
    join_cgroup,
    make_board_cgroup,
    remove_board_cgroup,
)

SHAPE = (56, 56, 32)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def build_conv_stack(dest: Path, layers: int, seed: int = 0) -> Path:
    """``layers`` identical int8 3×3 'same' convolutions, int8 in and out."""
    from edgeq.tfenv import keras, tensorflow

    tf = tensorflow()
    k = keras()
    k.utils.set_random_seed(seed)
    model = k.Sequential(
        [k.layers.Input(SHAPE)]
        + [k.layers.Conv2D(SHAPE[-1], 3, padding="same", activation="relu") for _ in range(layers)]
    )
    rng = np.random.default_rng(seed)

    def representative() -> Any:
        for _ in range(16):
            yield [rng.uniform(-1.0, 1.0, (1, *SHAPE)).astype(np.float32)]

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = representative
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore")
        dest.write_bytes(conv.convert())
    return dest


def count_macs(path: Path) -> int:
    """Multiply-accumulates of the graph's CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED ops."""
    from edgeq.export.tflite_model import describe

    info = describe(path)
    total = 0
    for op in info.ops:
        if op.op not in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"):
            continue
        out = info.tensor(op.outputs[0]).shape
        w = info.tensor(op.inputs[1]).shape
        if op.op == "CONV_2D":  # out (N, H, W, Cout), filter (Cout, kh, kw, Cin)
            total += int(np.prod(out)) * w[1] * w[2] * w[3]
        elif op.op == "DEPTHWISE_CONV_2D":  # filter (1, kh, kw, C·m)
            total += int(np.prod(out)) * w[1] * w[2]
        else:  # out (N, units), weights (units, in)
            total += int(np.prod(out)) * w[1]
    return total


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--k", type=int, default=4, help="the heavy model has k times the layers")
    ap.add_argument("--base-layers", type=int, default=2)
    ap.add_argument("--pairs", type=int, default=6)
    ap.add_argument("--idle-s", type=float, default=1.0)
    ap.add_argument("--min-seconds", type=float, default=2.0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--util-source", choices=("auto", "cgroup", "proc-stat"), default="auto")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory (models, traces)")
    args = ap.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="edgeq-bench-energy-"))
    os.environ["EDGEQ_HOME"] = str(tmp / "home")
    from edgeq import api

    log(f"building models in {tmp}")
    light = build_conv_stack(tmp / "light.tflite", args.base_layers)
    heavy = build_conv_stack(tmp / "heavy.tflite", args.base_layers * args.k)
    macs = {"light": count_macs(light), "heavy": count_macs(heavy)}
    work_ratio = macs["heavy"] / macs["light"]
    log(f"MACs: light {macs['light']:,}, heavy {macs['heavy']:,} (ratio {work_ratio:.3f})")

    cgroup = None
    if args.util_source in ("auto", "cgroup"):
        cgroup = make_board_cgroup(f"edgeq-bench-{os.getpid()}")
        if cgroup is None and args.util_source == "cgroup":
            log("cannot create a cgroup here (need root and a writable cgroup fs)")
            return 2
    util_source = f"cgroup:{cgroup}" if cgroup else "proc-stat"
    if cgroup is None:
        log("utilisation from /proc/stat: neighbours' load counts as the board's")
    emu = EmulatedSensors(tmp / "emu", ina2xx="ina219", util_source=util_source, families=("ina2xx",))
    rows: dict[str, list[dict[str, Any]]] = {"light": [], "heavy": []}
    pair_ratios: list[float] = []
    t_start = time.monotonic()
    try:
        emu.start()  # the writer is started before we join the board: it is not the board's load
        if cgroup:
            join_cgroup(cgroup)
        for i in range(args.pairs):
            order = ("light", "heavy") if i % 2 == 0 else ("heavy", "light")
            got = {}
            for name in order:
                measure = {
                    "runs": 50,
                    "warmup": 20,
                    "threads": args.threads,
                    "min_seconds": args.min_seconds,
                    "power": {"source": "ina2xx", "sensor": "ina219", "idle_s": args.idle_s},
                    "thermal": False,
                    "sysfs_root": str(emu.sysfs),
                    "timeout_s": 300,
                }
                r = api.profile(light if name == "light" else heavy, measure=measure).to_dict()
                p = r["power"]
                row = {
                    "energy_mj": p["energy_mj_per_inference"],
                    "sigma_mj": p["energy_mj_per_inference_sigma"],
                    "idle_mw": p["power_mw"]["idle"],
                    "active_mw": p["power_mw"]["active_mean"],
                    "latency_p50_us": r["latency_us"]["p50"],
                    "cpu_us": 1e6 * p["window"]["process_cpu_s"] / p["window"]["invokes"],
                    "invokes": p["window"]["invokes"],
                    "samples": p["samples"]["measure"],
                    "warnings": [w["code"] for w in r["warnings"]],
                }
                rows[name].append(row)
                got[name] = row
                log(
                    f"pair {i + 1}/{args.pairs} {name:5s}: {row['energy_mj']:.5f} ± {row['sigma_mj']:.5f} mJ/inf, "
                    f"idle {row['idle_mw']:.0f} mW, active {row['active_mw']:.0f} mW, p50 {row['latency_p50_us']:.0f} µs, "
                    f"CPU {row['cpu_us']:.0f} µs/inf, "
                    f"{row['invokes']} invokes, {row['samples']} samples {row['warnings'] or ''}"
                )
            if got["light"]["energy_mj"] and got["light"]["energy_mj"] > 0:
                pair_ratios.append(got["heavy"]["energy_mj"] / got["light"]["energy_mj"])
    finally:
        emu.stop()
        if cgroup:
            remove_board_cgroup(cgroup)
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)

    def med(name: str, key: str) -> float:
        return float(statistics.median(r[key] for r in rows[name]))

    energy_ratio = med("heavy", "energy_mj") / med("light", "energy_mj")
    busy_ratio = med("heavy", "latency_p50_us") / med("light", "latency_p50_us")
    cpu_ratio = med("heavy", "cpu_us") / med("light", "cpu_us")
    deviation = energy_ratio / work_ratio - 1.0
    summary = {
        "work_ratio": round(work_ratio, 4),
        "energy_ratio": round(energy_ratio, 4),
        "paired_energy_ratio": round(float(statistics.median(pair_ratios)), 4) if pair_ratios else None,
        "busy_time_ratio": round(busy_ratio, 4),
        "cpu_time_ratio": round(cpu_ratio, 4),
        "deviation_pct": round(100 * deviation, 2),
        "within_25pct": abs(deviation) <= 0.25,
        "energy_mj_per_inference": {
            name: {"median": round(med(name, "energy_mj"), 6), "all": [r["energy_mj"] for r in rows[name]]}
            for name in rows
        },
        "macs": macs,
        "pairs": args.pairs,
        "util_source": "cgroup" if cgroup else "proc-stat",
        "sensor": "emulated ina219 (power1_input µW, 10 ms updates), sampled at 100 Hz",
        "wall_s": round(time.monotonic() - t_start, 1),
    }
    log(
        f"work ratio {work_ratio:.3f}, energy ratio {energy_ratio:.3f} ({100 * deviation:+.1f} %), "
        f"busy-time ratio {busy_ratio:.3f}, CPU-time ratio {cpu_ratio:.3f}"
    )
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
