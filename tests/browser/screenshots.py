"""Write a screenshot of every dashboard page for the README: `python tests/browser/screenshots.py --cache CACHE`.

Starts `streamlit run app.py` on the cache (127.0.0.1, a free port), opens each page on one neuron in Debian's
chromium and saves docs/screenshots/<page>.png (with --lang tr: <page>-tr.png, the dashboard in Turkish). By default
the neuron is the best-explained one of layer 0 (or layer 0, neuron 0 when nothing is explained).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from harness import ROOT, atlas_home, launch, run_app, wait_ready

from core.store import open_reader
from core.types import NeuronId

PAGES = [
    ("home", ""),
    ("picker", "picker"),
    ("insights", "insights"),
    ("scoring", "scoring"),
    ("related", "related"),
    ("try", "try_text"),
]
"""(file name, URL path) of each page to capture."""


def pick_neuron(cache: Path) -> NeuronId:
    """The best-scored neuron of layer 0, else 0:0."""
    with open_reader(cache) as reader:
        rows = reader.neuron_table(layer=0, order="score", scored_only=True, limit=1)
    return rows[0].neuron if rows else NeuronId(0, 0)


def capture(cache: Path, out: Path, neuron: NeuronId, height: int, lang: str = "en") -> list[Path]:
    """Save one PNG per page into `out`; returns their paths."""
    from playwright.sync_api import sync_playwright

    out.mkdir(parents=True, exist_ok=True)
    saved = []
    with tempfile.TemporaryDirectory() as folder:
        home = atlas_home(Path(folder))
        with run_app(cache, home, home / "server.log") as server, sync_playwright() as playwright:
            _visit(server.url, launch(playwright), out, neuron, height, saved, lang)
    return saved


def _visit(url: str, browser, out: Path, neuron: NeuronId, height: int, saved: list[Path], lang: str) -> None:
    """Open each page on `neuron` and save its screenshot (the try page after one run of the model)."""
    from dashboard.i18n import translate

    page = browser.new_page(viewport={"width": 1400, "height": height}, locale="en-US")
    suffix = "" if lang == "en" else f"-{lang}"
    for name, path in PAGES:
        page.goto(f"{url}/{path}?layer={neuron.layer}&neuron={neuron.neuron}&lang={lang}")
        wait_ready(page)
        if name == "try":
            page.get_by_role("button", name=translate("Run the model", lang)).click()
            page.locator(".na-heatmap").first.wait_for(timeout=180_000)
            wait_ready(page)
        if name == "related":  # the listed neurons' explanations, made in the background, not their placeholders
            pending = translate("(being explained by the offline default …)", lang)
            page.get_by_text(pending).first.wait_for(state="detached", timeout=300_000)
            wait_ready(page)
        target = out / f"{name}{suffix}.png"
        page.screenshot(path=str(target))
        saved.append(target)
        print(f"wrote {target}")
    browser.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, required=True, help="the cache to show")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    parser.add_argument("--neuron", help="LAYER:NEURON to show (default: the best-explained of layer 0)")
    parser.add_argument("--height", type=int, default=1600, help="viewport height in pixels")
    parser.add_argument("--lang", default="en", help="the dashboard's language (en, tr); not en: files <page>-LANG.png")
    args = parser.parse_args()
    neuron = NeuronId.parse(args.neuron) if args.neuron else pick_neuron(args.cache)
    capture(args.cache.resolve(), args.out, neuron, args.height, args.lang)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
