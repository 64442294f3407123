"""Benchmark: related tokens and neurons for every neuron of a cache (the default model: 30 x 1536 = 46,080).

    .venv/bin/python bench/related.py [CACHE] [--sample-tokens 2048] [--keep]

Works on a copy of CACHE (the original is not touched) and prints the wall time of the whole run and of each
part, the peak memory of the process, the arithmetic each part did, and the matrix-multiply speed of this
machine measured in the same run, so a number taken on a busy machine can be read against what it had to give.
Target (issue 4): all of the default model in under 10 minutes on 2 cores, peak memory under 4 GB.
"""

from __future__ import annotations

import argparse
import logging
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from core.models import load_model
from core.related import RelatedConfig, check_cache, compute_related, vocab_size
from core.store import open_results_writer

TARGET_SECONDS = 600.0
TARGET_PEAK_GB = 4.0


def peak_rss_gb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def current_rss_gb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**30


def sgemm_gflops(seconds: float = 3.0) -> float:
    """float32 matrix-multiply speed now, on the shapes the run uses ([1536, 576] x [576, 8192])."""
    a, b = torch.randn(1536, 576), torch.randn(576, 8192)
    a @ b
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        a @ b
        count += 1
    return 2 * 1536 * 576 * 8192 * count / (time.perf_counter() - started) / 1e9


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cache", nargs="?", type=Path, default=Path("/tmp/related-dev.duckdb"))
    parser.add_argument("--sample-tokens", type=int, default=RelatedConfig().sample_tokens)
    parser.add_argument("--keep", action="store_true", help="keep the computed copy and print its path")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if not args.cache.exists():
        print(f"no cache at {args.cache}: build one with `.venv/bin/python -m core build --tokens 20000 "
              f"--cache {args.cache}`", file=sys.stderr)
        return 2

    work = Path(tempfile.mkdtemp(prefix="bench-related-"))
    copy = work / "bench.duckdb"
    shutil.copy(args.cache, copy)
    load_before = os.getloadavg()
    gflops_before = sgemm_gflops()
    started = time.perf_counter()
    with open_results_writer(copy) as store:
        meta = check_cache(store)
        subject = load_model(meta["model"])
        load_seconds = time.perf_counter() - started
        rss_model = current_rss_gb()
        cfg = RelatedConfig(sample_tokens=args.sample_tokens)
        summary = compute_related(store, subject, cfg, force=True, progress=True)
    total = time.perf_counter() - started
    gflops_after = sgemm_gflops()
    load_after = os.getloadavg()
    peak = peak_rss_gb()

    n, layers, d = subject.n_neurons, subject.n_layers, subject.model.get_input_embeddings().weight.shape[1]
    vocab, big_n, t = vocab_size(subject), subject.n_layers * subject.n_neurons, summary.sample_tokens
    gated = subject.model.config.model_type not in ("gpt2", "gpt_neox", "phi")
    pairs = big_n * (big_n - n) / 2  # neuron pairs in different layers
    flops = {
        "input_tokens": 2 * vocab * d * big_n * (2 if gated else 1),
        "output_tokens": 2 * vocab * d * big_n,
        "weights": 2 * d * pairs,
        "correlation": 2 * t * (pairs + layers * n * n),
    }
    print()
    print(f"cache            {args.cache} ({meta['model']}, {layers} layers x {n} neurons, vocabulary {vocab:,})")
    print(f"machine          {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}, load average "
          f"{load_before[0]:.1f} before / {load_after[0]:.1f} after")
    print(f"sgemm now        {gflops_before:.1f} GFLOP/s before, {gflops_after:.1f} GFLOP/s after the run")
    print(f"total            {total:7.1f} s  (target {TARGET_SECONDS:.0f} s: {total / TARGET_SECONDS:.2f} of it), "
          f"model load {load_seconds:.1f} s")
    print(f"peak memory      {peak:7.2f} GB  (target {TARGET_PEAK_GB:.0f} GB; {rss_model:.2f} GB with the model "
          "loaded)")
    print(f"sample           {t:,} tokens for the correlations")
    print("part             seconds   GFLOP   GFLOP/s")
    for part, seconds in summary.timings.items():
        work_done = flops.get(part, 0) / 1e9
        rate = f"{work_done / seconds:8.1f}" if work_done and seconds else "       -"
        print(f"  {part:<14} {seconds:8.1f} {work_done:7.0f}  {rate}")
    matmul = sum(flops.values()) / 1e9
    speed = (gflops_before + gflops_after) / 2
    print(f"arithmetic       {matmul:,.0f} GFLOP in all: {matmul / speed:.0f} s at the sgemm speed measured now")
    if args.keep:
        print(f"kept             {copy}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
