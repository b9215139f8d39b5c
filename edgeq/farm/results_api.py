"""What the ``edgeq farm`` commands call: one function per command, store in, records out.

>>> store = open_store(db_url)                       # edgeq.farm.store.open_store
>>> runs(store)                                      # edgeq farm runs
>>> show(store, "latest")                            # edgeq farm show RUN
>>> export(store, 12)                                # edgeq farm export RUN
>>> baseline_set(store, 12, name="main")             # edgeq farm baseline set RUN --name main
>>> c = compare(store, 13, against="main")           # edgeq farm compare RUN --against main
>>> write_junit(c, Path("farm.xml")); write_html(store, c, Path("farm.html"))
>>> raise SystemExit(4 if c.gate_failed else 0)

A run is given as an id, ``latest``, or a baseline name (see :meth:`Store.resolve_run`).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from edgeq.farm.store import RunInfo, Store
from edgeq.farm.store.records import iso
from edgeq.farm.verdict import Comparison, Thresholds, compare_results

RUN_SCHEMA = "edgeq.farm.run/1"


def runs(store: Store, *, farm: str | None = None, limit: int | None = 50) -> list[RunInfo]:
    """The runs, newest first."""
    return store.runs(farm=farm, limit=limit)


def show(store: Store, run: int | str) -> dict[str, Any]:
    """A run and one line per (model, device): rounds, failures, the figures of its rounds
    (``edgeq.farm.run/1``)."""
    run_id = store.resolve_run(run)
    info = store.run(run_id)
    by_pair: dict[tuple[str, str], list[Any]] = defaultdict(list)
    for r in store.results(run_id, samples=False, result_json=False):
        by_pair[r.pair].append(r)
    pairs = []
    for (model, device), rows in sorted(by_pair.items()):
        ok = [r for r in rows if r.ok]
        last = rows[-1]
        m = ok[-1].metrics if ok else None
        pairs.append(
            {
                "model": model,
                "device": device,
                "delegate": last.delegate,
                "status": "ok" if ok else last.status,
                "message": None if ok else last.message,
                "rounds": len(ok),
                "failures": len(rows) - len(ok),
                "latency_p50_us": [r.metrics.latency_p50_us for r in ok],
                "latency_p99_us": [r.metrics.latency_p99_us for r in ok],
                "energy_mj": m.energy_mj if m else None,
                "energy_sigma_mj": m.energy_sigma_mj if m else None,
                "accuracy_pct": (100.0 * (m.accuracy_correct or 0) / m.accuracy_n)
                if m and m.accuracy_n
                else None,
                "model_peak_rss_kb": m.model_peak_rss_kb if m else None,
                "peak_rss_kb": m.peak_rss_kb if m else None,
                "thermal_max_c": m.thermal_max_c if m else None,
                "throttled": m.throttled if m else None,
                "recorded_at": iso(last.recorded_at),
                "hashes": last.hashes.to_dict(),
            }
        )
    return {"schema": RUN_SCHEMA, "run": info.to_dict(), "pairs": pairs}


def export(store: Store, run: int | str) -> dict[str, Any]:
    """The run and every result whole, raw samples included (``edgeq.farm.export/1``, docs/ci.md)."""
    return store.export_run(store.resolve_run(run))


def baseline_set(store: Store, run: int | str, name: str = "main") -> RunInfo:
    """Point the baseline ``name`` at the run."""
    return store.set_baseline(store.resolve_run(run), name)


def compare(
    store: Store, run: int | str, against: int | str = "main", thresholds: Thresholds | None = None
) -> Comparison:
    """Verdicts of ``run`` against ``against`` (a baseline name or a run)."""
    run_id = store.resolve_run(run)
    base_id = store.resolve_run(against)
    return compare_results(
        store.results(base_id, result_json=False),
        store.results(run_id, result_json=False),
        thresholds,
        run_id=run_id,
        baseline_run_id=base_id,
        against=str(against),
    )


def write_junit(comparison: Comparison, path: Path) -> Path:
    from edgeq.farm.reports.junit import write_junit as _write

    return _write(comparison, path)


def write_html(store: Store, what: Comparison | int | str, path: Path) -> Path:
    """The HTML report of a comparison (verdicts included) or of a run alone."""
    from edgeq.farm.reports.html import write_html as _write

    return _write(store, what, path)
