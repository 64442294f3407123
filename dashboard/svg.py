"""Charts as SVG markup, pure functions of core's records: the activation histogram and the real-against-simulated
scatter.

Why not Altair here: an Altair chart is rebuilt, validated and serialised to JSON on every page run (about 14 ms of
the server's CPU per run of the insights page, docs/performance.md), and these two are drawn on every neuron a class
opens. SVG built once per neuron (PageContext.rendered) costs nothing the second time. Text in them (axis titles,
hover titles) is escaped; numbers are formatted by us; sizes are clamped.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from core.types import ExcerptKind, NeuronStats
from core.views import SimulationView
from dashboard.i18n import number
from dashboard.render import NEGATIVE_RGB, POSITIVE_RGB, display_token, escape, rgba

WIDTH, HEIGHT = 640.0, 220.0
"""The drawing's own units (it scales to the page's width)."""
LEFT, BOTTOM, TOP, RIGHT = 52.0, 34.0, 8.0, 8.0
"""Margins for the axes' labels."""
_TEXT = 'font-family="sans-serif" font-size="11" fill="#555"'


def _frame(width: float, height: float, body: Sequence[str], label: str) -> str:
    return (f'<svg class="na-chart" viewBox="0 0 {width:.0f} {height:.0f}" width="100%" role="img" '
            f'aria-label="{escape(label)}" style="max-width:{width:.0f}px;display:block">{"".join(body)}</svg>')


def _symlog(count: float) -> float:
    return math.log10(1.0 + max(count, 0.0))


def _number(value: float) -> str:
    return number(value, ".3g")  # in the session's language (0,5 in Turkish)


def histogram_svg(stats: NeuronStats, *, x_title: str, y_title: str, bar_title: str) -> str:
    """Tokens per activation bin over every recorded token, on a symlog count axis (as bars, orange above zero and
    blue below). `bar_title`: a format string with {low}, {high} and {tokens}, the hover text of a bar."""
    edges, counts = stats.hist_edges, stats.hist_counts
    if len(edges) < 2 or not counts:
        return ""
    low, high = float(edges[0]), float(edges[-1])
    span = (high - low) or 1.0
    top = _symlog(max(counts)) or 1.0
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(value: float) -> float:
        return LEFT + plot_w * (value - low) / span

    def y(count: float) -> float:
        return TOP + plot_h * (1.0 - _symlog(count) / top)

    body = [f'<line x1="{LEFT}" y1="{TOP + plot_h}" x2="{WIDTH - RIGHT}" y2="{TOP + plot_h}" stroke="#999"/>']
    for start, end, count in zip(edges[:-1], edges[1:], counts, strict=False):
        if count <= 0:
            continue
        colour = rgba(POSITIVE_RGB if end > 0 else NEGATIVE_RGB, 0.85)
        left, right = x(float(start)), x(float(end))
        hover = bar_title.format(low=_number(float(start)), high=_number(float(end)), tokens=number(int(count), ","))
        body.append(f'<rect x="{left:.1f}" y="{y(count):.1f}" width="{max(right - left - 0.5, 0.8):.1f}" '
                    f'height="{TOP + plot_h - y(count):.1f}" fill="{colour}"><title>{escape(hover)}</title></rect>')
    for step in range(5):
        value = low + span * step / 4
        body.append(f'<text x="{x(value):.1f}" y="{HEIGHT - BOTTOM + 14:.0f}" text-anchor="middle" {_TEXT}>'
                    f"{_number(value)}</text>")
    power = 0
    while 10 ** power <= max(counts):
        body.append(f'<text x="{LEFT - 6:.0f}" y="{y(10 ** power) + 4:.1f}" text-anchor="end" {_TEXT}>'
                    f"{number(10 ** power, ',')}</text>")
        power += 2 if max(counts) > 10 ** 6 else 1
    body.append(f'<text x="{LEFT + plot_w / 2:.0f}" y="{HEIGHT - 4:.0f}" text-anchor="middle" {_TEXT}>'
                f"{escape(x_title)}</text>")
    body.append(f'<text x="12" y="{TOP + plot_h / 2:.0f}" text-anchor="middle" {_TEXT} '
                f'transform="rotate(-90 12 {TOP + plot_h / 2:.0f})">{escape(y_title)}</text>')
    return _frame(WIDTH, HEIGHT, body, y_title)


def scatter_svg(view: SimulationView, *, x_title: str, y_title: str, point_title: str) -> str:
    """Real activation (0-10 of the neuron's max) against the simulated one, a dot per token of every simulated
    scoring excerpt (orange: top excerpts, blue: random ones), with the diagonal where they would agree.
    `point_title`: a format string with {token}, {real} and {simulated}, the hover text of a dot."""
    size = 300.0
    plot = size - LEFT - RIGHT
    height = size - RIGHT + BOTTOM - TOP

    def at(value: float, vertical: bool) -> float:
        share = min(max(value / 10.0, 0.0), 1.0)
        return TOP + plot * (1.0 - share) if vertical else LEFT + plot * share

    body = [f'<rect x="{LEFT}" y="{TOP}" width="{plot}" height="{plot}" fill="none" stroke="#ddd"/>',
            f'<line x1="{at(0, False)}" y1="{at(0, True)}" x2="{at(10, False)}" y2="{at(10, True)}" '
            'stroke="#bbb" stroke-dasharray="4 3"/>']
    for item in view.excerpts:
        if item.predictions is None:
            continue
        colour = rgba(POSITIVE_RGB if item.excerpt.kind == ExcerptKind.TOP else NEGATIVE_RGB, 0.5)
        for token, value, guess in zip(item.excerpt.excerpt.tokens, item.excerpt.activations, item.predictions,
                                       strict=False):
            real = 10.0 * float(value) / view.scale
            hover = point_title.format(token=display_token(token), real=number(real, ".1f"),
                                       simulated=number(float(guess), ".1f"))
            body.append(f'<circle cx="{at(real, False):.1f}" cy="{at(float(guess), True):.1f}" r="3" '
                        f'fill="{colour}"><title>{escape(hover)}</title></circle>')
    for tick in (0, 5, 10):
        body.append(f'<text x="{at(tick, False):.1f}" y="{TOP + plot + 14:.0f}" text-anchor="middle" {_TEXT}>'
                    f"{tick}</text>")
        body.append(f'<text x="{LEFT - 6:.0f}" y="{at(tick, True) + 4:.1f}" text-anchor="end" {_TEXT}>{tick}</text>')
    body.append(f'<text x="{LEFT + plot / 2:.0f}" y="{height - 4:.0f}" text-anchor="middle" {_TEXT}>'
                f"{escape(x_title)}</text>")
    body.append(f'<text x="12" y="{TOP + plot / 2:.0f}" text-anchor="middle" {_TEXT} '
                f'transform="rotate(-90 12 {TOP + plot / 2:.0f})">{escape(y_title)}</text>')
    return _frame(size, height, body, y_title)
