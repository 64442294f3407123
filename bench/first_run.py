"""The first run as a new user has it: `make app` in a fresh clone, timed to the first page and to the whole demo.

    python bench/first_run.py [--branch BRANCH] [--keep]

Clones this checkout's BRANCH (default: the current one) into a new folder, and runs `make app` there with a new
virtual environment (pip installs from the registry, pip's own cache off), a new NEURON_ATLAS_HOME (so the default
model is converted from its GGUF as on a new machine) and a headless Streamlit on a free port. It times:

- each step `make app` prints (install, recording, first-page explanations, start of the background fill);
- the server's health endpoint answering;
- the first page: Debian's chromium opens /insights?layer=0&neuron=0 and finds neuron 0:0's best explanation and
  its score (read from the cache), with no "not computed" line for it;
- the sidebar showing the fill's progress while it runs, and each step of the fill finishing (NAME.fill.json);
- the whole demo filled in, and then a related page of a deep layer showing its tables.

The machine's load average is printed beside each time: on a shared machine the absolute times are not an idle
laptop's. Everything it started is stopped at the end; the clone is removed unless --keep.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "browser"))

from harness import free_port, launch, wait_ready  # noqa: E402

CACHE = "caches/smollm2-135m-stdlib.duckdb"
MARKS = {
    "setup done": re.compile(r"== 1/3"),
    "recording done": re.compile(r"recorded \d+ layers"),
    "first-page explanations done": re.compile(r"== 3/3|demo cache ready"),
    "streamlit started": re.compile(r"You can now view|Local URL"),
}


def load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


class Timeline:
    """Seconds since the start of `make app` for each named moment, with the load average then."""

    def __init__(self) -> None:
        self.start = time.monotonic()
        self.rows: list[tuple[str, float, str]] = []
        self._lock = threading.Lock()

    def mark(self, name: str) -> None:
        with self._lock:
            if all(row[0] != name for row in self.rows):
                self.rows.append((name, time.monotonic() - self.start, load()))
                print(f"{self.rows[-1][1]:8.1f} s  {name}  (load {self.rows[-1][2]})", flush=True)


def follow(log: Path, timeline: Timeline, stop: threading.Event) -> None:
    """Mark the moments `make app` prints, as it prints them."""
    done = 0
    while not stop.is_set():
        text = log.read_text(errors="replace") if log.exists() else ""
        lines = re.split(r"[\r\n]", text)[:-1]  # complete lines only (progress bars end theirs with \r)
        for line in lines[done:]:
            for name, pattern in MARKS.items():
                if pattern.search(line):
                    timeline.mark(name)
        done = len(lines)
        time.sleep(0.2)


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
            return response.read().decode().strip() == "ok"
    except OSError:
        return False


def best_explanation(clone: Path, layer: int, neuron: int) -> tuple[str, str] | None:
    """(text, score as pages show it) of a neuron's best explanation in the clone's cache, read with this
    checkout's core (read-only)."""
    from core.score import format_score
    from core.store import open_reader
    from core.types import NeuronId

    with open_reader(clone / CACHE) as reader:
        found = [r for r in reader.explanations(NeuronId(layer, neuron)) if r.text]
    return (found[0].text, format_score(found[0].score_all)) if found else None


def page_text(browser, url: str) -> str:
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        page.goto(url)
        wait_ready(page, timeout_ms=300_000)
        page.wait_for_selector("[data-testid='stMainBlockContainer'] h1", timeout=300_000)
        page.wait_for_timeout(500)
        wait_ready(page, timeout_ms=300_000)
        return page.inner_text("body")
    finally:
        page.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--branch", help="branch to clone (default: the current one)")
    parser.add_argument("--keep", action="store_true", help="keep the clone (and its caches) afterwards")
    parser.add_argument("--timeout", type=float, default=7200, help="give up after this many seconds")
    args = parser.parse_args()
    branch = args.branch or subprocess.run(["git", "branch", "--show-current"], cwd=ROOT, capture_output=True,
                                           text=True, check=True).stdout.strip()
    work = Path(tempfile.mkdtemp(prefix="first-run-"))
    clone, home, log = work / "clone", work / "home", work / "make-app.log"
    subprocess.run(["git", "clone", "-q", "--branch", branch, "--single-branch", str(ROOT), str(clone)], check=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    path = [p for p in os.environ.get("PATH", "").split(os.pathsep) if ".venv" not in p]
    env = {**{k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "NEURON_ATLAS_CACHE")},
           "PATH": os.pathsep.join(path), "NEURON_ATLAS_HOME": str(home), "PIP_NO_CACHE_DIR": "1",
           "STREAMLIT_SERVER_HEADLESS": "true", "STREAMLIT_SERVER_PORT": str(port),
           "STREAMLIT_SERVER_ADDRESS": "127.0.0.1", "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false"}
    print(f"make app in {clone} (branch {branch}), {os.cpu_count()} CPUs, load {load()}", flush=True)
    timeline = Timeline()
    stop = threading.Event()
    with log.open("w") as out:
        make = subprocess.Popen(["make", "app"], cwd=clone, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    follower = threading.Thread(target=follow, args=(log, timeline, stop), daemon=True)
    follower.start()
    deadline = time.monotonic() + args.timeout
    code = 1
    try:
        from playwright.sync_api import sync_playwright

        while not healthy(url):
            if make.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"make app ended or timed out before the server answered:\n"
                                   f"{log.read_text()[-3000:]}")
            time.sleep(0.5)
        timeline.mark("server healthy")
        expected = best_explanation(clone, 0, 0)
        if expected is None:
            raise RuntimeError("neuron 0:0 has no explanation when the server answers")
        with sync_playwright() as playwright:
            browser = launch(playwright)
            text = page_text(browser, f"{url}/insights?layer=0&neuron=0")
            explanation, score = expected
            # (the related tokens further down may still be computing: only the explanation's line counts here)
            shown = explanation[:40] in text and score in text and "explanation of this neuron: not" not in text
            timeline.mark("first page: 0:0 explained and scored in the browser" if shown else
                          "first page shown WITHOUT 0:0's explanation and score")
            print(f"          0:0: {explanation!r} score {score}; the fill's progress in the sidebar: "
                  f"{'The demo is filling in' in text}", flush=True)
            record = clone / CACHE.replace(".duckdb", ".fill.json")
            finished_steps: set[str] = set()
            last_report = time.monotonic()
            while time.monotonic() < deadline:
                data = json.loads(record.read_text()) if record.exists() else None
                for step in (data or {}).get("steps", []):
                    if step["done"] >= step["total"] and step["name"] not in finished_steps:
                        finished_steps.add(step["name"])
                        timeline.mark(f"fill: {step['name']} done")
                if data and (data["finished"] or data["error"]):
                    break
                if data and time.monotonic() - last_report > 300:
                    last_report = time.monotonic()
                    shares = ", ".join(f"{s['name']} {s['done']}/{s['total']}" for s in data["steps"])
                    print(f"{time.monotonic() - timeline.start:8.1f} s  fill: {shares}  (load {load()})", flush=True)
                time.sleep(2)
            if not data or not data["finished"]:
                raise RuntimeError(f"the fill did not finish: {data and data['error']}")
            timeline.mark("whole demo filled in")
            text = page_text(browser, f"{url}/related?layer=20&neuron=7")
            print(f"          related page of 20:7 after the fill: tables shown "
                  f"{'Upstream: feed it positively' in text}, 'still being computed' shown "
                  f"{'still being computed' in text}", flush=True)
            browser.close()
        code = 0 if shown else 1
    finally:
        stop.set()
        if make.poll() is None:
            os.killpg(make.pid, signal.SIGTERM)  # make and the streamlit it started (their own session)
            make.wait(timeout=30)
        record = clone / CACHE.replace(".duckdb", ".fill.json")
        fill = json.loads(record.read_text()) if record.exists() else None
        if fill and not fill["finished"] and not fill["error"]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(fill["pid"]), signal.SIGTERM)  # the fill make app started, still running
        print("\nmoment | seconds from `make app` | load average (1, 5, 15 min)\n---|---|---")
        for name, seconds, then in timeline.rows:
            print(f"{name} | {seconds:.0f} | {then}")
        print(f"\nlog: {log}")
        if not args.keep:
            shutil.rmtree(clone, ignore_errors=True)
            shutil.rmtree(home, ignore_errors=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
