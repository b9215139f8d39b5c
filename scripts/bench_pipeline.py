#!/usr/bin/env python3
"""Run the default pipeline (digits, local device) and print its wall time and accuracies.

The last stdout line is one JSON object: ``wall_s`` (the whole command, process start to exit,
TensorFlow import included), ``pipeline_wall_s`` (as the report records it), the four accuracies,
the parameter and size ratios. Target: ``wall_s`` ≤ 90 on a 2-core machine.

    .venv/bin/python scripts/bench_pipeline.py [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, help="keep the pipeline's output here (default: a temp dir)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as td:
        out = args.out or Path(td) / "out"
        env = {**os.environ, "EDGEQ_HOME": str(Path(td) / "home")}
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "edgeq", "pipeline", "--out", str(out)], env=env)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            print(json.dumps({"error": f"edgeq pipeline exited {proc.returncode}"}))
            return proc.returncode
        r = json.loads((out / "report.json").read_text())
    lat = r["profile"]["latency_us"]
    print(
        json.dumps(
            {
                "wall_s": round(wall, 2),
                "pipeline_wall_s": r["wall_s"],
                **{k: round(v, 4) for k, v in r["accuracy"].items()},
                "student_params_ratio": round(r["params"]["student"] / r["params"]["teacher"], 4),
                "int8_size_ratio": round(
                    r["size_bytes"]["student_int8"] / r["size_bytes"]["student_float_tflite"], 4
                ),
                "latency_p50_us": lat["p50"],
                "cpus": os.cpu_count(),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
