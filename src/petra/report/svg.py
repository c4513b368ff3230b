"""Hand-written SVG charts: the report must open with no network and no plotting dependency."""

from __future__ import annotations

import math
from dataclasses import dataclass
from html import escape

W, H = 680, 360
LEFT, RIGHT, TOP, BOTTOM = 64, 170, 28, 48  # the legend sits right of the plot


@dataclass(frozen=True)
class Series:
    name: str
    points: list[tuple[float, float]]
    color: str
    marker: str = "circle"  # circle | cross | star | square
    line: bool = False
    labels: list[str] | None = None


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = min((m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw), default=raw)
    start = math.ceil(lo / step) * step
    return [start + i * step for i in range(int((hi - start) / step) + 1)]


def _fmt(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}".rstrip("0").rstrip(".")
    return f"{v:.3g}"


def _marker(x: float, y: float, kind: str, color: str, title: str) -> str:
    t = f"<title>{escape(title)}</title>" if title else ""
    if kind == "cross":
        return (f'<g stroke="{color}" stroke-width="2">{t}<line x1="{x-4:.1f}" y1="{y-4:.1f}" '
                f'x2="{x+4:.1f}" y2="{y+4:.1f}"/><line x1="{x-4:.1f}" y1="{y+4:.1f}" '
                f'x2="{x+4:.1f}" y2="{y-4:.1f}"/></g>')
    if kind == "star":
        pts = " ".join(
            f"{x + r * math.sin(i * math.pi / 5):.1f},{y - r * math.cos(i * math.pi / 5):.1f}"
            for i, r in zip(range(10), [9, 4] * 5))
        return f'<polygon points="{pts}" fill="{color}" stroke="#222" stroke-width="0.8">{t}</polygon>'
    if kind == "square":
        return (f'<rect x="{x-5:.1f}" y="{y-5:.1f}" width="10" height="10" fill="{color}" '
                f'stroke="#222" stroke-width="0.8">{t}</rect>')
    return f'<circle cx="{x:.1f}" cy="{y:.1f}" r="4" fill="{color}" fill-opacity="0.8">{t}</circle>'


def scatter(title: str, xlabel: str, ylabel: str, series: list[Series], *, logx: bool = False) -> str:
    pts = [p for s in series for p in s.points if all(math.isfinite(v) for v in p)]
    if logx:
        pts = [p for p in pts if p[0] > 0]
    if not pts:
        return (f'<svg class="chart" width="{W}" height="{H}"><text x="20" y="40">'
                f'{escape(title)}: no data</text></svg>')
    tx = (lambda v: math.log10(v)) if logx else (lambda v: v)
    xs, ys = [tx(p[0]) for p in pts], [p[1] for p in pts]
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    padx = (x1 - x0) * 0.06 or 0.5
    pady = (y1 - y0) * 0.08 or 0.5
    x0, x1, y0, y1 = x0 - padx, x1 + padx, y0 - pady, y1 + pady

    def sx(v: float) -> float:
        return LEFT + (tx(v) - x0) / (x1 - x0) * (W - LEFT - RIGHT)

    def sy(v: float) -> float:
        return H - BOTTOM - (v - y0) / (y1 - y0) * (H - TOP - BOTTOM)

    out = [f'<svg class="chart" width="{W}" height="{H}" viewBox="0 0 {W} {H}" role="img">',
           f'<text x="{(LEFT + W - RIGHT) / 2}" y="18" text-anchor="middle" font-weight="bold">'
           f'{escape(title)}</text>',
           f'<rect x="{LEFT}" y="{TOP}" width="{W - LEFT - RIGHT}" height="{H - TOP - BOTTOM}" '
           'fill="none" stroke="#999"/>']
    xticks = ([m * 10 ** e for e in range(math.floor(x0), math.ceil(x1) + 1) for m in (1, 2, 5)]
              if logx else _ticks(x0, x1))
    for v in xticks:
        if x0 <= tx(v) <= x1:
            out.append(f'<line x1="{sx(v):.1f}" y1="{H - BOTTOM}" x2="{sx(v):.1f}" y2="{TOP}" stroke="#eee"/>'
                       f'<text x="{sx(v):.1f}" y="{H - BOTTOM + 16}" text-anchor="middle" '
                       f'font-size="11">{_fmt(v)}</text>')
    for v in _ticks(y0, y1):
        if y0 <= v <= y1:
            out.append(f'<line x1="{LEFT}" y1="{sy(v):.1f}" x2="{W - RIGHT}" y2="{sy(v):.1f}" stroke="#eee"/>'
                       f'<text x="{LEFT - 6}" y="{sy(v) + 4:.1f}" text-anchor="end" '
                       f'font-size="11">{_fmt(v)}</text>')
    out.append(f'<text x="{(LEFT + W - RIGHT) / 2}" y="{H - 10}" text-anchor="middle" '
               f'font-size="12">{escape(xlabel)}</text>')
    out.append(f'<text x="14" y="{(TOP + H - BOTTOM) / 2}" text-anchor="middle" font-size="12" '
               f'transform="rotate(-90 14 {(TOP + H - BOTTOM) / 2})">{escape(ylabel)}</text>')
    legend_y = TOP + 8
    for s in series:
        good = [(p, (s.labels or [""] * len(s.points))[i]) for i, p in enumerate(s.points)
                if all(math.isfinite(v) for v in p) and (not logx or p[0] > 0)]
        if s.line and len(good) > 1:
            path = " ".join(f"{sx(p[0]):.1f},{sy(p[1]):.1f}" for p, _ in good)
            out.append(f'<polyline points="{path}" fill="none" stroke="{s.color}" stroke-width="1.5"/>')
        for p, label in good:
            out.append(_marker(sx(p[0]), sy(p[1]), s.marker, s.color, label))
        if good:
            out.append(_marker(W - RIGHT + 14, legend_y, s.marker, s.color, ""))
            out.append(f'<text x="{W - RIGHT + 26}" y="{legend_y + 4}" font-size="11">'
                       f'{escape(s.name)}</text>')
            legend_y += 16
    out.append("</svg>")
    return "".join(out)
