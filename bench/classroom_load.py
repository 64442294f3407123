"""A lesson under load (issue 13): a teacher and N students on one `streamlit run app.py` in classroom mode, driven
over Streamlit's websocket as browsers drive it, no browser started.

    .venv/bin/python bench/classroom_load.py --cache COPY.duckdb [--students 30] [--lesson 3]

1. The server starts in classroom mode (`make classroom`'s settings, on 127.0.0.1). The teacher signs in with the
   passcode; every student opens the insights page on a neuron of their own and ticks "Follow the teacher".
2. For each of --lesson neurons (explained ones): the teacher opens the class board ("Explain it together") on it
   and presses "Show this neuron to the class". Every student's page polls as a browser does, a fragment rerun every
   CLASS_POLL_S seconds on its own phase, until the poll moves it there; then all students put an explanation on
   the board at the same moment (each scored live with the offline simulator, one at a time in the live queue).
3. The server stops; the notes file is opened and what the students submitted is counted.

Reported: seconds from the teacher's share to each student's page showing the neuron (the wait for the next poll
plus the run); seconds per submission; server CPU per run by kind (poll, follow, submit); errors; explanations
submitted, stored and on the board. The app writes its notes beside the cache: point --cache at a copy (the notes
of an earlier run are moved aside first, so the count is this run's). Needs no browser; bench/load.py has the floor.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import load  # noqa: E402  (bench/load.py: the server starter, CPU clock, quantiles)

ROOT = load.ROOT
PASSCODE = "BNCH-2345"
WIDGET_FIELDS = {"checkbox": "bool_value", "text_input": "string_value", "text_area": "string_value",
                 "button": "trigger_value", "number_input": "int_value"}
"""The widget kinds the clients here set, and the ClientState field of each."""


@dataclass
class Outcome:
    """One request as a client saw it."""

    seconds: float
    kind: str
    """"app" (a whole page run), or "fragment" (a poll that did not move the page)."""
    headings: list[str] = field(default_factory=list)
    successes: list[str] = field(default_factory=list)
    error: str | None = None


class Tab(load.StreamClient):
    """A browser tab as the server sees it: one websocket; it remembers the widgets, the page and the query string
    the server last showed, and the fragment that polls."""

    def __init__(self, url: str, timeout_s: float) -> None:
        super().__init__(url, timeout_s)
        self.widgets: dict[str, tuple[str, str]] = {}
        """key -> (widget id, ClientState field)."""
        self.pages: dict[str, str] = {}
        """page script hash -> URL path."""
        self.page_hash = ""
        self.query = ""
        self.polls: dict[str, float] = {}
        """Fragments of the last page that rerun themselves: fragment id -> seconds between reruns."""
        self.sticky: dict[str, object] = {}
        """Widget values this tab sends with every request (as a browser does with what the user set)."""

    @property
    def page(self) -> str:
        return self.pages.get(self.page_hash, "")

    def _message(self, page: str | None, query: str | None, values: dict[str, object], fragment: str | None
                 ) -> bytes:
        from streamlit.proto.BackMsg_pb2 import BackMsg

        message = BackMsg()
        state = message.rerun_script
        state.query_string = self.query if query is None else query
        if page is not None:
            state.page_name = page
        elif self.page_hash:
            state.page_script_hash = self.page_hash
        if fragment:
            state.fragment_id, state.is_auto_rerun = fragment, True
        for key, value in {**self.sticky, **values}.items():
            if key not in self.widgets:
                raise RuntimeError(f"no widget {key!r} on the page (widgets: {sorted(self.widgets)[:12]})")
            widget_id, value_field = self.widgets[key]
            entry = state.widget_states.widgets.add()
            entry.id = widget_id
            setattr(entry, value_field, value)
        return message.SerializeToString()

    async def request(self, *, page: str | None = None, query: str | None = None,
                      values: dict[str, object] | None = None, fragment: str | None = None) -> Outcome:
        """Send one rerun (of the app, or of `fragment`) and read until its script finished."""
        from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

        assert self.socket is not None
        started = time.perf_counter()
        await self.socket.send(self._message(page, query, values or {}, fragment))
        outcome = Outcome(0.0, "fragment" if fragment else "app")
        problems: list[str] = []
        begun = False
        deadline = time.monotonic() + self.timeout_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                outcome.error = f"no script_finished within {self.timeout_s:.0f} s"
                break
            forward = ForwardMsg()
            forward.ParseFromString(await asyncio.wait_for(self.socket.recv(), left))
            kind = forward.WhichOneof("type")
            if kind == "new_session":
                begun = True
                if not fragment or outcome.kind == "app":
                    outcome.headings, outcome.successes, problems = [], [], []
                    self.polls = {}
                continue
            if not begun:
                continue
            if kind == "navigation":
                self.pages = {p.page_script_hash: p.url_pathname for p in forward.navigation.app_pages}
                self.page_hash = forward.navigation.page_script_hash
            elif kind == "page_info_changed":
                self.query = forward.page_info_changed.query_string
            elif kind == "auto_rerun":
                self.polls[forward.auto_rerun.fragment_id] = forward.auto_rerun.interval
            elif kind == "delta" and forward.delta.WhichOneof("type") == "new_element":
                self._note(forward.delta.new_element, outcome, problems)
            elif kind == "script_finished":
                status = forward.script_finished
                if status == ForwardMsg.FINISHED_EARLY_FOR_RERUN:
                    outcome.kind, begun = "app", False  # the fragment asked for a run of the whole page
                    continue
                if status not in (ForwardMsg.FINISHED_SUCCESSFULLY, ForwardMsg.FINISHED_FRAGMENT_RUN_SUCCESSFULLY):
                    problems.append(f"script finished with status {status}")
                break
        outcome.seconds = time.perf_counter() - started
        outcome.error = outcome.error or ("; ".join(problems) or None)
        return outcome

    def _note(self, element: object, outcome: Outcome, problems: list[str]) -> None:
        what = element.WhichOneof("type")  # type: ignore[attr-defined]
        if what == "heading":
            outcome.headings.append(element.heading.body)  # type: ignore[attr-defined]
        elif what == "exception":
            problems.append(f"exception: {element.exception.message[:200]}")  # type: ignore[attr-defined]
        elif what == "alert":
            alert = element.alert  # type: ignore[attr-defined]
            if alert.format == alert.ERROR:
                problems.append(f"st.error: {alert.body[:200]}")
            elif alert.format == alert.SUCCESS:
                outcome.successes.append(alert.body)
        elif what in WIDGET_FIELDS:
            widget = getattr(element, what)
            if widget.id.startswith("$$ID-") and widget.id.count("-") >= 2:
                self.widgets[widget.id.split("-", 2)[2]] = (widget.id, WIDGET_FIELDS[what])


def _query(neuron: tuple[int, int]) -> str:
    return urlencode({"layer": neuron[0], "neuron": neuron[1]})


def _shows(outcome: Outcome, neuron: tuple[int, int]) -> bool:
    return any(f"Neuron {neuron[0]}:{neuron[1]} " in heading for heading in outcome.headings)


@dataclass
class Lesson:
    """What one lesson measured."""

    follow_s: list[float] = field(default_factory=list)
    """Per student and neuron: seconds from the share to the page showing the neuron."""
    submit_s: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    cpu_s: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    runs: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    submitted: list[tuple[tuple[int, int], str]] = field(default_factory=list)
    idle_s: float = 0.0
    """Seconds the class sat on the board at the end, every page polling."""


async def _follow(student: Tab, neuron: tuple[int, int], shared_at: float, lesson: Lesson, rng: random.Random,
                  give_up_s: float) -> None:
    """Rerun each self-rerunning fragment of the page on its own timer, as the browser does (one request at a time:
    a session runs one script at a time), until the page shows `neuron`."""
    if not student.polls:
        lesson.errors.append("a student's page has no polling fragment")
        return
    due = {fragment: shared_at + rng.uniform(0.0, interval) for fragment, interval in student.polls.items()}
    while time.perf_counter() - shared_at < give_up_s:
        fragment = min(due, key=due.__getitem__)
        await asyncio.sleep(max(due[fragment] - time.perf_counter(), 0.0))
        outcome = await student.request(fragment=fragment)
        lesson.runs["poll" if outcome.kind == "fragment" else "follow"] += 1
        if outcome.error:
            lesson.errors.append(f"poll: {outcome.error}")
            return
        if outcome.kind == "app" and _shows(outcome, neuron):
            lesson.follow_s.append(time.perf_counter() - shared_at)
            return
        if outcome.kind == "app":  # a new page: its own fragments and timers
            due = {f: time.perf_counter() + interval for f, interval in student.polls.items()}
        else:
            due[fragment] = time.perf_counter() + student.polls.get(fragment, 3.0)
    lesson.errors.append(f"a student did not reach {neuron} within {give_up_s:.0f} s")


async def _sit(student: Tab, until: float, lesson: Lesson, rng: random.Random) -> None:
    """Keep the page open until `until`, its fragments rerunning on their timers."""
    due = {fragment: time.perf_counter() + rng.uniform(0.0, interval) for fragment, interval in student.polls.items()}
    while due:
        fragment = min(due, key=due.__getitem__)
        if due[fragment] >= until:
            return
        await asyncio.sleep(max(due[fragment] - time.perf_counter(), 0.0))
        outcome = await student.request(fragment=fragment)
        lesson.runs["idle"] += 1
        if outcome.error or outcome.kind != "fragment":
            lesson.errors.append(f"idle poll: {outcome.error or 'the page moved'}")
            return
        due[fragment] = time.perf_counter() + student.polls.get(fragment, 3.0)


async def run_lesson(server: load.Server, students: int, lesson_neurons: Sequence[tuple[int, int]],
                     start_neurons: Sequence[tuple[int, int]], timeout_s: float, idle_s: float) -> Lesson:
    lesson, rng = Lesson(), random.Random(0)
    teacher = Tab(server.url, timeout_s)
    tabs = [Tab(server.url, timeout_s) for _ in range(students)]
    try:
        await teacher.connect()
        opened = await teacher.request(page="insights", query=_query(lesson_neurons[0]))
        signed = await teacher.request(values={"class_passcode": PASSCODE,
                                               "FormSubmitter:class_sign_in-Sign in": True})
        if opened.error or signed.error or "class_share" not in teacher.widgets:
            raise RuntimeError(f"the teacher could not sign in: {opened.error or signed.error}")
        await asyncio.gather(*(tab.connect() for tab in tabs))
        for tab, neuron in zip(tabs, start_neurons, strict=False):
            first = await tab.request(page="insights", query=_query(neuron))
            tab.sticky = {"class_follow": True}
            ticked = await tab.request()
            if first.error or ticked.error:
                lesson.errors.append(f"a student could not start: {first.error or ticked.error}")
        for neuron in lesson_neurons:
            # the teacher types the neuron into the sidebar (an open session's widgets win over its URL)
            board = await teacher.request(page="classroom", query=_query(neuron),
                                          values={"layer": neuron[0], "neuron": neuron[1]})
            cpu = server.cpu_seconds()
            shared = await teacher.request(values={"class_share": True})
            shared_at = time.perf_counter()
            if board.error or shared.error or not _shows(board, neuron):
                lesson.errors.append(f"the teacher could not share {neuron}: {board.error or shared.error}")
                continue
            await asyncio.gather(*(_follow(tab, neuron, shared_at, lesson, rng, timeout_s) for tab in tabs))
            lesson.cpu_s["poll and follow"] += server.cpu_seconds() - cpu
            cpu = server.cpu_seconds()
            texts = [(tab, f"student {index}: tokens like '{index % 7}' in {neuron[0]}:{neuron[1]}")
                     for index, tab in enumerate(tabs)]
            outcomes = await asyncio.gather(*(tab.request(values={
                "board_text": text, "board_author": f"student {index}",
                "FormSubmitter:board_form-Put it on the board": True}) for index, (tab, text) in enumerate(texts)))
            lesson.cpu_s["submit"] += server.cpu_seconds() - cpu
            lesson.runs["submit"] += len(outcomes)
            for (_, text), outcome in zip(texts, outcomes, strict=True):
                lesson.submitted.append((neuron, text))
                lesson.submit_s.append(outcome.seconds)
                if outcome.error or not any("On the board" in s for s in outcome.successes):
                    lesson.errors.append(f"submit: {outcome.error or 'no confirmation'}")
        if idle_s > 0:  # the class looks at the board: every page keeps polling
            cpu, started = server.cpu_seconds(), time.perf_counter()
            await asyncio.gather(*(_sit(tab, started + idle_s, lesson, rng) for tab in tabs))
            lesson.cpu_s["idle"] = server.cpu_seconds() - cpu
            lesson.idle_s = time.perf_counter() - started
    finally:
        await asyncio.gather(teacher.close(), *(tab.close() for tab in tabs))
    return lesson


def count_stored(cache: Path, submitted: Sequence[tuple[tuple[int, int], str]]) -> tuple[int, int]:
    """(submitted texts found in the notes with a live score, those on their neuron's class board)."""
    from core import classroom
    from core.store import DashboardCache
    from core.types import NeuronId

    opened = DashboardCache(cache)
    try:
        stored = on_board = 0
        for neuron, text in submitted:
            found = [s for s in opened.notes.suggestions(NeuronId(*neuron)) if s.text == text and s.score]
            stored += bool(found)
            board = classroom.board(opened.reader, opened.notes, NeuronId(*neuron))
            on_board += any(e.suggestion.text == text for e in board.entries)
        return stored, on_board
    finally:
        opened.close()


def lesson_neurons(cache: Path, count: int, students: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """Explained neurons for the lesson, and a neuron for each student to start on."""
    neurons = load.cache_neurons(cache, explained_first=True)
    return neurons.take(count), neurons.take(students)


def describe(values: Sequence[float]) -> str:
    if not values:
        return "none"
    return (f"p50 {statistics.median(values):.2f} s, p95 {load.quantile(values, 0.95):.2f} s, max {max(values):.2f} s "
            f"({len(values)})")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, required=True, help="a copy of a cache (the app writes notes beside it)")
    parser.add_argument("--students", type=int, default=30)
    parser.add_argument("--lesson", type=int, default=3, help="neurons the teacher shows, one after the other")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds a request may take")
    parser.add_argument("--idle", type=float, default=20.0, help="seconds the class sits on the board at the end, "
                        "its pages polling (0: none)")
    parser.add_argument("--config", action="append", default=[], metavar="OPTION=VALUE",
                        help="a Streamlit config option for the server")
    args = parser.parse_args(argv)
    return 1 if lesson_report(args.cache, args.students, args.lesson, args.timeout, args.config,
                              idle_s=args.idle) else 0


def lesson_report(cache: Path, students: int, lesson: int, timeout_s: float, options: Sequence[str] = (),
                  report: bool = True, idle_s: float = 0.0) -> list[str]:
    """Run a lesson and print what it measured; returns its problems (errors, anything not stored)."""
    from harness import atlas_home

    from core import classroom
    from core.paths import notes_path

    cache = cache.resolve()
    notes = notes_path(cache)
    if notes.exists():  # this run's count starts from an empty board
        notes.rename(notes.with_name(f"{notes.stem}.before-{time.strftime('%Y%m%d-%H%M%S')}.duckdb"))
    shown, starts = lesson_neurons(cache, lesson, students)
    env = {classroom.CLASS_URL_ENV: "http://127.0.0.1", classroom.PASSCODE_ENV: PASSCODE}
    say = print if report else (lambda *_, **__: None)
    say(f"cache {cache}; {students} students; lesson {shown}; {load.load_average()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="classroom-load-") as folder:
        env["NEURON_ATLAS_CACHE"] = str(cache)
        env["NEURON_ATLAS_HOME"] = str(atlas_home(Path(folder) / "home"))
        with load.serve(ROOT / "app.py", env, Path(folder) / "app.log", options=options) as server:
            found = load.run_loop(run_lesson(server, students, shown, starts, timeout_s, idle_s))
    stored, on_board = count_stored(cache, found.submitted)
    say(f"follow the teacher (share -> page shows the neuron): {describe(found.follow_s)}")
    say(f"submit an explanation (scored live, one at a time): {describe(found.submit_s)}")
    for kind, seconds in found.cpu_s.items():
        runs = sum(n for k, n in found.runs.items() if k in kind)
        say(f"server CPU, {kind}: {seconds:.2f} s over {runs} runs ({seconds / max(runs, 1) * 1000:.0f} ms a run)")
    if found.idle_s:
        say(f"the class sitting on the board, every page polling: {found.runs['idle'] / found.idle_s:.1f} polls/s "
            f"cost {found.cpu_s['idle'] / found.idle_s:.0%} of one core")
    say(f"runs: {dict(found.runs)}; errors: {len(found.errors)}")
    say(f"explanations submitted {len(found.submitted)}, stored with a live score {stored}, on the board {on_board}")
    for error in sorted(set(found.errors))[:5]:
        say(f"  error: {error}")
    say(load.load_average())
    problems = list(found.errors)
    if stored != len(found.submitted) or on_board != len(found.submitted):
        problems.append(f"{len(found.submitted)} submitted, {stored} stored, {on_board} on the board")
    return problems


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())
