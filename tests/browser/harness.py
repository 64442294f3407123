"""Run the dashboard for real and drive it with Debian's chromium: shared by the browser tests, the screenshot
script and bench/app.py.

`streamlit run app.py` starts on 127.0.0.1 and a free port; readiness is checked the way Streamlit's own Playwright
tests do it (health endpoint, then the app connected, the script finished and no skeleton left).
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
"""The repository root (where app.py is)."""

CHROMIUM = "/usr/bin/chromium"
"""Debian's chromium (`apt-get install -y chromium`); playwright cannot download browsers here."""

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    """A running `streamlit run app.py`."""

    url: str
    process: subprocess.Popen
    log: Path


@contextlib.contextmanager
def run_app(cache: Path, home: Path, log: Path, timeout_s: float = 120.0, env: dict[str, str] | None = None
            ) -> Iterator[Server]:
    """Start the dashboard on `cache` (NEURON_ATLAS_CACHE) with NEURON_ATLAS_HOME=`home`; stop it afterwards."""
    port = free_port()
    environment = {**os.environ, "NEURON_ATLAS_CACHE": str(cache), "NEURON_ATLAS_HOME": str(home), **(env or {})}
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"), "--server.port", str(port),
             "--server.address", "127.0.0.1", "--server.headless", "true", "--browser.gatherUsageStats", "false"],
            cwd=ROOT, env=environment, stdout=out, stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, process, timeout_s, log)
        yield Server(url, process, log)
    finally:
        stop(process)


def stop(process: subprocess.Popen) -> None:
    """Stop a server the tests started: SIGTERM, then SIGKILL if it has not exited within 15 s."""
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def wait_healthy(url: str, process: subprocess.Popen, timeout_s: float, log: Path) -> None:
    """Poll /_stcore/health until it answers "ok" (RuntimeError with the server log if it dies or times out)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"streamlit exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        with contextlib.suppress(OSError), urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
            if response.read().decode().strip() == "ok":
                return
        time.sleep(0.2)
    raise RuntimeError(f"streamlit did not become healthy in {timeout_s:.0f} s:\n{log.read_text()[-3000:]}")


def wait_ready(page, timeout_ms: float = 60_000) -> None:
    """Wait until the app is connected, its script has finished and no skeleton placeholder is left."""
    page.wait_for_selector("[data-testid='stApp'][data-test-connection-state='CONNECTED']", timeout=timeout_ms)
    # a rerun may start a moment after an interaction: let it begin before waiting for its end
    page.wait_for_timeout(150)
    page.wait_for_selector("[data-testid='stApp'][data-test-script-state='notRunning']", timeout=timeout_ms)
    page.wait_for_function("!document.querySelector(\"[data-testid='stSkeleton']\")", timeout=timeout_ms)


def launch(playwright):
    """Debian's chromium through playwright, with the flags this machine needs."""
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


def atlas_home(folder: Path) -> Path:
    """A NEURON_ATLAS_HOME for a test or bench run: its own last-cache file, the already converted default model
    linked in (so nothing is converted again)."""
    from core.models import model_home

    folder.mkdir(parents=True, exist_ok=True)
    real = model_home() / "smollm2-135m"
    link = folder / "smollm2-135m"
    if real.is_dir() and not link.exists() and real.resolve() != link.resolve():
        link.symlink_to(real.resolve(), target_is_directory=True)
    return folder
