"""One self-contained HTML page for a farm run (and its comparison with a baseline).

Everything is inline — CSS, SVG charts drawn here, a few lines of script for the table filter —
and a Content-Security-Policy forbids the page any network request. Sections:

1. the run, the baseline and the gate;
2. the verdict table (model × device × metric: outcome, baseline → current, change, interval,
   p-values, rounds, why), filterable by outcome, and the pairs that could not be compared;
3. per board: latency distributions of each model from the raw samples (current over baseline),
   accuracy vs latency vs energy of the board's models, and each model's history across runs
   from the store.
"""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import UTC, datetime
from html import escape
from pathlib import Path
from typing import Any

import numpy as np

from edgeq.farm.reports import charts
from edgeq.farm.store import Store, StoredResult
from edgeq.farm.store.records import iso
from edgeq.farm.verdict import OUTCOMES, Comparison, Verdict
from edgeq.files import atomic_write

CSP = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:"
HISTORY_RUNS = 30

CSS = """
:root { color-scheme: light; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0; color: #1a202c; background: #f7fafc; }
header, main { max-width: 1240px; margin: 0 auto; padding: 0 20px; }
header { padding-top: 18px; }
h1 { font-size: 22px; margin: 0 0 4px; }
h2 { font-size: 18px; margin: 28px 0 8px; border-bottom: 1px solid #e2e8f0; padding-bottom: 4px; }
h3 { font-size: 15px; margin: 18px 0 6px; color: #2d3748; }
.meta { color: #4a5568; font-size: 13px; }
.meta code { font-size: 12px; }
.gate { display: inline-block; padding: 3px 10px; border-radius: 4px; font-weight: 600; color: #fff; }
.gate.failed { background: #c53030; } .gate.passed { background: #2f855a; } .gate.none { background: #718096; }
.counts span { margin-right: 12px; }
table { border-collapse: collapse; width: 100%; background: #fff; font-size: 13px; }
th, td { border-bottom: 1px solid #edf2f7; padding: 5px 7px; text-align: left; vertical-align: top; }
th { background: #edf2f7; position: sticky; top: 0; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.badge { display: inline-block; padding: 1px 7px; border-radius: 10px; font-size: 12px; font-weight: 600; color: #fff; }
.badge.regressed { background: #c53030; } .badge.improved { background: #2f855a; }
.badge.unchanged { background: #718096; } .badge.inconclusive { background: #b7791f; }
.badge.error { background: #742a2a; } .badge.skipped { background: #a0aec0; }
.filters button { margin: 0 6px 8px 0; padding: 3px 10px; border: 1px solid #cbd5e0; background: #fff; border-radius: 4px; cursor: pointer; }
.filters button.on { background: #2b6cb0; color: #fff; border-color: #2b6cb0; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(360px, 1fr)); gap: 12px; }
.card { background: #fff; border: 1px solid #e2e8f0; border-radius: 6px; padding: 8px; }
.card p { margin: 2px 4px; font-size: 12px; color: #4a5568; }
.scatter { max-width: 760px; }
svg.chart { width: 100%; height: auto; display: block; }
.reason { color: #4a5568; font-size: 12px; }
footer { max-width: 1240px; margin: 30px auto; padding: 0 20px; color: #718096; font-size: 12px; }
"""

SCRIPT = """
(function () {
  var buttons = document.querySelectorAll('.filters button');
  var rows = document.querySelectorAll('#verdicts tbody tr');
  function show(outcome) {
    buttons.forEach(function (b) { b.classList.toggle('on', b.dataset.outcome === outcome); });
    rows.forEach(function (r) { r.hidden = !(outcome === 'all' || r.dataset.outcome === outcome); });
  }
  buttons.forEach(function (b) { b.addEventListener('click', function () { show(b.dataset.outcome); }); });
  document.body.dataset.ready = 'true';
})();
"""


def _fmt(v: float | None, unit: str = "") -> str:
    if v is None:
        return "–"
    return charts.fmt(v) + (f" {unit}" if unit else "")


def _p(p: float | None) -> str:
    if p is None:
        return "–"
    if p == 0:
        return "&lt; 1e-300"
    return f"{p:.3g}" if p >= 1e-3 else f"{p:.1e}"


def _samples(rows: list[StoredResult]) -> np.ndarray:
    parts = [np.asarray(r.metrics.latency_samples_us, float) for r in rows if r.metrics.latency_samples_us]
    return np.concatenate(parts) if parts else np.empty(0)


def _verdict_row(v: Verdict) -> str:
    change = "–"
    if v.delta is not None:
        unit = "pt" if v.metric == "accuracy" else v.unit
        pct = f"{v.delta_pct:+.1f} %, " if v.delta_pct is not None and v.metric != "accuracy" else ""
        change = f"{pct}{v.delta:+.4g} {unit}"
    ci = f"{v.ci_pct[0]:+.1f} … {v.ci_pct[1]:+.1f} %" if v.ci_pct is not None else "–"
    notes = "".join(f"<br>{escape(n)}" for n in v.notes)
    return (
        f'<tr data-outcome="{v.outcome}"><td>{escape(v.model)}</td><td>{escape(v.device)}</td><td>{v.metric}</td>'
        f'<td><span class="badge {v.outcome}">{v.outcome}</span></td>'
        f'<td class="num">{_fmt(v.baseline, v.unit)}</td><td class="num">{_fmt(v.current, v.unit)}</td>'
        f'<td class="num">{escape(change)}</td><td class="num">{ci}</td>'
        f'<td class="num">{_p(v.p_value)}</td><td class="num">{_p(v.p_runs)}</td><td class="num">{_p(v.p_adjusted)}</td>'
        f'<td class="num">{v.rounds_baseline} / {v.rounds}</td>'
        f'<td class="reason">{escape(v.reason)}{notes}</td></tr>'
    )


def _verdict_section(c: Comparison) -> str:
    counts = c.counts()
    buttons = ['<button data-outcome="all" class="on">all</button>'] + [
        f'<button data-outcome="{o}">{o} ({counts[o]})</button>' for o in OUTCOMES
    ]
    severity = {"regressed": 0, "improved": 1, "inconclusive": 2, "unchanged": 3}
    ordered = sorted(c.verdicts, key=lambda v: (severity[v.outcome], v.model, v.device))
    rows = "".join(_verdict_row(v) for v in ordered)
    out = [
        "<h2>Verdicts</h2>",
        f'<div class="filters">{"".join(buttons)}</div>',
        '<table id="verdicts"><thead><tr><th>model</th><th>device</th><th>metric</th><th>outcome</th>'
        "<th>baseline</th><th>current</th><th>change</th><th>90 % interval</th><th>p (U test)</th>"
        "<th>p (rounds)</th><th>p adjusted</th><th>rounds b / c</th><th>why</th></tr></thead>"
        f"<tbody>{rows}</tbody></table>",
    ]
    if c.problems:
        prow = "".join(
            f"<tr><td>{escape(p.model)}</td><td>{escape(p.device)}</td>"
            f'<td><span class="badge {"skipped" if p.kind in ("no_baseline", "missing") else "error"}">{escape(p.kind)}</span></td>'
            f"<td>{escape(p.message)}</td><td class='num'>{p.attempts or ''}</td></tr>"
            for p in c.problems
        )
        out.append(
            "<h3>Pairs not compared</h3>"
            '<table id="problems"><thead><tr><th>model</th><th>device</th><th>kind</th><th>message</th>'
            f"<th>attempts</th></tr></thead><tbody>{prow}</tbody></table>"
        )
    return "\n".join(out)


def _board_section(
    store: Store,
    device: str,
    cur_by: dict[tuple[str, str], list[StoredResult]],
    base_by: dict[tuple[str, str], list[StoredResult]],
    verdicts: dict[tuple[str, str, str], Verdict],
    run_id: int,
) -> str:
    models = sorted({m for (m, d) in cur_by if d == device})
    dists, points, hist = [], [], []
    for model in models:
        rows = [r for r in cur_by[(model, device)] if r.ok]
        base_rows = [r for r in base_by.get((model, device), []) if r.ok]
        cur_s, base_s = _samples(rows), _samples(base_rows)
        lat = verdicts.get((model, device, "latency"))
        caption = (
            f'<p><span class="badge {lat.outcome}">{lat.outcome}</span> {escape(lat.summary())}</p>'
            if lat
            else ""
        )
        if cur_s.size:
            dists.append(
                f'<div class="card dist-card">{charts.histogram(cur_s, base_s if base_s.size else None, model)}{caption}</div>'
            )
        elif not rows:
            last_row = cur_by[(model, device)][-1]
            dists.append(
                f'<div class="card failed-card"><p><b>{escape(model)}</b>: no result in this run</p>'
                f'<p><span class="badge error">{escape(last_row.status)}</span> {escape(last_row.message or "")} '
                f"(attempt {last_row.attempt})</p></div>"
            )
        else:
            dists.append(f'<div class="card"><p>{escape(model)}: no raw latency samples</p>{caption}</div>')
        if rows:
            p50s = [r.metrics.latency_p50_us for r in rows if r.metrics.latency_p50_us is not None]
            last = rows[-1].metrics
            acc = 100.0 * (last.accuracy_correct or 0) / last.accuracy_n if last.accuracy_n else None
            x = float(np.median(cur_s)) if cur_s.size else (float(np.median(p50s)) if p50s else 0.0)
            worst = next(
                (
                    verdicts[(model, device, m)].outcome
                    for m in ("latency", "energy", "accuracy", "memory")
                    if (model, device, m) in verdicts and verdicts[(model, device, m)].outcome == "regressed"
                ),
                lat.outcome if lat else None,
            )
            tip = f"{model}: latency p50 {charts.fmt(x)} µs" + (
                f", accuracy {acc:.2f} %" if acc is not None else ""
            )
            tip += (
                f", energy {last.energy_mj:.4g} mJ" if last.energy_mj is not None else ", energy not measured"
            )
            points.append(
                charts.Point(
                    model,
                    x,
                    acc,
                    last.energy_mj,
                    charts.OUTCOME_COLORS.get(worst or "", charts.CUR_COLOR),
                    tip,
                )
            )
        marks = []
        for h in store.history(model, device, limit=HISTORY_RUNS):
            tip = f"run {h.run_id} ({iso(h.started_at)}): p50 {_fmt(h.latency_p50_us, 'µs')}, {h.rounds} round(s)"
            if h.baselines:
                tip += ", baseline " + ", ".join(h.baselines)
            marks.append(
                charts.HistoryMark(
                    str(h.run_id), h.latency_p50_us, tip, h.run_id == run_id, bool(h.baselines)
                )
            )
        hist.append(f'<div class="card">{charts.history(marks, f"{model}: latency p50 by run")}</div>')
    return "\n".join(
        [
            f'<section class="board" data-device="{escape(device)}"><h2>Board {escape(device)}</h2>',
            "<h3>Latency distributions (raw samples of all rounds: this run filled, the baseline outlined)</h3>",
            f'<div class="grid">{"".join(dists)}</div>',
            "<h3>Accuracy vs latency vs energy</h3>",
            f'<div class="card scatter">{charts.scatter(points, device)}</div>',
            "<h3>History across runs</h3>",
            f'<div class="grid">{"".join(hist)}</div>',
            "</section>",
        ]
    )


def _by_pair(rows: list[StoredResult]) -> dict[tuple[str, str], list[StoredResult]]:
    out: dict[tuple[str, str], list[StoredResult]] = defaultdict(list)
    for r in rows:
        out[r.pair].append(r)
    return out


def render_html(store: Store, what: Comparison | int | str) -> str:
    """The page for a comparison (verdicts included) or for one run (a run id, ``latest``, a
    baseline name)."""
    comparison = what if isinstance(what, Comparison) else None
    run_id = comparison.run_id if comparison else store.resolve_run(what)  # type: ignore[arg-type]
    run = store.run(run_id)
    cur_by = _by_pair(store.results(run_id, result_json=False))
    base_by: dict[tuple[str, str], list[StoredResult]] = {}
    verdicts: dict[tuple[str, str, str], Verdict] = {}
    if comparison is not None:
        base_by = _by_pair(store.results(comparison.baseline_run_id, result_json=False))
        verdicts = {(v.model, v.device, v.metric): v for v in comparison.verdicts}
    devices = sorted({d for (_, d) in cur_by})

    if comparison is None:
        gate = '<span class="gate none">no comparison</span>'
        against = ""
    elif comparison.gate_failed:
        gate = f'<span class="gate failed">gate failed: {len(comparison.regressions)} regression(s)</span>'
        against = f" against {escape(comparison.against)} (run {comparison.baseline_run_id})"
    else:
        gate = '<span class="gate passed">gate passed</span>'
        against = f" against {escape(comparison.against)} (run {comparison.baseline_run_id})"
    counts = ""
    if comparison is not None:
        counts = '<p class="counts">' + "".join(
            f'<span><span class="badge {o}">{o}</span> {n}</span>' for o, n in comparison.counts().items()
        )
        counts += f"<span>not compared: {len(comparison.problems)}</span></p>"
    title = f"edgeq farm {escape(run.farm)}: run {run.id}{against}"
    summary = {
        "run": run.id,
        "baseline_run": comparison.baseline_run_id if comparison else None,
        "gate_failed": comparison.gate_failed if comparison else None,
        "counts": comparison.counts() if comparison else None,
    }
    # JSON in a script element: "<" escaped so no "</script>" can end it early.
    summary_json = json.dumps(summary).replace("<", "\\u003c")
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{title}</title><style>{CSS}</style></head><body>",
        f'<header><h1>{title}</h1><p>{gate}</p>{counts}<p class="meta">farm <b>{escape(run.farm)}</b> '
        f"(FARM.toml <code>{escape(run.farm_sha256[:16])}</code>) · {escape(run.status)} · started "
        f"{escape(iso(run.started_at) or '')} · finished {escape(iso(run.finished_at) or '–')} · host "
        f"{escape(run.host)} · edgeq {escape(run.edgeq_version)} · boards {len(devices)} · pairs {len(cur_by)}</p></header>",
        "<main>",
        _verdict_section(comparison) if comparison is not None else "",
        *(_board_section(store, d, cur_by, base_by, verdicts, run_id) for d in devices),
        "</main>",
        f"<footer>Generated by edgeq at {datetime.now(UTC).strftime('%Y-%m-%d %H:%M:%S')} UTC. "
        "Self-contained: no scripts, styles or fonts are loaded from anywhere.</footer>",
        f'<script type="application/json" id="summary">{summary_json}</script>',
        f"<script>{SCRIPT}</script>",
        "</body></html>",
    ]
    return "\n".join(p for p in parts if p)


def write_html(store: Store, what: Comparison | int | str, path: Path) -> Path:
    """Write the HTML report to ``path`` (atomically)."""
    atomic_write(Path(path), render_html(store, what))
    return Path(path)


def summary_of(page: str) -> dict[str, Any]:
    """The JSON summary embedded in a page (for tests and tools)."""
    start = page.index('id="summary">') + len('id="summary">')
    return dict(json.loads(page[start : page.index("</script>", start)]))
