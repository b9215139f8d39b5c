"""Render a pipeline :class:`~edgeq.result.Report` (and a device :class:`~edgeq.result.Result`) as Markdown."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from edgeq.result import Report, Result


def _pct(v: float | None) -> str:
    return "—" if v is None else f"{v * 100:.2f} %"


def _kb(v: int | None) -> str:
    return "—" if v is None else f"{v / 1024:.1f} KiB"


def _drop(points: float | None) -> str:
    """``1.39`` → "loses 1.39 points"; ``-0.28`` → "gains 0.28 points" (never "drops -0.28")."""
    if points is None:
        return "—"
    if abs(points) < 5e-4:
        return "loses nothing"
    return f"loses {points:.2f} points" if points > 0 else f"gains {-points:.2f} points"


def report_markdown(report: Report | Mapping[str, Any]) -> str:
    r = report.to_dict() if isinstance(report, Report) else dict(report)
    acc = r.get("accuracy", {})
    size = r.get("size_bytes", {})
    params = r.get("params", {})
    prof = r.get("profile") or {}
    prof_float = r.get("profile_float") or {}
    gate = r.get("gate") or {}
    ds = r.get("dataset") or {}
    plots = r.get("plots") or {}
    ternary = r.get("weights") == "ternary"
    deployed = "student, **ternary** weights + int8 activations (QAT)" if ternary else "student, int8 **QAT**"
    lines = [
        "# edgeq report",
        "",
        f"Dataset **{ds.get('name', '?')}** ({ds.get('sizes', {}).get('test', '?')} test samples, "
        f"input {ds.get('input_shape')}), created {r.get('created', '?')}, wall time {r.get('wall_s', '?')} s.",
    ]
    failure = r.get("failure")
    if failure:
        lines += [
            "",
            f"**Stopped at {failure.get('stage')}**: {failure.get('message')}",
            "",
            f"What to do: {failure.get('hint') or '—'}. Everything below was done before it.",
        ]
    warnings = r.get("warnings") or []
    if warnings:
        lines += ["", "## Warnings", ""]
        lines += [f"- {w['message']}" + (f" ({w['hint']})" if w.get("hint") else "") for w in warnings]
    lines += [
        "",
        "## Accuracy (test split)",
        "",
        "| model | accuracy | size |",
        "|---|---:|---:|",
        f"| teacher, float ({params.get('teacher', '?')} params) | {_pct(acc.get('teacher_float'))} | |",
        f"| student, float ({params.get('student', '?')} params) | {_pct(acc.get('student_float'))} | "
        f"{_kb(size.get('student_float_tflite'))} |",
        f"| {deployed} — `model.tflite` | {_pct(acc.get('student_int8_qat'))} | {_kb(size.get('student_int8'))} |",
        f"| student, int8 PTQ (baseline) | {_pct(acc.get('student_int8_ptq'))} | "
        f"{_kb(size.get('student_int8_ptq'))} |",
    ]
    if ternary:
        lines += [
            f"| same ternary weights as builtin int8 ops | {_pct(acc.get('student_int8_qat_builtin_ops'))} | "
            f"{_kb(size.get('student_int8_builtin_ops'))} |",
            "",
            "Ternary weights: the QAT student's conv/dense layers (all but the first conv and the logits layer) are "
            "EDGEQ_TERNARY_* custom ops with 2-bit packed weights (docs/custom_ops.md).",
        ]
    lines.append("")
    if params.get("teacher") and params.get("student"):
        lines.append(f"Student/teacher parameters: {params['student'] / params['teacher']:.3f}.")
    if size.get("student_int8") and size.get("student_float_tflite"):
        kind = "ternary" if ternary else "int8"
        lines.append(
            f"{kind}/float `.tflite` size: {size['student_int8'] / size['student_float_tflite']:.3f}."
        )
    if gate:
        verdict = "passed" if gate.get("passed") else "**FAILED**"
        lines += [
            "",
            f"Accuracy gate {verdict}: the deployed model {_drop(gate.get('drop_points'))} against the float "
            f"student (allowed to lose {gate.get('max_accuracy_drop_points')}).",
        ]
    if prof:
        lines += _device_markdown(prof, prof_float, ds, plots, ternary)
    lines.append("")
    return "\n".join(lines)


def _device_markdown(
    prof: dict[str, Any], prof_float: dict[str, Any], ds: dict[str, Any], plots: dict[str, str], ternary: bool
) -> list[str]:
    dev = prof.get("device") or {}
    name = "ternary" if ternary else "int8"
    cols = [(name, prof)] + ([("float", prof_float)] if prof_float else [])
    lines = [
        "",
        f"## On device `{dev.get('name', '?')}` ({dev.get('arch', '?')}, {dev.get('runtime', '?')} "
        f"{dev.get('runtime_version', '')})",
        "",
        "| metric | " + " | ".join(c for c, _ in cols) + " |",
        "|---|" + "---:|" * len(cols),
    ]

    def row(label: str, get: Any) -> None:
        lines.append(f"| {label} | " + " | ".join(get(p) for _, p in cols) + " |")

    row("init", lambda p: f"{p.get('init_ms', 0):.2f} ms")
    for key in ("mean", "std", "min", "p50", "p90", "p99", "max"):
        row(f"latency {key}", lambda p, k=key: _num((p.get("latency_us") or {}).get(k), ".1f", " µs"))
    row("measured runs", lambda p: str((p.get("latency_us") or {}).get("n", "?")))
    row(
        "model memory (peak RSS − runner baseline)",
        lambda p: _mib((p.get("memory") or {}).get("model_peak_rss_kb")),
    )
    row("runner baseline RSS", lambda p: _mib((p.get("memory") or {}).get("runner_baseline_rss_kb")))
    row("on-device accuracy", lambda p: _pct((p.get("accuracy") or {}).get("top1")))
    row("threads", lambda p: str((p.get("execution") or {}).get("threads") or "not set"))
    row("placement", lambda p: ((p.get("execution") or {}).get("placement") or {}).get("summary", "—"))
    if prof_float and prof.get("latency_us") and prof_float.get("latency_us"):
        ratio = prof["latency_us"]["p50"] / max(prof_float["latency_us"]["p50"], 1e-9)
        lines += ["", f"{name} p50 / float p50 on this device: **{ratio:.2f}**."]
    if plots.get("latency"):
        lines += ["", f"![latency per invoke]({plots['latency']})"]
    on_dev = prof.get("accuracy") or {}
    if on_dev.get("confusion"):
        lines += _confusion_markdown(on_dev["confusion"], [str(x) for x in ds.get("labels") or []], name)
    lines += sensors_markdown(prof, plots.get("power"))
    return lines


def _mib(kb: int | None) -> str:
    return "—" if kb is None else f"{kb / 1024:.1f} MiB"


def _confusion_markdown(matrix: list[list[int]], labels: list[str], name: str) -> list[str]:
    n = len(matrix)
    names = [labels[i] if i < len(labels) else str(i) for i in range(n)]
    lines = [
        "",
        f"### Per class, on the device ({name})",
        "",
        "| true class | samples | accuracy | most often mistaken for |",
        "|---|---:|---:|---|",
    ]
    for i, row in enumerate(matrix):
        total = sum(row)
        wrong = [(c, j) for j, c in enumerate(row) if j != i and c]
        worst = max(wrong) if wrong else None
        mistaken = f"{names[worst[1]]} ({worst[0]})" if worst else "—"
        lines.append(f"| {names[i]} | {total} | {_pct(row[i] / total if total else None)} | {mistaken} |")
    lines += [
        "",
        "Confusion matrix (rows: true class, columns: predicted):",
        "",
        "| | " + " | ".join(names) + " |",
        "|---|" + "---:|" * n,
    ]
    lines += [f"| **{names[i]}** | " + " | ".join(str(c) for c in row) + " |" for i, row in enumerate(matrix)]
    return lines


def _num(v: Any, fmt: str, unit: str = "") -> str:
    return "—" if v is None else f"{v:{fmt}}{unit}"


def sensors_markdown(result: Result | Mapping[str, Any], plot: str | None = None) -> list[str]:
    """Power, thermal and warnings sections of one ``edgeq.result/1`` (empty when it has none).

    ``plot`` is the power PNG's path relative to the Markdown file (see edgeq.report.plot).
    """
    result = result.to_dict() if isinstance(result, Result) else result
    lines: list[str] = []
    power = result.get("power")
    if power:
        lines += ["", "### Power and energy", ""]
        if not power.get("available"):
            lines.append(
                f"Not measured: {power.get('reason') or 'no usable readings'} (source `{power.get('source')}`)."
            )
        else:
            pw = power.get("power_mw") or {}
            win = power.get("window") or {}
            smp = power.get("samples") or {}
            rate = power.get("rate_hz") or {}
            e, sigma = power.get("energy_mj_per_inference"), power.get("energy_mj_per_inference_sigma")
            energy = "—" if e is None else f"{e:.4g} ± {sigma or 0:.2g} mJ"
            sensor = power.get("sensor") or {}
            what = sensor.get("name") or ", ".join(sensor.get("domains") or []) or power.get("source")
            rails = sensor.get("rails")
            lines += [
                f"Source `{power.get('source')}` ({what}{'; rails ' + ', '.join(rails) if rails else ''}).",
                "",
                "| metric | value |",
                "|---|---:|",
                f"| energy per inference (net of idle, ±1σ) | {energy} |",
                f"| power idle | {_num(pw.get('idle'), '.1f', ' mW')} |",
                f"| power active, mean | {_num(pw.get('active_mean'), '.1f', ' mW')} |",
                f"| power active, p95 | {_num(pw.get('active_p95'), '.1f', ' mW')} |",
                f"| measured window | {_num(win.get('measure_s'), '.2f', ' s')}, {win.get('invokes', '?')} inferences"
                f"{' (lengthened for the sensor)' if win.get('lengthened') else ''} |",
                f"| samples (window / idle) | {smp.get('measure', '?')} / {smp.get('idle', '?')} |",
                f"| sampling rate achieved | {_num(rate.get('achieved'), '.1f', ' Hz')} "
                f"(target {_num(rate.get('target'), '.1f', ' Hz')}) |",
            ]
            if sensor.get("wraps"):
                lines.append(f"| counter wraps handled | {sensor['wraps']} |")
            lines += ["", f"Uncertainty: {power.get('energy_uncertainty', '')}."]
            note = power.get("note") or sensor.get("scope")
            if note:
                lines.append(f"Scope: {note}.")
        if plot:
            lines += ["", f"![power over time, measured window shaded]({plot})"]
    thermal = result.get("thermal")
    if thermal:
        lines += ["", "### Thermal state", ""]
        zones = thermal.get("zones") or []
        if zones:
            lines += ["| zone | before | max | after |", "|---|---:|---:|---:|"]
            for z in zones:
                lines.append(
                    f"| {z.get('type')} ({z.get('zone')}) | {_num(z.get('before_c'), '.1f', ' °C')} | "
                    f"{_num(z.get('max_c'), '.1f', ' °C')} | {_num(z.get('after_c'), '.1f', ' °C')} |"
                )
            lines.append("")
        for p in thermal.get("cpufreq") or []:
            cur = p.get("cur_mhz") or {}
            lines.append(
                f"- CPU {p.get('policy')} (cpus {p.get('cpus')}): governor {p.get('governor_during') or p.get('governor')}, "
                f"{_num(cur.get('min'), '.0f')}–{_num(cur.get('max'), '.0f')} MHz under load "
                f"(limits {_num(p.get('min_mhz'), '.0f')}–{_num(p.get('max_mhz'), '.0f')} MHz)"
            )
        gov = thermal.get("governor") or {}
        if gov.get("set_to"):
            restored = {True: "restored afterwards", False: "NOT restored", None: "unchanged"}[
                gov.get("restored")
            ]
            lines.append(f"- governor set to {gov['set_to']} for the run, {restored}")
        cool = thermal.get("cooldown")
        if cool:
            lines.append(
                f"- cool-down below {cool.get('below_c')} °C: {'reached' if cool.get('reached') else 'NOT reached'} "
                f"after {cool.get('waited_s')} s ({_num(cool.get('start_c'), '.1f')} → {_num(cool.get('end_c'), '.1f')} °C)"
            )
        thr = thermal.get("throttling") or {}
        if thr.get("detected"):
            lines.append("- **throttled during the measurement**: " + "; ".join(thr.get("reasons") or []))
        else:
            lines.append("- no throttling detected")
    warnings = result.get("warnings") or []
    if warnings:
        lines += ["", "### Warnings", ""]
        for w in warnings:
            hint = f" — {w['hint']}" if w.get("hint") else ""
            lines.append(f"- `{w.get('code')}`: {w.get('message')}{hint}")
    return lines
