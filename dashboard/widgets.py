"""Streamlit pieces the frame and several pages share: the neuron selector bound to the URL, buttons and links that
move to a neuron, the sidebar's cache and live-work settings, and the draw calls for core.views' records.

The HTML itself is built by dashboard/render.py (pure functions); what is computed is in core.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
from collections.abc import Sequence
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import streamlit as st

from core.backends import BackendKind, BackendSpec, LLMSettings
from core.fill import FillProgress, FillStep, StepKind, read_fill
from core.live import LiveBackend, LiveError, generate, generation_cost
from core.paths import CACHE_ENV, HOME_ENV, REPO_DIR, default_cache, known_caches
from core.store import NotesError, StoreError, set_notes_aside
from core.types import NeuronId, NeuronStats, RelatedToken, RelatedTokenKind
from dashboard import render, roles
from dashboard.i18n import DEFAULT_LANGUAGE, LANGUAGE_KEY, LANGUAGES, N_, _, browser_language, language, number
from dashboard.i18n import score as score_text
from dashboard.state import PAGES, PageContext, live_work

log = logging.getLogger(__name__)


# --- the language, carried in the URL (?lang=tr) like the neuron ----------------------------------------------------


def language_selector() -> str:
    """The sidebar's language switch, bound to the URL's `lang`; its default is the browser's language.

    The options are the codes themselves, because a bound widget writes the option as shown into the URL (captions
    name the languages). A parameter equal to the default is dropped from the URL, as for the neuron."""
    codes = list(LANGUAGES)
    default = codes.index(browser_language(st.context.locale))
    return str(st.sidebar.radio(":material/translate: Language · Dil", codes, index=default, key=LANGUAGE_KEY,
                                bind="query-params", horizontal=True, captions=list(LANGUAGES.values())))


# --- the chosen neuron, carried in the URL (?layer=0&neuron=0) ---------------------------------------------------


def go_to(layer: int, neuron: int) -> None:
    """Widget callback: move every page to this neuron (a bound widget is changed through session_state)."""
    st.session_state["layer"] = int(layer)
    st.session_state["neuron"] = int(neuron)


def step(delta: int, layers: int, neurons_per_layer: int) -> None:
    """Widget callback: move `delta` neurons on, wrapping from a layer's last neuron to the next layer."""
    index = int(st.session_state.get("layer", 0)) * neurons_per_layer + int(st.session_state.get("neuron", 0))
    index = (index + delta) % (layers * neurons_per_layer)
    go_to(index // neurons_per_layer, index % neurons_per_layer)


def random_neuron(layers: int, neurons_per_layer: int) -> None:
    """Widget callback: move to a random neuron."""
    go_to(random.randrange(layers), random.randrange(neurons_per_layer))


def neuron_selector(layers: int, neurons_per_layer: int, container: Any) -> NeuronId:
    """Layer and neuron inputs bound to the URL's `layer` and `neuron`; previous, random and next buttons."""
    with container:
        st.markdown(_("**Neuron**"))
        # rows as horizontal containers, not st.columns: one element a row instead of one plus one per column (every
        # element costs every page run on the server)
        inputs = st.container(horizontal=True)
        # value "min" (0) is the default: the URL drops a parameter at its default, and buttons set these keys
        layer = inputs.number_input(_("Layer"), min_value=0, max_value=max(layers - 1, 0), step=1,
                                    key="layer", bind="query-params")
        neuron = inputs.number_input(_("Neuron"), min_value=0, max_value=max(neurons_per_layer - 1, 0), step=1,
                                     key="neuron", bind="query-params")
        buttons = st.container(horizontal=True)
        buttons.button("", key="nav_prev", icon=":material/chevron_left:", help=_("previous neuron"), on_click=step,
                       args=(-1, layers, neurons_per_layer), width="stretch")
        buttons.button("", key="nav_random", icon=":material/shuffle:", help=_("a random neuron"),
                       on_click=random_neuron, args=(layers, neurons_per_layer), width="stretch")
        buttons.button("", key="nav_next", icon=":material/chevron_right:", help=_("next neuron"), on_click=step,
                       args=(1, layers, neurons_per_layer), width="stretch")
    return NeuronId(int(layer), int(neuron))


def neuron_button(neuron: NeuronId, label: str | None = None, key: str | None = None, **kwargs: Any) -> bool:
    """A button that moves this session to `neuron` (every page follows the sidebar); the label is shown as text
    (it may hold explanations people or models wrote)."""
    return st.button(render.plain(label or f"→ {neuron}"), key=key, on_click=go_to,
                     args=(neuron.layer, neuron.neuron), **kwargs)


def page_link(page: str, label: str) -> None:
    """A link to another page (a PAGES name) showing the same neuron (the bound URL parameters travel with it)."""
    st.page_link(PAGES[page], label=label)


def share_url(neuron: NeuronId, page: str) -> str:
    """A relative URL that opens `page` on `neuron` in a new session (a link to hand to students), in this session's
    language unless it is English."""
    lang = language()
    suffix = f"&{LANGUAGE_KEY}={lang}" if lang != DEFAULT_LANGUAGE else ""
    return f"{Path(PAGES[page]).stem}?layer={neuron.layer}&neuron={neuron.neuron}{suffix}"


# --- the sidebar: cache and live-work settings ----------------------------------------------------------------


def _cache_label(path: str) -> str:
    """A cache file as the sidebar lists it: relative to the checkout when it is inside, else the full path."""
    try:
        return str(Path(path).relative_to(REPO_DIR))
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


@st.cache_resource(ttl=5, show_spinner=False)
def _caches_on_disk(cache_env: str, home_env: str) -> tuple[Path | None, tuple[Path, ...]]:
    """default_cache() and known_caches() under these settings, looked up at most every 5 s for every session (they
    read and list files: a millisecond a run that a page run need not pay)."""
    return default_cache(), tuple(known_caches())


def cache_sidebar() -> Path | None:
    """The sidebar's cache choice; returns the path this session uses (None when there is none).

    The session's choice lives in session_state["cache_path"] and changes only in the callbacks, so a list of
    caches that changes between runs (a new build, another session remembering its cache) never moves it."""
    chosen = st.session_state.get("cache_path")
    default, known = _caches_on_disk(os.environ.get(CACHE_ENV, ""), os.environ.get(HOME_ENV, ""))
    current = chosen if chosen else (str(default) if default else None)
    choices = [str(path) for path in known]
    if current is not None and current not in choices:
        choices.insert(0, current)
    with st.sidebar.expander(_("Cache"), expanded=current is None):
        if choices:
            if st.session_state.get("cache_select") != current:
                st.session_state["cache_select"] = current if current is not None else choices[0]
            st.selectbox(_("Cache file"), choices, format_func=_cache_label, key="cache_select", on_change=_pick_cache)
        st.text_input(_("Open another cache file"), key="cache_other", placeholder="/path/to/cache.duckdb",
                      on_change=_type_cache)
        if current is not None:
            st.caption(render.code(current))
    return Path(current) if current is not None else None


def cache_problem(path: Path, error: StoreError) -> None:
    """The sidebar's word on a cache that cannot be opened, with a way forward: a damaged notes file can be set
    aside (kept beside the cache) so the dashboard starts new notes."""
    st.sidebar.error(render.plain(error))
    if isinstance(error, NotesError) and error.damaged and st.sidebar.button(
            _("Set the damaged notes file aside and start new notes"), key="notes_aside"):
        aside = set_notes_aside(path)
        st.toast(_("The damaged notes file is kept as {name}", name=render.plain(aside.name)))
        st.rerun()
    st.sidebar.button(_("Try again"), key="cache_retry")


BACKEND_LABELS: dict[BackendKind, str] = {
    BackendKind.BASELINE: N_("baseline (offline, token statistics)"),
    BackendKind.LOCAL: N_("local model (in this process)"),
    BackendKind.OPENAI: N_("OpenAI-compatible API"),
}
"""Backends for live work (scoring suggestions, generating explanations), as the sidebar offers them (marked: `_` at
use)."""

DEFAULT_OPENAI_MODEL = "gpt-4o-mini"


def _secret_key() -> str | None:
    """An API key from Streamlit secrets or the environment (never shown)."""
    with contextlib.suppress(Exception):  # no secrets.toml is the normal case
        value = st.secrets.get("OPENAI_API_KEY")
        if value:
            return str(value)
    return os.environ.get("OPENAI_API_KEY") or None


def live_settings_sidebar() -> LiveBackend:
    """The sidebar's "live work" settings: backend, and for openai the model, base URL, key and spending cap."""
    with st.sidebar.expander(_("Live work (scoring, generating)"), expanded=False):
        names = {kind: _(label) for kind, label in BACKEND_LABELS.items()}  # now: AppTest formats after the run
        kind = st.radio(_("Backend"), list(BACKEND_LABELS), format_func=names.__getitem__, key="llm_backend")
        if kind == BackendKind.OPENAI:
            model = st.text_input(_("Model"), value=DEFAULT_OPENAI_MODEL, key="llm_model")
            base_url = st.text_input(_("Base URL"), value=os.environ.get("OPENAI_BASE_URL", ""), key="llm_base_url",
                                     placeholder="https://api.openai.com/v1", help=_("Any OpenAI-compatible server"))
            typed = st.text_input(_("API key"), type="password", key="llm_api_key",
                                  help=_("Kept in this browser session's memory only: never shown, logged or saved"))
            key = typed or _secret_key()
            if not key:
                st.caption(_("No key yet: type one, or set OPENAI_API_KEY or .streamlit/secrets.toml."))
            elif not typed:
                st.caption(_("Using the key from secrets / the environment."))
            cap = st.number_input(_("Spending cap per generation (USD)"), min_value=0.0, value=0.50, step=0.10,
                                  key="llm_cap")
            settings = LLMSettings(base_url=base_url.strip() or None, api_key=key, max_cost_usd=float(cap))
            return LiveBackend(BackendSpec(BackendKind.OPENAI, model.strip() or DEFAULT_OPENAI_MODEL), settings)
        if kind == BackendKind.LOCAL:
            model = st.text_input(_("Model"), value="", key="llm_local_model", placeholder=_("smollm2-135m (default)"))
            return LiveBackend(BackendSpec(BackendKind.LOCAL, model.strip()))
        st.caption(_("Offline: explanations and simulations from token statistics; no key needed."))
        return LiveBackend(BackendSpec(BackendKind.BASELINE))


# --- drawing core.views' records ----------------------------------------------------------------------------


class _Markup(str):
    """HTML that st.html takes as it is. A plain string is dedented first (textwrap.dedent over the whole text),
    which costs more than building a large heatmap; an object with _repr_html_ is not."""

    def _repr_html_(self) -> str:
        return self  # already a str: no copy


def html(markup: str) -> None:
    """Draw HTML made by dashboard/render.py or dashboard/svg.py (every untrusted text in it already escaped)."""
    if markup:
        st.html(_Markup(markup))


def chart(markup: str) -> None:
    """Draw an SVG chart made by dashboard/svg.py. Not through st.html: its sanitizer drops <svg> (a browser showed
    nothing where the histogram is); Markdown passes a one-line HTML block as it is, and every text in the chart is
    already escaped."""
    if markup:
        st.markdown(markup, unsafe_allow_html=True)


def heatmap(rows: Sequence[render.HeatmapRow], *, positive_scale: float, negative_scale: float = 0.0,
            mode: str = "real") -> None:
    """Draw excerpts as a safe token heatmap."""
    if rows:
        html(render.heatmap_html(rows, positive_scale=positive_scale, negative_scale=negative_scale, mode=mode))


def heatmap_legend(positive_scale: float, negative_scale: float = 0.0, simulated: bool = False) -> None:
    """A one-line key to the heatmap colours."""
    html(render.legend_html(positive_scale, negative_scale, simulated))


def explanation_card(text: str, source: str = "", badge: str = "") -> None:
    """An explanation in a card, with where it came from and a score badge."""
    html(render.card_html(render.visible_blanks(text), source, badge))


def stats(figures: Sequence[tuple[str, str, str]]) -> None:
    """Figures in a row: (label, value, help) each (render.stats_html)."""
    html(render.stats_html(figures))


def score_badge(score: float | None) -> str:
    """The badge of an explanation card ("no score" where there is none)."""
    return _("no score") if score is None else _("score {score}", score=score_text(score))


def page_end() -> None:
    """The marker after a page's last panel (browser tests and bench/app.py wait for it)."""
    html(render.END_MARKER)


def recorded(neuron: NeuronId, stats: NeuronStats | None) -> NeuronStats:
    """The neuron's statistics; stops the page with a warning when the cache did not record it."""
    if stats is None:
        st.warning(_("Neuron {neuron} was not recorded in this cache.", neuron=neuron))
        st.stop()
    return stats


def live_failed(what: str, error: Exception) -> None:
    """A live job's failure: what failed, in the session's language, then core's one-line reason (as the command
    line writes it)."""
    st.error(_("{what} Reason: {reason}", what=what, reason=render.plain(error)))


def not_computed(what: str, command: str) -> None:
    """Say that a part of the cache is missing and which command fills it, or, when the demo's fill (core.fill) is
    computing it for this neuron right now, how far it is (students are not shown commands: they name the cache's
    path)."""
    step = _fill_step(command)
    if step is not None:
        st.info(_("{what}: still being computed in the background ({step}: {done} done); this page shows it when it "
                  "is ready.", what=what, step=_(FILL_STEP_TITLES.get(step.name, step.name)),
                  done=number(step.fraction, ".0%")), icon=":material/hourglass_top:")
        return
    if roles.is_student():
        st.info(_("{what}: not computed yet in this cache.", what=what))
        return
    st.info(_("{what}: not computed yet — run {command}", what=what, command=render.code(command)))


# --- the demo filling in (core.fill: a process of its own started by `make app`) --------------------------------

FILL_STEP_TITLES = {
    "spread": N_("explanations over the other layers"),
    "related": N_("related tokens and neurons"),
    "layer0": N_("explanations of the rest of layer 0"),
}
"""The fill's steps as the sidebar names them (marked: `_` at use)."""
FILL_REFRESH_S = 5.0
"""How often the sidebar re-reads the fill's progress while it runs."""

_FILL: ContextVar[tuple[FillProgress, NeuronId] | None] = ContextVar("neuron_atlas_fill", default=None)


def _fill_step(command: str) -> FillStep | None:
    """The running fill's unfinished step that computes what `command` (python -m core VERB ...) would, for this
    run's neuron."""
    found = _FILL.get()
    words = command.split()
    verb = words[words.index("core") + 1] if "core" in words[:-1] else ""
    if found is None or not found[0].running or verb not in set(StepKind):
        return None
    return found[0].step_for(StepKind(verb), found[1])


def fill_progress_sidebar(path: Path, neuron: NeuronId) -> None:
    """While the demo fills in: its progress in the sidebar, read again every FILL_REFRESH_S; the whole app runs
    again when new results are published, so the page shows them."""
    progress = read_fill(path)
    _FILL.set((progress, neuron) if progress is not None else None)
    if progress is None or progress.finished:
        return
    with st.sidebar:
        st.fragment(_fill_panel, run_every=FILL_REFRESH_S if progress.running else None)(path, progress.publications)


def _fill_panel(path: Path, seen: int) -> None:
    progress = read_fill(path)
    if progress is None or progress.finished or progress.publications != seen:
        st.rerun()  # new results (or the end): every panel of the page reads them
    assert progress is not None
    st.progress(progress.fraction, text=_("The demo is filling in: {done} done", done=number(progress.fraction, ".0%")))
    for step in progress.steps:
        mark = _("done") if step.finished else _("{done} of {total}", done=number(step.done, ","),
                                                  total=number(step.total, ","))
        st.caption(f"{_(FILL_STEP_TITLES.get(step.name, step.name))}: {mark}")
    if progress.stopped:
        if progress.error:
            st.warning(_("Filling in stopped: {reason}. Run `make app` (or `{command}`) again to go on from here.",
                         reason=progress.error, command=f"python -m core fill {path}"))
        else:
            st.warning(_("Filling in stopped. Run `make app` (or `{command}`) again to go on from here.",
                         command=f"python -m core fill {path}"))


TOKEN_KIND_TITLES: dict[RelatedTokenKind, str] = {
    RelatedTokenKind.ACTIVATION_TOP: N_("Highest mean activation"),
    RelatedTokenKind.ACTIVATION_BOTTOM: N_("Lowest mean activation"),
    RelatedTokenKind.INPUT_UP: N_("Input tokens that drive it up"),
    RelatedTokenKind.INPUT_DOWN: N_("Input tokens that drive it down"),
    RelatedTokenKind.OUTPUT_UP: N_("Output tokens it promotes"),
    RelatedTokenKind.OUTPUT_DOWN: N_("Output tokens it suppresses"),
}


def related_tokens_panel(ctx: PageContext, found: Sequence[tuple[RelatedTokenKind, Sequence[RelatedToken]]],
                         name: str) -> None:
    """Tables of related tokens, one column per kind, built once per neuron (`name`: the page's cache name for
    them); says which command computes the weight-based ones."""
    command = f"python -m core related {ctx.reader.path}"
    missing = _("still being computed") if _fill_step(command) else _("not computed yet")

    def build() -> str:
        columns = []
        for kind, tokens in found:
            if not tokens:
                columns.append((_(TOKEN_KIND_TITLES[kind]), f'<span style="color:#888">{missing}</span>'))
                continue
            with_count = tokens[0].count is not None
            header = [_("token"), _("count"), _("value")] if with_count else [_("token"), _("value")]
            rows = [[f'"{render.display_token(t.token)}"', *([number(t.count or 0, ",")] if with_count else []),
                     number(t.value, ".3f")]
                    for t in tokens]
            values = [t.value for t in tokens]
            columns.append((_(TOKEN_KIND_TITLES[kind]), render.table_html(
                header, rows, bars=values, bar_scale=max(abs(v) for v in values) or 1.0)))
        return render.columns_html(columns)

    html(ctx.rendered(name, (ctx.neuron, missing), build))
    if any(not tokens for _kind, tokens in found):
        not_computed(_("Weight-based related tokens"), command)


def generate_panel(ctx: PageContext) -> None:
    """A button that has the session's backend write a new explanation of the neuron (its cost shown first for
    priced models), scored live and kept in the notes as a suggestion from that explainer."""
    if not roles.may_configure():
        st.caption(_("In class, the teacher generates new explanations."))
        return
    backend = ctx.live
    spec = render.plain(backend.spec)
    if backend.spec.kind == BackendKind.OPENAI:
        if not backend.settings.api_key and not backend.settings.base_url:
            st.caption(_("To generate with **{spec}**, give an API key (or a base URL) in the sidebar.", spec=spec))
            return
        cost = generation_cost(ctx.reader, ctx.neuron, backend)
        cap = backend.settings.max_cost_usd or 0.0
        if cost is not None:
            st.caption(_("Generating with **{spec}** and scoring it will cost about **${cost}** (cap ${cap}).",
                         spec=spec, cost=number(cost, ".4f"), cap=number(cap, ".2f")))
        else:
            st.caption(_("Generating with **{spec}** and scoring it will cost an unknown amount (this model has no "
                         "known price; the cap cannot apply).", spec=spec))
    else:
        st.caption(_("Generate one more with **{spec}** (free; change the backend in the sidebar).", spec=spec))
    if not st.button(_("Generate a new explanation with {spec}", spec=spec), key="generate"):
        return
    try:
        made = generate(ctx.reader, ctx.notes, ctx.neuron, backend, live_work)
    except LiveError as error:
        live_failed(_("No new explanation was made."), error)
        return
    if made.score:
        st.success(_("New explanation kept as a suggestion: {text}  (score {score})", text=render.plain(made.text),
                     score=score_text(made.score.score_all)))
    else:
        st.success(_("New explanation kept as a suggestion: {text}", text=render.plain(made.text)))
