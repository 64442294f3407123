"""Shared pieces of the dashboard (app.py and pages/): the store and model handles, the live-work queue, the neuron
selector bound to the URL, the safe token heatmap, explanation cards and altair charts.

It sits beside app.py, not in pages/, because Streamlit lists every script in pages/ as a page. Everything shown
here that a corpus, an LLM or a person wrote goes through `html.escape` or a Streamlit element that shows text as
text (st.text, st.dataframe, st.metric); colours come from clamped numbers, never from data.
"""

from __future__ import annotations

import contextlib
import html
import logging
import math
import os
import random
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import altair as alt
import pandas as pd
import streamlit as st

from core.models import model_home
from core.store import Store, StoreError
from core.types import LayerScores, LiveScore, NeuronId, NeuronStats, Suggestion

log = logging.getLogger(__name__)

APP_DIR = Path(__file__).resolve().parent
"""The folder holding app.py; caches/ beside it is where `make demo` writes the default cache."""

CACHE_ENV = "NEURON_ATLAS_CACHE"
"""Environment variable naming the cache to open (wins over the one remembered from last time)."""

LIVE_SLOTS_ENV = "NEURON_ATLAS_LIVE_SLOTS"
"""Environment variable: how many live model jobs (scoring, forward passes, generation) run at once (default 1)."""

DEFAULT_CACHE = APP_DIR / "caches" / "smollm2-135m-stdlib.duckdb"
"""Where `make demo` builds the demo cache (the Makefile's CACHE)."""

PAGES: dict[str, str] = {
    "picker": "pages/picker.py",
    "scoring": "pages/scoring.py",
    "insights": "pages/insights.py",
    "related": "pages/related.py",
    "try": "pages/try_text.py",
}
"""Page files by short name (the targets of st.Page in app.py and of neuron links)."""

POSITIVE_RGB = (255, 106, 0)
"""Heatmap colour of positive activations (orange)."""
NEGATIVE_RGB = (37, 99, 235)
"""Heatmap colour of negative activations (blue)."""
SIMULATED_RGB = (22, 163, 74)
"""Underline colour of simulated activations in the overlaid view (green)."""


# --- which cache ---------------------------------------------------------------------------------------------


def last_cache_file() -> Path:
    """The small file remembering the cache opened last (under the model home, beside the converted models)."""
    return model_home() / "last-cache.txt"


def remember_cache(path: Path) -> None:
    """Remember `path` so that `streamlit run app.py` alone opens it next time."""
    target = last_cache_file()
    try:
        if target.is_file() and target.read_text().strip() == str(path):
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(f"{path}\n")
    except OSError as error:  # a read-only home must not break the app
        log.warning("cannot remember the cache in %s: %s", target, error)


def remembered_cache() -> Path | None:
    """The cache opened last, if that file still exists."""
    try:
        text = last_cache_file().read_text().strip()
    except OSError:
        return None
    return Path(text) if text and Path(text).is_file() else None


def default_cache() -> Path | None:
    """The cache to open when the session has not chosen one: $NEURON_ATLAS_CACHE, then the last one used, then
    the demo cache, then any cache in caches/."""
    env = os.environ.get(CACHE_ENV, "").strip()
    if env:
        return Path(env).expanduser().resolve()
    for candidate in (remembered_cache(), DEFAULT_CACHE):
        if candidate is not None and candidate.is_file():
            return candidate.resolve()
    found = known_caches()
    return found[0] if found else None


def known_caches() -> list[Path]:
    """Finished caches in caches/ beside app.py, plus the env and remembered ones (no notes files)."""
    found: list[Path] = []
    env = os.environ.get(CACHE_ENV, "").strip()
    extra = [Path(env).expanduser()] if env else []
    remembered = remembered_cache()
    if remembered is not None:
        extra.append(remembered)
    folder = APP_DIR / "caches"
    listed = sorted(folder.glob("*.duckdb")) if folder.is_dir() else []
    for path in [*extra, *listed]:
        resolved = path.resolve()
        if resolved.name.endswith(".notes.duckdb") or not resolved.is_file() or resolved in found:
            continue
        found.append(resolved)
    return found


def build_command(path: Path | None = None) -> str:
    """The exact command that builds the demo cache (or the given one) from this checkout."""
    target = path or DEFAULT_CACHE
    try:
        shown = target.relative_to(APP_DIR)
    except ValueError:
        shown = target
    if _cli_has("demo"):
        return f"python -m core demo --cache {shown}"
    return f"python -m core build --cache {shown}"


def _cli_has(command: str) -> bool:
    """Whether `python -m core` has this subcommand (the demo command may not exist in every checkout)."""
    import argparse

    from core.cli import build_parser

    for action in build_parser()._actions:
        if isinstance(action, argparse._SubParsersAction) and command in action.choices:
            return True
    return False


# --- the store, opened once per cache file and re-attached when the file changes on disk ----------------------


def file_signature(path: Path) -> tuple[int, int, int]:
    """(inode, size, mtime in ns): changes when a build renames a new file into place."""
    info = path.stat()
    return (info.st_ino, info.st_size, info.st_mtime_ns)


@dataclass
class StoreHandle:
    """One Store per cache file for every session; `current()` re-attaches the cache when the file changed."""

    path: Path
    store: Store
    signature: tuple[int, int, int]
    lock: threading.Lock = field(default_factory=threading.Lock)

    def current(self) -> Store:
        try:
            signature = file_signature(self.path)
        except OSError:  # the file is being replaced: keep reading the one we hold
            return self.store
        if signature != self.signature:
            with self.lock:
                if signature != self.signature:
                    log.info("%s changed on disk; attaching it again", self.path)
                    self.store.reload_cache()
                    self.signature = signature
        return self.store


@st.cache_resource(show_spinner=False)
def _store_handle(path: str) -> StoreHandle:
    resolved = Path(path)
    signature = file_signature(resolved)
    return StoreHandle(resolved, Store.open(resolved, with_notes=True), signature)


def open_store(path: Path) -> Store:
    """The shared Store of this cache (read-only cache, read-write notes); StoreError when it cannot be opened."""
    path = path.expanduser().resolve()
    if not path.is_file():
        raise StoreError(f"no cache at {path}; build one with `{build_command(path)}`")
    return _store_handle(str(path)).current()


def cache_key(store: Store) -> tuple[str, tuple[int, int, int]]:
    """A hashable stand-in for the cache's content, for st.cache_data keys (changes when the file changes)."""
    return (str(store.path), _store_handle(str(store.path)).signature)


# --- live work: one queue for every session -----------------------------------------------------------------


@dataclass
class LiveGate:
    """At most `slots` live model jobs at once across all sessions; the rest wait in line."""

    slots: int
    semaphore: threading.Semaphore
    waiting: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


@st.cache_resource(show_spinner=False)
def live_gate() -> LiveGate:
    slots = max(1, int(os.environ.get(LIVE_SLOTS_ENV, "1") or 1))
    return LiveGate(slots, threading.Semaphore(slots))


@contextlib.contextmanager
def live_work(label: str) -> Iterator[None]:
    """Run the body when a live slot is free, showing "queued" meanwhile.

    The wait is a short timeout loop that touches an st element each round, so a session that reruns or
    leaves stops waiting at once instead of computing for nobody (NOTES.md, concurrency).
    """
    gate = live_gate()
    box = st.empty()
    with gate.lock:
        gate.waiting += 1
    try:
        acquired = gate.semaphore.acquire(timeout=0.05)
        while not acquired:
            with gate.lock:
                ahead = max(gate.waiting - 1, 0)
            box.info(f"Queued: {label} starts when the model is free ({ahead} other request(s) waiting)",
                     icon=":material/hourglass_top:")
            acquired = gate.semaphore.acquire(timeout=0.25)
    finally:
        with gate.lock:
            gate.waiting -= 1
    try:
        box.info(f"{label} ...", icon=":material/settings:")
        yield
    finally:
        gate.semaphore.release()
        box.empty()


@st.cache_resource(show_spinner="Loading the model (once for every session) ...")
def subject_model(spec: str) -> Any:
    """The subject model of a cache, loaded once per process and shared by every session."""
    from core.models import load_model

    return load_model(spec)


# --- the chosen neuron, carried in the URL (?layer=0&neuron=0) -------------------------------------------------


def go_to(layer: int, neuron: int) -> None:
    """Widget callback: move every page to this neuron (a bound widget is changed through session_state)."""
    st.session_state["layer"] = int(layer)
    st.session_state["neuron"] = int(neuron)


def _step(delta: int, layers: int, width: int) -> None:
    index = int(st.session_state.get("layer", 0)) * width + int(st.session_state.get("neuron", 0)) + delta
    index %= layers * width
    go_to(index // width, index % width)


def random_neuron(layers: int, width: int) -> None:
    """Widget callback: move to a random neuron."""
    go_to(random.randrange(layers), random.randrange(width))


def neuron_selector(layers: int, width: int, container: Any = None) -> NeuronId:
    """Layer and neuron inputs (sidebar by default) bound to the URL's `layer` and `neuron`; prev, random, next."""
    with container if container is not None else st.sidebar:
        st.markdown("**Neuron**")
        left, right = st.columns(2)
        # value "min" (0) is the default: the URL drops a parameter at its default, and buttons set these keys
        layer = left.number_input("Layer", min_value=0, max_value=max(layers - 1, 0), step=1,
                                  key="layer", bind="query-params")
        neuron = right.number_input("Neuron", min_value=0, max_value=max(width - 1, 0), step=1,
                                    key="neuron", bind="query-params")
        back, lucky, forward = st.columns(3)
        back.button("", key="nav_prev", icon=":material/chevron_left:", help="previous neuron", on_click=_step,
                    args=(-1, layers, width), width="stretch")
        lucky.button("", key="nav_random", icon=":material/shuffle:", help="a random neuron", on_click=random_neuron,
                     args=(layers, width), width="stretch")
        forward.button("", key="nav_next", icon=":material/chevron_right:", help="next neuron", on_click=_step,
                       args=(1, layers, width), width="stretch")
    return NeuronId(int(layer), int(neuron))


def page_link_here(page: str, label: str) -> None:
    """A link to another page showing the same neuron (the bound URL parameters travel with it)."""
    st.page_link(PAGES[page], label=label)


def share_url(neuron: NeuronId, page: str) -> str:
    """A relative URL that opens `page` on `neuron` in a new session (a link to hand to students)."""
    slug = Path(PAGES[page]).stem
    return f"{slug}?layer={neuron.layer}&neuron={neuron.neuron}"


def neuron_button(neuron: NeuronId, label: str | None = None, key: str | None = None, **kwargs: Any) -> bool:
    """A button that moves this session to `neuron` (every page follows the sidebar)."""
    return st.button(label or f"→ {neuron.layer}:{neuron.neuron}", key=key, on_click=go_to,
                     args=(neuron.layer, neuron.neuron), **kwargs)


# --- untrusted text, shown safely ----------------------------------------------------------------------------

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


def escape(text: object) -> str:
    """HTML-escape anything for st.html: quotes too, so it is safe inside attributes."""
    return html.escape(str(text), quote=True)


def clamp01(value: float) -> float:
    """`value` clamped to [0, 1]; NaN and infinities that are not positive become 0."""
    if value is None or not isinstance(value, (int, float)) or math.isnan(value):
        return 0.0
    return min(max(float(value), 0.0), 1.0)


def rgba(rgb: tuple[int, int, int], alpha: float) -> str:
    """A CSS colour built from numbers only."""
    r, g, b = (min(max(int(c), 0), 255) for c in rgb)
    return f"rgba({r},{g},{b},{clamp01(alpha):.2f})"


def activation_colour(value: float, positive_scale: float, negative_scale: float) -> str:
    """Orange for positive, blue for negative activations, opacity = |value| / scale, clamped."""
    if value is None or math.isnan(value):
        return rgba(POSITIVE_RGB, 0.0)
    if value >= 0:
        return rgba(POSITIVE_RGB, value / positive_scale if positive_scale > 0 else 0.0)
    return rgba(NEGATIVE_RGB, -value / negative_scale if negative_scale > 0 else 0.0)


@dataclass(frozen=True)
class HeatmapRow:
    """One excerpt to draw: its tokens, raw activations, and optionally a simulation on the 0-10 scale."""

    tokens: Sequence[str]
    activations: Sequence[float]
    label: str = ""
    """Shown before the tokens (escaped)."""
    simulated: Sequence[float] | None = None
    """Simulated activation per token on the 0-10 scale (None: not simulated)."""


def heatmap_html(
    rows: Sequence[HeatmapRow],
    *,
    positive_scale: float,
    negative_scale: float = 0.0,
    mode: str = "real",
) -> str:
    """HTML for excerpts as coloured tokens with hover values. Every token and label goes through html.escape;
    colours come from clamped numbers. Modes: "real" (activations only), "side by side" (a real row then a
    simulated row on the shared 0-10 scale), "overlaid" (real as background, simulated as a green underline)."""
    parts = ['<div class="na-heatmap" style="font-family:ui-monospace,SFMono-Regular,Menlo,monospace;'
             'font-size:13px;line-height:1.9">']
    for row in rows:
        parts.append('<div style="margin:0 0 8px 0;padding:2px 0;border-bottom:1px solid #eee">')
        if row.label:
            parts.append(f'<div style="font-family:sans-serif;font-size:11px;color:#666">{escape(row.label)}</div>')
        simulated = list(row.simulated) if row.simulated is not None else None
        if mode == "side by side" and simulated is not None:
            parts.append(_token_line(row, positive_scale, negative_scale, None, tag="real"))
            parts.append(_token_line(row, positive_scale, negative_scale, simulated, tag="simulated"))
        else:
            overlay = simulated if mode == "overlaid" else None
            parts.append(_token_line(row, positive_scale, negative_scale, overlay, tag=""))
        parts.append("</div>")
    parts.append("</div>")
    return "".join(parts)


def _token_line(
    row: HeatmapRow, positive_scale: float, negative_scale: float, simulated: list[float] | None, tag: str
) -> str:
    out = ['<div style="white-space:pre-wrap;word-break:break-word">']
    if tag:
        out.append(f'<span style="font-family:sans-serif;font-size:10px;color:#888;display:inline-block;'
                   f'width:64px">{escape(tag)}</span>')
    for index, (token, value) in enumerate(zip(row.tokens, row.activations, strict=False)):
        value = float(value)
        sim = simulated[index] if simulated is not None and index < len(simulated) else None
        normalized = 10.0 * value / positive_scale if positive_scale > 0 else 0.0
        title = f"{display_token(token)!r}  activation {value:.3f}  ({normalized:.1f}/10)"
        if tag == "simulated" and sim is not None:
            style = f"background:{rgba(POSITIVE_RGB, float(sim) / 10.0)}"
            title += f"  simulated {float(sim):.1f}/10"
        else:
            style = f"background:{activation_colour(value, positive_scale, negative_scale)}"
            if sim is not None:
                style += f";border-bottom:3px solid {rgba(SIMULATED_RGB, float(sim) / 10.0)}"
                title += f"  simulated {float(sim):.1f}/10"
        out.append(f'<span style="{style};border-radius:2px" title="{escape(title)}">'
                   f"{escape(display_token(token))}</span>")
    out.append("</div>")
    return "".join(out)


def heatmap(rows: Sequence[HeatmapRow], *, positive_scale: float, negative_scale: float = 0.0,
            mode: str = "real") -> None:
    """Draw excerpts as a safe token heatmap (st.html sanitises again in the browser)."""
    if rows:
        st.html(heatmap_html(rows, positive_scale=positive_scale, negative_scale=negative_scale, mode=mode))


def heatmap_legend(positive_scale: float, negative_scale: float = 0.0, simulated: bool = False) -> None:
    """A one-line key to the heatmap colours."""
    parts = [f'<span style="background:{rgba(POSITIVE_RGB, 1.0)};padding:0 6px;border-radius:2px">&nbsp;</span> '
             f"activation up to {positive_scale:.3g}"]
    if negative_scale > 0:
        parts.append(f'<span style="background:{rgba(NEGATIVE_RGB, 1.0)};padding:0 6px;border-radius:2px">'
                     f"&nbsp;</span> negative down to {-negative_scale:.3g}")
    if simulated:
        parts.append(f'<span style="border-bottom:3px solid {rgba(SIMULATED_RGB, 1.0)}">&nbsp;&nbsp;&nbsp;</span> '
                     "simulated (0-10)")
    st.html(f'<div style="font-size:12px;color:#555">{" &nbsp; ".join(parts)} &nbsp; (hover a token for values)'
            "</div>")


def explanation_card(text: str, source: str = "", badge: str = "") -> None:
    """An explanation in a card: the text (escaped), where it came from, and a score badge."""
    badge_html = (f'<span style="float:right;background:#fff;border:1px solid #f0c29a;border-radius:10px;'
                  f'padding:0 8px;font-size:13px">{escape(badge)}</span>') if badge else ""
    st.html(
        '<div class="na-card" style="border-left:4px solid #d9480f;background:#fff7f0;border-radius:6px;'
        'padding:10px 14px;'
        f'margin:4px 0 8px 0">{badge_html}<div style="font-size:17px">{escape(text)}</div>'
        f'<div style="font-size:12px;color:#666;margin-top:4px">{escape(source)}</div></div>'
    )


def page_end() -> None:
    """An empty marker after a page's last panel: browser tests and bench/app.py wait for it."""
    st.html('<div class="na-end"></div>')


def not_computed(what: str, command: str) -> None:
    """Say that a part of the cache is missing and which command fills it."""
    st.info(f"{what}: not computed yet — run `{command}`")


def fmt_score(score: float | None) -> str:
    """A score for people: two decimals, or "undefined"."""
    return "undefined" if score is None or (isinstance(score, float) and math.isnan(score)) else f"{score:.2f}"


# --- altair charts -----------------------------------------------------------------------------------------------


def histogram_chart(stats: NeuronStats) -> alt.Chart:
    """The neuron's activation histogram over every recorded token (log count axis)."""
    edges, counts = stats.hist_edges, stats.hist_counts
    frame = pd.DataFrame({"from": edges[:-1], "to": edges[1:], "tokens": counts})
    frame = frame[frame["tokens"] > 0]
    return (
        alt.Chart(frame)
        .mark_bar(color="#d9480f")
        .encode(
            x=alt.X("from:Q", title="activation", bin="binned"),
            x2="to:Q",
            y=alt.Y("tokens:Q", title="tokens (symlog scale)", scale=alt.Scale(type="symlog")),
            tooltip=[alt.Tooltip("from:Q", format=".3f"), alt.Tooltip("to:Q", format=".3f"), "tokens:Q"],
        )
        .properties(height=220)
    )


def scatter_chart(frame: pd.DataFrame) -> alt.Chart:
    """Real (normalized 0-10) against simulated activation per token; `frame` has real, simulated, kind, token."""
    return (
        alt.Chart(frame)
        .mark_circle(opacity=0.55, size=28)
        .encode(
            x=alt.X("real:Q", title="real activation (0-10 of the neuron's max)"),
            y=alt.Y("simulated:Q", title="simulated (0-10)"),
            color=alt.Color("kind:N", title="excerpt",
                            scale=alt.Scale(domain=["top", "random"], range=["#d9480f", "#2563eb"])),
            tooltip=["token:N", alt.Tooltip("real:Q", format=".2f"), alt.Tooltip("simulated:Q", format=".2f"),
                     "excerpt:Q"],
        )
        .properties(height=300)
    )


def scores_by_layer_chart(rows: Sequence[LayerScores]) -> alt.Chart:
    """Mean and median best score per layer, with how many neurons were scored."""
    frame = pd.DataFrame([{"layer": r.layer, "mean": r.mean_score, "median": r.median_score, "scored": r.scored}
                          for r in rows])
    long = frame.melt(id_vars=["layer", "scored"], value_vars=["mean", "median"], var_name="statistic",
                      value_name="score")
    return (
        alt.Chart(long)
        .mark_line(point=True)
        .encode(
            x=alt.X("layer:O", title="layer"),
            y=alt.Y("score:Q", title="best score per neuron"),
            color=alt.Color("statistic:N", scale=alt.Scale(range=["#d9480f", "#2563eb"])),
            tooltip=["layer:O", "statistic:N", alt.Tooltip("score:Q", format=".2f"), "scored:Q"],
        )
        .properties(height=240)
    )


# --- the sidebar: cache and live-work settings --------------------------------------------------------------


LLM_BACKENDS: dict[str, str] = {
    "baseline": "baseline (offline, token statistics)",
    "local": "local model (in this process)",
    "openai": "OpenAI-compatible API",
}
"""Backends for live work (scoring suggestions, generating explanations), as the sidebar offers them."""


@dataclass(frozen=True)
class LiveSettings:
    """What live work in this session runs with. The API key is kept out of repr so it never reaches a log."""

    backend: str
    """A LLM_BACKENDS key."""
    model: str
    """openai: the model name; local: the model spec ("" = the default); baseline: unused."""
    base_url: str | None = None
    """openai: an OpenAI-compatible server's /v1 URL, None for api.openai.com."""
    api_key: str | None = field(default=None, repr=False)
    max_cost_usd: float = 0.50
    """Spending cap per generation in this session."""

    @property
    def spec(self) -> str:
        """The backend spec as the command line writes it: "baseline", "local[:MODEL]", "openai:MODEL"."""
        if self.backend == "baseline":
            return "baseline"
        if self.backend == "local":
            return f"local:{self.model}" if self.model else "local"
        return f"openai:{self.model or 'gpt-4o-mini'}"


def _secret_key() -> str | None:
    """An API key from Streamlit secrets or the environment (never shown)."""
    with contextlib.suppress(Exception):  # no secrets.toml is the normal case
        value = st.secrets.get("OPENAI_API_KEY")
        if value:
            return str(value)
    return os.environ.get("OPENAI_API_KEY") or None


def live_settings_sidebar() -> LiveSettings:
    """The sidebar's "live work" settings: backend, and for openai the model, base URL and key."""
    with st.sidebar.expander("Live work (scoring, generating)", expanded=False):
        backend = st.radio("Backend", list(LLM_BACKENDS), format_func=LLM_BACKENDS.__getitem__, key="llm_backend")
        if backend == "openai":
            model = st.text_input("Model", value="gpt-4o-mini", key="llm_model")
            base_url = st.text_input("Base URL", value=os.environ.get("OPENAI_BASE_URL", ""), key="llm_base_url",
                                     placeholder="https://api.openai.com/v1", help="Any OpenAI-compatible server")
            typed = st.text_input("API key", type="password", key="llm_api_key",
                                  help="Kept in this browser session's memory only: never shown, logged or saved")
            key = typed or _secret_key()
            if not key:
                st.caption("No key yet: type one, or set OPENAI_API_KEY or .streamlit/secrets.toml.")
            elif not typed:
                st.caption("Using the key from secrets / the environment.")
            cap = st.number_input("Spending cap per generation (USD)", min_value=0.0, value=0.50, step=0.10,
                                  key="llm_cap")
            return LiveSettings("openai", model.strip(), base_url.strip() or None, key, float(cap))
        if backend == "local":
            model = st.text_input("Model", value="", key="llm_local_model", placeholder="smollm2-135m (default)")
            return LiveSettings("local", model.strip())
        st.caption("Offline: explanations and simulations from token statistics; no key needed.")
        return LiveSettings("baseline", "")


def _cache_label(path: str) -> str:
    """A cache file as the sidebar lists it: relative to the app when it is inside, else the full path."""
    try:
        return str(Path(path).relative_to(APP_DIR))
    except ValueError:
        return path


def _pick_cache() -> None:
    """Callback of the cache box: this session now reads the chosen file."""
    st.session_state["cache_path"] = st.session_state["cache_select"]


def _type_cache() -> None:
    """Callback of the path box: this session now reads the typed file (checked when it is opened)."""
    typed = st.session_state.get("cache_other", "").strip()
    if typed:
        st.session_state["cache_path"] = str(Path(typed).expanduser().resolve())


def cache_sidebar() -> Path | None:
    """The sidebar's cache choice; returns the path this session uses (None when there is none).

    The session's choice lives in session_state["cache_path"] and changes only in the callbacks, so a list of
    caches that changes between runs (a new build, another session remembering its cache) never moves it."""
    chosen = st.session_state.get("cache_path")
    current = chosen if chosen else (str(default) if (default := default_cache()) else None)
    choices = [str(path) for path in known_caches()]
    if current is not None and current not in choices:
        choices.insert(0, current)
    with st.sidebar.expander("Cache", expanded=current is None):
        if choices:
            if st.session_state.get("cache_select") != current:
                st.session_state["cache_select"] = current if current is not None else choices[0]
            st.selectbox("Cache file", choices, format_func=_cache_label, key="cache_select", on_change=_pick_cache)
        st.text_input("Open another cache file", key="cache_other", placeholder="/path/to/cache.duckdb",
                      on_change=_type_cache)
        if current is not None:
            st.caption(f"`{current}`")
    return Path(current) if current is not None else None


@dataclass(frozen=True)
class PageContext:
    """What the frame (app.py) hands every page on each run."""

    store: Store
    neuron: NeuronId
    layers: int
    width: int
    model: str
    """The subject model's spec, as the cache's meta records it."""
    live: LiveSettings


def set_context(context: PageContext | None, problem: str | None = None) -> None:
    """Hand this run's context to the page (app.py); `problem` says why there is none when a cache could not be
    opened."""
    st.session_state["_atlas_context"] = context
    st.session_state["_atlas_problem"] = problem


def no_cache_message() -> str:
    """Why no cache is open, and what to do about it."""
    problem = st.session_state.get("_atlas_problem")
    if problem:
        return f"The cache cannot be opened: {problem}. Choose another cache file in the sidebar."
    return (f"No cache yet. Build the demo cache (the default model over the standard library's text) with "
            f"`{build_command()}` or `make app`, then reload this page; or choose a cache file in the sidebar.")


def page_context() -> PageContext:
    """The context set by app.py for this run; stops the page with what to do when no cache is open."""
    _leave_pages_directory_mode()
    context = st.session_state.get("_atlas_context")
    if context is None:
        st.warning(no_cache_message())
        st.stop()
    return context


# --- pipeline results shown on several pages -------------------------------------------------------------------

TOKEN_KIND_TITLES: dict[str, str] = {
    "activation_top": "Highest mean activation",
    "activation_bottom": "Lowest mean activation",
    "input_up": "Input tokens that drive it up",
    "input_down": "Input tokens that drive it down",
    "output_up": "Output tokens it promotes",
    "output_down": "Output tokens it suppresses",
}


def table_html(header: Sequence[str], rows: Sequence[Sequence[object]], *, bars: Sequence[float] | None = None,
               bar_scale: float = 1.0, widths: Sequence[int] | None = None) -> str:
    """A small HTML table, every cell escaped; optional bars behind the last column, widths from clamped numbers
    (positive orange, negative blue); `widths` in percent per column. Lighter in the browser than a data grid."""
    layout = ";table-layout:fixed" if widths else ""
    parts = [f'<table class="na-table" style="border-collapse:collapse;font-size:13px;width:100%{layout}">']
    if widths:
        parts.append("<colgroup>" + "".join(f'<col style="width:{int(w)}%">' for w in widths) + "</colgroup>")
    parts.append("<tr>")
    parts += [f'<th style="text-align:left;color:#666;font-weight:normal;border-bottom:1px solid #ddd;'
              f'padding:2px 6px">{escape(h)}</th>' for h in header]
    parts.append("</tr>")
    for index, row in enumerate(rows):
        parts.append("<tr>")
        for column, cell in enumerate(row):
            style = "padding:2px 6px;border-bottom:1px solid #f0f0f0"
            if column == 0:
                style += ";font-family:ui-monospace,monospace;white-space:pre"
            if bars is not None and column == len(row) - 1:
                value = float(bars[index])
                colour = rgba(POSITIVE_RGB if value >= 0 else NEGATIVE_RGB, 0.35)
                width = clamp01(abs(value) / bar_scale if bar_scale > 0 else 0.0) * 100
                style += f";background:linear-gradient(90deg,{colour} {width:.0f}%,transparent {width:.0f}%)"
            parts.append(f'<td style="{style}">{escape(cell)}</td>')
        parts.append("</tr>")
    parts.append("</table>")
    return "".join(parts)


def related_tokens_panel(store: Store, neuron: NeuronId, kinds: Sequence[str], limit: int = 15) -> None:
    """Tables of related tokens, one column per kind; says which command computes the weight-based ones."""
    missing = False
    columns = st.columns(len(kinds))
    for column, kind in zip(columns, kinds, strict=True):
        found = store.related_tokens(neuron, kind, limit)
        with column:
            st.markdown(f"**{TOKEN_KIND_TITLES.get(str(kind), str(kind))}**")
            if not found:
                missing = True
                st.caption("not computed yet")
                continue
            with_count = found[0].count is not None
            header = ["token", "count", "value"] if with_count else ["token", "value"]
            rows = [[f'"{display_token(t.token)}"', t.count, f"{t.value:.3f}"] if with_count
                    else [f'"{display_token(t.token)}"', f"{t.value:.3f}"] for t in found]
            values = [t.value for t in found]
            st.html(table_html(header, rows, bars=values, bar_scale=max(abs(v) for v in values) or 1.0))
    if missing:
        not_computed("Weight-based related tokens", f"python -m core related {store.path}")


@dataclass(frozen=True)
class SimulationView:
    """The scoring excerpts of a neuron ready to draw, with one explanation's simulation when there is one."""

    rows: list[HeatmapRow]
    kinds: list[str]
    """ExcerptKind of each row (top or random)."""
    simulated: bool
    scatter: pd.DataFrame
    """real (0-10 of the neuron's max), simulated, kind, token, excerpt: one row per token."""
    per_excerpt: pd.DataFrame
    """excerpt, kind, score, max activation."""


def simulation_view(store: Store, neuron: NeuronId, source: Any) -> SimulationView:
    """Real and simulated activations of the SCORE-split excerpts. `source` is an ExplanationRecord (its stored
    simulation), a Suggestion with a live score, or None (real activations only)."""
    from core.types import ExcerptKind, Split

    stats = store.neuron_stats(neuron)
    scale = max(stats.max_activation, 1e-9) if stats else 1.0
    real = store.neuron_excerpts(neuron, kinds=[ExcerptKind.TOP, ExcerptKind.RANDOM], splits=[Split.SCORE])
    predicted: dict[int, tuple[tuple[float, ...], float | None]] = {}
    if source is not None and hasattr(source, "explanation_id"):
        for sim in store.simulations(source.explanation_id):
            if sim.split == Split.SCORE:
                predicted[sim.excerpt_id] = (sim.normalized_predictions, sim.score)
    elif source is not None and getattr(source, "score", None) is not None:
        live = store.live_score_by_id(source.score.score_id)
        for sim in live.simulations if live else ():
            predicted[sim.excerpt_id] = (sim.normalized_activations, sim.score)
    rows, kinds, points, per_excerpt = [], [], [], []
    for record in sorted(real, key=lambda r: (r.kind != ExcerptKind.TOP, r.rank)):
        excerpt_id = record.excerpt.excerpt_id
        sim, score = predicted.get(excerpt_id, (None, None))
        label = f"{record.kind} #{record.rank + 1} · excerpt {excerpt_id} · max {max(record.activations):.3g}"
        if sim is not None:
            label += f" · excerpt score {fmt_score(score)}"
            for token, value, guess in zip(record.excerpt.tokens, record.activations, sim, strict=False):
                points.append({"real": 10.0 * value / scale, "simulated": float(guess), "kind": str(record.kind),
                               "token": display_token(token), "excerpt": excerpt_id})
        rows.append(HeatmapRow(record.excerpt.tokens, record.activations, label, sim))
        kinds.append(str(record.kind))
        per_excerpt.append({"excerpt": excerpt_id, "kind": str(record.kind), "score": score,
                            "max activation": round(max(record.activations), 4)})
    return SimulationView(rows, kinds, bool(predicted), pd.DataFrame(points), pd.DataFrame(per_excerpt))


# --- live scoring and generation (queued behind the live gate) ----------------------------------------------------


class LiveError(Exception):
    """Live work that cannot run here; the message says why and what to do instead."""


@st.cache_resource(show_spinner=False, max_entries=4)
def _offline_simulator(spec: str) -> Any:
    """Simulators that need no key (baseline, local models), made once per process and shared."""
    from core.simulate import make_simulator

    return make_simulator(spec)


def make_live_simulator(settings: LiveSettings, store: Store) -> Any:
    """The simulator for live scoring with the session's backend. An openai simulator is made per call (its key
    stays out of every cache) and keeps its answers in the notes file's LLM cache."""
    try:
        from core.simulate import make_simulator

        if settings.backend == "openai":
            return make_simulator(settings.spec, base_url=settings.base_url, api_key=settings.api_key,
                                  max_cost_usd=settings.max_cost_usd, store=store, cache_db="notes")
        return _offline_simulator(settings.spec)
    except ImportError as error:
        raise LiveError(f"the {settings.spec} simulator is not available in this checkout yet ({error}); "
                        "score from the command line with `python -m core score`") from error


def live_score(ctx: PageContext, text: str) -> LiveScore:
    """`text` simulated and scored for the context's neuron with the session's simulator (kept in the notes, reused
    when the same text was scored before with the same simulator)."""
    from core.types import LiveSimulation

    store, neuron, spec = ctx.store, ctx.neuron, ctx.live.spec
    found = store.live_score(neuron, text, spec)
    if found is not None:
        return found
    try:
        from core.score import score_explanation
    except ImportError as error:
        raise LiveError("live scoring is not available in this checkout yet (core/score.py is missing); "
                        "score from the command line with `python -m core score`") from error
    with live_work("Simulating and scoring"):
        simulator = make_live_simulator(ctx.live, store)
        scored = score_explanation(store, neuron, text, simulator)
    scores = scored.scores
    simulations = [LiveSimulation(s.excerpt_id, tuple(float(v) for v in s.normalized_predictions), s.score)
                   for s in scored.excerpts]
    return store.add_live_score(neuron, text, spec, (scores.all, scores.top, scores.random), simulations)


def suggest_live(ctx: PageContext, text: str, author: str) -> tuple[Suggestion, LiveScore | None] | str:
    """Score a suggestion live and keep it; also score the neuron's best explanation with the same simulator so
    the two compare fairly. Returns (suggestion, current explanation's live score or None), or an error line."""
    from core.types import ExplanationStatus

    try:
        mine = live_score(ctx, text)
        current = next((e for e in ctx.store.explanations(ctx.neuron)
                        if e.status == ExplanationStatus.OK and e.text), None)
        theirs = live_score(ctx, current.text) if current is not None else None
    except LiveError as error:
        return str(error)
    except Exception as error:  # a backend failure is shown, not raised: the page must stay usable
        log.warning("live scoring failed: %s", type(error).__name__)
        return f"Scoring failed: {error}"
    suggestion = ctx.store.add_suggestion(ctx.neuron, text, author, "person", mine.score_id)
    return suggestion, theirs


def text_activations(ctx: PageContext, text: str, max_tokens: int = 256) -> tuple[list[str], Any] | str:
    """Tokens of `text` and the activations of the context's layer, float32 [pos, n_neurons], from one queued
    forward pass of the cache's model; or an error line."""
    from core.models import neuron_activations, token_strings

    try:
        with live_work("Running the model on your text"):
            subject = subject_model(ctx.model)
            ids = subject.tokenizer(text, add_special_tokens=False)["input_ids"][:max_tokens]
            acts = neuron_activations(subject, ids, layers=[ctx.neuron.layer])[ctx.neuron.layer]
    except Exception as error:  # a model that cannot load here must not break the page
        log.warning("forward pass failed: %s", error)
        return f"Cannot run {ctx.model} here: {error}"
    return token_strings(subject.tokenizer, ids), acts


SIMULATED_TOKENS_PER_TOKEN = 8
"""Completion tokens a chat simulator is assumed to write per excerpt token (a JSON value and punctuation), for the
cost shown before generating; an overestimate on purpose."""


def estimate_generation_cost(ctx: PageContext) -> float | None:
    """US dollars that generating and scoring one explanation with the session's openai model may cost (one
    explainer call on the EXPLAIN excerpts, one simulator call per SCORE excerpt); None when the model is unpriced.
    """
    from core import prompts
    from core.baseline import normalize
    from core.llm import CHARS_PER_TOKEN_ESTIMATE, price_per_million
    from core.types import ExcerptKind, Split

    price = price_per_million(ctx.live.model)
    if price is None:
        return None
    store, neuron = ctx.store, ctx.neuron
    shown = store.neuron_excerpts(neuron, kinds=[ExcerptKind.TOP], splits=[Split.EXPLAIN])
    scale = max((max(e.activations) for e in shown), default=0.0)
    examples = [prompts.ExampleExcerpt(e.excerpt.tokens, tuple(round(v) for v in normalize(e.activations, scale)))
                for e in shown]
    prompt_chars = sum(len(m["content"]) for m in prompts.explain_activations_messages(examples))
    completion = 60
    for excerpt in store.neuron_excerpts(neuron, kinds=[ExcerptKind.TOP, ExcerptKind.RANDOM], splits=[Split.SCORE]):
        messages = prompts.simulate_chat_messages("x" * 200, excerpt.excerpt.tokens, json_answer=True)
        prompt_chars += sum(len(m["content"]) for m in messages)
        completion += SIMULATED_TOKENS_PER_TOKEN * len(excerpt.excerpt.tokens)
    prompt_tokens = int(prompt_chars / CHARS_PER_TOKEN_ESTIMATE) + 1
    return (prompt_tokens * price[0] + completion * price[1]) / 1_000_000


def generate_explanation(ctx: PageContext) -> None:
    """A button that has the session's backend write a new explanation of the neuron (its cost shown first for
    priced models), scores it live with the same backend, and keeps it in the notes as a suggestion from that
    explainer (the dashboard never writes the cache itself)."""
    spec = ctx.live.spec
    if ctx.live.backend == "openai":
        if not ctx.live.api_key and not ctx.live.base_url:
            st.caption(f"To generate with **{spec}**, give an API key (or a base URL) in the sidebar.")
            return
        try:
            cost = estimate_generation_cost(ctx)
        except Exception as error:  # an estimate must never break the page
            log.warning("cost estimate failed: %s", type(error).__name__)
            cost = None
        note = (f"about **${cost:.4f}** (cap ${ctx.live.max_cost_usd:.2f})" if cost is not None
                else "an unknown amount (this model has no known price; the cap cannot apply)")
        st.caption(f"Generating with **{spec}** and scoring it will cost {note}.")
    else:
        st.caption(f"Generate one more with **{spec}** (free; change the backend in the sidebar).")
    if not st.button(f"Generate a new explanation with {spec}", key="generate"):
        return
    result = _generate(ctx)
    if isinstance(result, str):
        st.error(result)
    else:
        st.success(f"New explanation kept as a suggestion: {result.text}  (score {fmt_score(result.score.score_all)})"
                   if result.score else f"New explanation kept as a suggestion: {result.text}")


def _generate(ctx: PageContext) -> Suggestion | str:
    """Run the explainer and simulator of the session's backend on the context's neuron; the kept Suggestion, or an
    error line."""
    from core.explain import explain_neuron, make_explainer
    from core.llm import LLMError
    from core.types import ExplanationStatus, LiveSimulation

    settings, store, neuron = ctx.live, ctx.store, ctx.neuron
    try:
        with live_work(f"Generating an explanation with {settings.spec}"):
            if settings.backend == "openai":
                from core.llm import make_client
                from core.simulate import make_simulator

                client = make_client(settings.spec, store=store, cache_db="notes", base_url=settings.base_url,
                                     api_key=settings.api_key, max_cost_usd=settings.max_cost_usd)
                explainer, simulator = make_explainer(settings.spec, client=client), make_simulator(
                    settings.spec, client=client)
            else:
                explainer, simulator = make_explainer(settings.spec), _offline_simulator(settings.spec)
            result = explain_neuron(store, neuron, explainer, simulator, candidates=None)
    except (LLMError, ValueError) as error:
        return f"Generation failed: {error}"
    if result.status != ExplanationStatus.OK or result.scored is None or not result.text:
        return f"Generation failed: {result.failure or 'no explanation'}"
    scores = result.scored.scores
    live = store.add_live_score(
        neuron, result.text, result.simulator, (scores.all, scores.top, scores.random),
        [LiveSimulation(s.excerpt_id, tuple(float(v) for v in s.normalized_predictions), s.score)
         for s in result.scored.excerpts])
    return store.add_suggestion(neuron, result.text, "", source=result.explainer, score_id=live.score_id)


def _leave_pages_directory_mode() -> None:
    """Make a page that was started without the frame run inside it.

    Streamlit runs a script in its old "pages directory" mode while no session has called st.navigation yet (a
    fresh server with a pages/ folder, and every AppTest run): a student opening a shared link such as
    /scoring?layer=3&neuron=5 right after a restart gets the page script alone, without the frame (sidebar,
    store, neuron). Then the frame is run here, in this same script run (so a click that started it is not
    lost); its st.navigation switches that mode off and runs this page inside it, and the outer run stops.
    """
    from streamlit.runtime.pages_manager import PagesManager

    if PagesManager.uses_pages_directory:
        import app  # the frame; app.py runs it itself only as the main script

        app.frame()
        st.stop()
