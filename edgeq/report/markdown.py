"""Render an ``edgeq.report/1`` dict as Markdown for people."""

from __future__ import annotations

from typing import Any


def _pct(v: float | None) -> str:
    return "—" if v is None else f"{v * 100:.2f} %"


def _kb(v: int | None) -> str:
    return "—" if v is None else f"{v / 1024:.1f} KiB"


def report_markdown(r: dict[str, Any]) -> str:
    acc = r.get("accuracy", {})
    size = r.get("size_bytes", {})
    params = r.get("params", {})
    prof = r.get("profile") or {}
    lat = prof.get("latency_us") or {}
    dev = prof.get("device") or {}
    gate = r.get("gate") or {}
    ds = r.get("dataset") or {}
    lines = [
        "# edgeq report",
        "",
        f"Dataset **{ds.get('name', '?')}** ({ds.get('sizes', {}).get('test', '?')} test samples, "
        f"input {ds.get('input_shape')}), created {r.get('created', '?')}, wall time {r.get('wall_s', '?')} s.",
        "",
        "## Accuracy (test split)",
        "",
        "| model | accuracy | size |",
        "|---|---:|---:|",
        f"| teacher, float ({params.get('teacher', '?')} params) | {_pct(acc.get('teacher_float'))} | |",
        f"| student, float ({params.get('student', '?')} params) | {_pct(acc.get('student_float'))} | "
        f"{_kb(size.get('student_float_tflite'))} |",
        f"| student, int8 **QAT** | {_pct(acc.get('student_int8_qat'))} | {_kb(size.get('student_int8'))} |",
        f"| student, int8 PTQ (baseline) | {_pct(acc.get('student_int8_ptq'))} | "
        f"{_kb(size.get('student_int8_ptq'))} |",
        "",
    ]
    if params.get("teacher") and params.get("student"):
        lines.append(f"Student/teacher parameters: {params['student'] / params['teacher']:.3f}.")
    if size.get("student_int8") and size.get("student_float_tflite"):
        lines.append(f"int8/float `.tflite` size: {size['student_int8'] / size['student_float_tflite']:.3f}.")
    if gate:
        verdict = "passed" if gate.get("passed") else "**FAILED**"
        lines += [
            "",
            f"Accuracy gate {verdict}: QAT int8 drops {gate.get('drop_points')} points from the float student "
            f"(allowed {gate.get('max_accuracy_drop_points')}).",
        ]
    if prof:
        on_dev = prof.get("accuracy") or {}
        lines += [
            "",
            f"## On device `{dev.get('name', '?')}` ({dev.get('arch', '?')}, {dev.get('runtime', '?')} "
            f"{dev.get('runtime_version', '')})",
            "",
            "| metric | value |",
            "|---|---:|",
            f"| init | {prof.get('init_ms', 0):.2f} ms |",
        ]
        for key in ("mean", "std", "min", "p50", "p90", "p99", "max"):
            if key in lat:
                lines.append(f"| latency {key} | {lat[key]:.1f} µs |")
        lines.append(f"| measured runs | {lat.get('n', '?')} |")
        lines.append(f"| peak RSS | {prof.get('peak_rss_kb', 0) / 1024:.1f} MiB |")
        if on_dev:
            lines.append(f"| on-device int8 accuracy | {_pct(on_dev.get('top1'))} (n={on_dev.get('n')}) |")
    lines.append("")
    return "\n".join(lines)
