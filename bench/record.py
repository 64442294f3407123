"""Benchmark of the recorder (issue 11): build time against bare forward passes, memory for N/2 and N tokens, cache
size per neuron.

    .venv/bin/python bench/record.py [--tokens 20000] [--rounds 2] [--model smollm2-135m] [--batch-size 16]

Every measurement runs in a fresh process (so peak memory is that run's own) on the same stdlib tokens, cut into
the same excerpts and batches of `--batch-size` x 64 tokens. Forward and build runs alternate, `--rounds` times,
and each ratio is taken within a round, so load from other work on the machine affects both sides alike; the
table shows the median over rounds (and the spread). Measured:
- build / bare forward: a whole build (record, then write the cache; model already loaded) against the same
  model's forward pass over the same batches, with the LM head (what running the model costs) and without it
  (the decoder blocks only, which is what the recorder runs);
- where the build's time goes: the hooks (every layer's statistics and excerpt upkeep) and writing the cache;
- memory: peak RSS of a build of N tokens / of N/2 tokens (the 2N / N of the issue, with N/2 as the smaller);
- the cache: MB, MB per neuron, bytes per stored activation.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def measure(mode: str, model: str, tokens: int, batch_size: int) -> dict[str, float]:
    """Run in a child process: forward passes only, or one full build; returns the numbers as a dict."""
    import torch

    from core.corpus import build_corpus
    from core.models import load_model, run_decoder
    from core.record import BuildPlan, RecordConfig, record_corpus

    subject = load_model(model)
    corpus = build_corpus("stdlib", subject.tokenizer, max_tokens=tokens)
    ids = torch.from_numpy(corpus.token_ids.astype("int64"))
    result: dict[str, float] = {"tokens": float(ids.numel())}
    if mode == "forward":
        with torch.inference_mode():
            full = decoder = 0.0
            for i in range(0, len(ids), batch_size):  # batch by batch, so a change of load hits both alike
                start = time.perf_counter()
                subject.model(input_ids=ids[i : i + batch_size], use_cache=False)
                full += time.perf_counter() - start
                start = time.perf_counter()
                run_decoder(subject, ids[i : i + batch_size])
                decoder += time.perf_counter() - start
        result["full_forward_s"] = full
        result["decoder_forward_s"] = decoder
    else:
        with tempfile.TemporaryDirectory() as tmp:
            cache = Path(tmp) / "bench.duckdb"
            plan = BuildPlan(model=model, corpus="stdlib", tokens=tokens, excerpt_len=64, settings={})
            cfg = RecordConfig(batch_size=batch_size, checkpoint_seconds=1e9)
            start = time.perf_counter()
            summary = record_corpus(subject, lambda: corpus, cache, plan, cfg, progress=False)
            result["build_s"] = time.perf_counter() - start
            result["build_forward_s"] = summary.forward_seconds
            result["hook_s"] = summary.extra["hook_seconds"]
            result["write_s"] = summary.extra["write_seconds"]
            result["cache_mb"] = cache.stat().st_size / 1e6
            import duckdb

            con = duckdb.connect(str(cache), read_only=True)
            result["stored_rows"] = float(con.execute("SELECT count(*) FROM neuron_excerpts").fetchone()[0])
            result["neurons"] = float(con.execute("SELECT count(*) FROM neuron_stats").fetchone()[0])
            con.close()
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def run_child(mode: str, args: argparse.Namespace, tokens: int) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", mode, "--model", args.model, "--tokens", str(tokens),
         "--batch-size", str(args.batch_size)],
        capture_output=True, text=True, check=True, cwd=ROOT,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--tokens", type=int, default=20_000, help="N; the memory check also builds N/2")
    parser.add_argument("--rounds", type=int, default=2, help="forward/build pairs (ratios are per pair)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--child", choices=["forward", "build"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.model, args.tokens, args.batch_size)))
        return

    n = args.tokens
    rounds = []
    for r in range(args.rounds):
        print(f"round {r + 1}: {load()}", file=sys.stderr, flush=True)
        forward = run_child("forward", args, n)
        build = run_child("build", args, n)
        rounds.append((forward, build))
    print(f"build of N/2: {load()}", file=sys.stderr, flush=True)
    build_half = run_child("build", args, n // 2)
    forward, build = rounds[-1]
    tokens = build["tokens"]

    def per_round(f) -> str:
        values = [f(fw, b) for fw, b in rounds]
        spread = f" ({min(values):.3f}-{max(values):.3f})" if len(values) > 1 else ""
        return f"{statistics.median(values):.3f}{spread}"

    print(f"model {args.model}, stdlib corpus, batches of {args.batch_size} x 64 tokens, N = {int(tokens):,} tokens, "
          f"{args.rounds} rounds; {load()}")
    rows = [
        ("build / bare forward, full model", per_round(lambda f, b: b["build_s"] / f["full_forward_s"])),
        ("build / bare forward, decoder blocks only", per_round(lambda f, b: b["build_s"] / f["decoder_forward_s"])),
        ("hooks / decoder-only forward", per_round(lambda f, b: b["hook_s"] / f["decoder_forward_s"])),
        ("writing the cache / build", per_round(lambda f, b: b["write_s"] / b["build_s"])),
        ("tokens per second, build", per_round(lambda f, b: b["tokens"] / b["build_s"])),
        ("tokens per second, full forward", per_round(lambda f, b: f["tokens"] / f["full_forward_s"])),
        ("build (s), last round", f"{build['build_s']:.1f}"),
        ("  forward passes with hooks (s)", f"{build['build_forward_s']:.1f}"),
        ("  of which hooks (s)", f"{build['hook_s']:.1f}"),
        ("  writing the cache (s)", f"{build['write_s']:.1f}"),
        ("bare forward, full model (s)", f"{forward['full_forward_s']:.1f}"),
        ("bare forward, decoder blocks only (s)", f"{forward['decoder_forward_s']:.1f}"),
        (f"peak RSS, build of N/2 = {int(build_half['tokens']):,} (MB)", f"{build_half['peak_rss_mb']:.0f}"),
        ("peak RSS, build of N (MB)", f"{build['peak_rss_mb']:.0f}"),
        ("memory: build of N / build of N/2", f"{build['peak_rss_mb'] / build_half['peak_rss_mb']:.3f}"),
        ("peak RSS, forward only (MB)", f"{forward['peak_rss_mb']:.0f}"),
        ("cache size for N (MB)", f"{build['cache_mb']:.1f}"),
        ("cache size for N/2 (MB)", f"{build_half['cache_mb']:.1f}"),
        ("cache MB per neuron (N)", f"{build['cache_mb'] / build['neurons']:.5f}"),
        ("cache bytes per stored excerpt row (N)", f"{build['cache_mb'] * 1e6 / build['stored_rows']:.0f}"),
    ]
    print(f"| {'measure':<46} | {'value':>22} |\n|---|---|")
    for name, value in rows:
        print(f"| {name:<46} | {value:>22} |")


if __name__ == "__main__":
    main()
