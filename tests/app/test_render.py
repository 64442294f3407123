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
    """(classes, title, text) of every token span."""
    return re.findall(r'<span(?: class="([^"]*)")? title="([^"]*)">([^<]*)</span>', markup)


def styles(markup: str) -> dict[str, str]:
    """The heatmap's colour classes and their declarations, from its style block."""
    return dict(re.findall(r"\.na-heatmap \.(\w+)\{([^}]*)\}", markup))


@pytest.mark.parametrize("payload", PAYLOADS)
def test_heatmap_escapes_every_token_label_and_title(payload):
    row = ui.HeatmapRow([payload, "ok"], [1.0, -0.5], label=payload, simulated=[3.0, 11.0])
    for mode in ("real", "side by side", "overlaid"):
        markup = ui.heatmap_html([row], positive_scale=2.0, negative_scale=1.0, mode=mode)
        # nothing the token or label wrote became markup: the only tags are ours, the style block first
        css, body = markup.split("</style>")
        assert css.startswith("<style>") and "<" not in css[1:]
        assert set(re.findall(r"<(/?\w+)", body)) <= {"div", "/div", "span", "/span"}
        assert not re.search(r"<(img|script|style|iframe)", body)
        texts = [html.unescape(text) for _, _, text in spans(body)]
        assert payload in texts  # shown as text, whole
        rules = styles(markup)
        for classes, title, _ in spans(body):
            assert all(re.fullmatch(r"[pns]\d{1,2}", name) and name in rules for name in classes.split()), classes
            assert '"' not in title and "<" not in title


def test_colours_come_from_clamped_numbers():
    assert ui.heat_class(5.0, 2.0, 1.0) == "p20"
    assert ui.heat_class(1.0, 2.0, 1.0) == "p10"
    assert ui.heat_class(-3.0, 2.0, 1.0) == "n20"
    assert ui.heat_class(-0.25, 2.0, 1.0) == "n5"
    assert ui.heat_class(float("nan"), 2.0, 1.0) == ""
    assert ui.heat_class(float("inf"), 2.0, 1.0) == "p20"
    assert ui.heat_class(-1.0, 2.0, 0.0) == ""  # no negative scale: no colour
    assert ui.heat_class(0.01, 2.0, 1.0) == ""  # under half a step: no colour, no class
    assert ui.level_css({"p20", "n5", "s10", "x3", "p"}) == (
        "<style>.na-heatmap .n5{background:rgba(37,99,235,0.25)}.na-heatmap .p20{background:rgba(255,106,0,1.00)}"
        ".na-heatmap .s10{border-bottom:3px solid rgba(22,163,74,0.50)}</style>")
    assert ui.rgba((300, -5, 12.7), 7.0) == "rgba(255,0,12,1.00)"
    for value in (math.nan, -math.inf, None, "x"):
        assert ui.clamp01(value) == 0.0  # type: ignore[arg-type]


def test_simulated_row_uses_the_shared_0_to_10_scale():
    row = ui.HeatmapRow(["a", "b"], [4.0, 0.0], simulated=[10.0, 5.0])
    markup = ui.heatmap_html([row], positive_scale=4.0, mode="side by side")
    real, simulated = markup.split(">simulated<")
    assert [classes for classes, _, _ in spans(real)] == ["p20", ""]
    assert [classes for classes, _, _ in spans(simulated)] == ["p20", "p10"]
    assert styles(markup) == {"p10": "background:rgba(255,106,0,0.50)", "p20": "background:rgba(255,106,0,1.00)"}
    assert "simulated 5.0/10" in simulated


def test_display_token_shows_invisible_characters():
    assert ui.display_token("a\nb\tc\r") == "a↵b⇥c␍"
    assert ui.display_token("\x00\x1b\x7f") == "\\x00\\x1b\\x7f"
    assert ui.display_token(" é ") == " é "


def test_tables_and_cards_escape_every_cell():
    for payload in PAYLOADS:
        markup = ui.table_html(["token", payload], [[payload, 1.5]], bars=[-2.0], bar_scale=1.0, widths=[50, 50])
        css, markup = markup.split("</style>")  # the table's own style block first, then the table
        assert css + "</style>" == ui.TABLE_CSS
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


def test_blank_tokens_in_an_explanation_are_shown_with_visible_symbols():
    assert ui.visible_blanks('" "') == '"␣"'
    assert ui.visible_blanks('mostly "\\n   ", also "get"') == 'mostly "↵␣␣␣", also "get"'
    assert ui.visible_blanks('"\\t" and "\\r\\n"') == '"⇥" and "␍↵"'
    for unchanged in ('the word " default"', "commas", "it's a \"quote\"", "'  '", '""'):
        assert ui.visible_blanks(unchanged) == unchanged, unchanged

