"""Small inline SVG charts for the HTML report: no library, no network, text escaped.

Each function returns one ``<svg>`` element as a string, sized by ``viewBox`` so it scales with
the page; hovering a mark shows its figures (SVG ``<title>``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

import numpy as np

BASE_COLOR = "#8a94a6"
CUR_COLOR = "#2b6cb0"
OUTCOME_COLORS = {
    "regressed": "#c53030",
    "improved": "#2f855a",
    "unchanged": "#4a5568",
    "inconclusive": "#b7791f",
}
FONT = "font-family:system-ui,sans-serif"


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values covering [lo, hi] (1, 2, 5 × 10^k steps)."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo]
    raw = (hi - lo) / max(1, count - 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step) * step
    ticks = []
    v = first
    while v <= hi + step * 1e-9:
        ticks.append(round(v, 10))
        v += step
    return ticks


def log_ticks(lo: float, hi: float) -> list[float]:
    ticks = []
    for e in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1):
        for m in (1, 2, 5):
            v = m * 10**e
            if lo <= v <= hi:
                ticks.append(float(v))
    return ticks or [lo, hi]


def fmt(v: float) -> str:
    if v == 0:
        return "0"
    a = abs(v)
    if a >= 1000:
        return f"{v:,.0f}".replace(",", " ")
    if a >= 100:
        return f"{v:.0f}"
    if a >= 10:
        return f"{v:.1f}".rstrip("0").rstrip(".")
    return f"{v:.3g}"


class _Axis:
    def __init__(self, lo: float, hi: float, a: float, b: float, log: bool = False) -> None:
        self.log = log and lo > 0
        self.lo, self.hi, self.a, self.b = lo, hi, a, b

    def __call__(self, v: float) -> float:
        if self.log:
            lo, hi, v = math.log(self.lo), math.log(self.hi), math.log(max(v, self.lo * 1e-9))
        else:
            lo, hi = self.lo, self.hi
        if hi == lo:
            return (self.a + self.b) / 2
        return self.a + (v - lo) / (hi - lo) * (self.b - self.a)

    def ticks(self) -> list[float]:
        ts = log_ticks(self.lo, self.hi) if self.log else nice_ticks(self.lo, self.hi)
        return [t for t in ts if self.lo <= t <= self.hi]


def _svg(width: int, height: int, body: list[str], label: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{escape(label)}" class="chart" style="{FONT}">' + "".join(body) + "</svg>"
    )


def _x_axis(x: _Axis, y0: float, unit: str) -> list[str]:
    out = [f'<line x1="{x.a:.1f}" y1="{y0:.1f}" x2="{x.b:.1f}" y2="{y0:.1f}" stroke="#718096"/>']
    for t in x.ticks():
        px = x(t)
        out.append(f'<line x1="{px:.1f}" y1="{y0:.1f}" x2="{px:.1f}" y2="{y0 + 4:.1f}" stroke="#718096"/>')
        out.append(
            f'<text x="{px:.1f}" y="{y0 + 15:.1f}" font-size="10" text-anchor="middle" fill="#4a5568">{fmt(t)}</text>'
        )
    out.append(
        f'<text x="{x.b:.1f}" y="{y0 + 27:.1f}" font-size="10" text-anchor="end" fill="#4a5568">{escape(unit)}</text>'
    )
    return out


def _y_axis(y: _Axis, x0: float, x1: float, unit: str) -> list[str]:
    out = [f'<line x1="{x0:.1f}" y1="{y.a:.1f}" x2="{x0:.1f}" y2="{y.b:.1f}" stroke="#718096"/>']
    for t in y.ticks():
        py = y(t)
        out.append(f'<line x1="{x0:.1f}" y1="{py:.1f}" x2="{x1:.1f}" y2="{py:.1f}" stroke="#edf2f7"/>')
        out.append(
            f'<text x="{x0 - 5:.1f}" y="{py + 3:.1f}" font-size="10" text-anchor="end" fill="#4a5568">{fmt(t)}</text>'
        )
    out.append(
        f'<text x="12" y="{(y.a + y.b) / 2:.1f}" font-size="10" text-anchor="middle" fill="#4a5568" '
        f'transform="rotate(-90 12 {(y.a + y.b) / 2:.1f})">{escape(unit)}</text>'
    )
    return out


def histogram(
    current: np.ndarray,
    baseline: np.ndarray | None,
    title: str,
    *,
    unit: str = "µs",
    width: int = 380,
    height: int = 170,
) -> str:
    """Latency distributions of one model on one board: the current run (filled) over the
    baseline (outline), medians marked. The x range is the bulk of both (0.5th percentile to the
    upper quartile + 3 IQR, at most the 99.5th): a long tail would squeeze the bulk into a few bins;
    the share of samples beyond it is written on the chart."""
    series = [s for s in (baseline, current) if s is not None and s.size]
    both = np.concatenate(series) if series else np.array([1.0])
    q25, q75 = np.percentile(both, [25, 75])
    lo = float(np.percentile(both, 0.5))
    hi = float(min(np.percentile(both, 99.5), q75 + 3 * (q75 - q25)))
    if hi <= lo:
        lo, hi = lo * 0.95 if lo > 0 else lo - 1, hi * 1.05 if hi > 0 else hi + 1
    log = lo > 0 and hi / lo > 4
    bins = np.geomspace(lo, hi, 41) if log else np.linspace(lo, hi, 41)
    left, right, top, bottom = 44, width - 10, 22, height - 34
    x = _Axis(lo, hi, left, right, log)
    dens = {}
    for name, s in (("baseline", baseline), ("current", current)):
        if s is not None and s.size:
            counts, _ = np.histogram(s, bins=bins)  # values outside [lo, hi] are not drawn
            dens[name] = counts / s.size
    peak = max((float(d.max()) for d in dens.values()), default=1.0) or 1.0
    y = _Axis(0.0, peak * 1.1, bottom, top)
    body = [f'<text x="{left}" y="14" font-size="11" font-weight="600" fill="#1a202c">{escape(title)}</text>']
    body += _x_axis(x, bottom, unit)
    for name, color, fill in (("baseline", BASE_COLOR, "none"), ("current", CUR_COLOR, CUR_COLOR)):
        d = dens.get(name)
        if d is None:
            continue
        pts = [f"{x(bins[0]):.1f},{bottom:.1f}"]
        for i, v in enumerate(d):
            pts.append(f"{x(bins[i]):.1f},{y(v):.1f}")
            pts.append(f"{x(bins[i + 1]):.1f},{y(v):.1f}")
        pts.append(f"{x(bins[-1]):.1f},{bottom:.1f}")
        s = current if name == "current" else baseline
        assert s is not None
        med = float(np.median(s))
        tip = f"{name}: median {fmt(med)} {unit}, p90 {fmt(float(np.percentile(s, 90)))}, n {s.size}"
        opacity = ' fill-opacity="0.35"' if fill != "none" else ""
        body.append(
            f'<polygon class="dist {name}" points="{" ".join(pts)}" fill="{fill}"{opacity} stroke="{color}" '
            f'stroke-width="1.3"><title>{escape(tip)}</title></polygon>'
        )
        if lo <= med <= hi:
            body.append(
                f'<line x1="{x(med):.1f}" y1="{top:.1f}" x2="{x(med):.1f}" y2="{bottom:.1f}" stroke="{color}" '
                f'stroke-dasharray="4 3" stroke-width="1.5"><title>{escape(tip)}</title></line>'
            )
    beyond = float(np.mean(both > hi)) * 100
    if beyond >= 0.05:
        body.append(
            f'<text x="{right:.1f}" y="{top + 10:.1f}" font-size="9" text-anchor="end" fill="#718096">'
            f"{beyond:.1f} % above {fmt(hi)} {escape(unit)} not drawn</text>"
        )
    legend_x = right - 150
    for i, (name, color) in enumerate((("baseline", BASE_COLOR), ("current run", CUR_COLOR))):
        if (name.split()[0]) not in dens:
            continue
        body.append(
            f'<rect x="{legend_x + i * 78}" y="6" width="10" height="10" fill="{color}" fill-opacity="0.6"/>'
        )
        body.append(f'<text x="{legend_x + 14 + i * 78}" y="15" font-size="10" fill="#4a5568">{name}</text>')
    return _svg(width, height, body, f"latency distribution: {title}")


@dataclass(frozen=True)
class Point:
    label: str
    x: float  # latency µs
    y: float | None  # accuracy %
    size: float | None  # energy mJ
    color: str = CUR_COLOR
    tip: str = ""


def scatter(points: Sequence[Point], title: str, *, width: int = 680, height: int = 330) -> str:
    """Accuracy (y) against latency (x), marker area by energy per inference; models without an
    accuracy sit in a strip under the plot."""
    left, right, top, bottom = 54, width - 16, 26, height - 62
    xs = [p.x for p in points if p.x > 0] or [1.0]
    xlo, xhi = min(xs) / 1.25, max(xs) * 1.25
    x = _Axis(xlo, xhi, left, right, log=xhi / xlo > 6)
    ys = [p.y for p in points if p.y is not None]
    if ys:
        ylo, yhi = min(ys), max(ys)
        pad = max(1.0, (yhi - ylo) * 0.15)
        ylo, yhi = max(0.0, ylo - pad), min(100.0, yhi + pad)
    else:
        ylo, yhi = 0.0, 100.0
    y = _Axis(ylo, yhi, bottom, top)
    sizes = [p.size for p in points if p.size is not None and p.size > 0]
    smax = max(sizes) if sizes else 1.0
    body = [f'<text x="{left}" y="16" font-size="12" font-weight="600" fill="#1a202c">{escape(title)}</text>']
    body += _y_axis(y, left, right, "accuracy %")
    body += _x_axis(x, bottom, "latency p50 µs")
    strip = height - 22
    if any(p.y is None for p in points):
        body.append(
            f'<text x="{left}" y="{strip + 12}" font-size="9" fill="#718096">no on-device accuracy</text>'
        )
    for p in points:
        r = 4.0 + 10.0 * math.sqrt(p.size / smax) if p.size else 5.0
        cy = y(p.y) if p.y is not None else strip
        filled = p.size is not None
        style = f'fill="{p.color}" fill-opacity="0.55"' if filled else 'fill="#fff"'
        body.append(
            f'<circle class="point" cx="{x(p.x):.1f}" cy="{cy:.1f}" r="{r:.1f}" {style} stroke="{p.color}" '
            f'stroke-width="1.5"><title>{escape(p.tip or p.label)}</title></circle>'
        )
        # labels left of points in the right third, so they stay inside the chart
        if x(p.x) > left + (right - left) * 0.66:
            lx, anchor = x(p.x) - r - 3, "end"
        else:
            lx, anchor = x(p.x) + r + 3, "start"
        body.append(
            f'<text x="{lx:.1f}" y="{cy + 3:.1f}" font-size="10" text-anchor="{anchor}" fill="#2d3748">{escape(p.label)}</text>'
        )
    note = "marker area: energy per inference" + (
        f" (largest {fmt(smax)} mJ)" if sizes else " (not measured: hollow)"
    )
    body.append(
        f'<text x="{right}" y="16" font-size="9" text-anchor="end" fill="#718096">{escape(note)}</text>'
    )
    return _svg(width, height, body, f"accuracy vs latency vs energy: {title}")


@dataclass(frozen=True)
class HistoryMark:
    label: str  # the run id, on the x axis
    value: float | None
    tip: str
    current: bool = False
    baseline: bool = False


def history(
    marks: Sequence[HistoryMark], title: str, unit: str = "µs", *, width: int = 380, height: int = 160
) -> str:
    """One figure of one model × device across runs (oldest left); the current run filled, the
    baseline ringed."""
    left, right, top, bottom = 48, width - 12, 24, height - 34
    vals = [m.value for m in marks if m.value is not None]
    body = [f'<text x="{left}" y="14" font-size="11" font-weight="600" fill="#1a202c">{escape(title)}</text>']
    if not vals:
        body.append(f'<text x="{left}" y="{height / 2}" font-size="10" fill="#718096">no results yet</text>')
        return _svg(width, height, body, f"history: {title}")
    lo, hi = min(vals), max(vals)
    # at least ±5 % of the middle in view, so that a 1 % wobble does not fill the chart
    mid = (lo + hi) / 2
    lo, hi = min(lo, mid * 0.95), max(hi, mid * 1.05)
    pad = (hi - lo) * 0.1 or max(abs(hi) * 0.1, 1e-9)
    y = _Axis(max(0.0, lo - pad), hi + pad, bottom, top)
    body += _y_axis(y, left, right, unit)
    n = len(marks)
    step = (right - left) / max(1, n - 1) if n > 1 else 0.0

    def px(i: int) -> float:
        return left + i * step if n > 1 else (left + right) / 2

    body.append(f'<line x1="{left}" y1="{bottom}" x2="{right}" y2="{bottom}" stroke="#718096"/>')
    every = max(1, math.ceil(n / 10))
    for i, m in enumerate(marks):
        if i % every == 0 or m.current or i == n - 1:
            body.append(
                f'<text x="{px(i):.1f}" y="{bottom + 14}" font-size="9" text-anchor="middle" fill="#4a5568">{escape(m.label)}</text>'
            )
    body.append(
        f'<text x="{right}" y="{bottom + 27}" font-size="9" text-anchor="end" fill="#4a5568">run</text>'
    )
    pts = [f"{px(i):.1f},{y(m.value):.1f}" for i, m in enumerate(marks) if m.value is not None]
    body.append(f'<polyline points="{" ".join(pts)}" fill="none" stroke="{CUR_COLOR}" stroke-width="1.5"/>')
    for i, m in enumerate(marks):
        if m.value is None:
            continue
        fill = CUR_COLOR if m.current else "#fff"
        r = 5 if m.current else 3.5
        body.append(
            f'<circle class="run-mark" cx="{px(i):.1f}" cy="{y(m.value):.1f}" r="{r}" fill="{fill}" stroke="{CUR_COLOR}" '
            f'stroke-width="1.5"><title>{escape(m.tip)}</title></circle>'
        )
        if m.baseline:
            body.append(
                f'<circle cx="{px(i):.1f}" cy="{y(m.value):.1f}" r="8" fill="none" stroke="{OUTCOME_COLORS["improved"]}" '
                f'stroke-width="1.5"><title>{escape("baseline: " + m.tip)}</title></circle>'
            )
    return _svg(width, height, body, f"history: {title}")
