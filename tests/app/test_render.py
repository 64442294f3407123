"""The dashboard's HTML as pure functions (dashboard/render.py): the safe heatmap, tables, cards and colours."""

from __future__ import annotations

import html
import math
import re

import pytest

from dashboard import render as ui

PAYLOADS = [
    "<img src=x onerror=alert(1)>",
    "<script>alert(1)</script>",
    '" onmouseover="alert(1)',
    "' style='position:fixed;inset:0",
    "<style>*{display:none}</style>",
    "<iframe srcdoc='<script>parent.alert(1)</script>'>",
    "javascript:alert(1)",
    "$x$ *a* :red[b]",
]


def spans(markup: str) -> list[tuple[str, str, str]]:
    """(style, title, text) of every token span."""
    return re.findall(r'<span style="([^"]*)" title="([^"]*)">([^<]*)</span>', markup)


@pytest.mark.parametrize("payload", PAYLOADS)
def test_heatmap_escapes_every_token_label_and_title(payload):
    row = ui.HeatmapRow([payload, "ok"], [1.0, -0.5], label=payload, simulated=[3.0, 11.0])
    for mode in ("real", "side by side", "overlaid"):
        markup = ui.heatmap_html([row], positive_scale=2.0, negative_scale=1.0, mode=mode)
        # nothing the token or label wrote became markup: the only tags are ours
        assert set(re.findall(r"<(/?\w+)", markup)) <= {"div", "/div", "span", "/span"}
        assert not re.search(r"<(img|script|style|iframe)", markup)
        texts = [html.unescape(text) for _, _, text in spans(markup)]
        assert payload in texts  # shown as text, whole
        for style, title, _ in spans(markup):
            assert re.fullmatch(r"[a-z\-]+:[^;<>\"']+(;[a-z\-]+:[^;<>\"']+)*", style), style
            assert '"' not in title and "<" not in title


def test_colours_come_from_clamped_numbers():
    assert ui.activation_colour(5.0, 2.0, 1.0) == "rgba(255,106,0,1.00)"
    assert ui.activation_colour(1.0, 2.0, 1.0) == "rgba(255,106,0,0.50)"
    assert ui.activation_colour(-3.0, 2.0, 1.0) == "rgba(37,99,235,1.00)"
    assert ui.activation_colour(-0.25, 2.0, 1.0) == "rgba(37,99,235,0.25)"
    assert ui.activation_colour(float("nan"), 2.0, 1.0) == "rgba(255,106,0,0.00)"
    assert ui.activation_colour(float("inf"), 2.0, 1.0) == "rgba(255,106,0,1.00)"
    assert ui.activation_colour(-1.0, 2.0, 0.0) == "rgba(37,99,235,0.00)"  # no negative scale: no colour
    assert ui.rgba((300, -5, 12.7), 7.0) == "rgba(255,0,12,1.00)"
    for value in (math.nan, -math.inf, None, "x"):
        assert ui.clamp01(value) == 0.0  # type: ignore[arg-type]


def test_simulated_row_uses_the_shared_0_to_10_scale():
    row = ui.HeatmapRow(["a", "b"], [4.0, 0.0], simulated=[10.0, 5.0])
    markup = ui.heatmap_html([row], positive_scale=4.0, mode="side by side")
    real, simulated = markup.split(">simulated<")
    assert "rgba(255,106,0,1.00)" in real and "rgba(255,106,0,0.00)" in real
    assert "rgba(255,106,0,1.00)" in simulated and "rgba(255,106,0,0.50)" in simulated
    assert "simulated 5.0/10" in simulated


def test_display_token_shows_invisible_characters():
    assert ui.display_token("a\nb\tc\r") == "a↵b⇥c␍"
    assert ui.display_token("\x00\x1b\x7f") == "\\x00\\x1b\\x7f"
    assert ui.display_token(" é ") == " é "


def test_tables_and_cards_escape_every_cell():
    for payload in PAYLOADS:
        markup = ui.table_html(["token", payload], [[payload, 1.5]], bars=[-2.0], bar_scale=1.0, widths=[50, 50])
        assert not re.search(r"<(img|script|style|iframe)", markup) and html.escape(payload, quote=True) in markup
        assert "rgba(37,99,235,0.35) 100%" in markup  # a negative bar, clamped to the full width
        card = ui.card_html(payload, payload, payload)
        assert not re.search(r"<(img|script|style|iframe)", card) and card.count(html.escape(payload, quote=True)) == 3
    steps = ui.steps_html([("1. <b>", "x < y"), ("2.", "z")])
    assert "&lt;b&gt;" in steps and "x &lt; y" in steps and steps.count("→") == 1


def test_the_dashboard_loads_no_model_code_until_a_model_runs():
    """Importing the frame's and pages' shared modules must not import torch or transformers (seconds and
    hundreds of MB per process); only the try page's forward pass and local backends load them."""
    import subprocess
    import sys
    from pathlib import Path

    code = ("import sys; import dashboard.widgets, dashboard.state, dashboard.charts, core.views, core.live; "
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
