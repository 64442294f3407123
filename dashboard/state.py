"""What the dashboard keeps between runs and sessions: the open cache of each file, cached views, the context the
frame (app.py) hands each page, and the queue for live model work.

- One DashboardCache per cache file for every session (st.cache_resource), re-attached when a file is replaced.
- Views (core/views.py) are cached for every session, keyed by the view, its arguments and the cache files'
  signature (views of the notes: the notes' write count), so a neuron someone already opened costs little the next
  time: `ctx.view(views.insights, neuron)`. So is the HTML a page builds from them (`ctx.rendered`), so a heatmap is
  built once per neuron. Both are kept as objects in a process-wide SharedMemo, not pickled copies (st.cache_data):
  views are frozen records and HTML is a string, nobody changes them, and a copy per run would cost every run.
- The heap: Streamlit's full garbage collection after every run (runner.postScriptGC) costs about 60 ms on this
  app's heap (pandas, altair, DuckDB), more than the rest of a page run; .streamlit/config.toml turns it off, and
  `settle_heap` freezes what the imports made (gc.freeze), so the collections Python still makes skip it.
- The frame passes a PageContext to the page it runs through a context variable set only while the page runs.
  A page that runs without the frame (Streamlit's pages-directory mode: a deep link as the first visit after a
  server start, and every AppTest run) runs the frame itself: see `page_context`.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import runpy
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import duckdb
import streamlit as st

from core.live import LiveBackend
from core.paths import REPO_DIR, build_command
from core.store import CacheInfo, CacheReader, DashboardCache, NotesStore, StoreError, signatures
from core.types import NeuronId
from dashboard.i18n import N_, _, language
from dashboard.render import plain

log = logging.getLogger(__name__)

T = TypeVar("T")

APP = REPO_DIR / "app.py"
"""The frame: the script `streamlit run` starts."""

PAGES: dict[str, str] = {
    "home": "pages/home.py",
    "picker": "pages/picker.py",
    "classroom": "pages/classroom.py",
    "scoring": "pages/scoring.py",
    "insights": "pages/insights.py",
    "related": "pages/related.py",
    "try": "pages/try_text.py",
}
"""Page files by short name (the targets of st.Page in app.py and of links between pages)."""

LIVE_SLOTS_ENV = "NEURON_ATLAS_LIVE_SLOTS"
"""Environment variable: how many live model jobs (scoring, forward passes, generation) run at once (default 1)."""

VIEW_CACHE_ENTRIES = 1024
"""Views (and rendered HTML) of the cache files kept for every session (per-neuron views: several per neuron)."""
NOTES_VIEW_CACHE_ENTRIES = 256
"""Views of the notes kept; apart from the others, so a class writing to the notes never pushes them out."""


# --- the open cache ----------------------------------------------------------------------------------------------


@st.cache_resource(show_spinner=False)
def _open(path: str) -> DashboardCache:
    return DashboardCache(path)


def open_cache(path: Path) -> DashboardCache:
    """The shared DashboardCache of this file (re-attached if a file changed); StoreError when it cannot be read."""
    path = path.expanduser().resolve()
    if not path.is_file():
        raise StoreError(_("no cache at {path}; build one with `{command}`", path=path, command=build_command(path)))
    cache = _open(str(path))
    cache.refresh()
    return cache


CACHE_WATCH_S = 10.0
"""How often an open page looks whether its cache's files changed on disk (a command published results, a build
replaced the recording, a file was deleted or came back): the page then runs again by itself."""


@st.fragment(run_every=CACHE_WATCH_S)
def watch_cache(path: str, seen: tuple[Any, ...]) -> None:
    """Run the whole page again when the recording or results file of `path` is no longer the one `seen` (two
    stat calls every CACHE_WATCH_S; nothing is drawn)."""
    if signatures(Path(path)) != seen:
        st.rerun()


def run_page(run: Callable[[], None]) -> None:
    """Run the page; a cache file that fails under it (replaced, cut short or damaged while the page read it) is
    one message with a way forward, never a traceback (the details go to the server's log)."""
    try:
        run()
    except (StoreError, duckdb.Error) as error:
        log.warning("the page stopped on a cache error", exc_info=True)
        st.error(_("The cache could not be read while this page was drawn ({reason}). If a command or a build just "
                   "replaced it, press **Try again**; if this stays, the file is damaged: rebuild it, or choose "
                   "another cache file in the sidebar.", reason=plain(one_line(error), 300)))
        st.button(_("Try again"), key="page_error_retry", type="primary")


def one_line(error: BaseException) -> str:
    """An exception's message on one line."""
    return " ".join(str(error).split())


class SharedMemo:
    """Values computed once per key for every session of the process, the least recently used dropped beyond
    `entries`; a key being computed makes other sessions asking for it wait for that one result (NOTES.md: thirty
    sessions on one new neuron must not query it thirty times).

    Why not st.cache_resource: Streamlit hashes every argument of a cached call with its own hasher, about half a
    millisecond a call here, several calls a page run; these keys are small tuples that Python hashes in
    microseconds."""

    def __init__(self, entries: int) -> None:
        self.entries = entries
        self._values: OrderedDict[tuple[Any, ...], Any] = OrderedDict()
        self._pending: dict[tuple[Any, ...], threading.Lock] = {}
        self._lock = threading.Lock()

    def get(self, key: tuple[Any, ...], compute: Callable[[], T]) -> T:
        """The value of `key`, computed by `compute()` the first time."""
        with self._lock:
            if key in self._values:
                self._values.move_to_end(key)
                return self._values[key]
            pending = self._pending.setdefault(key, threading.Lock())
        with pending:
            with self._lock:
                if key in self._values:  # another session computed it while this one waited
                    return self._values[key]
            try:
                value = compute()
            except BaseException:
                with self._lock:
                    self._pending.pop(key, None)
                raise
            with self._lock:
                self._values[key] = value
                while len(self._values) > self.entries:
                    self._values.popitem(last=False)
                self._pending.pop(key, None)
        return value


_VIEWS = SharedMemo(VIEW_CACHE_ENTRIES)
"""Views and rendered HTML of the cache files (process-wide, like st.cache_resource)."""
_NOTES_VIEWS = SharedMemo(NOTES_VIEW_CACHE_ENTRIES)
"""Views of the notes, apart: a class writing to the notes never pushes the others out."""


def _cached_view(name: str, key: tuple[Any, ...], args: tuple[Any, ...], _compute: Callable[[], T]) -> T:
    """`_compute()` once per (view name, key, args) for every session; `_compute` is not part of the key."""
    return _VIEWS.get((name, key, args), _compute)


def _cached_notes_view(name: str, key: tuple[Any, ...], args: tuple[Any, ...], _compute: Callable[[], T]) -> T:
    """As _cached_view, for views of the notes (keyed by the notes' write count)."""
    return _NOTES_VIEWS.get((name, key, args), _compute)


def _name(view: Callable[..., Any]) -> str:
    return f"{view.__module__}.{view.__qualname__}"


def cache_key(cache: DashboardCache) -> tuple[Any, ...]:
    """The cache's recording and results as they are on disk now (a key of cached views)."""
    return (str(cache.reader.path), cache.signature)


def cached_view(cache: DashboardCache, view: Callable[..., T], *args: Any) -> T:
    """view(reader, *args), computed once for every session until the recording or results change."""
    return _cached_view(_name(view), cache_key(cache), args, _compute=lambda: view(cache.reader, *args))


# --- the page's context --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PageContext:
    """What the frame (app.py) hands every page on each run."""

    cache: DashboardCache
    info: CacheInfo
    neuron: NeuronId
    """The sidebar's neuron (bound to the URL's ?layer=L&neuron=N)."""
    live: LiveBackend
    """The sidebar's backend for live work."""

    @property
    def reader(self) -> CacheReader:
        return self.cache.reader

    @property
    def notes(self) -> NotesStore:
        return self.cache.notes

    def view(self, view: Callable[..., T], *args: Any) -> T:
        """view(reader, *args), cached for every session until the recording or results change."""
        return cached_view(self.cache, view, *args)

    def notes_view(self, view: Callable[..., T], *args: Any) -> T:
        """view(reader, notes, *args), cached for every session until anything is written to the notes."""
        return _cached_notes_view(_name(view), self._notes_key(), args,
                                  _compute=lambda: view(self.reader, self.notes, *args))

    def neuron_notes_view(self, view: Callable[..., T], neurons: NeuronId | tuple[NeuronId, ...], *args: Any) -> T:
        """view(reader, notes, neurons, *args) for a view that reads only the notes about `neurons` (one neuron or
        a tuple of them): cached for every session until something is written about one of them."""
        return _cached_notes_view(_name(view), self._notes_key(neurons), (neurons, *args),
                                  _compute=lambda: view(self.reader, self.notes, neurons, *args))

    def rendered(self, name: str, args: tuple[Any, ...], build: Callable[[], T], *,
                 notes: NeuronId | None = None) -> T:
        """build() once for every session until the cache files (with `notes`: also the notes about that neuron)
        change; `name` and `args` must say everything `build` depends on (e.g. "insights.excerpts", (neuron,
        per_group)); the session's language is added here (what is built holds translated text and numbers)."""
        args = (language(), *args)
        if notes is not None:
            return _cached_notes_view(name, self._notes_key(notes), args, _compute=build)
        return _cached_view(name, cache_key(self.cache), args, _compute=build)

    def _notes_key(self, neurons: NeuronId | tuple[NeuronId, ...] | None = None) -> tuple[Any, ...]:
        """The cache files, this notes object and its count of writes: all of them, or those about `neurons`."""
        # tagged: a count of all writes and a count of one neuron's writes may be equal numbers
        if neurons is None:
            written: Any = ("all", self.notes.version)
        elif isinstance(neurons, NeuronId):
            written = ("neuron", self.notes.neuron_version(neurons))
        else:
            written = ("neurons", tuple(self.notes.neuron_version(n) for n in neurons))
        return (*cache_key(self.cache), id(self.notes), written)


@dataclass(frozen=True)
class Frame:
    """What the frame found: a context, or why there is none."""

    context: PageContext | None
    problem: str | None = None
    """Why the cache could not be opened (None: there is no cache at all)."""


_FRAME: ContextVar[Frame | None] = ContextVar("neuron_atlas_frame", default=None)


@contextlib.contextmanager
def frame_running(frame: Frame) -> Iterator[None]:
    """Around `navigation.run()` in app.py: the page that runs inside gets `frame`."""
    token = _FRAME.set(frame)
    try:
        yield
    finally:
        _FRAME.reset(token)


def no_cache_message(problem: str | None) -> str:
    """Why no cache is open, and what to do about it."""
    if problem:
        return _("The cache cannot be opened: {problem}. Choose another cache file in the sidebar.",
                 problem=plain(problem))
    return _("No cache yet. Build the demo cache (the default model over the standard library's text) with "
             "`{command}` or `make app`, then reload this page; or choose a cache file in the sidebar.",
             command=build_command())


def current_frame() -> Frame:
    """The frame of this run. A page started without it (Streamlit runs pages/*.py on their own until some session
    has called st.navigation) runs app.py here, in this same script run, so a click that started the run is not
    lost: app.py's st.navigation turns that mode off and runs this page inside the frame; the outer run stops."""
    frame = _FRAME.get()
    if frame is None:
        runpy.run_path(str(APP), run_name="__main__")
        st.stop()
    return frame


def page_context() -> PageContext:
    """The context of this run; stops the page with what to do when no cache is open."""
    frame = current_frame()
    if frame.context is None:
        st.warning(no_cache_message(frame.problem))
        st.stop()
    return frame.context


# --- live work: one queue for every session -----------------------------------------------------------------------


@dataclass
class LiveGate:
    """At most `slots` live model jobs at once across all sessions; the rest wait in line."""

    slots: int
    semaphore: threading.Semaphore
    waiting: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


@st.cache_resource(show_spinner=False)
def live_gate() -> LiveGate:
    """The process's one gate ($NEURON_ATLAS_LIVE_SLOTS slots, default 1)."""
    slots = max(1, int(os.environ.get(LIVE_SLOTS_ENV, "1") or 1))
    return LiveGate(slots, threading.Semaphore(slots))


QUEUE_LABELS = (N_("Simulating and scoring"), N_("Running the model on your text"))
"""The fixed labels core.live gives its jobs (marked here for the catalog; core itself stays English)."""

_GENERATING = "Generating an explanation with "


def queue_label(label: str) -> str:
    """core.live's label of a job in the session's language."""
    if label.startswith(_GENERATING):
        return _("Generating an explanation with {spec}", spec=label.removeprefix(_GENERATING))
    return _(label)


@contextlib.contextmanager
def live_work(label: str) -> Iterator[None]:
    """Run the body when a live slot is free, showing "queued" meanwhile (core.live's `queue`).

    The wait is a short timeout loop that touches an st element each round, so a session that reruns or leaves
    stops waiting at once instead of computing for nobody (NOTES.md, concurrency).
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
            box.info(_("Queued: {job} starts when the model is free ({ahead} other request(s) waiting)",
                       job=queue_label(label), ahead=ahead),
                     icon=":material/hourglass_top:")
            acquired = gate.semaphore.acquire(timeout=0.25)
    finally:
        with gate.lock:
            gate.waiting -= 1
    try:
        box.info(f"{queue_label(label)} ...", icon=":material/settings:")
        yield
    finally:
        gate.semaphore.release()
        box.empty()


# --- the heap ---------------------------------------------------------------------------------------------------

_SETTLED = [0]
"""len(sys.modules) when the heap was last frozen."""


def settle_heap() -> None:
    """After a run that imported modules: collect, then freeze every object alive (gc.freeze), so later garbage
    collections skip the libraries' objects. Freezing only when modules were imported keeps it to a few times per
    process; objects frozen while a run was in flight are never collected, which those few times bound. Only where
    a Streamlit runtime runs the script (a server, and AppTest's runs too)."""
    if len(sys.modules) == _SETTLED[0] or not st.runtime.exists():
        return
    _SETTLED[0] = len(sys.modules)
    gc.collect()
    gc.freeze()
    log.info("heap settled: %d objects frozen after %d modules were loaded", gc.get_freeze_count(), _SETTLED[0])
