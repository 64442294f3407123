"""Benchmark of the recorder (issue 2): overhead against bare forward passes, memory for N and 2N tokens.

    .venv/bin/python bench/record.py [--tokens 50000] [--model smollm2-135m] [--batch-size 16]

Each measurement runs in a fresh process (so peak memory is that run's own), on the same stdlib tokens and
batch size, and the ratios are computed from numbers measured in this one run:
- overhead = build time (record + write the cache, model already loaded) / bare forward time (full model
  with LM head, no hooks), and also against the decoder-only forward the recorder itself runs;
- memory = peak RSS of a build of 2N tokens / of N tokens.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def measure(mode: str, model: str, tokens: int, batch_size: int) -> dict[str, float]:
    """Run in a child process: one forward-only pass or one full build; print JSON."""
    import torch

    from core.corpus import build_corpus
    from core.models import load_model, run_decoder
    from core.record import BuildPlan, RecordConfig, record_corpus

    subject = load_model(model)
    corpus = build_corpus("stdlib", subject.tokenizer, max_tokens=tokens)
    ids = corpus.token_ids.astype("int64")
    result: dict[str, float] = {"tokens": float(ids.size)}
    if mode == "forward":
        with torch.inference_mode():
            start = time.perf_counter()
            for i in range(0, len(ids), batch_size):
                subject.model(torch.from_numpy(ids[i : i + batch_size]))
            result["full_forward_s"] = time.perf_counter() - start
            start = time.perf_counter()
            for i in range(0, len(ids), batch_size):
                run_decoder(subject, torch.from_numpy(ids[i : i + batch_size]))
            result["decoder_forward_s"] = time.perf_counter() - start
    else:
        with tempfile.TemporaryDirectory() as tmp:
            cache = Path(tmp) / "bench.duckdb"
            plan = BuildPlan(model=model, corpus="stdlib", tokens=tokens, excerpt_len=64, settings={})
            cfg = RecordConfig(batch_size=batch_size, checkpoint_seconds=1e9)
            start = time.perf_counter()
            summary = record_corpus(subject, lambda: corpus, cache, plan, cfg, progress=False)
            result["build_s"] = time.perf_counter() - start
            result["build_forward_s"] = summary.forward_seconds
            result["cache_mb"] = cache.stat().st_size / 1e6
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def run_child(mode: str, args: argparse.Namespace, tokens: int) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", mode, "--model", args.model, "--tokens", str(tokens),
         "--batch-size", str(args.batch_size)],
        capture_output=True, text=True, check=True, cwd=ROOT,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--tokens", type=int, default=50_000, help="N; the memory check also builds 2N")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--child", choices=["forward", "build"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.model, args.tokens, args.batch_size)))
        return

    n = args.tokens
    forward = run_child("forward", args, n)
    build_n = run_child("build", args, n)
    build_2n = run_child("build", args, 2 * n)
    tokens = build_n["tokens"]
    print(f"model {args.model}, stdlib corpus, batch {args.batch_size} x 64 tokens, N = {int(tokens):,} tokens")
    print(f"{'measure':<48}{'value':>14}")
    rows = [
        ("bare forward, full model (s)", forward["full_forward_s"]),
        ("bare forward, decoder only (s)", forward["decoder_forward_s"]),
        ("build: record + write cache (s)", build_n["build_s"]),
        ("  of which forward passes with hooks (s)", build_n["build_forward_s"]),
        ("overhead: build / full forward", build_n["build_s"] / forward["full_forward_s"]),
        ("overhead: build / decoder-only forward", build_n["build_s"] / forward["decoder_forward_s"]),
        ("tokens per second, build", tokens / build_n["build_s"]),
        ("tokens per second, full forward", tokens / forward["full_forward_s"]),
        ("peak RSS, build of N (MB)", build_n["peak_rss_mb"]),
        (f"peak RSS, build of 2N = {int(build_2n['tokens']):,} (MB)", build_2n["peak_rss_mb"]),
        ("memory: 2N / N", build_2n["peak_rss_mb"] / build_n["peak_rss_mb"]),
        ("peak RSS, forward only (MB)", forward["peak_rss_mb"]),
        ("cache size for N (MB)", build_n["cache_mb"]),
    ]
    for name, value in rows:
        print(f"{name:<48}{value:>14.3f}")


if __name__ == "__main__":
    main()
