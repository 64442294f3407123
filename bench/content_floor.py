"""What Streamlit alone costs to draw a dashboard page's content (issue 13), beside the dashboard and the trivial app.

    .venv/bin/python bench/content_floor.py --cache COPY.duckdb [--sessions 30] [--modes new,kept] [--steps 3]

Issue 13's targets are ratios to a trivial app (a title and a number input). This asks how far below the dashboard
any Streamlit app showing the same pages could go:
1. capture: the dashboard is served through this file (`--serve-capture FOLDER`), which keeps the delta messages
   (elements and containers, the sidebar's too) every script run enqueues; each page is opened twice for one
   explained neuron, and the second run's messages are kept (a neuron somebody opened before);
2. replay: bench/replay_app/app.py sends a page's messages again on every run: nothing of ours runs, nor
   Streamlit's element functions, so a run of it costs less than any app that draws this content can;
3. load: bench/load.py's classroom (all students on one neuron the teacher opened, a burst per step) against the
   dashboard, the replay and the trivial app, the three taking turns at every step; server CPU per run (worker
   processes included) and p50 / p95 seconds, errors.
The replay over the trivial app is the part of the dashboard's cost that belongs to its content in Streamlit;
the dashboard over the replay is what our code and Streamlit's element functions add to it.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import statistics
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import load  # noqa: E402  (bench/load.py: the websocket client, the servers, the classroom)

ROOT_APP = load.ROOT / "app.py"
REPLAY_APP = BENCH / "replay_app" / "app.py"


# --- inside the capturing server -----------------------------------------------------------------------------------


def serve_capture(out: Path, streamlit_args: list[str]) -> None:
    """Run `streamlit ARGS` in this process, appending the delta messages of every whole-page run (base64 of the
    protobuf, as enqueued) with its page and query string to out/messages.jsonl."""
    from streamlit.runtime.scriptrunner.script_runner import ScriptRunner
    from streamlit.runtime.scriptrunner_utils.script_run_context import ScriptRunContext
    from streamlit.web import cli

    kept: dict[int, list[str]] = {}
    run_script, enqueue = ScriptRunner._run_script, ScriptRunContext.enqueue

    def recording_run(self: ScriptRunner, rerun_data) -> None:  # type: ignore[no-untyped-def]
        ident = threading.get_ident()
        kept[ident] = []
        try:
            run_script(self, rerun_data)
        finally:
            messages = kept.pop(ident)
            if not rerun_data.fragment_id_queue:  # a fragment's run redraws part of a page
                record = {"page": rerun_data.page_name, "query": rerun_data.query_string, "messages": messages}
                with (out / "messages.jsonl").open("a") as file:
                    file.write(json.dumps(record) + "\n")

    def recording_enqueue(self: ScriptRunContext, msg) -> None:  # type: ignore[no-untyped-def]
        messages = kept.get(threading.get_ident())
        if messages is not None and msg.WhichOneof("type") == "delta":
            messages.append(base64.b64encode(msg.SerializeToString()).decode())
        enqueue(self, msg)

    ScriptRunner._run_script = recording_run  # type: ignore[method-assign]
    ScriptRunContext.enqueue = recording_enqueue  # type: ignore[method-assign]
    sys.argv = ["streamlit", *streamlit_args]
    cli.main()


# --- the driver ----------------------------------------------------------------------------------------------------


def capture(args: argparse.Namespace, folder: Path, neuron: tuple[int, int]) -> dict[str, list[str]]:
    """Each page's messages from the dashboard's second run of it on `neuron`."""
    from harness import atlas_home

    env = {"NEURON_ATLAS_CACHE": str(args.cache), "NEURON_ATLAS_HOME": str(atlas_home(folder / "capture-home"))}
    launcher = [str(Path(__file__).resolve()), "--serve-capture", str(folder)]

    async def open_pages(server: load.Server) -> None:
        for page in args.pages:
            for _ in range(2):
                error = await load._open_once(load.Target(server, page), neuron, args.timeout)
                if error:
                    raise RuntimeError(f"the dashboard's {page} page on {neuron}: {error}")

    with load.serve(ROOT_APP, env, folder / "capture.log", launcher=launcher) as server:
        load.run_loop(open_pages(server))
    query = load.DEFAULT_QUERY.format(layer=neuron[0], neuron=neuron[1])
    found: dict[str, list[str]] = {}
    for line in (folder / "messages.jsonl").read_text().splitlines():
        record = json.loads(line)
        if record["page"] in args.pages and record["query"] == query:
            found[record["page"]] = record["messages"]  # the last run of the page wins
    missing = [page for page in args.pages if page not in found]
    if missing:
        raise RuntimeError(f"no run of {missing} was captured")
    return found


@contextmanager
def three_servers(args: argparse.Namespace, folder: Path, messages: Path) -> Iterator[dict[str, load.Server]]:
    """The dashboard, the replay of its pages and the trivial app, each on a free port."""
    from harness import atlas_home

    env = {"NEURON_ATLAS_CACHE": str(args.cache), "NEURON_ATLAS_HOME": str(atlas_home(folder / "home")),
           "REPLAY_MESSAGES": str(messages)}
    with ExitStack() as stack:
        yield {name: stack.enter_context(load.serve(script, env, folder / f"{name}.log"))
               for name, script in (("dashboard", ROOT_APP), ("replay", REPLAY_APP), ("trivial", load.FLOOR_APP))}


def targets(servers: dict[str, load.Server], page: str, index: int) -> dict[str, load.Target]:
    """What each server is asked for: the page (the trivial app's two pages in turn); only the dashboard's heading
    names the neuron asked for (the replay shows the captured neuron whatever the query)."""
    return {"dashboard": load.Target(servers["dashboard"], page),
            "replay": load.Target(servers["replay"], page, expect=None),
            "trivial": load.Target(servers["trivial"], load.FLOOR_PAGES[index % len(load.FLOOR_PAGES)])}


def row(measured: Measured) -> str:
    """One Markdown row: CPU per run and times of the three servers, and their ratios."""
    results = measured.results
    cpu = {name: result.cpu_per_run * 1000 for name, result in results.items()}
    p95 = {name: load.quantile(result.times, 0.95) for name, result in results.items()}
    p50 = {name: statistics.median(result.times) for name, result in results.items()}
    errors = sum(len(result.errors) for result in results.values())
    return (f"| {measured.sessions} | {measured.mode} | {measured.page} | "
            f"{cpu['dashboard']:.0f} / {cpu['replay']:.0f} / {cpu['trivial']:.0f} | "
            f"{cpu['replay'] / cpu['trivial']:.1f}x | {cpu['dashboard'] / cpu['replay']:.1f}x | "
            f"{cpu['dashboard'] / cpu['trivial']:.1f}x | "
            f"{p50['dashboard']:.2f} / {p50['replay']:.2f} / {p50['trivial']:.2f} | "
            f"{p95['dashboard']:.2f} / {p95['replay']:.2f} / {p95['trivial']:.2f} | "
            f"{p95['replay'] / p95['trivial']:.1f}x | {p95['dashboard'] / p95['trivial']:.1f}x | {errors} |")


async def drawn(server: load.Server, page: str, neuron: tuple[int, int], timeout_s: float) -> list[str]:
    """What one new session's run of `page` draws, in order: each delta message's kind and element (or block)
    type with its place (delta path), the way a browser would build the page from them."""
    from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

    client = load.StreamClient(server.url, timeout_s)
    await client.connect()
    assert client.socket is not None
    try:
        await client.socket.send(load._rerun_message(page, load.DEFAULT_QUERY.format(layer=neuron[0],
                                                                                      neuron=neuron[1])))
        kinds: list[str] = []
        while True:
            message = ForwardMsg.FromString(await asyncio.wait_for(client.socket.recv(), timeout_s))
            kind = message.WhichOneof("type")
            if kind == "new_session":
                kinds = []
            elif kind == "script_finished":
                return kinds
            elif kind == "delta":
                delta = message.delta.WhichOneof("type")
                inner = message.delta.new_element.WhichOneof("type") if delta == "new_element" else \
                    message.delta.add_block.WhichOneof("type") if delta == "add_block" else ""
                kinds.append(f"{list(message.metadata.delta_path)} {delta} {inner}")
    finally:
        await client.close()


def describe_capture(captured: dict[str, list[str]]) -> list[str]:
    """A line per page: its messages, how many of them are the sidebar's, their bytes."""
    from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

    lines = []
    for page, found in captured.items():
        messages = [ForwardMsg.FromString(base64.b64decode(message)) for message in found]
        sidebar = sum(1 for message in messages if message.metadata.delta_path[:1] == [1])
        size = sum(message.ByteSize() for message in messages)
        lines.append(f"{page}: {len(messages)} messages (elements and containers; {sidebar} of them in the sidebar), "
                     f"{size / 1024:.0f} KB")
    return lines


@dataclass
class Measured:
    sessions: int
    mode: str
    page: str
    results: dict[str, load.Result]
    """dashboard, replay, trivial"""


def prepare(args: argparse.Namespace, folder: Path, report: bool = True
            ) -> tuple[load.Neurons, Path, tuple[int, int]]:
    """Capture the pages on the first explained neuron: the neurons left for the class, the replay's file and the
    captured neuron."""
    neurons = load.cache_neurons(args.cache, explained_first=True)
    neuron = neurons.take(1)[0]
    captured = capture(args, folder, neuron)
    messages = folder / "replay.json"
    messages.write_text(json.dumps(captured))
    if report:
        print("\n".join(describe_capture(captured)))
    return neurons, messages, neuron


def classes(args: argparse.Namespace, servers: dict[str, load.Server], neurons: load.Neurons,
            report: bool = True) -> list[Measured]:
    """Every (sessions, mode, page) of `args` against the three servers, taking turns at every step."""
    if report:
        print(f"before: {load.load_average()}", flush=True)
        print("\n| N | mode | page | CPU ms/run: dashboard / replay / trivial | replay x trivial | dashboard x replay "
              "| dashboard x trivial | p50 s | p95 s | p95 replay x trivial | p95 dashboard x trivial | errors |")
        print("|" + "---|" * 12, flush=True)
    load.warm([target for index, page in enumerate(args.pages) for target in targets(servers, page, index).values()],
              neurons, args.timeout)
    found = []
    for sessions in args.sessions:
        for mode in args.modes:
            for index, page in enumerate(args.pages):
                plan = load.make_plan("same", sessions, args.steps, neurons)
                rooms = {name: load.Classroom(target, plan, mode, True, args.timeout)
                         for name, target in targets(servers, page, index).items()}
                load.run_loop(load.side_by_side(list(rooms.values())))
                measured = Measured(sessions, mode, page, {name: room.result for name, room in rooms.items()})
                found.append(measured)
                if report:
                    print(row(measured), flush=True)
                    for name, result in measured.results.items():
                        for error in sorted(set(result.errors))[:2]:
                            print(f"    {name}: {error}")
    return found


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, required=True, help="a copy of a cache (notes are written beside it)")
    parser.add_argument("--pages", default=",".join(load.DEFAULT_PAGES), help="URL paths of the pages")
    parser.add_argument("--sessions", default="30", help="numbers of simultaneous sessions, comma-separated")
    parser.add_argument("--modes", default="new,kept", help="new (a link opened anew), kept (a rerun of an open "
                        "session)")
    parser.add_argument("--steps", type=int, default=3, help="neurons the class moves through")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds a run may take before it is an error")
    args = parser.parse_args(argv)
    args.cache = args.cache.resolve()
    args.pages = [page.strip().strip("/") for page in args.pages.split(",")]
    args.sessions = [int(value) for value in args.sessions.split(",")]
    args.modes = [value.strip() for value in args.modes.split(",")]
    return load.checked_modes_and_cache(parser, args)


def main() -> int:
    if len(sys.argv) > 2 and sys.argv[1] == "--serve-capture":
        serve_capture(Path(sys.argv[2]), sys.argv[3:])
        return 0
    args = parse_args()
    try:
        with tempfile.TemporaryDirectory(prefix="content-floor-") as name:
            neurons, messages, _ = prepare(args, Path(name))
            with three_servers(args, Path(name), messages) as servers:
                found = classes(args, servers, neurons)
    except RuntimeError as error:  # a server that does not start, a page that cannot be opened
        print(f"bench/content_floor.py: {error}", file=sys.stderr)
        return 2
    print(f"\nafter: {load.load_average()}")
    return 1 if any(result.errors for measured in found for result in measured.results.values()) else 0


if __name__ == "__main__":
    raise SystemExit(main())
