"""Benchmark of `import-openai` and `export --format openai` (issue 12) against the floor of parsing the JSON.

    .venv/bin/python bench/import_openai.py [--neurons 512]

Writes --neurons neurons in OpenAI's layout (the test fixture's records: 20 top, 20 random and 5 x 5 quantile
records of 64 tokens each, every other neuron with a two-explanation file) into a temporary folder, then in one
run: (1) the floor, json.loads of every file; (2) the import (its read and write phases timed apart); (3) an export
of the new cache back to OpenAI's layout. Prints each time as a ratio to the floor, neurons per second, the cache's
bytes per neuron, and the machine load.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from test_interop_openai import neuron_record, simulation_results  # noqa: E402

from core.interop.export_openai import export_openai  # noqa: E402
from core.interop.importer import import_openai  # noqa: E402


def write_fixture(root: Path, neurons: int) -> int:
    """OpenAI's layout for `neurons` neurons of layer 0; returns the bytes written."""
    total = 0
    for n in range(neurons):
        record = neuron_record(0, n, seed=n)
        path = root / "collated-activations" / "0" / f"{n}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record))
        total += path.stat().st_size
        if n % 2 == 0:
            results = simulation_results(0, n, record, ["the word ME", "capital letters"], seed=n + 1)
            path = root / "explanations" / "0" / f"{n}.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(results) + "\n")
            total += path.stat().st_size
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--neurons", type=int, default=512)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        size = write_fixture(root, args.neurons)
        started = time.perf_counter()
        for path in sorted(root.rglob("*.json*")):
            json.loads(path.read_text())
        floor = time.perf_counter() - started

        marks: dict[str, float] = {}

        def progress(description: str, total: int):
            marks[description] = time.perf_counter()
            return lambda done: None

        cache = Path(tmp) / "imported.duckdb"
        started = time.perf_counter()
        import_openai(root, cache, progress=progress)
        imported = time.perf_counter() - started
        read = marks["write"] - marks["read"]
        write = imported - (marks["write"] - started)
        started = time.perf_counter()
        export_openai(cache, Path(tmp) / "export")
        exported = time.perf_counter() - started
        load = os.getloadavg()
        print(f"{args.neurons} neurons, {size / 1e6:.1f} MB of JSON; machine load {load[0]:.1f} {load[1]:.1f} "
              f"{load[2]:.1f} on {os.cpu_count()} cores")
        print(f"floor (json.loads of every file)  {floor:7.2f} s  1.00x")
        print(f"import                             {imported:7.2f} s  {imported / floor:.2f}x  "
              f"({args.neurons / imported:.0f} neurons/s; read {read / floor:.2f}x, write {write / floor:.2f}x)")
        print(f"export --format openai             {exported:7.2f} s  {exported / floor:.2f}x")
        print(f"cache: {cache.stat().st_size / args.neurons / 1e3:.0f} kB per neuron "
              f"({cache.stat().st_size / size:.2f}x the JSON)")


if __name__ == "__main__":
    main()
