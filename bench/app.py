"""Benchmark of the dashboard (issue 5): server render time per page, and browser time per neuron change.

    .venv/bin/python bench/app.py --cache caches/smollm2-135m-stdlib.duckdb [--runs 5] [--sessions 1,10]

1. Server: each page is run by streamlit.testing.v1.AppTest for `--runs` different neurons after one warm-up run
   (imports, opening the store), then for the same neurons again; the median and worst time of a first run and
   the median of a repeated one are printed per page. Target: < 300 ms.
2. Browser: `streamlit run app.py` serves the cache; N sessions (N = each of --sessions), as pages of one Debian
   chromium, open a page and then step to the next neuron `--steps` times at the same moment; the time from the
   click to all of the page's panels drawn (the heading shows the new neuron, the script has finished, no
   skeleton is left, the marker after the last panel is there) is collected over all sessions. Target: < 1.5 s
   at 10 sessions.
The notes file of the cache is written by the app (nothing here writes a suggestion or rating); the user's own
NEURON_ATLAS_HOME is left alone (a temporary one is used, with the converted default model linked in).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "browser"))

from harness import CHROMIUM, CHROMIUM_ARGS, atlas_home, run_app  # noqa: E402

from core.types import NeuronId  # noqa: E402

PAGES: dict[str, str] = {
    "home": "",  # the default page: app.py runs pages/home.py
    "picker": "pages/picker.py",
    "insights": "pages/insights.py",
    "scoring": "pages/scoring.py",
    "related": "pages/related.py",
    "try": "pages/try_text.py",
}
"""Page -> its script for AppTest ("" for the default page, the home page)."""

BROWSER_PAGES = ("insights", "scoring", "related")
"""Pages whose neuron change is timed in the browser (the ones that redraw every panel for a neuron)."""


# --- 1. server render time (AppTest) ------------------------------------------------------------------------------


def server_times(cache: Path, runs: int, layers: int, neurons_per_layer: int
                 ) -> dict[str, tuple[list[float], list[float]]]:
    """Seconds per AppTest run of each page, for `runs` neurons spread over the layers: the first time each neuron
    is shown, and again (views cached for every session, dashboard/state.py)."""
    from streamlit.testing.v1 import AppTest

    os.environ["NEURON_ATLAS_CACHE"] = str(cache)
    neurons = [NeuronId((i * 7) % layers, (i * 389) % neurons_per_layer) for i in range(runs)]
    times: dict[str, tuple[list[float], list[float]]] = {}
    for page, script in PAGES.items():
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
        at.run()  # warm-up: imports, store, cached resources
        if script:
            at.switch_page(script).run()
        times[page] = ([], [])
        for shown in times[page]:
            for neuron in neurons:
                at.session_state["layer"], at.session_state["neuron"] = neuron.layer, neuron.neuron
                started = time.perf_counter()
                at.run()
                shown.append(time.perf_counter() - started)
                if at.exception:
                    raise RuntimeError(f"{page} failed: {at.exception[0].value}")
                if script and page != "picker" and not at.title[0].value.startswith(f"Neuron {neuron}"):
                    raise RuntimeError(f"{page} showed {at.title[0].value!r}, not neuron {neuron}")
    return times


# --- 2. browser time from a neuron change to every panel drawn ----------------------------------------------------

DRAWN = """(heading) => {
    const app = document.querySelector("[data-testid='stApp']");
    const h1 = document.querySelector("h1");
    return app && app.getAttribute("data-test-script-state") === "notRunning"
        && !document.querySelector("[data-testid='stSkeleton']")
        && h1 && h1.innerText.startsWith(heading)
        && document.querySelector(".na-end") !== null;
}"""


async def session(browser, url: str, page_name: str, start: tuple[int, int], steps: int, width: int,
                  barrier: asyncio.Barrier, times: list[float]) -> None:
    """One browser session: open the page on `start`, then click "next neuron" `steps` times, timing each."""
    context = await browser.new_context(viewport={"width": 1400, "height": 1000})
    page = await context.new_page()
    layer, neuron = start
    path = PAGES[page_name].removeprefix("pages/").removesuffix(".py")
    await page.goto(f"{url}/{path}?layer={layer}&neuron={neuron}")
    # interval polling: requestAnimationFrame (the default) stalls in pages that are not in front
    await page.wait_for_function(DRAWN, arg=f"Neuron {layer}:{neuron}", timeout=300_000, polling=50)
    for _ in range(steps):
        neuron = (neuron + 1) % width
        await barrier.wait()
        started = time.perf_counter()
        await page.locator(".st-key-nav_next button").first.click()
        await page.wait_for_function(DRAWN, arg=f"Neuron {layer}:{neuron}", timeout=300_000, polling=25)
        times.append(time.perf_counter() - started)
    await context.close()


async def browser_times(url: str, sessions: int, steps: int, width: int) -> dict[str, list[float]]:
    """Seconds from click to drawn, per page, over all sessions and steps."""
    from playwright.async_api import async_playwright

    found: dict[str, list[float]] = {}
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        for page_name in BROWSER_PAGES:
            times: list[float] = []
            barrier = asyncio.Barrier(sessions)
            await asyncio.gather(*(session(browser, url, page_name, (1 + i % 2, 100 * i), steps, width, barrier,
                                           times) for i in range(sessions)))
            found[page_name] = times
        await browser.close()
    return found


# --- report ---------------------------------------------------------------------------------------------------


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, required=True)
    parser.add_argument("--runs", type=int, default=5, help="AppTest runs per page (after one warm-up)")
    parser.add_argument("--sessions", default="1,10", help="concurrent browser sessions to measure, comma-separated")
    parser.add_argument("--steps", type=int, default=3, help="neuron changes per browser session and page")
    parser.add_argument("--skip-browser", action="store_true")
    args = parser.parse_args()
    cache = args.cache.resolve()

    from core.paths import copy_cache
    from core.store import open_reader

    with open_reader(cache) as reader:
        info = reader.info()
    print(f"cache {cache}: {info.model}, {info.layers} x {info.neurons_per_layer:,} neurons, {info.tokens:,} tokens, "
          f"{info.explanations:,} explanations; {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory(dir=cache.parent) as folder:
        home = atlas_home(Path(folder) / "home")
        os.environ["NEURON_ATLAS_HOME"] = str(home)
        # hard links: this process (AppTest) and the server each hold their own notes file beside the cache
        in_process, served = Path(folder) / "apptest.duckdb", Path(folder) / "served.duckdb"
        copy_cache(cache, in_process, link=True)
        copy_cache(cache, served, link=True)
        print("\nserver render time per page (AppTest, one run = frame + page for a new neuron; again: the same "
              "neurons a second time)")
        print(f"{'page':<10} {'median ms':>10} {'max ms':>8} {'again ms':>9}  target < 300 ms")
        for page, (first, again) in server_times(in_process, args.runs, info.layers, info.neurons_per_layer).items():
            median = statistics.median(first) * 1000
            print(f"{page:<10} {median:>10.0f} {max(first) * 1000:>8.0f} {statistics.median(again) * 1000:>9.0f}  "
                  f"{'ok' if median < 300 else 'SLOW'}")
        if args.skip_browser:
            return 0
        print("\nbrowser: click 'next neuron' -> every panel drawn (one chromium, N sessions clicking together)")
        print(f"{'sessions':>8} {'page':<10} {'median s':>9} {'p90 s':>7} {'max s':>7} {'n':>4}  target < 1.5 s")
        with run_app(served, home, Path(folder) / "server.log") as server:
            for count in [int(c) for c in args.sessions.split(",")]:
                results = asyncio.run(browser_times(server.url, count, args.steps, info.neurons_per_layer))
                for page, times in results.items():
                    median = statistics.median(times)
                    print(f"{count:>8} {page:<10} {median:>9.2f} {quantile(times, 0.9):>7.2f} {max(times):>7.2f} "
                          f"{len(times):>4}  {'ok' if median < 1.5 else 'SLOW'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
