"""Recording over Ray: a 2-worker local cluster gives the cache a single process gives; a killed worker is
retried and resumes its shard; a killed driver resumes every shard when the same command runs again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from core.corpus import build_corpus
from core.paths import partial_dir
from core.record import BuildPlan, RecordConfig, record_corpus
from core.store import open_reader
from core.types import QUANTILE_BINS, ExcerptKind, NeuronId

ray = pytest.importorskip("ray")

TOKENS = 3000
EXCERPT_LEN = 16
# batches of one excerpt: a shard batches other excerpts together than a single process does, and CPU matmuls of
# other batch shapes round differently (1e-7), which would reorder excerpts whose maxima are exactly equal
CFG = RecordConfig(top_k=6, bottom_k=6, quantile_samples=3, random_samples=4, batch_size=1, token_vocab=50)
TEXT = ("the cat sat on a mat while dogs ran in parks; def f(x): return x + 1 class A pass "
        "numbers 12 345 and 6789 fell from trees into rivers and lakes")


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory) -> Path:
    rng = np.random.default_rng(3)
    path = tmp_path_factory.mktemp("ray-corpus") / "words.txt"
    words = TEXT.split()
    path.write_text("\n\n".join(" ".join(rng.choice(words, size=60)) for _ in range(80)))
    return path


@pytest.fixture(scope="module")
def ray_cluster():
    """A local 2-CPU Ray cluster on the loopback address, shared by this module's tests."""
    from core.distributed import runtime_env

    ray.init(num_cpus=2, _node_ip_address="127.0.0.1", include_dashboard=False, logging_level="ERROR",
             log_to_driver=False, object_store_memory=128 * 1024 * 1024, runtime_env=runtime_env())
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def _plan(model: str, corpus: Path) -> BuildPlan:
    return BuildPlan(model=model, corpus=str(corpus), tokens=TOKENS, excerpt_len=EXCERPT_LEN,
                     settings={"top_k": CFG.top_k, "seed": CFG.seed})


def _loader(tokenizer, corpus: Path):
    return lambda: build_corpus(str(corpus), tokenizer, max_tokens=TOKENS, excerpt_len=EXCERPT_LEN)


@pytest.fixture(scope="module")
def reference(tiny_subject, corpus_file, tmp_path_factory) -> Path:
    """The single-process build that every Ray build must reproduce."""
    cache = tmp_path_factory.mktemp("ray-ref") / "single.duckdb"
    record_corpus(tiny_subject, _loader(tiny_subject.tokenizer, corpus_file), cache,
                  _plan(tiny_subject.name, corpus_file), CFG, progress=False)
    return cache


def _ray_build(tiny_subject, corpus_file: Path, cache: Path, cfg: RecordConfig = CFG):
    from core.distributed import record_with_ray

    return record_with_ray(tiny_subject.name, tiny_subject.tokenizer, _loader(tiny_subject.tokenizer, corpus_file),
                           cache, _plan(tiny_subject.name, corpus_file), cfg, workers=2, progress=False)


def assert_same_recording(got: Path, want: Path, cfg: RecordConfig = CFG) -> None:
    """Top, bottom and random excerpts (ids, ranks, splits, activations), statistics and token means of every
    neuron agree; quantile samples (drawn per shard) are valid samples of their bins."""
    with open_reader(got) as g, open_reader(want) as w:
        info = w.info()
        assert g.info().neurons_recorded == info.neurons_recorded == info.layers * info.neurons_per_layer
        for layer in range(info.layers):
            for index in range(info.neurons_per_layer):
                nid = NeuronId(layer, index)
                for kind in (ExcerptKind.TOP, ExcerptKind.BOTTOM, ExcerptKind.RANDOM):
                    a, b = g.neuron_excerpts(nid, kinds=[kind]), w.neuron_excerpts(nid, kinds=[kind])
                    assert [(e.excerpt.excerpt_id, e.rank, e.split) for e in a] == \
                        [(e.excerpt.excerpt_id, e.rank, e.split) for e in b], (nid, kind)
                    for x, y in zip(a, b, strict=True):
                        np.testing.assert_allclose(x.activations, y.activations, rtol=0, atol=2e-3 + 1e-3 * np.ptp(
                            y.activations))
                s, t = g.neuron_stats(nid), w.neuron_stats(nid)
                for field in ("max_activation", "min_activation", "mean", "variance", "density"):
                    assert getattr(s, field) == pytest.approx(getattr(t, field), rel=1e-4, abs=1e-6), (nid, field)
                for field in ("skewness", "kurtosis"):
                    assert getattr(s, field) == pytest.approx(getattr(t, field), rel=1e-3, abs=1e-4), (nid, field)
                assert sum(s.hist_counts) == sum(t.hist_counts)
                np.testing.assert_allclose(s.quantile_edges, t.quantile_edges, rtol=1e-3, atol=1e-5)  # float16 maxima
                samples = g.neuron_excerpts(nid, kinds=[ExcerptKind.QUANTILE])
                assert samples
                for sample in samples:
                    lo, hi = s.quantile_edges[sample.quantile_bin], s.quantile_edges[sample.quantile_bin + 1]
                    assert lo - 1e-2 <= sample.max_activation <= hi + 1e-2
                assert np.bincount([e.quantile_bin for e in samples], minlength=len(QUANTILE_BINS)).max() <= \
                    cfg.quantile_samples
                for highest in (True, False):
                    m, n = g.token_means(nid, 5, highest), w.token_means(nid, 5, highest)
                    np.testing.assert_allclose([x.mean_activation for x in m], [x.mean_activation for x in n],
                                               rtol=1e-4, atol=1e-6)


def test_two_workers_give_the_single_process_cache(ray_cluster, tiny_subject, corpus_file, reference, tmp_path):
    cache = tmp_path / "ray.duckdb"
    summary = _ray_build(tiny_subject, corpus_file, cache)
    assert summary.extra["workers"] == 2
    assert not partial_dir(cache).exists()
    with open_reader(cache) as store:
        assert store.meta()["ray_workers"] == 2
    assert_same_recording(cache, reference)


def test_a_killed_worker_is_retried_and_resumes(ray_cluster, tiny_subject, corpus_file, reference, tmp_path):
    cache = tmp_path / "killed-worker.duckdb"
    shard = partial_dir(cache) / "shard-01"
    killed: list[int] = []

    def kill_when_checkpointed() -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not killed:
            if (shard / "checkpoint.pt").exists() and (shard / "pid").exists():
                pid = int((shard / "pid").read_text())
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            time.sleep(0.02)

    killer = threading.Thread(target=kill_when_checkpointed)
    killer.start()
    # a checkpoint after every excerpt: the worker is killed with most of its shard still to do
    summary = _ray_build(tiny_subject, corpus_file, cache, RecordConfig(**{**CFG.__dict__, "checkpoint_seconds": 0.0}))
    killer.join()
    assert killed, "the worker was never seen with a checkpoint"
    assert summary.extra["resumed_shards"].get(1, 0) > 0, "the retried shard started over instead of resuming"
    assert_same_recording(cache, reference)


def test_a_killed_driver_resumes_with_the_same_command(ray_cluster, tiny_subject, tiny_model_folder, corpus_file,
                                                       tmp_path):
    cache = tmp_path / "killed-driver.duckdb"
    command = [sys.executable, "-m", "core", "build", "--model", str(tiny_model_folder("llama")), "--corpus",
               str(corpus_file), "--tokens", str(TOKENS), "--excerpt-len", str(EXCERPT_LEN), "--top-k", "6",
               "--batch-size", "1", "--checkpoint-seconds", "0", "--cache", str(cache), "--quiet",
               "--ray", ray_cluster, "--workers", "2"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    first = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             start_new_session=True)
    checkpoint = partial_dir(cache) / "shard-00" / "checkpoint.pt"
    deadline = time.monotonic() + 300
    while not checkpoint.exists() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert first.poll() is None, f"the build ended before it could be killed: {first.communicate()[1][-2000:]}"
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    assert not cache.exists()
    resumed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed at excerpt" in resumed.stdout
    assert "on 2 Ray workers" in resumed.stdout
    # the same settings as the command (its other settings are the defaults), in one process
    cli_cfg = RecordConfig(top_k=6, bottom_k=6, batch_size=1)
    single = tmp_path / "single.duckdb"
    record_corpus(tiny_subject, _loader(tiny_subject.tokenizer, corpus_file), single,
                  _plan(str(tiny_model_folder("llama")), corpus_file), cli_cfg, progress=False)
    assert_same_recording(cache, single, cli_cfg)


def test_a_resume_must_use_the_same_number_of_workers(tiny_subject, corpus_file, tmp_path):
    from core.distributed import _check_layout
    from core.record import SHARDS_FILE, RecordError

    cache = tmp_path / "layout.duckdb"
    work = partial_dir(cache)
    work.mkdir()
    (work / SHARDS_FILE).write_text('{"shards": 3}')
    with pytest.raises(RecordError, match="--workers 3"):
        _check_layout(work, 2)
    with pytest.raises(RecordError, match="interrupted Ray build"):
        record_corpus(tiny_subject, _loader(tiny_subject.tokenizer, corpus_file), cache,
                      _plan(tiny_subject.name, corpus_file), CFG, progress=False)
