"""Farm store test helpers: results shaped like the runner's, and a store URL per backend.

``make_result(...)`` builds an ``edgeq.result/1`` exactly as the runner writes one (the fields and
nesting of a real ``python -m edgeq.runner run`` on this machine, plus the host's hashes), with the
figures a test chooses: raw latency samples, energy and its sigma, accuracy counts, memory, thermal.

``store_url`` is parametrized over SQLite (a file in the test's directory) and PostgreSQL (a fresh
database on the session's server from support_postgres).
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgeq.farm.results_api import baseline_set, compare
from edgeq.farm.store import Failure, Store
from edgeq.farm.store.records import StoredResult
from edgeq.farm.verdict import Comparison
from edgeq.result import Result

RUNNER_SHA = hashlib.sha256(b"runner.pyz").hexdigest()
PROFILE_SHA = hashlib.sha256(b"profile board").hexdigest()


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def latency_samples(n: int, median_us: float, seed: int, spread: float = 0.05) -> np.ndarray:
    """Per-invoke latencies as a board gives them: log-normal around the median plus a long right
    tail (interrupts, cache misses) in a few percent of the invokes."""
    rng = np.random.default_rng(seed)
    x = median_us * np.exp(rng.normal(0.0, spread, n))
    tail = rng.random(n) < 0.03
    x[tail] += rng.exponential(median_us * 0.5, int(tail.sum()))
    return np.round(x, 3)


def make_result(
    *,
    model: str = "net.tflite",
    device: str = "board",
    samples: np.ndarray | list[float] | None = None,
    median_us: float = 400.0,
    n: int = 500,
    seed: int = 0,
    energy_mj: float | None = None,
    energy_sigma_mj: float | None = None,
    correct: int | None = None,
    tested: int | None = None,
    peak_rss_kb: int = 49388,
    model_peak_rss_kb: int | None = 5608,
    max_c: float | None = None,
    throttled: bool | None = None,
    model_sha: str | None = None,
    delegate: str = "xnnpack",
) -> Result:
    if samples is None:
        samples = latency_samples(n, median_us, seed)
    s = np.asarray(samples, dtype=float)
    spec: dict[str, Any] = {
        "runs": int(s.size), "warmup": 10, "min_seconds": None, "threads": 1, "runtime": "auto",
        "delegate": delegate, "delegate_options": {}, "min_delegate_coverage": None,
        "power": {"source": "ina219"} if energy_mj is not None else None,
        "thermal": {"zones": ["cpu-thermal"]} if max_c is not None else None,
        "sysfs_root": "/sys", "vcgencmd": "vcgencmd", "timeout_s": 600.0, "return_samples": 10000,
        "save_outputs": False,
    }  # fmt: skip
    data: dict[str, Any] = {
        "schema": "edgeq.result/1",
        "timestamp": "2026-11-30T14:58:52Z",
        "init_ms": 1.715,
        "latency_us": {
            "mean": round(float(s.mean()), 3),
            "std": round(float(s.std()), 3),
            "min": round(float(s.min()), 3),
            "p50": round(float(np.percentile(s, 50)), 3),
            "p90": round(float(np.percentile(s, 90)), 3),
            "p99": round(float(np.percentile(s, 99)), 3),
            "max": round(float(s.max()), 3),
            "n": int(s.size),
            "wall_s": round(float(s.sum()) / 1e6, 6),
            "samples": [float(v) for v in s],
        },
        "peak_rss_kb": peak_rss_kb,
        "memory": {
            "peak_rss_kb": peak_rss_kb,
            "runner_baseline_rss_kb": peak_rss_kb - (model_peak_rss_kb or 0),
            **({"model_peak_rss_kb": model_peak_rss_kb} if model_peak_rss_kb is not None else {}),
        },
        "execution": {
            "delegate": delegate,
            "delegate_nodes": 1,
            "placement": {
                "delegate": delegate,
                "source": "device",
                "summary": "3 of 3 ops on xnnpack, 0 on the CPU",
                "on_delegate": 3,
                "on_cpu": 0,
                "total": 3,
                "ops": [
                    {"index": 0, "op": "CONV_2D", "placement": "delegate", "reason": "XNNPACK"},
                    {"index": 1, "op": "MEAN", "placement": "delegate", "reason": "XNNPACK"},
                    {"index": 2, "op": "FULLY_CONNECTED", "placement": "delegate", "reason": "XNNPACK"},
                ],
                "notes": [],
            },
            "threads": 1,
        },  # fmt: skip
        "device": {
            "name": device,
            "runtime": "ai-edge-litert",
            "runtime_version": "2.3.0",
            "numpy": "2.4.6",
            "arch": "aarch64",
            "os": "Linux",
            "kernel": "6.6.31",
            "python": "3.11.2",
            "hostname": device,
            "profile": "rpi5",
            "profile_sha256": PROFILE_SHA,
        },  # fmt: skip
        "model": {"name": model, "sha256": model_sha or sha(model), "size_bytes": 612345},
        "config": {
            "runs": int(s.size),
            "warmup": 10,
            "threads": 1,
            "min_seconds": None,
            "runtime": "ai-edge-litert",
            "delegate": delegate,
            "input": "random, seed 0",
        },  # fmt: skip
        "spec": spec,
        "runner_version": "1",
        "runner": {"sha256": RUNNER_SHA},
        "warnings": [],
        "hashes": {"model": model_sha or sha(model), "runner": RUNNER_SHA, "profile": PROFILE_SHA},
    }
    if correct is not None and tested is not None:
        data["accuracy"] = {"top1": correct / tested, "n": tested, "correct": correct}
    if energy_mj is not None:
        data["power"] = {
            "available": True,
            "source": "ina219",
            "power_mw": {"idle": 2710.0, "active": 3405.5},
            "energy_mj_per_inference": energy_mj,
            "energy_mj_per_inference_sigma": energy_sigma_mj,
        }
    if max_c is not None:
        data["thermal"] = {
            "zones": [
                {
                    "zone": "thermal_zone0",
                    "type": "cpu-thermal",
                    "before_c": 48.2,
                    "after_c": max_c - 1,
                    "max_c": max_c,
                }
            ],
            "max_c": max_c,
            "throttling": {
                "detected": bool(throttled),
                "reasons": ["cpu0: frequency cap lowered"] if throttled else [],
            },
            "samples": 40,
            "rate_hz": 10,
        }
    return Result.from_dict(data)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'results.db'}"
    return str(request.getfixturevalue("pg_url"))


_ids = iter(range(1, 10**9))


def as_stored(result: Result, *, model: str = "net", device: str = "board", run_id: int = 1) -> StoredResult:
    """The StoredResult the store gives back for ``result`` (same extraction, no database)."""
    from edgeq.farm.store.records import row_values
    from edgeq.farm.store.store import _stored

    row = {
        **row_values(result),
        "id": next(_ids),
        "run_id": run_id,
        "recorded_at": datetime.now(UTC),
        "model": model,
        "device": device,
        "attempt": 1,
        "status": "ok",
        "message": None,
    }
    return _stored(row)


def rounds_of(
    k: int,
    *,
    median_us: float,
    n: int = 500,
    run_noise: float = 0.0,
    seed: int = 0,
    pair: tuple[str, str] = ("net", "board"),
    **result: Any,
) -> list[StoredResult]:
    """``k`` rounds (runner processes) of one pair; each round's median moves by a log-normal
    run-to-run factor of sd ``run_noise`` around ``median_us``. ``result``: make_result's options."""
    rng = np.random.default_rng(10_000 + seed)
    out = []
    for i in range(k):
        m = median_us * float(np.exp(rng.normal(0.0, run_noise))) if run_noise else median_us
        r = make_result(samples=latency_samples(n, m, seed * 1000 + i), **result)
        out.append(as_stored(r, model=pair[0], device=pair[1]))
    return out


# ------------------------------------------------------------------ a farm's worth of runs

BOARDS = ("pi5-a", "jetson-orin")
MODELS = {"mobilenet": 900.0, "digits-cnn": 120.0, "kws-ds-cnn": 310.0}


def _round(model: str, device: str, median: float, seed: int, **kw: Any) -> Any:
    energy = median / 1000 * (1.9 if device == "pi5-a" else 1.2)  # mJ, roughly power × time
    acc = {"mobilenet": 1480, "digits-cnn": 1930, "kws-ds-cnn": 1790}.get(model)  # new-model: none
    values: dict[str, Any] = {
        "model": f"{model}.tflite",
        "device": device,
        "median_us": median,
        "n": 400,
        "seed": seed,
        "energy_mj": round(energy, 5),
        "energy_sigma_mj": round(energy * 0.01, 6),
        "correct": acc,
        "tested": 2000,
        "max_c": 58.0,
        "throttled": False,
    }
    values.update(kw)
    return make_result(**values)


def build_farm(store: Store) -> Comparison:
    """Five runs of 3 models × 2 boards (3 rounds each); run 4 is the baseline ``main``; run 5
    has mobilenet 20 % slower on pi5-a, kws faster on the Jetson, digits less accurate on the
    Jetson, a board timing out for one model, and a model new to the farm."""
    seed = 0
    run_ids = []
    for k in range(5):
        run = store.create_run("lab farm", sha("FARM.toml"))
        for device in BOARDS:
            for model, base in MODELS.items():
                if k == 4 and (model, device) == ("kws-ds-cnn", "pi5-a"):
                    for attempt in (1, 2, 3):
                        store.add_result(
                            run.id,
                            Failure("timeout", "no result within 600 s", model, device, "xnnpack"),
                            attempt=attempt,
                        )
                    continue
                median = base * (1.3 if device == "pi5-a" else 0.8) * (1 + 0.01 * ((k * 7) % 3))
                kw: dict[str, Any] = {}
                if k == 4 and (model, device) == ("mobilenet", "pi5-a"):
                    median *= 1.2
                    kw["model_sha"] = sha("mobilenet v2 retrained")
                if k == 4 and (model, device) == ("kws-ds-cnn", "jetson-orin"):
                    median *= 0.8
                if k == 4 and (model, device) == ("digits-cnn", "jetson-orin"):
                    kw["correct"] = 1830
                for _ in range(3):
                    seed += 1
                    store.add_result(
                        run.id, _round(model, device, median, seed, **kw), model=model, device=device
                    )
        if k == 4:
            seed += 1
            store.add_result(
                run.id, _round("new-model", "pi5-a", 450.0, seed), model="new-model", device="pi5-a"
            )
        store.finish_run(run.id)
        run_ids.append(run.id)
        if k == 3:
            baseline_set(store, run.id)
    return compare(store, run_ids[-1], against="main")
