"""Load benchmark of the dashboard (issue 13): a classroom of N sessions, no browsers, against one server.

    .venv/bin/python bench/load.py --cache caches/smollm2-135m-stdlib.duckdb
    .venv/bin/python bench/load.py --cache CACHE --sessions 1,10,30 --pages insights,scoring,related \
        --query 'layer={layer}&neuron={neuron}' --expect 'Neuron {layer}:{neuron}'

Each session speaks Streamlit's own protocol on `/_stcore/stream` (websocket, subprotocol "streamlit"): it sends
a BackMsg whose rerun_script carries the page's URL path (page_name) and the query string, and waits for the
server's script_finished. A browser per student would measure the browsers, not the server.

For each number of sessions N, pattern and page, N sessions open the page for a neuron and then move to
`--steps - 1` more, all sessions at the same moment (a burst per step), in two ways:
- `new`:  every neuron is a link opened anew (a new websocket session per step);
- `kept`: one session per student kept open, each move a rerun of it with the new query string.
Patterns:
- `same`:      the class follows the teacher: a teacher session opens the neuron first (not counted), then all N
               students open it: every counted run is of a neuron someone has already opened;
- `different`: every student opens neurons nobody has opened in this run of the benchmark.
Measured: seconds from the request (for `new`, the websocket connect) to script_finished, p50 / p95 / max;
errors (a failed connection, no script_finished within --timeout, a script exception, st.error, page not found,
a finished script that did not show the expected heading); and the server's CPU seconds (user + system, all
threads, from its CPU-time clock; with the worker processes it starts for explanations) per counted run. The same
load runs against a trivial two-page app (bench/floor_app: a title and a number input), the two taking turns at
every step, so both see the same machine load: that is the floor, what Streamlit itself costs here, and the
targets are ratios to it. Servers listen on 127.0.0.1 only, on free ports, and are stopped at the end. The app
opens the cache read-only but writes its notes file beside it, so point --cache at a copy in a folder you may write
to.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Coroutine, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar
from urllib.parse import parse_qsl

ROOT = Path(__file__).resolve().parents[1]
FLOOR_APP = Path(__file__).resolve().parent / "floor_app" / "app.py"
"""The trivial two-page app whose cost is the floor."""
FLOOR_PAGES = ("", "second")
"""URL paths of the floor app's pages."""
DEFAULT_PAGES = ("insights", "scoring", "related")
DEFAULT_QUERY = "layer={layer}&neuron={neuron}"
DEFAULT_EXPECT = "Neuron {layer}:{neuron}"
T = TypeVar("T")
NEURON_STRIDE = 7919
"""Step through the flat neuron index: prime, so it visits every neuron of any cache before repeating one."""

sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "browser"))


# --- one session, speaking Streamlit's websocket protocol -----------------------------------------------------------


@dataclass
class Run:
    """One page run as a client saw it."""

    seconds: float
    error: str | None = None


def _rerun_message(page: str, query: str, widgets: dict[str, tuple[str, object]] | None = None) -> bytes:
    """A BackMsg asking for a run of the page at URL path `page` ("" = the default page) with `query`; `widgets`
    (widget id -> (value field, value)) are widget values the user just set, as a browser sends them."""
    from streamlit.proto.BackMsg_pb2 import BackMsg

    message = BackMsg()
    message.rerun_script.query_string = query
    message.rerun_script.page_name = page
    for widget_id, (value_field, value) in (widgets or {}).items():
        state = message.rerun_script.widget_states.widgets.add()
        state.id = widget_id
        setattr(state, value_field, value)
    return message.SerializeToString()


def _problem(forward: object, seen: list[str]) -> str | None:
    """What is wrong with one ForwardMsg of a run (None if nothing); headings are collected into `seen`."""
    kind = forward.WhichOneof("type")  # type: ignore[attr-defined]
    if kind == "page_not_found":
        return "page not found"
    if kind != "delta" or forward.delta.WhichOneof("type") != "new_element":  # type: ignore[attr-defined]
        return None
    element = forward.delta.new_element  # type: ignore[attr-defined]
    what = element.WhichOneof("type")
    if what == "exception":
        return f"exception: {element.exception.type}: {element.exception.message[:200]}"
    if what == "alert" and element.alert.format == element.alert.ERROR:
        return f"st.error: {element.alert.body[:200]}"
    if what == "heading":
        seen.append(element.heading.body)
    return None


WIDGET_VALUE_FIELDS = {"number_input": None, "text_input": "string_value"}
"""Widgets a kept session can set to move to another neuron (number_input: int_value or double_value)."""


class StreamClient:
    """One websocket on a Streamlit server's /_stcore/stream: a new server-side session per connection."""

    def __init__(self, url: str, timeout_s: float) -> None:
        self.url = url.replace("http://", "ws://") + "/_stcore/stream"
        self.timeout_s = timeout_s
        self.socket = None

    async def connect(self) -> None:
        """Open the websocket (a new server-side session)."""
        import websockets

        self.socket = await asyncio.wait_for(
            websockets.connect(self.url, subprotocols=["streamlit"], max_size=None, open_timeout=self.timeout_s,
                               ping_interval=None),
            self.timeout_s)

    async def close(self) -> None:
        if self.socket is not None:
            with contextlib.suppress(Exception):
                await self.socket.close()
            self.socket = None


class Session(StreamClient):
    """A browser tab as the server sees it: one websocket on /_stcore/stream.

    A kept session moves to another query string the way a person does: it sets the widgets bound to the changed
    query parameters (bind="query-params": the parameter is the widget's key) to the new values; a rerun that only
    changes the query string would not move it, since a session's widget state wins over its URL."""

    def __init__(self, url: str, timeout_s: float) -> None:
        super().__init__(url, timeout_s)
        self.query: dict[str, str] | None = None
        self.received = 0
        """Bytes of the last run's messages."""
        self.widgets: dict[str, tuple[str, str]] = {}
        """Widget key -> (widget id, value field) of the widgets the last run showed."""

    def _widget_changes(self, query: dict[str, str]) -> tuple[dict[str, tuple[str, object]], list[str]]:
        """The widget values that move this session from its last query to `query`, and the changed parameters
        no widget of the last run is bound to."""
        changes: dict[str, tuple[str, object]] = {}
        unbound = []
        for key, value in query.items():
            if self.query is None or self.query.get(key) == value:
                continue
            if key not in self.widgets:
                unbound.append(key)
                continue
            widget_id, value_field = self.widgets[key]
            changes[widget_id] = (value_field, value if value_field == "string_value" else
                                  int(value) if value_field == "int_value" else float(value))
        return changes, unbound

    def _note_widget(self, element: object) -> None:
        """Remember a widget of this run by its key (the suffix of its id)."""
        kind = element.WhichOneof("type")  # type: ignore[attr-defined]
        if kind not in WIDGET_VALUE_FIELDS:
            return
        widget = getattr(element, kind)
        value_field = WIDGET_VALUE_FIELDS[kind] or (
            "int_value" if widget.data_type == widget.INT else "double_value")
        key = widget.id.rsplit("-", 1)[-1] if widget.id.startswith("$$ID-") else ""
        if key:
            self.widgets[key] = (widget.id, value_field)

    async def run(self, page: str, query: str, expect: str | None) -> str | None:
        """Ask for a run of `page` with `query` and read until script_finished: None, or what went wrong."""
        from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

        assert self.socket is not None
        wanted = dict(parse_qsl(query))
        changes, unbound = self._widget_changes(wanted)
        if unbound:
            return f"query parameters {unbound} are bound to no widget: a kept session cannot move there"
        await self.socket.send(_rerun_message(page, query, changes))
        self.query, self.widgets, self.received = wanted, {}, 0
        deadline = time.monotonic() + self.timeout_s
        problems: list[str] = []
        headings: list[str] = []
        started = False  # messages of a previous run may still arrive; count from this run's new_session
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return f"no script_finished within {self.timeout_s:.0f} s"
            data = await asyncio.wait_for(self.socket.recv(), left)
            forward = ForwardMsg()
            forward.ParseFromString(data)
            kind = forward.WhichOneof("type")
            if kind == "new_session":
                started, problems, headings, self.received = True, [], [], len(data)
                continue
            if not started:
                continue
            self.received += len(data)
            problem = _problem(forward, headings)
            if problem == "page not found":
                problem = f"page not found: {page!r}"
            if problem and problem not in problems:
                problems.append(problem)
            if kind == "delta" and forward.delta.WhichOneof("type") == "new_element":
                self._note_widget(forward.delta.new_element)
            if kind == "script_finished":
                status = forward.script_finished
                if status == ForwardMsg.FINISHED_EARLY_FOR_RERUN:
                    started = False  # replaced by a newer run: wait for that one
                    continue
                if status not in (ForwardMsg.FINISHED_SUCCESSFULLY, ForwardMsg.FINISHED_FRAGMENT_RUN_SUCCESSFULLY):
                    problems.append(f"script finished with status {status}")
                if expect is not None and not any(expect in heading for heading in headings):
                    problems.append(f"no heading with {expect!r} (headings: {headings[:3]})")
                return "; ".join(problems) or None


async def timed(coroutine_factory) -> Run:
    """Run one request and time it; any exception becomes the run's error."""
    started = time.perf_counter()
    try:
        error = await coroutine_factory()
    except Exception as exc:  # a load client reports every failure as an error of that run
        error = f"{type(exc).__name__}: {exc}"[:300]
    return Run(time.perf_counter() - started, error)


# --- a server ------------------------------------------------------------------------------------------------------


@dataclass
class Server:
    """A running `streamlit run SCRIPT` on 127.0.0.1."""

    url: str
    process: subprocess.Popen

    def cpu_seconds(self) -> float:
        """CPU seconds (user + system, every thread, finished ones too) the server process and the processes it
        started (the worker processes that make its explanations) have used so far."""
        import psutil

        total = process_cpu_seconds(self.process.pid)
        with contextlib.suppress(psutil.Error):
            for child in psutil.Process(self.process.pid).children(recursive=True):
                with contextlib.suppress(psutil.Error, OSError):
                    total += process_cpu_seconds(child.pid)
        return total


def process_cpu_seconds(pid: int) -> float:
    """A process's CPU time in nanosecond resolution: its CPU-time clock (clock_getcpuclockid, Linux), else psutil,
    whose user and system times come in clock ticks of 10 ms, too coarse for a page run of a trivial app."""
    with contextlib.suppress(OSError, AttributeError):
        clock = ctypes.c_int()
        if ctypes.CDLL(None, use_errno=True).clock_getcpuclockid(pid, ctypes.byref(clock)) == 0:
            return time.clock_gettime(clock.value)
    import psutil

    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


@contextlib.contextmanager
def serve(script: Path, env: dict[str, str], log: Path, timeout_s: float = 180.0,
          launcher: Sequence[str] = ("-m", "streamlit"), options: Sequence[str] = ()) -> Iterator[Server]:
    """`streamlit run script` on 127.0.0.1 and a free port, from the repository root (its .streamlit/config.toml
    applies to every app served here); stopped afterwards. `launcher`: what python runs instead of `-m streamlit`
    (bench/profile_page.py wraps Streamlit that way); `options`: Streamlit config options as OPTION=VALUE."""
    from harness import free_port, stop, wait_healthy

    port = free_port()
    flags = [part for option in options for part in ("--" + option.split("=", 1)[0], option.split("=", 1)[1])]
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, *launcher, "run", str(script), "--server.port", str(port),
             "--server.address", "127.0.0.1", "--server.headless", "true", "--browser.gatherUsageStats", "false",
             *flags],
            cwd=ROOT, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, process, timeout_s, log)
        yield Server(url, process)
    finally:
        stop(process)


# --- the load ------------------------------------------------------------------------------------------------------


@dataclass
class Target:
    """What to load: a server, its page, how a neuron becomes a query string, the heading a run must show."""

    server: Server
    page: str
    query: str = DEFAULT_QUERY
    expect: str | None = DEFAULT_EXPECT

    def query_for(self, neuron: tuple[int, int]) -> str:
        return self.query.format(layer=neuron[0], neuron=neuron[1])

    def expect_for(self, neuron: tuple[int, int]) -> str | None:
        return None if self.expect is None else self.expect.format(layer=neuron[0], neuron=neuron[1])


@dataclass
class Result:
    """Runs of one measurement and the server CPU they cost."""

    runs: list[Run] = field(default_factory=list)
    cpu_s: float = 0.0

    @property
    def times(self) -> list[float]:
        return [run.seconds for run in self.runs]

    @property
    def errors(self) -> list[str]:
        return [run.error for run in self.runs if run.error]

    @property
    def cpu_per_run(self) -> float:
        return self.cpu_s / max(len(self.runs), 1)


class Neurons:
    """Neurons handed out in a fixed order that repeats none: first the `first` ones (shuffled with a fixed seed),
    then every other neuron of the cache, in strides over the flat index."""

    def __init__(self, layers: int, width: int, first: Sequence[tuple[int, int]] = (), start: int = 0) -> None:
        self.layers, self.width, self.next = layers, width, start
        self.first = list(first)
        random.Random(0).shuffle(self.first)
        self.given: set[tuple[int, int]] = set()

    def take(self, count: int) -> list[tuple[int, int]]:
        total = self.layers * self.width
        chosen: list[tuple[int, int]] = []
        while len(chosen) < count:
            if len(self.given) >= total:
                raise RuntimeError(f"every one of the cache's {total} neurons was handed out: ask for less load")
            if self.first:
                neuron = self.first.pop()
            else:
                flat = (self.next * NEURON_STRIDE) % total
                self.next += 1
                neuron = (flat // self.width, flat % self.width)
            if neuron not in self.given:
                self.given.add(neuron)
                chosen.append(neuron)
        return chosen


async def _open_once(target: Target, neuron: tuple[int, int], timeout_s: float) -> str | None:
    """A link opened anew: connect, one run, close."""
    session = Session(target.server.url, timeout_s)
    try:
        await session.connect()
        return await session.run(target.page, target.query_for(neuron), target.expect_for(neuron))
    finally:
        await session.close()


class Classroom:
    """N sessions working through a plan (per step, one neuron per session) against one target, a step at a time,
    all sessions together at each step.

    mode "new": every step opens a new session per student (a link opened anew); "kept": one session per student
    for all steps. With `teacher`, a teacher session opens every neuron of the plan first; its runs are neither timed
    nor counted. The server's CPU time is read around each step."""

    def __init__(self, target: Target, plan: list[list[tuple[int, int]]], mode: str, teacher: bool,
                 timeout_s: float) -> None:
        self.target, self.plan, self.mode, self.teacher, self.timeout_s = target, plan, mode, teacher, timeout_s
        self.result = Result()
        self.kept: list[Session] = []
        self.connected: list[Run] = []

    async def prepare(self) -> None:
        """The teacher's runs, and the students' sessions connected when they are kept."""
        if self.teacher:
            for neuron in dict.fromkeys(neuron for step in self.plan for neuron in step):
                warm = await timed(lambda neuron=neuron: _open_once(self.target, neuron, self.timeout_s))
                if warm.error:
                    self.result.runs.append(Run(warm.seconds, f"teacher: {warm.error}"))
        if self.mode == "kept":
            self.kept = [Session(self.target.server.url, self.timeout_s) for _ in self.plan[0]]
            self.connected = await asyncio.gather(*(timed(session.connect) for session in self.kept))

    async def step(self, index: int) -> None:
        """Every student opens its neuron of step `index` at the same moment."""
        target, step = self.target, self.plan[index]
        cpu = target.server.cpu_seconds()
        if self.mode == "kept":
            self.result.runs += await asyncio.gather(*(
                timed(lambda s=session, n=neuron: s.run(target.page, target.query_for(n), target.expect_for(n)))
                if session.socket is not None else _failed(f"never connected: {connection.error}")
                for session, neuron, connection in zip(self.kept, step, self.connected, strict=True)))
        else:
            self.result.runs += await asyncio.gather(*(
                timed(lambda n=neuron: _open_once(target, n, self.timeout_s)) for neuron in step))
        self.result.cpu_s += target.server.cpu_seconds() - cpu

    async def close(self) -> None:
        await asyncio.gather(*(session.close() for session in self.kept))


async def side_by_side(classes: Sequence[Classroom]) -> None:
    """Run the classrooms step by step, taking turns at each step, so a change of the machine's load between steps
    reaches all of them alike."""
    try:
        for classroom in classes:
            await classroom.prepare()
        for index in range(len(classes[0].plan)):
            for classroom in classes:
                await classroom.step(index)
    finally:
        for classroom in classes:
            await classroom.close()


async def _failed(error: str) -> Run:
    return Run(0.0, error)


def make_plan(pattern: str, sessions: int, steps: int, neurons: Neurons) -> list[list[tuple[int, int]]]:
    """Per step, the neuron of each session: `same` = one neuron for everybody, `different` = a neuron each."""
    if pattern == "same":
        return [[neuron] * sessions for neuron in neurons.take(steps)]
    return [neurons.take(sessions) for _ in range(steps)]


# --- report --------------------------------------------------------------------------------------------------------


def quantile(values: Sequence[float], q: float) -> float:
    """The q-quantile by the nearest-rank rule (no interpolation: a p95 of 30 runs is a run that happened)."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered) + 0.5) - 1))]


def describe(result: Result) -> str:
    times = result.times
    return (f"{len(times):>5} {statistics.median(times):>7.2f} {quantile(times, 0.95):>7.2f} {max(times):>7.2f} "
            f"{len(result.errors):>6} {result.cpu_per_run * 1000:>9.0f}")


HEADER = f"{'runs':>5} {'p50 s':>7} {'p95 s':>7} {'max s':>7} {'errors':>6} {'cpu ms/run':>9}"


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} CPUs"


@dataclass
class Measurement:
    sessions: int
    pattern: str
    mode: str
    page: str
    app: Result
    floor: Result


def measure(app_server: Server, floor_server: Server, args: argparse.Namespace, neurons: Neurons,
            report: bool = True) -> list[Measurement]:
    """Every (sessions, pattern, mode, page): the app and the floor app taking turns at each step."""
    found = []
    for sessions in args.sessions:
        for pattern in args.patterns:
            for mode in args.modes:
                for index, page in enumerate(args.pages):
                    floor = Classroom(Target(floor_server, FLOOR_PAGES[index % len(FLOOR_PAGES)], args.query,
                                             args.expect), make_plan(pattern, sessions, args.steps, neurons),
                                      mode, pattern == "same", args.timeout)
                    app = Classroom(Target(app_server, page, args.query, args.expect),
                                    make_plan(pattern, sessions, args.steps, neurons), mode, pattern == "same",
                                    args.timeout)
                    run_loop(side_by_side([floor, app]))
                    app_result, floor_result = app.result, floor.result
                    measurement = Measurement(sessions, pattern, mode, page, app_result, floor_result)
                    found.append(measurement)
                    if not report:
                        continue
                    print(f"{sessions:>4} {pattern:<9} {mode:<4} {page:<10} {describe(app_result)}   floor "
                          f"{describe(floor_result)}", flush=True)
                    for error in sorted(set(app_result.errors + floor_result.errors))[:3]:
                        print(f"      error: {error}", flush=True)
    return found


def pooled(results: Sequence[Result]) -> Result:
    """Several results as one: all their runs and all their CPU time."""
    return Result([run for result in results for run in result.runs], sum(result.cpu_s for result in results))


@dataclass
class Row:
    """One measurement of the app beside its floor, as the issue's targets read it."""

    m: Measurement
    floor: Result
    """The floor's runs beside every page of the same (sessions, pattern, mode), pooled: more runs, less noise."""

    @property
    def cpu_ratio(self) -> float:
        return self.m.app.cpu_per_run / max(self.floor.cpu_per_run, 1e-9)

    @property
    def p95_ratio(self) -> float:
        return quantile(self.m.app.times, 0.95) / max(quantile(self.floor.times, 0.95), 1e-9)

    @property
    def cpu_target(self) -> str:
        return "<= 1.5" if self.m.pattern == "same" else "<= 3"

    @property
    def p95_target(self) -> str:
        return "<= 1.5" if self.m.pattern == "same" and self.m.sessions >= 30 else ""


def rows(found: list[Measurement]) -> list[Row]:
    floors: dict[tuple[int, str, str], list[Result]] = {}
    for m in found:
        floors.setdefault((m.sessions, m.pattern, m.mode), []).append(m.floor)
    return [Row(m, pooled(floors[(m.sessions, m.pattern, m.mode)])) for m in found]


def ratios(found: list[Measurement]) -> list[str]:
    """The issue's targets as ratios to the floor (the floor's runs beside every page pooled)."""
    lines = ["", "ratios to the trivial app (the floor, its runs beside every page pooled); targets from issue 13",
             f"{'n':>4} {'pattern':<9} {'mode':<4} {'page':<10} {'floor cpu ms':>12} {'floor p95 s':>11} "
             f"{'cpu/run x':>9} {'target':>7} {'p95 x':>6} {'target':>7} {'errors':>6}"]
    for row in rows(found):
        m, floor = row.m, row.floor
        lines.append(f"{m.sessions:>4} {m.pattern:<9} {m.mode:<4} {m.page:<10} {floor.cpu_per_run * 1000:>12.0f} "
                     f"{quantile(floor.times, 0.95):>11.2f} {row.cpu_ratio:>9.1f} {row.cpu_target:>7} "
                     f"{row.p95_ratio:>6.1f} {row.p95_target:>7} {len(m.app.errors):>6}")
    return lines


def markdown(found: list[Measurement]) -> list[str]:
    """The app's numbers, the floor's and their ratios as one Markdown table."""
    lines = ["| N | pattern | mode | page | runs | p50 s | p95 s | max s | errors | CPU ms/run | floor CPU ms/run | "
             "floor p95 s | CPU x floor | p95 x floor |", "|" + "---|" * 14]
    for row in rows(found):
        m, floor, times = row.m, row.floor, row.m.app.times
        lines.append(f"| {m.sessions} | {m.pattern} | {m.mode} | {m.page} | {len(times)} | "
                     f"{statistics.median(times):.2f} | {quantile(times, 0.95):.2f} | {max(times):.2f} | "
                     f"{len(m.app.errors)} | {m.app.cpu_per_run * 1000:.0f} | {floor.cpu_per_run * 1000:.0f} | "
                     f"{quantile(floor.times, 0.95):.2f} | {row.cpu_ratio:.1f} | {row.p95_ratio:.1f} |")
    return lines


def cache_neurons(cache: Path, explained_first: bool) -> Neurons:
    """The neurons to open on `cache`: the explained ones first when asked (a teacher shows those), then the rest."""
    from core.store import open_reader

    with open_reader(cache) as reader:
        info = reader.info()
        explained = reader.neuron_table(order="score", scored_only=True, limit=info.layers * info.neurons_per_layer) \
            if explained_first else []
        first = [(row.neuron.layer, row.neuron.neuron) for row in explained]
    return Neurons(info.layers, info.neurons_per_layer, first)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, required=True, help="the cache the app serves (a copy you may write "
                        "beside: the app keeps its notes file next to it)")
    parser.add_argument("--app", type=Path, default=ROOT / "app.py", help="the app's entry script")
    parser.add_argument("--sessions", default="1,10,30", help="numbers of simultaneous sessions, comma-separated")
    parser.add_argument("--patterns", default="same,different", help="same (follow the teacher), different")
    parser.add_argument("--modes", default="new,kept", help="new (a link opened anew), kept (a rerun of an open "
                        "session)")
    parser.add_argument("--pages", default=",".join(DEFAULT_PAGES), help="URL paths of the pages to load "
                        "('/' or '' is the default page)")
    parser.add_argument("--query", default=DEFAULT_QUERY, help="query string template with {layer} and {neuron}")
    parser.add_argument("--expect", default=DEFAULT_EXPECT, help="a heading every run must show, a template with "
                        "{layer} and {neuron}; '' to check nothing")
    parser.add_argument("--steps", type=int, default=3, help="neurons each session opens in turn")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds a run may take before it is an error")
    parser.add_argument("--markdown", type=Path, help="also write the results as a Markdown table to this file")
    parser.add_argument("--config", action="append", default=[], metavar="OPTION=VALUE",
                        help="a Streamlit config option for both servers, e.g. runner.postScriptGC=false")
    parser.add_argument("--neurons", choices=("explained", "all"), default="explained", help="explained: open "
                        "neurons that have an explanation first (what a class is shown; the rest after them); all: "
                        "spread over every neuron")
    args = parser.parse_args(argv)
    args.sessions = [int(value) for value in args.sessions.split(",")]
    args.patterns = [value.strip() for value in args.patterns.split(",")]
    args.modes = [value.strip() for value in args.modes.split(",")]
    args.pages = [value.strip().strip("/") for value in args.pages.split(",")]
    args.expect = args.expect or None
    for value in args.patterns:
        if value not in ("same", "different"):
            parser.error(f"--patterns: {value!r} is neither 'same' nor 'different'")
    return checked_modes_and_cache(parser, args)


def checked_modes_and_cache(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.Namespace:
    """`args` once its --modes and --cache are usable (else the parser's error and exit)."""
    for value in args.modes:
        if value not in ("new", "kept"):
            parser.error(f"--modes: {value!r} is neither 'new' nor 'kept'")
    if not args.cache.is_file():
        parser.error(f"--cache {args.cache}: no such file (build one with `python -m core build`)")
    return args


@contextlib.contextmanager
def servers(app: Path, cache: Path, folder: Path, options: Sequence[str] = ()) -> Iterator[tuple[Server, Server]]:
    """The app on `cache` and the floor app, both running; NEURON_ATLAS_HOME is a fresh one under `folder`."""
    from harness import atlas_home

    env = {"NEURON_ATLAS_CACHE": str(cache), "NEURON_ATLAS_HOME": str(atlas_home(folder / "home"))}
    with serve(app, env, folder / "app.log", options=options) as app_server, serve(
            FLOOR_APP, env, folder / "floor.log", options=options) as floor:
        yield app_server, floor


def run_loop(coroutine: Coroutine[object, object, T]) -> T:
    """Run `coroutine` on a new event loop in a thread of its own: the caller's thread may already run a loop (a
    test process that drives a browser through playwright's sync API does), and asyncio.run refuses to nest."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def warm_up(app: Server, floor: Server, args: argparse.Namespace, neurons: Neurons) -> None:
    """Open every page once on both servers, uncounted (`warm`)."""
    warm([target for index, page in enumerate(args.pages)
          for target in (Target(app, page, args.query, args.expect),
                         Target(floor, FLOOR_PAGES[index % len(FLOOR_PAGES)], args.query, args.expect))],
         neurons, args.timeout)


def warm(targets: Sequence[Target], neurons: Neurons, timeout_s: float) -> None:
    """Open each target once on a neuron of its own, uncounted: the first run of a page in a server pays one-time
    costs (imports, resources cached for all sessions) that no measurement should carry."""
    async def once() -> None:
        for target in targets:
            error = await _open_once(target, neurons.take(1)[0], timeout_s)
            if error:
                raise RuntimeError(f"warm-up of {target.page or 'the default page'} failed: {error}")

    run_loop(once())


def benchmark(args: argparse.Namespace, folder: Path, report: bool = True) -> list[Measurement]:
    """Serve the app and the floor app, measure every combination in `args`, stop both; logs go to `folder`."""
    cache = args.cache.resolve()
    neurons = cache_neurons(cache, args.neurons == "explained")
    if report:
        print(f"cache {cache}: {neurons.layers} x {neurons.width} neurons, {len(neurons.first)} of them explained "
              f"and opened first; pages {args.pages}; {args.steps} neurons per session")
        print(f"before: {load_average()}; config {args.config or 'as in .streamlit/config.toml'}", flush=True)
    with servers(args.app, cache, folder, args.config) as (app, floor):
        warm_up(app, floor, args, neurons)
        if report:
            print(f"\n{'n':>4} {'pattern':<9} {'mode':<4} {'page':<10} {HEADER}         {HEADER}", flush=True)
        return measure(app, floor, args, neurons, report)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        with tempfile.TemporaryDirectory(prefix="loadbench-") as folder:
            found = benchmark(args, Path(folder))
    except RuntimeError as error:  # a server that does not start, a page that cannot be opened at all
        print(f"bench/load.py: {error}", file=sys.stderr)
        return 2
    print("\n".join(ratios(found)))
    print(f"\nafter: {load_average()}")
    if args.markdown:
        args.markdown.write_text("\n".join(markdown(found)) + "\n")
        print(f"Markdown table: {args.markdown}")
    return 1 if any(m.app.errors or m.floor.errors for m in found) else 0


if __name__ == "__main__":
    raise SystemExit(main())
