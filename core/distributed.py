"""Record a corpus over Ray workers: the excerpts are cut into one shard per worker, each worker loads its own
replica of the model (on its GPU where the cluster has GPUs) and keeps its shard's state, and the driver merges
the shards layer by layer into one cache.

Ray is optional (requirements-ray.txt); nothing else in core imports this module. The driver loads only the
tokenizer. Shards checkpoint into CACHE.partial/shard-NN/ like a single-process build, so a killed worker is
retried by Ray and resumes its shard, and a killed driver resumes every shard when the same command runs again.
On a cluster of several machines CACHE.partial must be on a filesystem every node sees (NFS or similar), and the
model must be loadable on every node (a local folder or the Hugging Face cache).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from core.corpus import Corpus
from core.paths import partial_dir
from core.record import (
    SHARDS_FILE,
    BuildPlan,
    CorpusPlan,
    LayerRecorder,
    ModelShape,
    RecordConfig,
    RecordError,
    RecordSummary,
    atomic_write_text,
    checkpoint_done,
    load_layer_states,
    load_or_save_corpus,
    read_maxima,
    record_shard,
    write_cache,
)

log = logging.getLogger(__name__)

TASK_RETRIES = 3
"""How often Ray reruns a shard whose worker died (each rerun resumes from the shard's last checkpoint)."""


def ray_available() -> bool:
    """Whether the optional ray package is installed."""
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


def connect(address: str | None, workers: int | None) -> None:
    """Join the Ray cluster at `address`, or start a local one (loopback only) with `workers` CPUs; a session
    that is already connected is used as it is."""
    if not ray_available():
        raise RecordError("--ray needs the ray package: pip install -r requirements-ray.txt")
    import ray

    if ray.is_initialized():
        return
    if address:
        try:
            ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False, runtime_env=runtime_env())
        except (ConnectionError, ValueError, RuntimeError) as error:
            raise RecordError(f"cannot reach the Ray cluster at {address}: {error}") from error
        return
    ray.init(
        num_cpus=workers or os.cpu_count() or 1,
        _node_ip_address="127.0.0.1",
        include_dashboard=False,
        logging_level=logging.ERROR,
        log_to_driver=False,
        object_store_memory=256 * 1024 * 1024,
        runtime_env=runtime_env(),
    )


def runtime_env() -> dict[str, Any]:
    """What a driver passes to ray.init so that workers on any node import this package: Ray ships it to them."""
    return {"py_modules": [str(Path(__file__).parent)]}


def record_with_ray(
    model: str,
    tokenizer: Any,
    corpus_loader: Callable[[], Corpus],
    cache_path: str | Path,
    plan: BuildPlan,
    cfg: RecordConfig,
    *,
    workers: int | None = None,
    progress: bool = True,
) -> RecordSummary:
    """Record every neuron of `model` over the corpus with one shard per Ray worker, into `cache_path`.

    Call `connect` first. `workers` defaults to the cluster's GPUs (one replica per GPU) or, without GPUs, its
    CPUs. A rerun after a crash resumes every unfinished shard from its checkpoint; the shard count is part of
    the build, so a rerun must ask for the same number of workers."""
    import ray

    cfg.check()
    cache_path = Path(cache_path)
    work = partial_dir(cache_path)
    started = time.perf_counter()
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    shards = workers or gpus or max(1, int(resources.get("CPU", 1)))
    _check_layout(work, shards)
    token_ids, sources = load_or_save_corpus(work, plan, corpus_loader)
    atomic_write_text(work / SHARDS_FILE, json.dumps({"shards": shards}))
    corpus = CorpusPlan.make(token_ids, sources, cfg)
    n_excerpts, excerpt_len = token_ids.shape
    if n_excerpts < shards:
        raise RecordError(f"{n_excerpts} excerpts cannot be shared by {shards} workers: ask for fewer workers")

    per_worker = {"num_gpus": 1} if gpus and shards <= gpus else {
        "num_cpus": max(1, int(resources.get("CPU", 1)) // shards)
    }
    threads = int(per_worker.get("num_cpus", 1)) if "num_cpus" in per_worker else 0
    task = ray.remote(_shard_task).options(
        max_retries=TASK_RETRIES, retry_exceptions=False, **per_worker
    )
    counter: Any = ray.remote(_Counter).options(num_cpus=0).remote()  # an actor handle (untyped in ray's stubs)
    tokens_ref = ray.put(token_ids)
    pending = {}
    done_before = 0
    for shard in range(shards):
        folder = shard_dir(work, shard)
        finished = checkpoint_done(folder)
        size = len(corpus.shard(shard, shards))
        done_before += min(finished, size)
        if finished < size or not (folder / "shape.json").exists():
            pending[task.remote(model, tokens_ref, cfg, str(folder), shard, shards, threads, counter)] = shard
    results: dict[int, dict[str, Any]] = {}
    bar = tqdm(total=n_excerpts * excerpt_len, initial=done_before * excerpt_len, unit="tok", unit_scale=True,
               desc=f"recording on {shards} workers", disable=not progress, dynamic_ncols=True)
    shown = 0
    try:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
            count = ray.get(counter.total.remote())
            bar.update(max(0, count - shown))
            shown = max(shown, count)
            for ref in ready:
                shard = pending.pop(ref)
                try:
                    results[shard] = ray.get(ref)
                except ray.exceptions.RayTaskError as error:  # the shard's own error, e.g. a model that won't load
                    raise RecordError(f"shard {shard}: {error.cause}") from error
                except ray.exceptions.RayError as error:
                    raise RecordError(
                        f"shard {shard} failed after {TASK_RETRIES} retries ({type(error).__name__}); its progress "
                        f"is kept in {work}: run the same command again to resume"
                    ) from error
    finally:
        bar.close()
        for ref in pending:
            ray.cancel(ref, force=True)
    record_seconds = time.perf_counter() - started

    tick = time.perf_counter()
    shape = ModelShape(**json.loads((shard_dir(work, 0) / "shape.json").read_text()))
    states = [load_layer_states(shard_dir(work, shard)) for shard in range(shards)]
    sizes = [len(corpus.shard(shard, shards)) for shard in range(shards)]
    merge_seconds = 0.0

    def layer_state(layer: int) -> tuple[LayerRecorder, np.ndarray]:
        nonlocal merge_seconds
        begin = time.perf_counter()
        merged = LayerRecorder.from_state(states[0][layer], cfg)
        generator = torch.Generator().manual_seed(cfg.seed * 1009 + layer)
        for shard in range(1, shards):
            merged.merge(LayerRecorder.from_state(states[shard][layer], cfg), generator)
        maxima = np.concatenate(
            [read_maxima(shard_dir(work, shard), layer, shape.n_neurons, sizes[shard]) for shard in range(shards)]
        )
        merge_seconds += time.perf_counter() - begin
        return merged, maxima

    write_cache(shape, tokenizer, cache_path, plan, cfg, corpus, work, layer_state, progress,
                extra_meta={"ray_workers": shards})
    write_seconds = time.perf_counter() - tick
    shutil.rmtree(work, ignore_errors=True)
    elapsed = time.perf_counter() - started
    forward = sum(r["forward_seconds"] for r in results.values())
    return RecordSummary(
        str(cache_path), n_excerpts * excerpt_len, n_excerpts, shape.n_layers, shape.n_neurons, elapsed,
        done_before, forward,
        {
            "finished": True,
            "workers": shards,
            "record_seconds": record_seconds,
            "merge_seconds": merge_seconds,
            "write_seconds": write_seconds,
            "hook_seconds": sum(r["hook_seconds"] for r in results.values()),
            "resumed_shards": {s: r["resumed_from"] for s, r in results.items() if r["resumed_from"]},
        },
    )


def shard_dir(work: Path, shard: int) -> Path:
    """The folder of one shard's checkpoint and maxima inside CACHE.partial."""
    return work / f"shard-{shard:02d}"


def _check_layout(work: Path, shards: int) -> None:
    """A RecordError when CACHE.partial holds a build this one cannot resume."""
    if (work / "checkpoint.pt").exists():
        raise RecordError(
            f"{work} holds an interrupted single-process build: run that command again without --ray to finish "
            f"it, or delete {work} to start this one"
        )
    layout = work / SHARDS_FILE
    if layout.exists():
        saved = json.loads(layout.read_text())["shards"]
        if saved != shards:
            raise RecordError(
                f"{work} holds an interrupted Ray build on {saved} workers: run it again with --workers {saved}, "
                f"or delete {work} to start this one"
            )


class _Counter:
    """A Ray actor adding up the tokens every shard has recorded, for the driver's progress bar."""

    def __init__(self) -> None:
        self.count = 0

    def add(self, tokens: int) -> None:
        self.count += tokens

    def total(self) -> int:
        return self.count


def _shard_task(
    model: str,
    token_ids: np.ndarray,
    cfg: RecordConfig,
    folder: str,
    shard: int,
    shards: int,
    threads: int,
    counter: Any,
) -> dict[str, Any]:
    """Runs on a Ray worker: record one shard (resuming its checkpoint) and leave its final state in `folder`."""
    from core.models import load_model

    work = Path(folder)
    work.mkdir(parents=True, exist_ok=True)
    # a worker of a killed driver can outlive it for a moment: wait for it rather than write the same files
    lock = open(work / "lock", "w")  # noqa: SIM115 - held until this process ends
    fcntl.flock(lock, fcntl.LOCK_EX)
    (work / "pid").write_text(str(os.getpid()))
    if threads:
        torch.set_num_threads(threads)
    device = "cuda" if torch.cuda.is_available() and threads == 0 else "cpu"
    subject = load_model(model, device=device)
    corpus = CorpusPlan.make(token_ids, [], cfg)
    result = record_shard(subject, corpus, work, shard, shards, cfg, progress=lambda n: counter.add.remote(n),
                          save_final=True)
    atomic_write_text(work / "shape.json", json.dumps(asdict(ModelShape.of(subject))))
    fcntl.flock(lock, fcntl.LOCK_UN)
    lock.close()
    return {"forward_seconds": result.forward_seconds, "hook_seconds": result.hook_seconds,
            "resumed_from": result.resumed_from, "done": result.done}
