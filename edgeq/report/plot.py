"""Plots for reports: power over time with the measured window shaded (matplotlib, Agg backend)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from edgeq.files import atomic_path
from edgeq.result import Result


def plot_power(result: Result | Mapping[str, Any], dest: Path, *, title: str | None = None) -> Path | None:
    """Write a PNG of the result's power trace (``power.trace``) to ``dest``.

    The idle baseline and the measured window are shaded, the idle level and the active mean drawn
    as lines, and the hottest thermal zone (when recorded) follows on a second axis. Returns
    ``dest``, or None when the result has no power trace (power off, sensor missing). Written to a
    temporary name first, then renamed.
    """
    result = result.to_dict() if isinstance(result, Result) else result
    power = result.get("power") or {}
    trace = power.get("trace") or {}
    t_ms, mw = trace.get("t_ms") or [], trace.get("mw") or []
    if not t_ms or len(t_ms) != len(mw):
        return None

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [x / 1000.0 for x in t_ms]
    fig, ax = plt.subplots(figsize=(9, 4), dpi=110)
    try:
        ax.plot(t, mw, lw=0.8, color="tab:blue", label="power")
        marks = trace.get("marks_ms") or {}
        if "idle" in marks:
            a, b = (x / 1000.0 for x in marks["idle"])
            ax.axvspan(a, b, color="tab:gray", alpha=0.15, label="idle baseline")
        if "measure" in marks:
            a, b = (x / 1000.0 for x in marks["measure"])
            ax.axvspan(a, b, color="tab:orange", alpha=0.2, label="measured window")
        levels = power.get("power_mw") or {}
        if levels.get("idle") is not None:
            ax.axhline(
                levels["idle"], color="tab:gray", ls="--", lw=0.8, label=f"idle {levels['idle']:.0f} mW"
            )
        if levels.get("active_mean") is not None:
            ax.axhline(
                levels["active_mean"],
                color="tab:orange",
                ls="--",
                lw=0.8,
                label=f"active mean {levels['active_mean']:.0f} mW",
            )
        ax.set_xlabel("time (s)")
        ax.set_ylabel("power (mW)")
        ax.grid(True, alpha=0.3)
        thermal = (result.get("thermal") or {}).get("trace") or {}
        if thermal.get("t_ms") and thermal.get("hottest_c"):
            pairs = [
                (x / 1000.0, c)
                for x, c in zip(thermal["t_ms"], thermal["hottest_c"], strict=False)
                if c is not None
            ]
            if pairs:
                ax2 = ax.twinx()
                ax2.plot([p[0] for p in pairs], [p[1] for p in pairs], color="tab:red", lw=1.0, alpha=0.7)
                ax2.set_ylabel("hottest zone (°C)", color="tab:red")
        ax.legend(loc="upper left", fontsize=8, framealpha=0.8)
        if title is None:
            e = power.get("energy_mj_per_inference")
            s = power.get("energy_mj_per_inference_sigma")
            src = power.get("source", "?")
            dev = (result.get("device") or {}).get("name", "?")
            title = f"{dev}: power ({src})"
            if e is not None:
                title += f", {e:.4g} ± {s or 0:.2g} mJ per inference (net of idle)"
        ax.set_title(title, fontsize=10)
        fig.tight_layout()
        dest = Path(dest)
        with atomic_path(dest) as tmp:
            fig.savefig(tmp, format="png")
    finally:
        plt.close(fig)
    return dest


def plot_latency(results: Mapping[str, Result], dest: Path) -> Path | None:
    """A histogram of the raw per-invoke latencies of each result (e.g. ``{"int8": r, "float": f}``),
    same bins for all, medians marked. None when no result carries samples."""
    series = {k: r.latency_us.samples for k, r in results.items() if r.latency_us.samples}
    if not series:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    everything = np.concatenate([np.asarray(v, dtype=float) for v in series.values()])
    hi = float(np.percentile(everything, 99.5))
    lo = float(everything.min())
    bins = np.linspace(lo, hi if hi > lo else lo + 1.0, 60)
    fig, ax = plt.subplots(figsize=(9, 3.6), dpi=110)
    try:
        for (name, samples), color in zip(
            series.items(), ("tab:blue", "tab:orange", "tab:green"), strict=False
        ):
            v = np.asarray(samples, dtype=float)
            ax.hist(
                np.clip(v, lo, bins[-1]),
                bins=bins.tolist(),
                alpha=0.55,
                color=color,
                label=f"{name} (n={v.size})",
            )
            ax.axvline(
                float(np.median(v)), color=color, ls="--", lw=1, label=f"{name} p50 {np.median(v):.1f} µs"
            )
        ax.set_xlabel("latency per invoke (µs); the slowest 0.5 % are folded into the last bin")
        ax.set_ylabel("invokes")
        ax.legend(fontsize=8)
        ax.grid(True, alpha=0.3)
        dev = next(iter(results.values())).device
        ax.set_title(f"{dev.name} ({dev.arch}, {dev.runtime} {dev.runtime_version})", fontsize=10)
        fig.tight_layout()
        with atomic_path(Path(dest)) as tmp:
            fig.savefig(tmp, format="png")
    finally:
        plt.close(fig)
    return Path(dest)
