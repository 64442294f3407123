"""Every neuron on screen has an explanation (issue 8): a neuron the command line has not explained gets one from the
offline default when it is first viewed (core.live.explain_on_view), kept in the notes and marked as such wherever
it is shown; and the token statistics shown beside an explanation as evidence."""

from __future__ import annotations

import atexit
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING

import streamlit as st

from core import views
from core.live import LiveError, explain_on_view
from core.offline.evidence import TokenStat
from core.types import LiveScore, NeuronId, NeuronRow, Suggestion
from core.workers import OfflineWorkers
from dashboard import render, widgets
from dashboard.i18n import N_, _, language, number_in
from dashboard.i18n import score as localized_score
from dashboard.state import PageContext, live_work

if TYPE_CHECKING:
    from core.store import DashboardCache

log = logging.getLogger(__name__)

ON_VIEW_NOTE = N_("made when first viewed, by the offline default (baseline explainer and simulator) — not by "
                  "`python -m core explain`; kept in the notes")
"""Where an on-view explanation came from, under it wherever it is shown (marked: `_` at use)."""

ON_VIEW_MARK = " ◦"
"""After an on-view explanation in a list (the list's caption says what it means)."""

ON_VIEW_LEGEND = N_("◦ made when first viewed, by the offline default (not by `python -m core explain`)")
"""The caption under a list with on-view explanations (marked: `_` at use)."""

NO_EVIDENCE = N_("No token reaches above zero in those excerpts.")
"""The evidence table's place when no token of the explainer's excerpts is above zero (marked: `_` at use)."""

SEEN_MARK = N_("👁 author saw the scoring excerpts")
"""Beside a live score whose text was written on the page that shows the scoring excerpts (an optimistic score)."""


def score_text(score: float | None) -> str:
    """A score in a list: "no score" where there is none."""
    return _("no score") if score is None else localized_score(score)


def seen_note(score: LiveScore | None) -> str:
    """SEEN_MARK for a live score whose author saw the scoring excerpts, else ""."""
    return _(SEEN_MARK) if score is not None and score.author_saw_score_excerpts else ""


def on_view(ctx: PageContext, neuron: NeuronId) -> Suggestion | None:
    """The neuron's on-view explanation, made now (in the live queue) when it has none; None when the offline
    default has nothing to say. Call only for a neuron without a finished explanation from the command line."""
    kept = ctx.neuron_notes_view(views.on_view_explanations, (neuron,)).get(neuron)
    if kept is not None:
        return kept
    try:
        return explain_on_view(ctx.reader, ctx.notes, neuron, live_work, WORKERS.explain)
    except LiveError as error:
        widgets.live_failed(_("No explanation could be made for this neuron."), error)
        return None


def shown_explanation(row: NeuronRow | None, made: Suggestion | None, limit: int | None = None
                      ) -> tuple[str, float | None] | None:
    """A listed neuron's explanation and score as a list shows them: the command line's, else the one made on view
    (given, or in the row when its table joined the notes: marked with ON_VIEW_MARK); the text cut to `limit`
    characters before the mark; None when it has neither."""
    if row is not None and row.explanation:
        return render.visible_blanks(row.explanation)[:limit] + (ON_VIEW_MARK if row.made else ""), row.score
    if made is not None:
        return render.visible_blanks(made.text)[:limit] + ON_VIEW_MARK, made.score.score_all if made.score else None
    return None


def explanation_card(made: Suggestion) -> None:
    """An on-view explanation in a card, marked as made on view by the offline default."""
    widgets.explanation_card(made.text, _(ON_VIEW_NOTE), widgets.score_badge(made.score.score_all if made.score
                                                                          else None))


LIST_POLL_S = 2.0
"""How often a page with listed neurons still being explained looks whether they are done."""


class Background:
    """One thread for the whole server that makes the on-view explanations of neurons a page lists (related lists),
    one at a time, at most half the time: a page never waits for them, and a class opening thirty different
    neurons does not pile thirty lists of them into its page runs (measured: 1.4-2 s of CPU per related page when
    they were made in the run, docs/performance.md). Every session sees each one as soon as it is kept."""

    BUSY_SHARE = 0.5
    """Most of the time the thread computes; it sleeps as long again as each explanation took (script runs of
    other sessions go first)."""

    PAGE_WAIT_S = LIST_POLL_S
    """Longest an explanation waits for the page runs in flight to end: a class opening pages at once gets its
    pages first (they share one interpreter), and the lists still fill in while pages keep coming."""

    STALE_S = 3 * LIST_POLL_S
    """A queued neuron nobody has asked about for this long (three of a page's looks, LIST_POLL_S) is dropped: the
    page that listed it is gone (a class wandering over neurons would otherwise keep the thread busy with lists
    nobody reads, and every page run shares the interpreter with it). A page that lists it again queues it again."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._lock = threading.Lock()
        self._queue: deque[tuple[DashboardCache, NeuronId]] = deque()
        self._pending: set[tuple[int, NeuronId]] = set()
        self._asked: dict[tuple[int, NeuronId], float] = {}
        """When a page last asked about each pending neuron (queued it, or looked whether it is ready)."""
        self._tried: set[tuple[int, NeuronId]] = set()
        """Neurons the offline default found nothing to say about, or failed on (the log says why): not again."""
        self._done = threading.Condition(self._lock)
        self._thread: threading.Thread | None = None
        self._clock = clock
        self._stopping = threading.Event()
        """Set by `stop`: no explanation is started any more, the rest between two ends at once."""
        self._pages = 0
        """Page runs in flight (`page_running`)."""

    @contextlib.contextmanager
    def page_running(self) -> Iterator[None]:
        """Around a page run (app.py): explanations wait for the runs in flight, up to PAGE_WAIT_S."""
        with self._lock:
            self._pages += 1
        try:
            yield
        finally:
            with self._done:
                self._pages -= 1
                if not self._pages:
                    self._done.notify_all()

    def want(self, cache: DashboardCache, neurons: Iterable[NeuronId]) -> None:
        """Queue these neurons of `cache` (not twice, and not those tried already; nothing once stopped)."""
        with self._lock:
            if self._stopping.is_set():
                return
            now = self._clock()
            for neuron in neurons:
                key = (id(cache), neuron)
                if key in self._pending:
                    self._asked[key] = now
                elif key not in self._tried:
                    self._pending.add(key)
                    self._asked[key] = now
                    self._queue.append((cache, neuron))
            if self._queue and (self._thread is None or not self._thread.is_alive()):
                self._thread = threading.Thread(target=self._work, name="on-view explanations", daemon=True)
                self._thread.start()

    def pending(self, cache: DashboardCache, neurons: Iterable[NeuronId]) -> set[NeuronId]:
        """Those of `neurons` still queued or being explained (asking keeps them from going stale)."""
        with self._lock:
            now = self._clock()
            found = {n for n in neurons if (id(cache), n) in self._pending}
            for neuron in found:
                self._asked[(id(cache), neuron)] = now
            return found

    def wait(self, cache: DashboardCache, neurons: Iterable[NeuronId], timeout: float) -> bool:
        """Block until none of `neurons` is pending (tests); False on timeout. Waiting asks about them, as an open
        page's looks do, each time one is done."""
        wanted = [(id(cache), n) for n in neurons]

        def done() -> bool:
            still = [key for key in wanted if key in self._pending]
            now = self._clock()
            for key in still:
                self._asked[key] = now
            return not still

        deadline = time.monotonic() + timeout
        with self._done:
            while not done():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                # asks again at least every LIST_POLL_S, as an open page does: one long explanation (and the pause
                # after it) must not leave the rest waiting unasked until they go stale
                self._done.wait(min(remaining, LIST_POLL_S))
            return True

    def stop(self, timeout: float = 10.0) -> None:
        """Start no more explanations and wait (at most `timeout` s) for the one in progress: at the server's exit,
        where a thread stopped inside DuckDB aborts the whole process ("FATAL: exception not rethrown": 3 of 16 exits
        with explanations queued, docs/reliability.md)."""
        with self._done:
            self._stopping.set()
            self._queue.clear()
            self._pending.clear()
            self._asked.clear()
            self._done.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _work(self) -> None:
        while True:
            with self._done:
                deadline = time.monotonic() + self.PAGE_WAIT_S
                while self._pages and not self._stopping.is_set() and (left := deadline - time.monotonic()) > 0:
                    self._done.wait(left)
                if not self._queue or self._stopping.is_set():
                    return
                cache, neuron = self._queue.popleft()
                key = (id(cache), neuron)
                if self._clock() - self._asked.get(key, 0.0) > self.STALE_S:
                    self._pending.discard(key)  # not tried: a page listing it again queues it again
                    self._asked.pop(key, None)
                    self._done.notify_all()
                    continue
            started, made = time.monotonic(), None
            try:
                made = explain_on_view(cache.reader, cache.notes, neuron, make=LIST_WORKERS.explain)
            except Exception:  # a thread of the server: the log says why, the row says none was made
                log.warning("no on-view explanation of %s", neuron, exc_info=True)
            finally:
                with self._done:
                    self._pending.discard((id(cache), neuron))
                    self._asked.pop((id(cache), neuron), None)
                    if made is None:
                        self._tried.add((id(cache), neuron))
                    self._done.notify_all()
            self._stopping.wait((time.monotonic() - started) * (1 - self.BUSY_SHARE) / self.BUSY_SHARE)


WORKERS = OfflineWorkers()
"""The server's worker processes for explanations a page waits for (started on first use)."""
LIST_WORKERS = OfflineWorkers(processes=1, nice=10)
"""The background thread's worker process: at a lower priority, as nobody waits for a listed neuron's explanation,
so it takes only what the pages (and everything else on the machine) leave idle."""
atexit.register(WORKERS.close)  # before BACKGROUND.stop in this file: atexit runs these after it, once none waits
atexit.register(LIST_WORKERS.close)


BACKGROUND = Background()
"""The server's one thread of on-view explanations for listed neurons."""
atexit.register(BACKGROUND.stop)


def listed(ctx: PageContext, rows: dict[NeuronId, NeuronRow], neurons: Iterable[NeuronId]
           ) -> tuple[dict[NeuronId, Suggestion], set[NeuronId]]:
    """On-view explanations of the listed neurons that have no explanation in `rows`, and the set of those still
    being made (queued on BACKGROUND now if they have none yet): what a list of related neurons shows for them."""
    wanted = tuple(dict.fromkeys(n for n in neurons if not (n in rows and rows[n].explanation)))
    found = dict(ctx.neuron_notes_view(views.on_view_explanations, wanted)) if wanted else {}
    missing = [n for n in wanted if n not in found]
    if not missing:
        return found, set()
    BACKGROUND.want(ctx.cache, missing)
    pending = BACKGROUND.pending(ctx.cache, missing)
    if finished := tuple(n for n in missing if n not in pending):  # made since the view above was read
        found.update(ctx.neuron_notes_view(views.on_view_explanations, finished))
    return found, pending


@st.fragment(run_every=LIST_POLL_S)
def await_listed(cache: DashboardCache, neurons: tuple[NeuronId, ...]) -> None:
    """Run the whole page again once none of `neurons` is being explained any more (draws nothing)."""
    if not BACKGROUND.pending(cache, neurons):
        st.rerun()


def evidence_table(ctx: PageContext, neuron: NeuronId,
                   found: Callable[[], Sequence[TokenStat]] | None = None) -> None:
    """"Tokens it fires on most": the evidence beside the explanation (levels 0-10 against the neuron's max), as
    one piece of HTML built once per neuron (a data grid costs every run of the page its pandas and Arrow work);
    `found` gives the table where a page has its excerpts at hand (views.insights_evidence), else it is read."""
    widgets.html(ctx.rendered("onview.evidence", (neuron,), lambda: evidence_html(
        found() if found is not None else ctx.view(views.evidence, neuron))))


def evidence_html(found: Sequence[TokenStat]) -> str:
    """The evidence table under its title: token, count, tokens at half the max or more, mean level as a bar."""
    title = render.escape(_("Tokens it fires on most (evidence from the excerpts explanations are written from, "
                            "not an explanation)"))
    heading = f'<div style="font-weight:600;font-size:14px;margin:6px 0 2px 0">{title}</div>'
    if not found:
        return heading + f'<div style="font-size:13px;color:#666">{render.escape(_(NO_EVIDENCE))}</div>'
    lang = language()
    return heading + render.table_html(
        [_("token"), _("count"), _("at half max or more"), _("mean level (0-10)")],
        [[f'"{render.display_token(s.token)}"', number_in(s.count, ",", lang), number_in(s.high, ",", lang),
          number_in(float(s.mean_level), ".1f", lang)] for s in found],
        bars=[float(s.mean_level) for s in found], bar_scale=10.0, widths=[40, 15, 25, 20])
