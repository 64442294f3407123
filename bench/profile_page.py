"""Where a page run's CPU goes (issue 13), measured inside the real server.

    .venv/bin/python bench/profile_page.py --cache COPY.duckdb [--pages insights,scoring,related] [--runs 5]
    .venv/bin/python bench/profile_page.py --cache COPY.duckdb --gc-freeze    # gc.freeze() after the first run
    .venv/bin/python bench/profile_page.py --cache COPY.duckdb --app bench/floor_app/app.py --pages second

`streamlit run app.py` is started through this file (`--serve`), which wraps Streamlit's ScriptRunner._run_script:
every script run records its thread's CPU time and the CPU time its thread spent in Python's garbage collector
(gc.callbacks), and while the flag file PROFILE is in the output folder a sampler thread reads the script
thread's stack about every millisecond, each sample weighted by the CPU time the thread used since the last one.
The websocket client of bench/load.py opens each page as a new session, on neurons nobody opened before (those
with an explanation first), with one idle session connected throughout (when the last session leaves, Streamlit
drops its compiled scripts, which a class never sees):
1. one run per page to warm up (imports, the store opened once for every session);
2. `--runs` runs per page unsampled: wall time, the server process's CPU, the script thread's CPU and its
   garbage collection, the bytes sent to the browser;
3. `--runs` more, sampled: the script thread's CPU split by where our code (app.py, components.py, pages/,
   dashboard/) calls out: the store (DuckDB and building rows), st.* elements (by function, and whether Altair or
   pandas/Arrow work runs under them), Altair, and our own Python (building HTML and strings, with the standard
   library and builtins it calls). Shares of the sampled runs are applied to the unsampled runs' CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import load  # noqa: E402  (bench/load.py: the websocket client and the server starter)

ROOT = load.ROOT
OURS = (str(ROOT / "app.py"), str(ROOT / "components.py"), str(ROOT / "pages"), str(ROOT / "dashboard"))
"""Files whose code is the dashboard's own (dashboard/ is where the restructured dashboard may live)."""
CORE = str(ROOT / "core") + "/"


# --- inside the server ------------------------------------------------------------------------------------------

SAMPLE_S = 0.001
"""Seconds between two samples of a profiled script thread's stack."""


def bucket(stack: list[tuple[str, str]]) -> tuple[str, str]:
    """Where a sample of the script thread belongs, from its stack (file, function), outermost first: the
    innermost frame of our code and what it called (a library function, by its module; for Streamlit, the st.*
    function and whether Altair or pandas/Arrow work runs under it). The second item is the innermost function."""
    leaf = f"{Path(stack[-1][0]).name}:{stack[-1][1]}" if stack else "?"
    inner = max((index for index, (file, _) in enumerate(stack) if file.startswith(OURS)), default=None)
    if inner is None:
        runner = next((function for file, function in reversed(stack) if file.endswith("script_runner.py")), "?")
        return f"Streamlit: the run around our script ({runner})", leaf
    if inner == len(stack) - 1:
        return "our Python: own lines", leaf
    file, function = stack[inner + 1]
    deeper = [name for name, _ in stack[inner + 1:]]
    if file.startswith(CORE):
        if file.endswith("store.py") or "/store/" in file:
            return f"store.{function}: DuckDB and rows", leaf
        return f"core.{Path(file).stem}.{function}", leaf
    if "/site-packages/streamlit/" in file:
        # st.* functions are wrapped (metrics, caching): name the call by the first frame that is not a wrapper
        named = next((f"{Path(name).stem}.{func}" for name, func in stack[inner + 1:]
                      if "/site-packages/streamlit/" in name and func not in STREAMLIT_WRAPPERS), function)
        if any("/altair/" in name or "/jsonschema/" in name for name in deeper):
            return f"st {named}: Altair to_dict and validation", leaf
        if any("/pandas/" in name or "/pyarrow/" in name for name in deeper):
            return f"st {named}: pandas and Arrow", leaf
        return f"st {named}: Streamlit", leaf
    for library in ("altair", "pandas", "numpy", "duckdb"):
        if f"/site-packages/{library}/" in file:
            return f"{library} called by our code", leaf
    if "site-packages" in file:
        return "other libraries called by our code", leaf
    return "our Python: standard library it calls", leaf


STREAMLIT_WRAPPERS = {"wrapped_func", "wrapper", "__call__", "__enter__", "__exit__", "_call", "wrap"}
"""Streamlit's decorator frames between our call and the st.* function itself."""


class GarbageClock:
    """CPU seconds each thread has spent in Python's garbage collector (gc.callbacks run in the collecting thread:
    Streamlit's own gc.collect(2) after every script run, runner.postScriptGC, and the automatic collections)."""

    def __init__(self) -> None:
        self.spent: dict[int, float] = defaultdict(float)
        self.started: dict[int, float] = {}
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict) -> None:
        ident = threading.get_ident()
        if phase == "start":
            self.started[ident] = time.thread_time()
        elif ident in self.started:
            self.spent[ident] += time.thread_time() - self.started.pop(ident)


class Sampler:
    """Samples the stacks of registered script threads about every SAMPLE_S; each sample weighs the CPU time the
    thread used since its previous sample (its own CPU clock, less its garbage collection, which is counted apart),
    so time spent waiting (for the GIL, for I/O) is not counted. Runs only while a thread is registered."""

    def __init__(self, garbage: GarbageClock) -> None:
        self.garbage = garbage
        self.lock = threading.Lock()
        self.threads: dict[int, tuple[Counter, int, list[float]]] = {}
        self.wake = threading.Event()
        threading.Thread(target=self._loop, name="page-sampler", daemon=True).start()

    def _spent(self, ident: int, clock: int) -> float:
        """The thread's CPU seconds outside the garbage collector (a collection in progress included)."""
        now = time.clock_gettime(clock)
        collecting = self.garbage.started.get(ident)
        return now - self.garbage.spent[ident] - (now - collecting if collecting is not None else 0.0)

    def start(self, ident: int) -> Counter:
        counts: Counter = Counter()
        clock = time.pthread_getcpuclockid(ident)
        with self.lock:
            self.threads[ident] = (counts, clock, [self._spent(ident, clock)])
            sys.setswitchinterval(SAMPLE_S / 2)  # so the sampler gets the GIL between two samples
        self.wake.set()
        return counts

    def stop(self, ident: int) -> None:
        """Unregister (from the sampled thread itself); its CPU time since the last sample is marked unsampled."""
        with self.lock:
            counts, clock, last = self.threads.pop(ident)
            counts[(UNSAMPLED, "")] += self._spent(ident, clock) - last[0]
            if not self.threads:
                sys.setswitchinterval(0.005)
                self.wake.clear()

    def _loop(self) -> None:
        while True:
            self.wake.wait()
            time.sleep(SAMPLE_S)
            frames = sys._current_frames()
            with self.lock:
                for ident, (counts, clock, last) in self.threads.items():
                    spent = self._spent(ident, clock)
                    weight, last[0] = spent - last[0], spent
                    frame, stack = frames.get(ident), []
                    while frame is not None:
                        stack.append((frame.f_code.co_filename, frame.f_code.co_name))
                        frame = frame.f_back
                    counts[bucket(stack[::-1])] += weight


UNSAMPLED = "Streamlit: after the last sample (the run's end)"
GARBAGE = "Python's garbage collector (Streamlit's gc.collect(2) after each run, and automatic ones)"


def serve(out: Path, streamlit_args: list[str]) -> None:
    """Run `streamlit ARGS` in this process with every script run measured (and sampled while out/PROFILE
    exists): one JSON line per run in out/runs.jsonl."""
    from streamlit.runtime.scriptrunner.script_runner import ScriptRunner
    from streamlit.web import cli

    original = ScriptRunner._run_script
    count = iter(range(1_000_000))
    freeze = os.environ.pop("PROFILE_GC_FREEZE", "") == "1"
    garbage = GarbageClock()
    sampler = Sampler(garbage)

    def measured(self: ScriptRunner, rerun_data) -> None:  # type: ignore[no-untyped-def]
        number = next(count)
        ident = threading.get_ident()
        counts = sampler.start(ident) if (out / "PROFILE").exists() else None
        cpu, wall, collected = time.thread_time(), time.perf_counter(), garbage.spent[ident]
        try:
            original(self, rerun_data)
        finally:
            cpu, wall = time.thread_time() - cpu, time.perf_counter() - wall
            collected = garbage.spent[ident] - collected
            if counts is not None:
                sampler.stop(ident)
                counts[(GARBAGE, "")] += collected
            if freeze and number == 0:
                gc.freeze()  # what an app can do once its imports are done: the collector skips those objects
            record = {"run": number, "page": rerun_data.page_name, "query": rerun_data.query_string,
                      "thread_cpu_s": cpu, "gc_cpu_s": collected, "wall_s": wall,
                      "samples": [[where, leaf, seconds] for (where, leaf), seconds in (counts or {}).items()]}
            with (out / "runs.jsonl").open("a") as file:
                file.write(json.dumps(record) + "\n")

    ScriptRunner._run_script = measured  # type: ignore[method-assign]
    sys.argv = ["streamlit", *streamlit_args]
    cli.main()


# --- the driver -------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def profiled_server(app: Path, cache: Path, folder: Path, options: list[str], freeze: bool
                    ) -> Iterator[load.Server]:
    """The app served through serve() above (the same flags as bench/load.py's servers)."""
    from harness import atlas_home

    env = {"NEURON_ATLAS_CACHE": str(cache), "NEURON_ATLAS_HOME": str(atlas_home(folder / "home")),
           "PROFILE_GC_FREEZE": "1" if freeze else ""}
    launcher = [str(Path(__file__).resolve()), "--serve", str(folder)]
    with load.serve(app, env, folder / "server.log", launcher=launcher, options=options) as server:
        yield server


def records(folder: Path) -> list[dict]:
    path = folder / "runs.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


async def one_run(server: load.Server, page: str, query: str, expect: str | None) -> tuple[float, float, int]:
    """One page opened as a new session: (wall seconds, server CPU seconds, bytes received)."""
    session = load.Session(server.url, 300)
    await session.connect()
    try:
        cpu = server.cpu_seconds()
        started = time.perf_counter()
        error = await session.run(page, query, expect)
        wall = time.perf_counter() - started
        if error:
            raise RuntimeError(f"{page}?{query}: {error}")
        return wall, server.cpu_seconds() - cpu, session.received
    finally:
        await session.close()


def kind(place: str) -> str:
    """The coarse kind of a place (for the summary line): what caching could or could not remove."""
    if place == GARBAGE:
        return "garbage collection"
    if place.startswith("store."):
        return "DuckDB and rows (store)"
    if place.startswith("our Python"):
        return "our Python (HTML, strings)"
    if place.startswith("altair") or "Altair" in place:
        return "Altair (chart object, to_dict, validation)"
    if place.startswith("st html."):
        return "st.html (dedent, serialise and hash, enqueue)"
    if place.startswith("st "):
        return "other st.* elements (incl. pandas/Arrow for tables)"
    if place.startswith("Streamlit"):
        return "Streamlit around the script"
    return "pandas, numpy, core called by our code"


def report(page: str, plain: list[tuple[float, float, int, dict]], profiled: list[dict], top: int,
           opened: bool = False) -> None:
    """Print one page's measurements and where its script time went."""
    def median(values: Iterator[float]) -> float:
        return statistics.median(list(values)) * 1000

    wall, cpu = median(run[0] for run in plain), median(run[1] for run in plain)
    script, collected = median(run[3]["thread_cpu_s"] for run in plain), median(run[3]["gc_cpu_s"] for run in plain)
    size = statistics.median(run[2] for run in plain) / 1024
    which = "a neuron opened before" if opened else "a neuron nobody opened"
    print(f"\n{page}: median of {len(plain)} runs, each a new session on {which}: wall {wall:.0f} ms; "
          f"server CPU {cpu:.0f} ms = script thread {script:.0f} ms (of which garbage collection {collected:.0f} ms) "
          f"+ outside it (Streamlit, background work, explanation workers) {cpu - script:.0f} ms; {size:.0f} KB sent "
          "to the browser")
    where: dict[str, float] = defaultdict(float)
    leaves: dict[tuple[str, str], float] = defaultdict(float)
    for record in profiled:
        for place, leaf, seconds in record["samples"]:
            where[place] += seconds
            leaves[(place, leaf)] += seconds
    total = sum(where.values())
    print(f"  sampled runs: {total / len(profiled) * 1000:.0f} ms of script CPU per run; by where it went (share; ms "
          f"of the unsampled runs' {script:.0f} ms; the innermost function that weighed most):")
    kinds: dict[str, float] = defaultdict(float)
    for place, seconds in where.items():
        kinds[kind(place)] += seconds
    print("  by kind: " + "; ".join(f"{name} {seconds / total * script:.0f} ms"
                                     for name, seconds in sorted(kinds.items(), key=lambda item: -item[1])))
    for place, seconds in sorted(where.items(), key=lambda item: -item[1])[:top]:
        share = seconds / total
        leaf = max((item for item in leaves.items() if item[0][0] == place), key=lambda item: item[1])[0][1]
        print(f"  {share:>6.1%} {share * script:>6.0f} ms  {place:<70} {leaf}")


async def settle(server: load.Server, limit_s: float = 300.0) -> float:
    """Wait until the server uses under a tenth of a core over half a second (its background work done); the
    seconds waited."""
    started = time.monotonic()
    while time.monotonic() - started < limit_s:
        cpu = server.cpu_seconds()
        await asyncio.sleep(0.5)
        if server.cpu_seconds() - cpu < 0.05:
            break
    return time.monotonic() - started


async def profile(server: load.Server, folder: Path, args: argparse.Namespace, pages: list[str],
                  neurons: load.Neurons) -> None:
    """Warm up, then per page: plain runs, then sampled runs (one idle session stays connected throughout: when
    the last session leaves, Streamlit drops its compiled scripts, which a class never sees)."""
    opened: dict[str, tuple[int, int]] = {}

    async def visit(page: str) -> tuple[float, float, int, dict]:
        neuron = opened[page] if args.opened and page in opened else neurons.take(1)[0]
        opened.setdefault(page, neuron)
        query = args.query.format(layer=neuron[0], neuron=neuron[1])
        expect = args.expect.format(layer=neuron[0], neuron=neuron[1]) if args.expect else None
        done = len(records(folder))
        wall, cpu, size = await one_run(server, page, query, expect)
        deadline = time.monotonic() + 10
        while len(records(folder)) <= done and time.monotonic() < deadline:
            await asyncio.sleep(0.05)  # the run's record is written as its script ends
        return wall, cpu, size, records(folder)[-1]

    idle = load.Session(server.url, 300)
    await idle.connect()
    try:
        for page in pages:
            await visit(page)  # imports, the store opened once for every session
        if args.opened:  # the warm-up's related lists are explained in the background: not part of a later run
            print(f"waited {await settle(server):.1f} s for the server to go idle after the warm-up")
        for page in pages:
            plain = [await visit(page) for _ in range(args.runs)]
            (folder / "PROFILE").touch()
            profiled = [(await visit(page))[3] for _ in range(args.runs)]
            (folder / "PROFILE").unlink()
            report(page, plain, profiled, args.top, args.opened)
    finally:
        await idle.close()


def main() -> int:
    if len(sys.argv) > 2 and sys.argv[1] == "--serve":
        serve(Path(sys.argv[2]), sys.argv[3:])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, required=True, help="the cache (its notes file is written beside it)")
    parser.add_argument("--app", type=Path, default=ROOT / "app.py")
    parser.add_argument("--pages", default=",".join(load.DEFAULT_PAGES), help="URL paths of the pages")
    parser.add_argument("--query", default=load.DEFAULT_QUERY, help="query string template ({layer}, {neuron})")
    parser.add_argument("--expect", default=load.DEFAULT_EXPECT, help="heading each run must show ('' = none)")
    parser.add_argument("--runs", type=int, default=5, help="runs per page, without and then with the sampler")
    parser.add_argument("--top", type=int, default=15, help="places shown per page")
    parser.add_argument("--opened", action="store_true", help="every run of a page opens the neuron its warm-up "
                        "opened (what a class following the teacher asks for), not a new one")
    parser.add_argument("--neurons", choices=("explained", "all"), default="explained", help="explained: open "
                        "explained neurons first (as bench/load.py); all: strides over every neuron, most of them "
                        "unexplained (each page run makes the explanation: a class wandering off the planned layers)")
    parser.add_argument("--gc-freeze", action="store_true", help="gc.freeze() in the server after its first run (what "
                        "the app could do after its imports), to see what the collector costs")
    parser.add_argument("--config", action="append", default=[], metavar="OPTION=VALUE",
                        help="a Streamlit config option for the server, e.g. runner.postScriptGC=false")
    args = parser.parse_args()
    pages = [page.strip().strip("/") for page in args.pages.split(",")]
    cache = args.cache.resolve()
    if not cache.is_file():
        parser.error(f"--cache {cache}: no such file (build one with `python -m core build`)")
    neurons = load.cache_neurons(cache, explained_first=args.neurons == "explained")
    print(f"cache {cache}; {load.load_average()}; config {args.config or 'as in .streamlit/config.toml'}"
          f"{'; gc.freeze() after the first run' if args.gc_freeze else ''}")
    try:
        with tempfile.TemporaryDirectory(prefix="profile-") as name, profiled_server(
                args.app, cache, Path(name), args.config, args.gc_freeze) as server:
            asyncio.run(profile(server, Path(name), args, pages, neurons))
    except RuntimeError as error:  # a server that does not start, a page that cannot be opened
        print(f"bench/profile_page.py: {error}", file=sys.stderr)
        return 2
    print(f"\n{load.load_average()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
