#!/usr/bin/env python3
"""One `edgeq farm run` over 8 namespace hosts: is the farm as fast as its slowest board?

    sudo .venv/bin/python scripts/bench_farm.py [--boards 8] [--rounds 2] [--keep]

Brings up a farm of its own (scripts/farm, prefix ``eqbf``, subnet 10.213.9.0/24, state
/var/lib/edgeq-farm-bench; plain x86 hosts node1..nodeN, no egress), builds two small int8 models
with edgeq's converter, writes a FARM.toml (every model on every board, ``--rounds`` rounds each),
and times the whole command ``edgeq farm run FARM.toml --json`` as a user runs it. Each board's busy
time is the first to the last second of its work in that same run (from the run's summary: lock,
connect, deploy, every runner process). The last line is one JSON object:

    wall_s           the whole command, process start to exit
    run_wall_s       the run inside it (first event to the summary): without Python's start-up
    busy_s           per board;  longest_busy_s, sum_busy_s
    ratio            wall_s / longest_busy_s   (target <= 1.3; boards one after another would
                     approach sum_busy_s / longest_busy_s, given as serial_ratio)

The hosts share this machine's cores, so each board's time inflates with the others running; the
ratio measures the orchestration, not the boards. The farm is taken down afterwards (``--keep``
leaves it up).
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

REPO = Path(__file__).resolve().parent.parent
FARM = REPO / "scripts" / "farm"


def farm_env(boards: int) -> dict[str, str]:
    return {
        **os.environ,
        "EDGEQ_FARM_STATE": "/var/lib/edgeq-farm-bench",
        "EDGEQ_FARM_PREFIX": "eqbf",
        "EDGEQ_FARM_SUBNET": "10.213.9.0/24",
        "EDGEQ_FARM_HOSTS": ",".join(f"node{i}" for i in range(1, boards + 1)),
        "EDGEQ_FARM_EGRESS": "0",
    }


def build_models(d: Path) -> list[Path]:
    sys.path.insert(0, str(REPO))
    import numpy as np

    from edgeq.export.convert import to_int8_tflite
    from edgeq.tfenv import keras

    k = keras()
    out = []
    for name, width in (("small", 8), ("wide", 32)):
        k.utils.set_random_seed(0)
        model = k.Sequential(
            [
                k.layers.Input((16, 16, 1)),
                k.layers.Conv2D(width, 3, padding="same", activation="relu"),
                k.layers.Conv2D(width, 3, padding="same", activation="relu"),
                k.layers.GlobalAveragePooling2D(),
                k.layers.Dense(10),
            ]
        )
        calib = np.random.default_rng(0).uniform(0, 1, (16, 16, 16, 1)).astype(np.float32)
        path = d / f"{name}.tflite"
        path.write_bytes(to_int8_tflite(model, calib))
        out.append(path)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--boards", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--runs", type=int, default=500)
    ap.add_argument("--keep", action="store_true", help="leave the bench farm up")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench_farm: needs root (network namespaces)", file=sys.stderr)
        return 2
    env = farm_env(args.boards)
    up = subprocess.run(
        [str(FARM / "up.sh")], env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL
    )
    if up.returncode != 0:
        print(up.stderr[-2000:], file=sys.stderr)
        return 1
    farm = json.loads(up.stdout)
    try:
        with tempfile.TemporaryDirectory(prefix="edgeq-bench-farm-") as tmp:
            root = Path(tmp)
            home = root / "edgeq-home"
            home.mkdir()
            (home / "known_hosts").write_text(
                "".join(h["known_hosts_line"].strip() + "\n" for h in farm["hosts"])
            )
            models = build_models(root)
            lines = [
                'name = "bench"',
                f"rounds = {args.rounds}",
                "[measure]",
                f"runs = {args.runs}",
                "warmup = 10",
            ]
            for m in models:
                lines += ["[[models]]", f'path = "{m}"']
            for h in farm["hosts"]:
                prof = root / f"{h['name']}.toml"
                prof.write_text(
                    "\n".join(
                        [
                            'extends = "generic-x86_64"',
                            f'host = "{h["address"]}"',
                            f"port = {h['port']}",
                            f'user = "{h["user"]}"',
                            f'identity_file = "{h["identity_file"]}"',
                            f'python = "{h["python"]}"',  # the farm's board venv (scripts/farm)
                            'workdir = "~/edgeq"',
                        ]
                    )
                    + "\n"
                )
                lines += ["[[devices]]", f'profile = "{prof}"']
            farm_toml = root / "FARM.toml"
            farm_toml.write_text("\n".join(lines) + "\n")
            cmd = [
                sys.executable,
                "-m",
                "edgeq",
                "farm",
                "run",
                str(farm_toml),
                "--db",
                str(root / "r.db"),
                "--json",
            ]
            run_env = {**os.environ, "EDGEQ_HOME": str(home)}
            run_env.pop("EDGEQ_DB", None)
            t0 = time.monotonic()
            proc = subprocess.run(cmd, env=run_env, capture_output=True, text=True, stdin=subprocess.DEVNULL)
            wall = time.monotonic() - t0
            if proc.returncode != 0:
                print(proc.stderr[-3000:], file=sys.stderr)
                return 1
            events = [json.loads(ln) for ln in proc.stdout.splitlines() if ln.startswith("{")]
            summary = events[-1]
            start = next(e for e in events if e["event"] == "run")["t"]
            end = max(e.get("t", start) for e in events[:-1])
            busy = {name: b["busy_s"] for name, b in summary["boards"].items()}
            longest, total = max(busy.values()), sum(busy.values())
            for name, b in sorted(summary["boards"].items()):
                print(
                    f"{name}: busy {b['busy_s']:.2f} s, {b['measured']} measured, {b['connections']} connection(s)"
                )
            print(
                json.dumps(
                    {
                        "bench": "farm",
                        "boards": len(busy),
                        "models": len(models),
                        "rounds": args.rounds,
                        "measurements": sum(b["measured"] for b in summary["boards"].values()),
                        "wall_s": round(wall, 2),
                        "run_wall_s": round(end - start, 2),
                        "busy_s": {k: round(v, 2) for k, v in sorted(busy.items())},
                        "longest_busy_s": round(longest, 2),
                        "sum_busy_s": round(total, 2),
                        "ratio": round(wall / longest, 3),
                        "run_ratio": round((end - start) / longest, 3),
                        "serial_ratio": round(total / longest, 3),
                        "connections": sum(b["connections"] for b in summary["boards"].values()),
                        "cpu": os.cpu_count(),
                    }
                )
            )
    finally:
        if not args.keep:
            subprocess.run([str(FARM / "down.sh")], env=env, capture_output=True, stdin=subprocess.DEVNULL)
    return 0


if __name__ == "__main__":
    sys.exit(main())
