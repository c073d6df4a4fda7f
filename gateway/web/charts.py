"""Server-side SVG charts for the dashboard (no JavaScript, nothing from a CDN: the CSP stays
`default-src 'self'`). Each bar carries its hour and value (`data-hour`, `data-value`) and a
`<title>` the browser shows on hover; colours come from classes in static/dashboard.css."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

from gateway.web.activity import Turnaround, Window

WIDTH, HEIGHT = 760, 190
LEFT, RIGHT, TOP, BOTTOM = 44, 8, 22, 26


@dataclass(frozen=True)
class Series:
    key: str  # CSS class and data-series
    label: str
    values: Sequence[int]


def nice_ceiling(value: float) -> float:
    """The axis top: 1, 2 or 5 times a power of ten, at least `value` (and at least 1)."""
    if value <= 1:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if step * power >= value:
            return float(step * power)
    return float(10 * power)


def _number(value: float) -> str:
    return f"{value:g}"


def _svg(chart_id: str, title: str, body: list[str], height: int = HEIGHT) -> Markup:
    head = (
        f'<svg id="{escape(chart_id)}" class="chart" xmlns="http://www.w3.org/2000/svg" '
        f'viewBox="0 0 {WIDTH} {height}" role="img" aria-labelledby="{escape(chart_id)}-title">'
        f'<title id="{escape(chart_id)}-title">{escape(title)}</title>'
    )
    return Markup(head + "".join(body) + "</svg>")


def _legend(series: Sequence[Series]) -> list[str]:
    out, x = [], WIDTH - RIGHT
    for s in reversed(series):
        x -= 24 + 7 * len(s.label)
        out.append(
            f'<rect class="swatch {escape(s.key)}" x="{x}" y="4" width="10" height="10"/>'
            f'<text x="{x + 14}" y="13" font-size="11">{escape(s.label)}</text>'
        )
    return out


def _axis(top_value: float, unit: str) -> list[str]:
    plot_h = HEIGHT - TOP - BOTTOM
    out = []
    for fraction in (0.0, 0.5, 1.0):
        y = TOP + plot_h * (1 - fraction)
        out.append(
            f'<line class="grid" x1="{LEFT}" y1="{y:.1f}" x2="{WIDTH - RIGHT}" y2="{y:.1f}"/>'
            f'<text x="{LEFT - 4}" y="{y + 4:.1f}" font-size="10" text-anchor="end">'
            f"{escape(_number(top_value * fraction))}{escape(unit)}</text>"
        )
    return out


def hourly_bars(
    chart_id: str, title: str, window: Window, series: Sequence[Series], *, stacked: bool = True
) -> Markup:
    """One bar per hour of `window` (series stacked), hours labelled along the bottom."""
    hours = len(window.starts)
    for s in series:
        if len(s.values) != hours:
            raise ValueError(
                f"series {s.key!r}: expected {hours} hourly values, found {len(s.values)}"
            )
    totals = [sum(s.values[i] for s in series) for i in range(hours)]
    top_value = nice_ceiling(max(totals if stacked else [max(s.values) for s in series] or [0]))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    step = plot_w / hours
    body = [*_axis(top_value, ""), *_legend(series)]
    label_every = 3 if hours <= 24 else 24
    for i, start in enumerate(window.starts):
        x = LEFT + i * step
        base = 0.0
        for s in series:
            value = s.values[i]
            height = plot_h * value / top_value
            y = TOP + plot_h - height - (plot_h * base / top_value if stacked else 0)
            body.append(
                f'<rect class="bar {escape(s.key)}" data-series="{escape(s.key)}" '
                f'data-hour="{start:%Y-%m-%dT%H:%MZ}" data-value="{value}" '
                f'x="{x + 0.5:.1f}" y="{y:.1f}" width="{max(step - 1, 1):.1f}" '
                f'height="{height:.1f}"><title>{start:%Y-%m-%d %H:00} UTC: {value} '
                f"{escape(s.label)}</title></rect>"
            )
            if stacked:
                base += value
        if i % label_every == 0:
            text = f"{start:%H:00}" if hours <= 24 else f"{start:%m-%d}"
            body.append(f'<text x="{x:.1f}" y="{HEIGHT - 8}" font-size="10">{escape(text)}</text>')
    return _svg(chart_id, title, body)


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def turnaround_bars(chart_id: str, title: str, rows: Sequence[Turnaround]) -> Markup:
    """Per pipeline a p50 and a p95 bar on one seconds scale, each labelled with its value."""
    row_h = 34
    height = TOP + row_h * max(len(rows), 1) + 8
    top_value = nice_ceiling(max((r.p95_s for r in rows), default=1.0))
    label_w = 150
    plot_w = WIDTH - label_w - RIGHT - 90
    body = []
    if not rows:
        body.append(f'<text x="{LEFT}" y="{TOP + 16}" font-size="12">No job delivered.</text>')
    for i, row in enumerate(rows):
        y = TOP + i * row_h
        body.append(
            f'<text x="4" y="{y + 20}" font-size="12">{escape(row.pipeline)} ({row.jobs})</text>'
        )
        for j, (key, seconds) in enumerate((("p50", row.p50_s), ("p95", row.p95_s))):
            width = max(plot_w * seconds / top_value, 1)
            bar_y = y + 4 + j * 14
            body.append(
                f'<rect class="bar {key}" data-pipeline="{escape(row.pipeline)}" '
                f'data-percentile="{key}" data-seconds="{seconds:.3f}" x="{label_w}" '
                f'y="{bar_y}" width="{width:.1f}" height="12"><title>{escape(row.pipeline)} '
                f"{key}: {escape(_duration(seconds))}</title></rect>"
                f'<text x="{label_w + width + 4:.1f}" y="{bar_y + 10}" font-size="10">'
                f"{key} {escape(_duration(seconds))}</text>"
            )
    legend = _legend([Series("p50", "p50", []), Series("p95", "p95", [])])
    return _svg(chart_id, title, [*legend, *body], height)
