"""A small SVG sparkline of one statistic over the days, drawn on the server (no script, no
inline style: the CSP stays `default-src 'self'`): the control band as a shaded area, the
values as a line, each day a dot coloured by its status (classes in model_watch.css)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

WIDTH = 180
HEIGHT = 40
PAD = 4


@dataclass(frozen=True)
class SparkPoint:
    value: float | None
    band: tuple[float, float] | None
    status: str
    """'ok', 'amber' or 'baseline' (the dot's class)."""
    title: str
    """Tooltip: the day and its value."""


def sparkline(points: Sequence[SparkPoint], label: str) -> Markup:
    """The SVG element, or an empty Markup when no point has a value."""
    values = [p.value for p in points if p.value is not None]
    if not values:
        return Markup("")
    bounds = values + [b for p in points if p.band is not None for b in p.band]
    low, high = min(bounds), max(bounds)
    if high - low < 1e-9:
        low, high = low - 0.5, high + 0.5
    step = (WIDTH - 2 * PAD) / max(len(points) - 1, 1)

    def x(i: int) -> float:
        return PAD + i * step

    def y(v: float) -> float:
        return HEIGHT - PAD - (v - low) / (high - low) * (HEIGHT - 2 * PAD)

    parts = [
        f'<svg class="sparkline" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(label)}">'
    ]
    banded = [(i, p.band) for i, p in enumerate(points) if p.band is not None]
    if banded:
        upper = [f"{x(i):.1f},{y(b[1]):.1f}" for i, b in banded]
        lower = [f"{x(i):.1f},{y(b[0]):.1f}" for i, b in reversed(banded)]
        if len(banded) == 1:  # one day: a bar of the band's width
            i, b = banded[0]
            upper = [f"{x(i) - 2:.1f},{y(b[1]):.1f}", f"{x(i) + 2:.1f},{y(b[1]):.1f}"]
            lower = [f"{x(i) + 2:.1f},{y(b[0]):.1f}", f"{x(i) - 2:.1f},{y(b[0]):.1f}"]
        parts.append(f'<polygon class="band" points="{" ".join(upper + lower)}"/>')
    line = [f"{x(i):.1f},{y(p.value):.1f}" for i, p in enumerate(points) if p.value is not None]
    parts.append(f'<polyline class="line" points="{" ".join(line)}"/>')
    for i, p in enumerate(points):
        if p.value is None:
            continue
        parts.append(
            f'<circle class="dot {escape(p.status)}" cx="{x(i):.1f}" cy="{y(p.value):.1f}" '
            f'r="2.5"><title>{escape(p.title)}</title></circle>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))
