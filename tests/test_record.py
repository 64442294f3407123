"""The recorder: exact top/bottom excerpts, statistics against brute force, splits, resume, the real model."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import numpy as np
import pytest

from core.corpus import build_corpus
from core.models import load_model, neuron_activations
from core.packing import max_error
from core.paths import partial_dir
from core.record import BuildPlan, RecordConfig, record_corpus
from core.store import open_reader
from core.types import QUANTILE_BINS, ExcerptKind, NeuronId, Split

TINY_CORPUS = (
    "The cat sat on the mat while the dog ran in the park. "
    "def f(x):\n    return x + 1\n\nclass A:\n    pass\n"
    "A dog and a cat met at the park and sat on a mat together. "
) * 40


@pytest.fixture(scope="module")
def tiny_corpus_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "tiny.txt"
    lines = [f"line {i}: {TINY_CORPUS[i * 37 % 900:(i * 37 % 900) + 300]}" for i in range(60)]
    path.write_text("\n\n".join(lines))
    return path


def packing_tolerance(row: np.ndarray) -> float:
    """What core.packing promises for one stored row: 1/8190 of its range, plus float32 rounding."""
    return float(max_error(row[None, :])[0]) * 1.002 + 1e-6


def _build(subject, corpus: Path, cache: Path, cfg: RecordConfig, tokens: int = 2048, **kwargs):
    plan = BuildPlan(model=subject.name, corpus=str(corpus), tokens=tokens, excerpt_len=16, settings={})
    return record_corpus(
        subject,
        lambda: build_corpus(str(corpus), subject.tokenizer, max_tokens=tokens, excerpt_len=16),
        cache, plan, cfg, progress=False, **kwargs,
    )


def _all_activations(subject, token_ids: np.ndarray) -> np.ndarray:
    """Brute force: [layer, excerpt, pos, neuron] from one forward pass per excerpt."""
    per_excerpt = [neuron_activations(subject, list(row)) for row in token_ids]
    return np.stack([np.stack([acts[layer] for acts in per_excerpt]) for layer in range(subject.n_layers)])


@pytest.fixture(scope="module")
def tiny_build(tiny_subject, tiny_corpus_file, tmp_path_factory):
    """A cache of the tiny Llama (2 layers x 48 neurons, adds BOS) with small K so every kind is exercised."""
    cache = tmp_path_factory.mktemp("tiny-cache") / "tiny.duckdb"
    cfg = RecordConfig(top_k=6, bottom_k=6, quantile_samples=3, random_samples=4, batch_size=5, token_vocab=50)
    _build(tiny_subject, tiny_corpus_file, cache, cfg)
    with open_reader(cache) as reader:
        found = reader.excerpts(range(reader.info().excerpts))
    token_ids = np.array([found[i].token_ids for i in range(len(found))], dtype=np.int64)
    return cache, cfg, token_ids, _all_activations(tiny_subject, token_ids)


def test_top_and_bottom_excerpts_are_exact(tiny_build):
    cache, cfg, _, acts = tiny_build
    with open_reader(cache) as store:
        for layer in range(2):
            for neuron in (0, 17, 47):
                nid = NeuronId(layer, neuron)
                maxima = acts[layer, :, :, neuron].max(1)
                minima = acts[layer, :, :, neuron].min(1)
                top = store.neuron_excerpts(nid, kinds=[ExcerptKind.TOP])
                assert [e.rank for e in top] == list(range(cfg.top_k))
                np.testing.assert_allclose([e.max_activation for e in top], np.sort(maxima)[::-1][: cfg.top_k],
                                           rtol=1e-5, atol=1e-6)
                for e in top:
                    want = acts[layer, e.excerpt.excerpt_id, :, neuron]
                    assert e.max_activation == pytest.approx(want.max(), rel=1e-5, abs=1e-6)  # stored exactly
                    np.testing.assert_allclose(e.activations, want, rtol=0,
                                               atol=packing_tolerance(want))
                bottom = store.neuron_excerpts(nid, kinds=[ExcerptKind.BOTTOM])
                np.testing.assert_allclose([min(e.activations) for e in bottom], np.sort(minima)[: cfg.bottom_k],
                                           rtol=1e-5, atol=1e-6)


def test_statistics_equal_brute_force(tiny_build):
    cache, _, _, acts = tiny_build
    with open_reader(cache) as store:
        for layer in range(2):
            for neuron in (0, 5, 47):
                values = acts[layer, :, :, neuron].ravel().astype(np.float64)
                stats = store.neuron_stats(NeuronId(layer, neuron))
                assert stats is not None
                centered = values - values.mean()
                assert stats.mean == pytest.approx(values.mean(), rel=1e-4, abs=1e-6)
                assert stats.variance == pytest.approx(values.var(), rel=1e-4)
                assert stats.skewness == pytest.approx((centered**3).mean() / values.std() ** 3, rel=1e-3, abs=1e-4)
                assert stats.kurtosis == pytest.approx((centered**4).mean() / values.var() ** 2 - 3, rel=1e-3)
                assert stats.density == pytest.approx((values > 0).mean())
                assert stats.max_activation == pytest.approx(values.max(), rel=1e-6)
                assert stats.min_activation == pytest.approx(values.min(), rel=1e-6)
                assert len(stats.hist_edges) == len(stats.hist_counts) + 1
                assert sum(stats.hist_counts) > 0
                maxima = acts[layer, :, :, neuron].max(1)
                expected = np.quantile(maxima, [0, 0.5, 0.9, 0.99, 0.999, 1.0])
                np.testing.assert_allclose(stats.quantile_edges, expected, rtol=2e-3, atol=2e-3)  # float16 maxima


def test_quantile_samples_lie_in_their_bins(tiny_build):
    cache, cfg, _, _ = tiny_build
    with open_reader(cache) as store:
        for neuron in range(0, 48, 7):
            nid = NeuronId(1, neuron)
            stats = store.neuron_stats(nid)
            samples = store.neuron_excerpts(nid, kinds=[ExcerptKind.QUANTILE])
            assert samples, "every neuron has quantile samples"
            for sample in samples:
                assert sample.quantile_bin is not None and 0 <= sample.quantile_bin < len(QUANTILE_BINS)
                lo, hi = stats.quantile_edges[sample.quantile_bin], stats.quantile_edges[sample.quantile_bin + 1]
                assert lo - 1e-2 <= sample.max_activation <= hi + 1e-2
            per_bin = np.bincount([s.quantile_bin for s in samples], minlength=4)
            assert per_bin.max() <= cfg.quantile_samples


def test_splits_never_overlap_and_random_excludes_top(tiny_build):
    cache, cfg, _, _ = tiny_build
    with open_reader(cache) as store:
        for layer in range(2):
            for neuron in range(48):
                rows = store.neuron_excerpts(NeuronId(layer, neuron))
                by_split: dict[Split, set[int]] = {}
                for row in rows:
                    by_split.setdefault(row.split, set()).add(row.excerpt.excerpt_id)
                explain = by_split.get(Split.EXPLAIN, set())
                assert explain, "the explainer always has excerpts"
                assert not explain & by_split.get(Split.SCORE, set())
                assert not explain & by_split.get(Split.CALIBRATE, set())
                top = {r.excerpt.excerpt_id for r in rows if r.kind == ExcerptKind.TOP}
                random = [r for r in rows if r.kind == ExcerptKind.RANDOM]
                assert len(random) == cfg.random_samples
                assert not top & {r.excerpt.excerpt_id for r in random}


def test_token_means_equal_brute_force(tiny_build):
    cache, cfg, token_ids, acts = tiny_build
    flat_tokens = token_ids.ravel()
    with open_reader(cache) as store:
        nid = NeuronId(1, 3)
        means = store.token_means(nid, limit=5, highest=True)
        assert means
        values = acts[1, :, :, 3].ravel()
        for tm in means:
            hits = flat_tokens == tm.token_id
            assert tm.count == hits.sum() >= cfg.min_token_count
            assert tm.mean_activation == pytest.approx(values[hits].mean(), rel=1e-4, abs=1e-5)
        lowest = store.token_means(nid, limit=5, highest=False)
        assert lowest[0].mean_activation <= means[-1].mean_activation


def test_interrupted_build_resumes_to_the_same_cache(tiny_subject, tiny_corpus_file, tmp_path, tiny_build):
    reference, cfg, _, _ = tiny_build
    cache = tmp_path / "resumed.duckdb"
    first = _build(tiny_subject, tiny_corpus_file, cache, cfg, stop_after_batches=3)
    assert first.extra["finished"] is False
    assert not cache.exists(), "an unfinished build never leaves a cache file"
    assert (partial_dir(cache) / "checkpoint.pt").exists()
    second = _build(tiny_subject, tiny_corpus_file, cache, cfg)
    assert second.resumed_from_excerpt == 15
    assert not partial_dir(cache).exists()
    query = "SELECT * FROM neuron_excerpts ORDER BY layer, neuron, kind, rank"
    with duckdb.connect(str(cache), read_only=True) as got, duckdb.connect(str(reference), read_only=True) as want:
        got_rows = got.execute(query).fetchall()
        want_rows = want.execute(query).fetchall()
    assert len(got_rows) == len(want_rows) > 0
    assert got_rows == want_rows


def test_killed_cli_build_resumes(tiny_model_folder, tiny_corpus_file, tmp_path):
    """kill -9 in the middle of `python -m core build`, then the same command: one complete cache, no duplicates."""
    cache = tmp_path / "killed.duckdb"
    command = [sys.executable, "-m", "core", "build", "--model", str(tiny_model_folder("gpt2")), "--corpus",
               str(tiny_corpus_file), "--tokens", "3000", "--excerpt-len", "16", "--batch-size", "2",
               "--checkpoint-seconds", "0", "--cache", str(cache), "--quiet"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    checkpoint = partial_dir(cache) / "checkpoint.pt"
    deadline = time.monotonic() + 120
    while not checkpoint.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the build ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not cache.exists()
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "resumed at excerpt" in done.stdout
    with open_reader(cache) as reader:
        info = reader.info()
    with duckdb.connect(str(cache), read_only=True) as con:
        dupes = con.execute(
            "SELECT count(*) FROM (SELECT layer, neuron, kind, quantile_bin, rank FROM neuron_excerpts "
            "GROUP BY ALL HAVING count(*) > 1)"
        ).fetchone()[0]
        n_excerpts = con.execute("SELECT count(*) FROM excerpts").fetchone()[0]
    assert info.neurons_recorded == 2 * 48
    assert dupes == 0
    assert n_excerpts == info.excerpts > 100  # 3000 tokens of 16, less the duplicates of a repetitive text


def test_real_model_top_excerpts_match_a_fresh_forward_pass(default_model, small_cache):
    """Layer 0 neuron 0 of SmolLM2-135M: top excerpts sorted by max, activations equal a fresh forward pass."""
    with open_reader(small_cache) as store:
        info = store.info()
        assert (info.layers, info.neurons_per_layer, info.neurons_recorded) == (30, 1536, 46080)
        for nid in (NeuronId(0, 0), NeuronId(17, 923), NeuronId(29, 1535)):
            top = store.neuron_excerpts(nid, kinds=[ExcerptKind.TOP])
            assert len(top) == 20
            maxima = [e.max_activation for e in top]
            assert maxima == sorted(maxima, reverse=True)
            for e in top[:3]:
                fresh = neuron_activations(default_model, list(e.excerpt.token_ids), layers=[nid.layer])
                want = fresh[nid.layer][:, nid.neuron]  # batched and single passes differ by ~1e-5
                np.testing.assert_allclose(e.activations, want, rtol=0, atol=packing_tolerance(want) + 1e-4)


def test_settings_are_checked():
    from core.record import RecordError

    with pytest.raises(RecordError, match="top_k"):
        RecordConfig(top_k=0).check()


def test_loads_by_folder(tiny_model_folder):
    subject = load_model(str(tiny_model_folder("gpt2")))
    assert subject.bos_token_id is None
