"""Which knowledge of words can the offline reader use for families no rule lists ("animals", "colours")?

    .venv/bin/python bench/knowledge.py [--yes-no]

For each family of a fixed word list, every word of the list is scored for membership by all-MiniLM-L6-v2 (cosine
to the family's name; core.offline.knowledge.WordKnowledge) and, with --yes-no, by the default model as a plain-text
yes/no completer. Prints per family the AUC (members against every other word) and the share of words on the right
side of 0.5, then the seconds one family against 100 new words costs (ten 64-token excerpts hold about 250
distinct words, many of them seen before in a run). Both measured in this run; the machine load is printed with
them.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.offline.knowledge import WordKnowledge, YesNoKnowledge

FAMILIES: dict[str, list[str]] = {
    "animals": ["dog", "giraffe", "horse", "eagle", "snake", "whale", "mouse", "tiger"],
    "colours": ["red", "blue", "green", "yellow", "purple", "orange", "black", "white"],
    "countries": ["France", "Japan", "Brazil", "Kenya", "Canada", "India", "Norway", "Egypt"],
    "feelings": ["happy", "sad", "angry", "afraid", "joy", "anxious", "proud", "lonely"],
    "fruits": ["apple", "banana", "cherry", "grape", "lemon", "mango", "pear", "peach"],
    "body parts": ["hand", "knee", "elbow", "shoulder", "finger", "ankle", "nose", "heart"],
    "jobs": ["doctor", "teacher", "lawyer", "farmer", "nurse", "plumber", "pilot", "baker"],
    "vehicles": ["car", "bus", "truck", "bicycle", "train", "boat", "plane", "tractor"],
}
OTHER = ["the", "of", "and", "return", "def", "import", "self", "value", "list", "file", "error", "string",
         "function", "class", "module", "path", "read", "write", "open", "close"]
"""Words of no family: function words and the words of Python code."""


def auc(members: np.ndarray, others: np.ndarray) -> float:
    return float(np.mean([(m > o) + 0.5 * (m == o) for m in members for o in others]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--yes-no", action="store_true", help="also measure the default model as yes/no completer")
    parser.add_argument("--families", type=int, default=len(FAMILIES), help="measure only the first N families")
    args = parser.parse_args()
    methods = {"MiniLM cosine": WordKnowledge()}
    if args.yes_no:
        from core.models import load_model

        methods["SmolLM2 yes/no"] = YesNoKnowledge(load_model("smollm2-135m"))
    words = [w for family in FAMILIES.values() for w in family] + OTHER
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print("| family | " + " | ".join(f"{m} AUC | {m} right side of 0.5" for m in methods) + " |")
    print("|---|" + "---:|---:|" * len(methods))
    results: dict[str, list[tuple[float, float]]] = {m: [] for m in methods}
    for family, members in list(FAMILIES.items())[: args.families]:
        cells = []
        for name, method in methods.items():
            values = method.membership(family, words)
            is_member = np.array([w in members for w in words])
            right = float(np.mean((values >= 0.5) == is_member))
            results[name].append((auc(values[is_member], values[~is_member]), right))
            cells.append(f"{results[name][-1][0]:.2f} | {right:.2f}")
        print(f"| {family} | " + " | ".join(cells) + " |")
    print("| mean | " + " | ".join(f"{statistics.fmean(a for a, _ in r):.2f} | {statistics.fmean(b for _, b in r):.2f}"
                                    for r in results.values()) + " |")
    excerpt_words = [f"w{i}" for i in range(100)]
    for name, method in methods.items():
        if isinstance(method, WordKnowledge):
            method._vectors.clear()
        started = time.perf_counter()
        method.membership("animals", excerpt_words)
        print(f"{name}: {time.perf_counter() - started:.2f} s for one family against 100 new words "
              f"(load average {os.getloadavg()[0]:.1f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
