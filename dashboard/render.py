"""HTML for the dashboard, as pure functions of data: heatmaps of tokens, tables, cards, legends.

Everything shown here that a corpus, an LLM or a person wrote goes through `escape` (html.escape with quotes);
colours and widths come from clamped numbers, never from data. The results are handed to st.html, which sanitises
again in the browser. Text that becomes Markdown instead (button labels, st.success / st.error / st.info / st.caption
bodies, which Streamlit renders as Markdown with images, links, maths and colours) goes through `plain`.
"""

from __future__ import annotations

import functools
import html
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from core import prompts
from dashboard.i18n import N_, _, language, number_in, number_table

POSITIVE_RGB = (255, 106, 0)
"""Heatmap colour of positive activations (orange)."""
NEGATIVE_RGB = (37, 99, 235)
"""Heatmap colour of negative activations (blue)."""
SIMULATED_RGB = (22, 163, 74)
"""Underline colour of simulated activations in the overlaid view (green)."""

END_MARKER = '<div class="na-end"></div>'
"""An empty element after a page's last panel: browser tests and bench/app.py wait for it."""

EXCERPT_KINDS: dict[str, str] = {"top": N_("top"), "random": N_("random"), "bottom": N_("bottom"),
                                 "quantile": N_("quantile")}
"""core.types.ExcerptKind values as pages name them (marked: `_` at use)."""

SPLITS: dict[str, str] = {"explain": N_("shown to the explainer"), "calibrate": N_("held out for calibrating"),
                          "score": N_("held out for scoring"), "view": N_("for viewing only")}
"""core.types.Split values as pages name them (marked: `_` at use)."""

RATINGS: dict[str, str] = {"right": N_("right"), "partly": N_("partly"), "wrong": N_("wrong")}
"""core.types.Rating values in the tables (marked: `_` at use)."""

STATUSES: dict[str, str] = {"ok": N_("ok"), "failed": N_("failed"), "suggested": N_("suggested")}
"""Explanation statuses in the tables (marked: `_` at use)."""


def named(names: dict[str, str], value: object) -> str:
    """A core enum value in the session's language through one of the tables above (unknown values as they are)."""
    text = str(value)
    return _(names[text]) if text in names else text


_VISIBLE = {"\n": "↵", "\r": "␍", "\t": "⇥"}


def display_token(token: str) -> str:
    """A token as visible text: newlines and tabs as symbols, other control characters as \\xNN. Not escaped."""
    out = []
    for char in token:
        if char in _VISIBLE:
            out.append(_VISIBLE[char])
        elif ord(char) < 32 or 0x7F <= ord(char) < 0xA0:
            out.append(f"\\x{ord(char):02x}")
        else:
            out.append(char)
    return "".join(out)


_JOINER = "\u2060"
_AUTOLINK = re.compile(r"(?i)(?<=:)//|(?<=www)\.|@")
"""Where GFM's autolink literals start ("://", "www.", "@"): the joiner goes before the last character matched."""
_MARKDOWN_SPECIAL = frozenset("\\`*_{}[]()<>#+-.!|~$:^=&\"'/@%")


_BLANKS = {" ": "␣", "\n": "↵", "\r": "␍", "\t": "⇥"}


def visible_blanks(explanation: str) -> str:
    """An explanation as shown: a quoted token that is only spaces or line breaks (`" "`, `"\\n   "`, which read
    as nothing or as escapes) gets visible symbols (`"␣"`, `"↵␣␣␣"`, the heatmaps' ↵ for a line break); any other
    text stays as it is. For display only: what is stored and scored is the text itself."""

    def shown(match: re.Match[str]) -> str:
        quoted = match.group(0)
        if not quoted.startswith('"'):
            return quoted
        token = prompts.unquote(quoted)
        if not token or token.strip() or any(char not in _BLANKS for char in token):
            return quoted
        return '"' + "".join(_BLANKS[char] for char in token) + '"'

    return prompts.QUOTED.sub(shown, explanation)


def plain(text: object, limit: int | None = None) -> str:
    """Text for a Markdown body or widget label, shown as the characters it is: every ASCII punctuation character
    Markdown or Streamlit's extensions could read (links, images, emphasis, code, $maths$, :colour[...] and
    :shortcodes:, HTML) gets a backslash, line breaks become spaces; cut to `limit` characters first. Bare URLs and
    e-mail addresses, which GitHub-flavoured Markdown links whatever is escaped, get an invisible word joiner."""
    value = " ".join(str(text).split())
    if limit is not None and len(value) > limit:
        value = value[: limit - 1] + "…"
    value = _AUTOLINK.sub(lambda m: m.group(0)[:-1] + _JOINER + m.group(0)[-1], value)
    return "".join(f"\\{char}" if char in _MARKDOWN_SPECIAL else char for char in value)


def shown(markdown: str) -> str:
    """What a browser shows of a `plain` text (for tests and logs): the backslashes and word joiners removed."""
    return re.sub(r"\\([!-/:-@\[-`{-~])", r"\1", markdown).replace(_JOINER, "")


def code(text: object) -> str:
    """Text as a Markdown code span (a command, a path): literal inside, fenced by more backticks than it holds."""
    value = " ".join(str(text).split())
    fence = "`" * (max((len(run) for run in re.findall(r"`+", value)), default=0) + 1)
    return f"{fence} {value} {fence}"


def escape(text: object) -> str:
    """HTML-escape anything for st.html: quotes too, so it is safe inside attributes."""
    return html.escape(str(text), quote=True)


def clamp01(value: float) -> float:
    """`value` clamped to [0, 1]; NaN, None and infinities that are not positive become 0."""
    if value is None or not isinstance(value, (int, float)) or math.isnan(value):
        return 0.0
    return min(max(float(value), 0.0), 1.0)


def rgba(rgb: tuple[int, int, int], alpha: float) -> str:
    """A CSS colour built from numbers only."""
    r, g, b = (min(max(int(c), 0), 255) for c in rgb)
    return f"rgba({r},{g},{b},{clamp01(alpha):.2f})"


LEVELS = 20
"""Colour steps of a heatmap: opacity in twentieths, too fine for the eye to tell apart and few enough that a token
carries a short class name ("p7") instead of a colour (a page holds thousands of tokens, sent to every student)."""

_LAYERS = {"p": ("background:", POSITIVE_RGB), "n": ("background:", NEGATIVE_RGB),
           "s": ("border-bottom:3px solid ", SIMULATED_RGB)}
"""Heatmap class prefixes: positive and negative activation as the background, a simulation as a green underline."""


def level_class(prefix: str, share: float) -> str:
    """The heatmap class of `share` (0-1, clamped) of full colour: "p7" is 7/20 of the positive colour; "" for none."""
    level = round(clamp01(share) * LEVELS)
    return f"{prefix}{level}" if level else ""


def heat_class(value: float, positive_scale: float, negative_scale: float) -> str:
    """Orange for positive, blue for negative activations, opacity = |value| / scale, clamped (a level_class)."""
    if value is None or math.isnan(value):
        return ""
    if value >= 0:
        return level_class("p", value / positive_scale if positive_scale > 0 else 0.0)
    return level_class("n", -value / negative_scale if negative_scale > 0 else 0.0)


HEATMAP_CSS = (".na-heatmap{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:13px;line-height:1.9}"
               ".na-heatmap>div{margin:0 0 8px 0;padding:2px 0;border-bottom:1px solid #eee}"
               ".na-hl{font-family:sans-serif;font-size:11px;color:#666}.na-hx{white-space:pre-wrap;word-break:break-word}"
               ".na-ht{font-family:sans-serif;font-size:10px;color:#888;display:inline-block;width:64px}")
"""How a heatmap's excerpts, their labels (na-hl), token lines (na-hx) and line tags (na-ht) look: once per heatmap,
not on each of its hundreds of elements."""


def level_css(classes: set[str], base: str = "") -> str:
    """A style block for the heatmap classes in `classes` (scoped to heatmaps; colours from the class's numbers),
    after the rules in `base`."""
    rules = [base] if base else []
    for name in sorted(classes):
        prefix, level = name[:1], name[1:]
        if prefix in _LAYERS and level.isdigit():
            declaration, rgb = _LAYERS[prefix]
            rules.append(f".na-heatmap .{name}{{{declaration}{rgba(rgb, int(level) / LEVELS)}}}")
    return f"<style>{''.join(rules)}</style>" if rules else ""


@dataclass(frozen=True)
class HeatmapRow:
    """One excerpt to draw: its tokens, raw activations, and optionally a simulation on the 0-10 scale."""

    tokens: Sequence[str]
    activations: Sequence[float]
    label: str = ""
    """Shown before the tokens (escaped)."""
    simulated: Sequence[float] | None = None
    """Simulated activation per token on the 0-10 scale (None: not simulated)."""


HEATMAP_MODES = ("real", "side by side", "overlaid")
"""real: activations only; side by side: a real row then a simulated row on the shared 0-10 scale; overlaid: real as
background, simulated as a green underline."""


def heatmap_html(
    rows: Sequence[HeatmapRow], *, positive_scale: float, negative_scale: float = 0.0, mode: str = "real"
) -> str:
    """Excerpts as coloured tokens with hover values (a HEATMAP_MODES mode), after the style block of the colour
    classes they use."""
    used: set[str] = set()
    parts = ['<div class="na-heatmap">']
    for row in rows:
        parts.append("<div>")
        if row.label:
            parts.append(f'<div class="na-hl">{escape(row.label)}</div>')
        simulated = list(row.simulated) if row.simulated is not None else None
        if mode == "side by side" and simulated is not None:
            parts.append(_token_line(row, positive_scale, negative_scale, None, N_("real"), used))
            parts.append(_token_line(row, positive_scale, negative_scale, simulated, N_("simulated"), used))
        else:
            overlay = simulated if mode == "overlaid" else None
            parts.append(_token_line(row, positive_scale, negative_scale, overlay, "", used))
        parts.append("</div>")
    parts.append("</div>")
    return level_css(used, HEATMAP_CSS) + "".join(parts)


@functools.lru_cache(maxsize=65536)
def _token_text(token: str) -> str:
    return escape(display_token(token))  # tokens repeat across excerpts and neurons


def _token_line(row: HeatmapRow, positive_scale: float, negative_scale: float, simulated: list[float] | None,
                tag: str, used: set[str]) -> str:
    out = ['<div class="na-hx">']
    if tag:
        out.append(f'<span class="na-ht">{escape(_(tag))}</span>')
    # looked up once per line, filled per token: a page holds thousands of tokens
    symbols = number_table(language())
    simulated_title = escape(_("simulated {value}/10"))
    tenths = 10.0 / positive_scale if positive_scale > 0 else 0.0
    for index, (token, raw) in enumerate(zip(row.tokens, row.activations, strict=False)):
        value = float(raw)
        sim = simulated[index] if simulated is not None and index < len(simulated) else None
        # short on purpose (the token is in sight): every byte goes to every student; numbers only, so no escaping
        title = f"{value:.3f} ({value * tenths:.1f}/10)"
        if symbols is not None:
            title = title.translate(symbols)
        if sim is not None:
            simulated_value = f"{float(sim):.1f}"
            title += ", " + simulated_title.format(
                value=simulated_value if symbols is None else simulated_value.translate(symbols))
        if tag == "simulated" and sim is not None:
            classes = level_class("p", float(sim) / 10.0)
        else:
            classes = heat_class(value, positive_scale, negative_scale)
            if sim is not None and (underline := level_class("s", float(sim) / 10.0)):
                classes = f"{classes} {underline}" if classes else underline
        if classes:
            used.update(classes.split())
            out.append(f'<span class="{classes}" title="{title}">{_token_text(token)}</span>')
        else:
            out.append(f'<span title="{title}">{_token_text(token)}</span>')
    out.append("</div>")
    return "".join(out)


def legend_html(positive_scale: float, negative_scale: float = 0.0, simulated: bool = False) -> str:
    """A one-line key to the heatmap colours."""
    lang = language()
    parts = [f'<span style="background:{rgba(POSITIVE_RGB, 1.0)};padding:0 6px;border-radius:2px">&nbsp;</span> '
             + escape(_("activation up to {value}", value=number_in(positive_scale, ".3g", lang)))]
    if negative_scale > 0:
        parts.append(f'<span style="background:{rgba(NEGATIVE_RGB, 1.0)};padding:0 6px;border-radius:2px">'
                     "&nbsp;</span> " + escape(_("negative down to {value}", value=number_in(-negative_scale, ".3g",
                                                                                               lang))))
    if simulated:
        parts.append(f'<span style="border-bottom:3px solid {rgba(SIMULATED_RGB, 1.0)}">&nbsp;&nbsp;&nbsp;</span> '
                     + escape(_("simulated (0-10)")))
    hover = escape(_("(hover a token for values)"))
    return f'<div style="font-size:12px;color:#555">{" &nbsp; ".join(parts)} &nbsp; {hover}</div>'


def card_html(text: str, source: str = "", badge: str = "") -> str:
    """An explanation in a card: the text, where it came from, and a score badge (all escaped)."""
    badge_html = (f'<span style="float:right;background:#fff;border:1px solid #f0c29a;border-radius:10px;'
                  f'padding:0 8px;font-size:13px">{escape(badge)}</span>') if badge else ""
    return ('<div class="na-card" style="border-left:4px solid #d9480f;background:#fff7f0;border-radius:6px;'
            f'padding:10px 14px;margin:4px 0 8px 0">{badge_html}<div style="font-size:17px">{escape(text)}</div>'
            f'<div style="font-size:12px;color:#666;margin-top:4px">{escape(source)}</div></div>')


def stats_html(stats: Sequence[tuple[str, str, str]]) -> str:
    """Figures in a row, each a (label, value, help) with the help on hovering the label (all escaped): one element
    where st.metric in st.columns makes two per figure and one for the row."""
    cells = []
    for label, value, help_text in stats:
        hint = (f' title="{escape(help_text)}" style="font-size:14px;color:#555;text-decoration:underline dotted;'
                'cursor:help"') if help_text else ' style="font-size:14px;color:#555"'
        cells.append(f'<div class="na-stat" style="flex:1 1 110px;min-width:0"><div class="na-sl"{hint}>{escape(label)}'
                     f'</div><div class="na-sv" style="font-size:28px;line-height:1.3">{escape(value)}</div></div>')
    row = "display:flex;gap:16px;flex-wrap:wrap;margin:4px 0 8px 0"
    return f'<div class="na-stats" style="{row}">{"".join(cells)}</div>'


def steps_html(steps: Sequence[tuple[str, str]]) -> str:
    """Boxes joined by arrows, one per (title, text) step (the home page's explain -> simulate -> score)."""
    colours = [("#fff7f0", "#f0c29a"), ("#f0f5ff", "#b6c8f5"), ("#f0faf3", "#a9dcb8")]
    arrow = '<div style="align-self:center;font-size:22px;color:#d9480f">→</div>'
    boxes = [f'<div style="flex:1;background:{back};border:1px solid {border};border-radius:8px;padding:10px">'
             f"<b>{escape(title)}</b><br>{escape(text)}</div>"
             for (title, text), (back, border) in zip(steps, colours * len(steps), strict=False)]
    return ('<div style="display:flex;gap:10px;align-items:stretch;font-family:sans-serif;font-size:14px;'
            f'margin:4px 0 12px 0">{arrow.join(boxes)}</div>')


TABLE_CSS = ("<style>.na-table{border-collapse:collapse;font-size:13px;width:100%}"
             ".na-table th{text-align:left;color:#666;font-weight:normal;border-bottom:1px solid #ddd;padding:2px 6px}"
             ".na-table td{padding:2px 6px;border-bottom:1px solid #f0f0f0}"
             ".na-table td.k{font-family:ui-monospace,monospace;white-space:pre}</style>")
"""How render's tables look (a style block before each table; the first column, the key, in monospace)."""


def table_html(header: Sequence[str], rows: Sequence[Sequence[object]], *, bars: Sequence[float] | None = None,
               bar_scale: float = 1.0, widths: Sequence[int] | None = None) -> str:
    """A small HTML table, every cell escaped; optional bars behind the last column, widths from clamped numbers
    (positive orange, negative blue); `widths` in percent per column. Lighter in the browser than a data grid."""
    # the cells' look is in TABLE_CSS, once per table: a page's tables hold hundreds of cells, sent to every student
    layout = ' style="table-layout:fixed"' if widths else ""
    parts = [TABLE_CSS, f'<table class="na-table"{layout}>']
    if widths:
        parts.append("<colgroup>" + "".join(f'<col style="width:{int(w)}%">' for w in widths) + "</colgroup>")
    parts.append("<tr>")
    parts += [f"<th>{escape(h)}</th>" for h in header]
    parts.append("</tr>")
    for index, row in enumerate(rows):
        parts.append("<tr>")
        for column, cell in enumerate(row):
            key = ' class="k"' if column == 0 else ""
            bar = ""
            if bars is not None and column == len(row) - 1:
                value = float(bars[index])
                colour = rgba(POSITIVE_RGB if value >= 0 else NEGATIVE_RGB, 0.35)
                width = clamp01(abs(value) / bar_scale if bar_scale > 0 else 0.0) * 100
                bar = f' style="background:linear-gradient(90deg,{colour} {width:.0f}%,transparent {width:.0f}%)"'
            parts.append(f"<td{key}{bar}>{escape(cell)}</td>")
        parts.append("</tr>")
    parts.append("</table>")
    return "".join(parts)


def sections_html(sections: Sequence[tuple[str, str]]) -> str:
    """Blocks of HTML each under a bold title (escaped), as one piece: one element on the page instead of two per
    section (every element costs a page run a little)."""
    return "".join(f'<div style="font-weight:600;font-size:14px;margin:10px 0 2px 0">{escape(title)}</div>{body}'
                   for title, body in sections if body)


def columns_html(columns: Sequence[tuple[str, str]]) -> str:
    """Blocks of HTML side by side (wrapping on narrow screens), each under a bold title (escaped)."""
    cells = "".join(f'<div style="flex:1 1 220px;min-width:0"><div style="font-weight:600;font-size:14px;'
                    f'margin:0 0 4px 0">{escape(title)}</div>{body}</div>' for title, body in columns)
    return f'<div style="display:flex;gap:16px;flex-wrap:wrap">{cells}</div>'
