"""Benchmark of recording over Ray (issue 11): the same build in one process, on 1 Ray worker and on 2, and a paper
estimate for a 1B and an 8B model over 10M tokens on 1, 8 and 64 GPUs from the per-token costs measured here.

    .venv/bin/python bench/scale.py [--tokens 8192] [--rounds 1] [--model smollm2-135m]

Each build runs in a fresh process on the same stdlib tokens (a local Ray cluster on the loopback address, started
by that process and counted apart). The three kinds of build alternate within each round, so machine load hits
them alike; ratios are within a round. Measured per build: tokens per second of the recording (forward passes and
hooks, summed over workers and divided by the wall time of the recording phase), and the merge of the shards'
state and the cache writing as shares of the whole build.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# Shapes of the two models of the estimate (their public configs): layers, MLP neurons per layer, parameters.
MODELS = {"1B (Llama-3.2-1B)": (16, 8192, 1.24e9), "8B (Llama-3.1-8B)": (32, 14336, 8.03e9)}
ESTIMATE_TOKENS = 10_000_000
GPU_COUNTS = (1, 8, 64)
# GPU assumptions (stated in the output): bf16 forward at 35% of an H100's 989 dense TFLOP/s; the hooks are
# memory-bound: HOOK_BYTES per activation (about 20 passes of 4 bytes, as in LayerRecorder.update) at 2.5 TB/s.
GPU_FLOPS = 0.35 * 989e12
HOOK_BYTES = 80
GPU_BANDWIDTH = 2.5e12


def child(mode: str, model: str, tokens: int, workers: int) -> dict[str, float]:
    """One build in this process: "single" (no Ray) or "ray" with `workers` workers on a local cluster."""
    from core.corpus import build_corpus
    from core.models import load_model, load_tokenizer
    from core.record import BuildPlan, RecordConfig, record_corpus

    plan = BuildPlan(model=model, corpus="stdlib", tokens=tokens, excerpt_len=64, settings={})
    cfg = RecordConfig(checkpoint_seconds=1e9)
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "scale.duckdb"
        if mode == "single":
            subject = load_model(model)
            corpus = build_corpus("stdlib", subject.tokenizer, max_tokens=tokens)
            start = time.perf_counter()
            summary = record_corpus(subject, lambda: corpus, cache, plan, cfg, progress=False)
            out["seconds"] = time.perf_counter() - start
            out["record_s"] = out["seconds"] - summary.extra["write_seconds"]
            out["merge_s"] = 0.0
            out["write_s"] = summary.extra["write_seconds"]
            out["hook_s"] = summary.extra["hook_seconds"]
        else:
            from core.distributed import connect, record_with_ray

            start = time.perf_counter()
            connect(None, workers)
            out["ray_start_s"] = time.perf_counter() - start
            tokenizer = load_tokenizer(model)
            corpus = build_corpus("stdlib", tokenizer, max_tokens=tokens)
            start = time.perf_counter()
            summary = record_with_ray(model, tokenizer, lambda: corpus, cache, plan, cfg, workers=workers,
                                      progress=False)
            out["seconds"] = time.perf_counter() - start
            out["record_s"] = summary.extra["record_seconds"]
            out["merge_s"] = summary.extra["merge_seconds"]
            out["write_s"] = summary.extra["write_seconds"] - summary.extra["merge_seconds"]
            out["hook_s"] = summary.extra["hook_seconds"]
        out["forward_s"] = summary.forward_seconds
        out["tokens"] = float(summary.tokens)
        out["neurons"] = float(summary.layers * summary.neurons_per_layer)
    return out


def run(mode: str, args: argparse.Namespace, workers: int) -> dict[str, float]:
    result = subprocess.run(
        [sys.executable, __file__, "--child", mode, "--workers", str(workers), "--model", args.model,
         "--tokens", str(args.tokens)],
        capture_output=True, text=True, cwd=ROOT,
    )
    if result.returncode != 0:
        raise SystemExit(f"{mode} x{workers} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def estimate(per_token_param_s: float, hook_ratio: float, merge_per_neuron_s: float, write_per_neuron_s: float,
             quantile_per_value_s: float) -> list[str]:
    """Rows of the paper estimate (see the assumptions printed with it)."""
    rows = []
    for name, (layers, width, params) in MODELS.items():
        neurons = layers * width
        forward_gpu = ESTIMATE_TOKENS * 2 * params / GPU_FLOPS
        hooks_gpu = ESTIMATE_TOKENS * neurons * HOOK_BYTES / GPU_BANDWIDTH
        write = neurons * write_per_neuron_s
        quantiles = ESTIMATE_TOKENS / 64 * neurons * quantile_per_value_s
        cpu_one = ESTIMATE_TOKENS * params * per_token_param_s * (1 + hook_ratio)
        for gpus in GPU_COUNTS:
            record = (forward_gpu + hooks_gpu) / gpus
            merge = merge_per_neuron_s * neurons * (gpus - 1)
            total = record + merge + write + quantiles
            rows.append(f"| {name} | {gpus} | {record / 3600:.2f} h | {merge / 3600:.2f} h | "
                        f"{(write + quantiles) / 3600:.2f} h | {total / 3600:.2f} h |")
        rows.append(f"| {name} | this machine's 2 CPU cores | {cpu_one / 3600:.0f} h | - | "
                    f"{(write + quantiles) / 3600:.2f} h | {(cpu_one + write + quantiles) / 3600:.0f} h |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--tokens", type=int, default=8192)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--workers", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--child", choices=["single", "ray"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.model, args.tokens, args.workers)))
        return

    kinds = (("single", 1), ("ray", 1), ("ray", 2))
    results: dict[tuple[str, int], list[dict[str, float]]] = {k: [] for k in kinds}
    loads = []
    for r in range(args.rounds):
        for mode, workers in kinds:
            loads.append(load())
            print(f"round {r + 1} {mode} x{workers}: {loads[-1]}", file=sys.stderr, flush=True)
            results[(mode, workers)].append(run(mode, args, workers))

    def med(kind: tuple[str, int], f) -> float:
        return statistics.median(f(x) for x in results[kind])

    single = ("single", 1)
    print(f"model {args.model}, {args.tokens:,} stdlib tokens, {args.rounds} round(s); loads: {'; '.join(loads)}")
    print("| build | tokens/s recording | tokens/s whole build | vs one process | merge share | write share "
          "| Ray start (s) |\n|---|---|---|---|---|---|---|")
    for kind in kinds:
        name = "one process" if kind == single else f"Ray, {kind[1]} worker{'s' if kind[1] > 1 else ''}"
        rec = med(kind, lambda x: x["tokens"] / x["record_s"])
        whole = med(kind, lambda x: x["tokens"] / x["seconds"])
        base = med(single, lambda x: x["tokens"] / x["seconds"])
        merge = med(kind, lambda x: x["merge_s"] / x["seconds"])
        write = med(kind, lambda x: x["write_s"] / x["seconds"])
        start = med(kind, lambda x: x.get("ray_start_s", 0.0))
        print(f"| {name} | {rec:.0f} | {whole:.0f} | {whole / base:.2f} | {merge:.1%} | {write:.1%} | {start:.1f} |")

    # per-token costs measured here, for the estimate
    from core.models import load_model

    subject = load_model(args.model)
    params = sum(p.numel() for p in subject.model.base_model.parameters())
    one = results[single][-1]
    two = results[("ray", 2)][-1]
    per_token_param = one["forward_s"] / one["tokens"] / params
    hook_ratio = one["hook_s"] / (one["forward_s"] - one["hook_s"])
    merge_per_neuron = two["merge_s"] / two["neurons"]  # one extra shard merged per neuron
    write_per_neuron = one["write_s"] / one["neurons"]
    import numpy as np

    values = np.random.default_rng(0).standard_normal((4096, 2048)).astype(np.float32)
    start = time.perf_counter()
    np.quantile(values, [0, 0.5, 0.9, 0.99, 0.999, 1], axis=0)
    quantile_per_value = (time.perf_counter() - start) / values.size
    print()
    print(f"Measured here: forward {per_token_param * 1e12:.2f} ps per token per parameter on 2 CPU cores; hooks "
          f"{hook_ratio:.2f} x the forward pass (CPU); merging one more shard {merge_per_neuron * 1e6:.1f} us per "
          f"neuron; writing the cache {write_per_neuron * 1e6:.1f} us per neuron; exact quantiles of the "
          f"per-excerpt maxima {quantile_per_value * 1e9:.1f} ns per value.")
    print(f"Assumed for GPUs: bf16 forward at {GPU_FLOPS / 1e12:.0f} TFLOP/s (35% of an H100's dense peak), "
          f"2 x parameters FLOPs per token; hooks memory-bound at {HOOK_BYTES} bytes per activation and "
          f"{GPU_BANDWIDTH / 1e12:.1f} TB/s; one GPU per worker, shards equal; the merge runs on the driver one "
          "shard after another, and the writing and the quantiles after it, as the code does now.")
    print(f"\nPaper estimate, {ESTIMATE_TOKENS:,} tokens (64-token excerpts):")
    print("| model | GPUs | recording | merge | write + quantiles | total |\n|---|---|---|---|---|---|")
    for row in estimate(per_token_param, hook_ratio, merge_per_neuron, write_per_neuron, quantile_per_value):
        print(row)


if __name__ == "__main__":
    main()
