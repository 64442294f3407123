"""The dashboard's shared pieces that need no running app: the safe heatmap, colours and the cache choice."""

from __future__ import annotations

import html
import math
import re
from pathlib import Path

import pytest

import components as ui

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


def test_scores_are_formatted_for_people():
    assert ui.fmt_score(None) == "undefined" and ui.fmt_score(float("nan")) == "undefined"
    assert ui.fmt_score(0.456) == "0.46"


def test_default_cache_order(tmp_path, monkeypatch):
    monkeypatch.setenv("NEURON_ATLAS_HOME", str(tmp_path / "home"))
    monkeypatch.delenv(ui.CACHE_ENV, raising=False)
    monkeypatch.setattr(ui, "APP_DIR", tmp_path / "app")
    monkeypatch.setattr(ui, "DEFAULT_CACHE", tmp_path / "app" / "caches" / "demo.duckdb")
    assert ui.default_cache() is None
    (tmp_path / "app" / "caches").mkdir(parents=True)
    other = tmp_path / "app" / "caches" / "other.duckdb"
    other.write_bytes(b"")
    (tmp_path / "app" / "caches" / "other.notes.duckdb").write_bytes(b"")
    assert ui.known_caches() == [other.resolve()]
    assert ui.default_cache() == other.resolve()
    ui.DEFAULT_CACHE.write_bytes(b"")
    assert ui.default_cache() == ui.DEFAULT_CACHE.resolve()
    last = tmp_path / "last.duckdb"
    last.write_bytes(b"")
    ui.remember_cache(last)
    assert ui.remembered_cache() == last and ui.default_cache() == last.resolve()
    monkeypatch.setenv(ui.CACHE_ENV, str(tmp_path / "env.duckdb"))
    assert ui.default_cache() == (tmp_path / "env.duckdb").resolve()  # the env wins, even before it exists
    last.unlink()
    assert ui.remembered_cache() is None


def test_build_command_names_a_real_subcommand():
    command = ui.build_command()
    sub = command.split()[3]
    assert command.startswith("python -m core ") and ui._cli_has(sub)
    assert str(Path("caches") / "smollm2-135m-stdlib.duckdb") in command


def test_live_settings_never_show_the_key():
    settings = ui.LiveSettings("openai", "gpt-4o-mini", None, "sk-secret-123")
    assert "sk-secret" not in repr(settings) and "sk-secret" not in str(settings)
    assert settings.spec == "openai:gpt-4o-mini"
    assert ui.LiveSettings("baseline", "").spec == "baseline"
    assert ui.LiveSettings("local", "").spec == "local" and ui.LiveSettings("local", "m").spec == "local:m"
