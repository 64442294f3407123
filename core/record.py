"""Stage 1, record: run the subject model over the corpus once and keep, for every MLP neuron, what the
viewer and the explainer need. Reads a `Corpus` and a `SubjectModel`; writes a cache through `RecordingWriter`.

Memory does not grow with the number of tokens: each layer keeps fixed-size state (top and bottom
excerpts with their activations, quantile-bin reservoirs, a random pool, power sums, a fine histogram,
per-token sums over a capped vocabulary). The per-excerpt maxima, needed for exact quantile-bin
boundaries, are appended to a file on disk rather than kept in memory.

Resume: the build works in ``CACHE.partial/`` (the tokenised corpus, a plan, the maxima files and a
checkpoint of every layer's state written atomically every few minutes). Started again with the same
command, it reloads the checkpoint and goes on; the finished cache is written to ``CACHE.tmp`` and
renamed into place, so the cache path only ever holds a complete file.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from tqdm import tqdm

from core.corpus import Corpus
from core.models import SubjectModel, capture_neurons, run_decoder, token_strings
from core.paths import partial_dir, temp_path
from core.store import RecordingWriter
from core.types import QUANTILE_BINS, ExcerptKind, Split, random_split, top_split

log = logging.getLogger(__name__)

# fine histogram over t = asinh(x / HIST_SCALE): about 6% relative resolution for |x| > 0.1 and
# 0.0006 absolute near zero, covering |x| up to 16,000; re-binned linearly between min and max at the end
HIST_SCALE = 0.01
HIST_FINE_BINS = 512
HIST_T_RANGE = 15.0
# the histogram reads one token in HIST_STRIDE: a bincount over every token costs ~40% of a forward pass;
# the moments, density, max and min read every token
HIST_STRIDE = 16
# per-excerpt-max quantile boundaries are re-estimated from the maxima so far at these counts
BOUNDS_SCHEDULE = tuple(64 * 2**k for k in range(20))


class RecordError(Exception):
    """A build that cannot go on; the message says what to do."""


@dataclass(frozen=True)
class RecordConfig:
    """What to keep per neuron; stored in the cache's meta as `settings`."""

    top_k: int = 20  # excerpts with the highest max activation
    bottom_k: int = 20  # excerpts with the lowest min activation
    quantile_samples: int = 5  # per quantile bin of the per-excerpt max
    random_samples: int = 10  # uniform random excerpts, none of them among the neuron's top excerpts
    hist_bins: int = 40  # bins of the stored histogram, linear between min and max
    token_vocab: int = 4096  # the most frequent corpus tokens whose per-neuron mean activation is tracked
    token_means_kept: int = 30  # per neuron, the tokens with the highest and with the lowest mean
    min_token_count: int = 3  # a token seen fewer times has no mean (one lucky occurrence tops nothing)
    batch_size: int = 16
    seed: int = 0
    checkpoint_seconds: float = 300.0

    def check(self) -> None:
        for name in ("top_k", "bottom_k", "quantile_samples", "random_samples", "hist_bins", "batch_size"):
            if getattr(self, name) < 1:
                raise RecordError(f"{name} must be at least 1 (got {getattr(self, name)})")
        if self.top_k > 1000 or self.bottom_k > 1000:
            raise RecordError("top_k and bottom_k must be at most 1000")


@dataclass
class RecordSummary:
    """What a finished build reports."""

    cache: str
    tokens: int
    excerpts: int
    layers: int
    neurons_per_layer: int
    seconds: float
    resumed_from_excerpt: int = 0
    forward_seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0


class LayerRecorder:
    """Fixed-size running state for the neurons of one layer."""

    def __init__(self, n_neurons: int, excerpt_len: int, n_pool: int, n_vocab: int, cfg: RecordConfig) -> None:
        n, t = n_neurons, excerpt_len
        self.cfg = cfg
        self.n, self.t = n, t
        self.top_vals = torch.full((n, cfg.top_k), -math.inf)
        self.top_ids = torch.full((n, cfg.top_k), -1, dtype=torch.int64)
        self.top_acts = torch.zeros(n, cfg.top_k, t)  # [neuron, rank, pos]
        self.bot_vals = torch.full((n, cfg.bottom_k), -math.inf)  # negated minima, so the same topk code serves
        self.bot_ids = torch.full((n, cfg.bottom_k), -1, dtype=torch.int64)
        self.bot_acts = torch.zeros(n, cfg.bottom_k, t)
        bins, slots = len(QUANTILE_BINS), cfg.quantile_samples
        self.bin_bounds = torch.full((n, bins), math.inf)  # q50, q90, q99, q999 estimates
        self.bin_seen = torch.zeros(n, bins, dtype=torch.int64)
        self.bin_ids = torch.full((n, bins, slots), -1, dtype=torch.int64)
        self.bin_acts = torch.zeros(n, bins, slots, t)
        self.pool_acts = torch.zeros(n_pool, n, t)  # [pool slot, neuron, pos]
        self.power_sums = torch.zeros(4, n, dtype=torch.float64)  # sum of x, x^2, x^3, x^4
        self.positive = torch.zeros(n, dtype=torch.int64)
        self.fine_hist = torch.zeros(n * HIST_FINE_BINS, dtype=torch.int64)
        self.max_act = torch.full((n,), -math.inf)
        self.min_act = torch.full((n,), math.inf)
        # always cfg.token_vocab rows, however many distinct tokens a corpus has, so memory does not grow with
        # the corpus; row n_vocab collects the untracked tokens
        self.token_sums = torch.zeros(max(n_vocab, cfg.token_vocab) + 1, n)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v for k, v in vars(self).items() if isinstance(v, torch.Tensor)}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for key, value in state.items():
            setattr(self, key, value)

    def update(
        self,
        acts: torch.Tensor,  # [batch, pos, neuron]
        excerpt_ids: torch.Tensor,  # [batch]
        vocab_index: torch.Tensor,  # [batch * pos], index into the tracked vocabulary
        pool_slots: torch.Tensor,  # [batch], slot in the random pool or -1
        generator: torch.Generator,
    ) -> torch.Tensor:
        """Fold one batch into the state; returns the per-excerpt maxima [batch, neuron]."""
        batch = acts.shape[0]
        flat = acts.reshape(-1, self.n)  # [batch * pos, neuron]
        squares = flat * flat
        self.power_sums[0] += flat.sum(0)
        self.power_sums[1] += squares.sum(0)
        self.power_sums[2] += (squares * flat).sum(0)
        self.power_sums[3] += (squares * squares).sum(0)
        self.positive += (flat > 0).sum(0)
        self._add_histogram(flat[::HIST_STRIDE])
        self.token_sums.index_add_(0, vocab_index, flat)

        excerpt_max = acts.amax(1)  # [batch, neuron]
        excerpt_min = acts.amin(1)
        torch.maximum(self.max_act, excerpt_max.amax(0), out=self.max_act)
        torch.minimum(self.min_act, excerpt_min.amin(0), out=self.min_act)
        _merge_topk(self.top_vals, self.top_ids, self.top_acts, excerpt_max, excerpt_ids, acts)
        _merge_topk(self.bot_vals, self.bot_ids, self.bot_acts, -excerpt_min, excerpt_ids, acts)
        self._sample_bins(excerpt_max, excerpt_ids, acts, generator)
        for b in range(batch):
            slot = int(pool_slots[b])
            if slot >= 0:
                self.pool_acts[slot] = acts[b].T
        return excerpt_max

    def _add_histogram(self, sample: torch.Tensor) -> None:
        t = torch.asinh(sample / HIST_SCALE)
        index = ((t + HIST_T_RANGE) * (HIST_FINE_BINS / (2 * HIST_T_RANGE))).long().clamp_(0, HIST_FINE_BINS - 1)
        index += torch.arange(self.n) * HIST_FINE_BINS
        self.fine_hist += torch.bincount(index.view(-1), minlength=self.n * HIST_FINE_BINS)

    def _sample_bins(
        self, excerpt_max: torch.Tensor, excerpt_ids: torch.Tensor, acts: torch.Tensor, generator: torch.Generator
    ) -> None:
        """Reservoir-sample excerpts into quantile bins under the current boundary estimates.

        The batch is handled at once: each excerpt's count within its (neuron, bin) comes from a cumulative
        sum over the batch, and where two excerpts of one batch draw the same slot the later one wins, as it
        would one at a time."""
        n_bins, slots = len(QUANTILE_BINS), self.cfg.quantile_samples
        batch = excerpt_max.shape[0]
        bins = (excerpt_max.unsqueeze(-1) > self.bin_bounds).sum(-1)  # [batch, neuron]; n_bins = above q999
        inside = bins < n_bins
        bin_c = bins.clamp(max=n_bins - 1)
        onehot = torch.nn.functional.one_hot(bin_c, n_bins) * inside.unsqueeze(-1)  # [batch, neuron, bin]
        order_in_batch = onehot.cumsum(0).gather(2, bin_c.unsqueeze(-1)).squeeze(-1)  # 1-based
        neurons = torch.arange(self.n)
        seen = self.bin_seen[neurons, bin_c] + order_in_batch  # [batch, neuron]
        self.bin_seen += onehot.sum(0)
        draw = (torch.rand(batch, self.n, generator=generator) * seen).long()
        slot = torch.where(seen <= slots, seen - 1, draw)
        take = inside & (slot < slots)
        b_idx, j_idx = take.nonzero(as_tuple=True)  # sorted by batch position
        if b_idx.numel() == 0:
            return
        bin_t, slot_t = bin_c[b_idx, j_idx], slot[b_idx, j_idx]
        key = (j_idx * n_bins + bin_t) * slots + slot_t
        # keep the last writer of each slot: unique over the reversed order finds last occurrences
        rev = torch.arange(key.numel() - 1, -1, -1)
        _, first_in_rev = np.unique(key[rev].numpy(), return_index=True)
        last = rev[torch.from_numpy(first_in_rev)]
        b_idx, j_idx, bin_t, slot_t = b_idx[last], j_idx[last], bin_t[last], slot_t[last]
        self.bin_ids[j_idx, bin_t, slot_t] = excerpt_ids[b_idx]
        self.bin_acts[j_idx, bin_t, slot_t] = acts[b_idx, :, j_idx]

    def set_bounds(self, maxima: np.ndarray) -> None:
        """Re-estimate the bin boundaries from the per-excerpt maxima seen so far [excerpts, neuron]."""
        upper = [hi for _, hi in QUANTILE_BINS]
        self.bin_bounds = torch.from_numpy(np.quantile(maxima, upper, axis=0).T.astype(np.float32).copy())

    def finish(
        self,
        layer: int,
        maxima: np.ndarray,
        pool_ids: np.ndarray,
        tokens_seen: int,
        vocab_counts: np.ndarray,
        vocab_ids: np.ndarray,
    ) -> tuple[pa.Table, pa.Table, pa.Table]:
        """Tables for neuron_stats, neuron_excerpts and token_means of this layer."""
        qs = [0.0] + [hi for _, hi in QUANTILE_BINS] + [1.0]
        edges = np.quantile(maxima, qs, axis=0).T.astype(np.float32)  # [neuron, 6]
        stats = self._stats_table(layer, tokens_seen, edges)
        excerpts = self._excerpt_table(layer, edges, pool_ids)
        means = self._token_means_table(layer, vocab_counts, vocab_ids)
        return stats, excerpts, means

    def _stats_table(self, layer: int, tokens: int, edges: np.ndarray) -> pa.Table:
        s1, s2, s3, s4 = (self.power_sums[i] / tokens for i in range(4))
        mean = s1
        var = (s2 - mean**2).clamp(min=0)
        m3 = s3 - 3 * mean * s2 + 2 * mean**3
        m4 = s4 - 4 * mean * s3 + 6 * mean**2 * s2 - 3 * mean**4
        safe_var = torch.where(var > 1e-12, var, torch.ones_like(var))
        skew = torch.where(var > 1e-12, m3 / safe_var**1.5, torch.zeros_like(var))
        kurt = torch.where(var > 1e-12, m4 / safe_var**2 - 3, torch.zeros_like(var))
        hist_edges, hist_counts = self._display_histogram()
        n = self.n
        return pa.table(
            {
                "layer": pa.array(np.full(n, layer, dtype=np.int16)),
                "neuron": pa.array(np.arange(n, dtype=np.int32)),
                "max_activation": pa.array(self.max_act.numpy()),
                "min_activation": pa.array(self.min_act.numpy()),
                "mean": pa.array(mean.numpy()),
                "variance": pa.array(var.numpy()),
                "skewness": pa.array(skew.numpy()),
                "kurtosis": pa.array(kurt.numpy()),
                "density": pa.array((self.positive.double() / tokens).numpy()),
                "hist_edges": _list_array(hist_edges),
                "hist_counts": _list_array(hist_counts),
                "quantile_edges": _list_array(edges),
            }
        )

    def _display_histogram(self) -> tuple[np.ndarray, np.ndarray]:
        """Linear bins between each neuron's min and max, filled from the fine asinh histogram."""
        bins = self.cfg.hist_bins
        fine = self.fine_hist.view(self.n, HIST_FINE_BINS).numpy()
        t_centers = (np.arange(HIST_FINE_BINS) + 0.5) * (2 * HIST_T_RANGE / HIST_FINE_BINS) - HIST_T_RANGE
        centers = np.sinh(t_centers) * HIST_SCALE
        lo, hi = self.min_act.numpy().astype(np.float64), self.max_act.numpy().astype(np.float64)
        width = np.where(hi > lo, hi - lo, 1.0)
        edges = lo[:, None] + width[:, None] * np.linspace(0, 1, bins + 1)[None, :]
        target = np.clip(((centers[None, :] - lo[:, None]) / width[:, None] * bins).astype(np.int64), 0, bins - 1)
        counts = np.zeros((self.n, bins), dtype=np.int64)
        np.add.at(counts, (np.repeat(np.arange(self.n), HIST_FINE_BINS), target.ravel()), fine.ravel())
        return edges.astype(np.float32), counts

    def _excerpt_table(self, layer: int, edges: np.ndarray, pool_ids: np.ndarray) -> pa.Table:
        cfg = self.cfg
        cols: dict[str, list[np.ndarray]] = {k: [] for k in ("neuron", "excerpt", "kind", "rank", "bin", "split")}
        acts_parts: list[np.ndarray] = []

        def add(neuron: np.ndarray, ids: np.ndarray, kind: str, rank: np.ndarray, qbin: np.ndarray,
                split: np.ndarray, acts: np.ndarray) -> None:
            cols["neuron"].append(neuron)
            cols["excerpt"].append(ids)
            cols["kind"].append(np.full(len(ids), kind, dtype=object))
            cols["rank"].append(rank)
            cols["bin"].append(qbin)
            cols["split"].append(split)
            acts_parts.append(acts)

        for kind, ids_t, acts_t in (
            (ExcerptKind.TOP, self.top_ids, self.top_acts),
            (ExcerptKind.BOTTOM, self.bot_ids, self.bot_acts),
        ):
            ids = ids_t.numpy()
            neuron, rank = np.nonzero(ids >= 0)
            if kind == ExcerptKind.TOP:
                split = np.array([str(top_split(int(r))) for r in range(ids.shape[1])], dtype=object)[rank]
            else:
                split = np.full(len(rank), str(Split.VIEW), dtype=object)
            add(neuron, ids[neuron, rank], kind, rank, np.full(len(rank), -1), split,
                acts_t.numpy()[neuron, rank])

        # quantile samples, re-bucketed by the exact boundaries now that every maximum is known
        ids = self.bin_ids.numpy()
        acts = self.bin_acts.numpy()
        neuron, est_bin, slot = np.nonzero(ids >= 0)
        sample_max = acts[neuron, est_bin, slot].max(-1)
        true_bin = (sample_max[:, None] > edges[neuron, 1:5]).sum(-1)
        keep = true_bin < len(QUANTILE_BINS)
        neuron, est_bin, slot, true_bin = neuron[keep], est_bin[keep], slot[keep], true_bin[keep]
        order = np.lexsort((slot, est_bin != true_bin, true_bin, neuron))  # samples already in their bin first
        neuron, est_bin, slot, true_bin = neuron[order], est_bin[order], slot[order], true_bin[order]
        rank = _rank_within_groups(neuron * len(QUANTILE_BINS) + true_bin)
        keep = rank < cfg.quantile_samples
        neuron, est_bin, slot, true_bin, rank = neuron[keep], est_bin[keep], slot[keep], true_bin[keep], rank[keep]
        add(neuron, ids[neuron, est_bin, slot], ExcerptKind.QUANTILE, rank, true_bin,
            np.full(len(rank), str(Split.VIEW), dtype=object), acts[neuron, est_bin, slot])

        # random: pool excerpts in pool order, skipping any that is among this neuron's top excerpts
        top_ids = self.top_ids.numpy()
        in_top = (pool_ids[None, :, None] == top_ids[:, None, :]).any(-1)  # [neuron, pool]
        neuron, pool_slot = np.nonzero(~in_top)
        rank = _rank_within_groups(neuron)
        keep = rank < cfg.random_samples
        neuron, pool_slot, rank = neuron[keep], pool_slot[keep], rank[keep]
        split = np.array([str(random_split(int(r))) for r in range(cfg.random_samples)], dtype=object)[rank]
        add(neuron, pool_ids[pool_slot], ExcerptKind.RANDOM, rank, np.full(len(rank), -1), split,
            self.pool_acts.numpy()[pool_slot, neuron])

        neuron = np.concatenate(cols["neuron"])
        order = np.argsort(neuron, kind="stable")
        activations = np.concatenate(acts_parts)[order].astype(np.float32)
        qbin = np.concatenate(cols["bin"])[order]
        return pa.table(
            {
                "layer": pa.array(np.full(len(order), layer, dtype=np.int16)),
                "neuron": pa.array(neuron[order].astype(np.int32)),
                "excerpt_id": pa.array(np.concatenate(cols["excerpt"])[order].astype(np.int32)),
                "kind": pa.array(np.concatenate(cols["kind"])[order].tolist(), type=pa.string()),
                "rank": pa.array(np.concatenate(cols["rank"])[order].astype(np.int16)),
                "quantile_bin": pa.array(qbin.astype(np.int8), mask=qbin < 0),
                "split": pa.array(np.concatenate(cols["split"])[order].tolist(), type=pa.string()),
                "max_activation": pa.array(activations.max(-1)),
                "activations": _list_array(activations),
            }
        )

    def _token_means_table(self, layer: int, vocab_counts: np.ndarray, vocab_ids: np.ndarray) -> pa.Table:
        cfg = self.cfg
        sums = self.token_sums[: len(vocab_counts)].numpy()  # [vocab, neuron]
        usable = vocab_counts >= cfg.min_token_count
        means = sums[usable] / vocab_counts[usable, None]
        ids, counts = vocab_ids[usable], vocab_counts[usable]
        kept = min(cfg.token_means_kept, len(ids))
        if kept == 0:
            return _empty_token_means()
        # [2 * kept, neuron]: the lowest and the highest means (argpartition: a full sort costs ~10x)
        if 2 * kept < len(ids):
            low = np.argpartition(means, kept - 1, axis=0)[:kept]
            high = np.argpartition(means, len(ids) - kept, axis=0)[-kept:]
            rows = np.concatenate([low, high])
        else:
            rows = np.broadcast_to(np.arange(len(ids))[:, None], (len(ids), self.n))
        neuron = np.broadcast_to(np.arange(self.n), rows.shape)
        pairs = np.stack([neuron.T.ravel(), rows.T.ravel()], axis=1)  # sorted by neuron for the zone maps
        return pa.table(
            {
                "layer": pa.array(np.full(len(pairs), layer, dtype=np.int16)),
                "neuron": pa.array(pairs[:, 0].astype(np.int32)),
                "token_id": pa.array(ids[pairs[:, 1]].astype(np.int32)),
                "count": pa.array(counts[pairs[:, 1]].astype(np.int64)),
                "mean_activation": pa.array(means[pairs[:, 1], pairs[:, 0]].astype(np.float32)),
            }
        )


def _empty_token_means() -> pa.Table:
    return pa.table(
        {
            "layer": pa.array([], type=pa.int16()),
            "neuron": pa.array([], type=pa.int32()),
            "token_id": pa.array([], type=pa.int32()),
            "count": pa.array([], type=pa.int64()),
            "mean_activation": pa.array([], type=pa.float32()),
        }
    )


def _merge_topk(
    vals: torch.Tensor,  # [neuron, k], descending
    ids: torch.Tensor,  # [neuron, k]
    acts: torch.Tensor,  # [neuron, k, pos]
    new_vals: torch.Tensor,  # [batch, neuron]
    new_ids: torch.Tensor,  # [batch]
    new_acts: torch.Tensor,  # [batch, pos, neuron]
) -> None:
    """Keep the k largest per neuron, touching only neurons where a new excerpt makes the cut."""
    k = vals.shape[1]
    changed = (new_vals > vals[:, -1]).any(0).nonzero().squeeze(1)
    if changed.numel() == 0:
        return
    batch = new_vals.shape[0]
    if changed.numel() == vals.shape[0]:  # early in a build every neuron changes: no index copies
        cand_vals = torch.cat([vals, new_vals.T], 1)
        cand_ids = torch.cat([ids, new_ids.unsqueeze(0).expand(vals.shape[0], batch)], 1)
        top_vals, pick = cand_vals.topk(k, dim=1)
        vals.copy_(top_vals)
        ids.copy_(cand_ids.gather(1, pick))
        cand_acts = torch.cat([acts, new_acts.permute(2, 0, 1)], 1)
        acts.copy_(cand_acts.gather(1, pick.unsqueeze(-1).expand(-1, -1, acts.shape[2])))
        return
    cand_vals = torch.cat([vals[changed], new_vals[:, changed].T], 1)  # [m, k + batch]
    cand_ids = torch.cat([ids[changed], new_ids.unsqueeze(0).expand(changed.numel(), batch)], 1)
    cand_acts = torch.cat([acts[changed], new_acts[:, :, changed].permute(2, 0, 1)], 1)  # [m, k + batch, pos]
    top_vals, pick = cand_vals.topk(k, dim=1)
    vals[changed] = top_vals
    ids[changed] = cand_ids.gather(1, pick)
    acts[changed] = cand_acts.gather(1, pick.unsqueeze(-1).expand(-1, -1, acts.shape[2]))


def _rank_within_groups(groups: np.ndarray) -> np.ndarray:
    """0, 1, 2, ... within each run of equal values of a sorted array."""
    if len(groups) == 0:
        return np.zeros(0, dtype=np.int64)
    starts = np.r_[0, np.nonzero(np.diff(groups))[0] + 1]
    lengths = np.diff(np.r_[starts, len(groups)])
    return np.arange(len(groups)) - np.repeat(starts, lengths)


def _list_array(values: np.ndarray) -> pa.Array:
    """A 2-D array as an Arrow list column, one list per row."""
    rows, width = values.shape
    offsets = pa.array(np.arange(0, rows * width + 1, width, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(np.ascontiguousarray(values).ravel()))


# --- the build ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BuildPlan:
    """Everything that decides a build's result; a resume must match it exactly."""

    model: str
    corpus: str
    tokens: int
    excerpt_len: int
    settings: dict[str, Any]


def record_corpus(
    subject: SubjectModel,
    corpus_loader: Callable[[], Corpus],
    cache_path: str | Path,
    plan: BuildPlan,
    cfg: RecordConfig,
    *,
    progress: bool = True,
    stop_after_batches: int | None = None,
) -> RecordSummary:
    """Record every neuron of `subject` over the corpus into `cache_path`, resuming an interrupted build.

    `stop_after_batches` ends the run early (after a checkpoint) without finishing: tests use it to
    interrupt a build at a known point.
    """
    cfg.check()
    cache_path = Path(cache_path)
    work = partial_dir(cache_path)
    started = time.perf_counter()
    corpus_tokens, sources = _load_or_save_corpus(work, plan, corpus_loader)
    n_excerpts, excerpt_len = corpus_tokens.shape
    n_layers, n_neurons = subject.n_layers, subject.n_neurons

    rng = np.random.default_rng(cfg.seed)
    order = rng.permutation(n_excerpts)  # processing order: a shuffled stream makes early estimates unbiased
    pool_ids = np.sort(rng.choice(n_excerpts, size=min(n_excerpts, cfg.random_samples + 5), replace=False))
    pool_slot_of = np.full(n_excerpts, -1, dtype=np.int64)
    pool_slot_of[pool_ids] = np.arange(len(pool_ids))
    vocab_ids, vocab_counts = _tracked_vocab(corpus_tokens, cfg.token_vocab)
    vocab_index_of = np.full(int(corpus_tokens.max()) + 1, len(vocab_ids), dtype=np.int64)
    vocab_index_of[vocab_ids] = np.arange(len(vocab_ids))

    recorders = [LayerRecorder(n_neurons, excerpt_len, len(pool_ids), len(vocab_ids), cfg) for _ in range(n_layers)]
    generator = torch.Generator().manual_seed(cfg.seed)
    done = _load_checkpoint(work, recorders, generator)
    maxima_files = _open_maxima(work, n_layers, n_neurons, done)
    resumed_from = done
    if done:
        log.info("resuming at excerpt %d of %d", done, n_excerpts)  # the checkpoint holds the bin boundaries too

    batch_state: dict[str, torch.Tensor] = {}
    excerpt_max: dict[int, torch.Tensor] = {}
    bos = subject.bos_token_id
    skip = 1 if bos is not None else 0

    def sink(layer: int, acts: torch.Tensor) -> None:
        acts = acts[:, skip:, :].float()
        excerpt_max[layer] = recorders[layer].update(
            acts, batch_state["ids"], batch_state["vocab"], batch_state["pool"], generator
        )

    bar = tqdm(
        total=n_excerpts * excerpt_len, initial=done * excerpt_len, unit="tok", unit_scale=True,
        desc="recording", disable=not progress, dynamic_ncols=True,
    )
    last_checkpoint = time.perf_counter()
    forward_seconds = 0.0
    batches = 0
    next_bounds = next((c for c in BOUNDS_SCHEDULE if c > done), None)
    try:
        with capture_neurons(subject, sink):
            while done < n_excerpts:
                ids = order[done : done + cfg.batch_size]
                token_ids = torch.from_numpy(corpus_tokens[ids].astype(np.int64))
                if bos is not None:
                    token_ids = torch.cat([torch.full((len(ids), 1), bos, dtype=torch.int64), token_ids], 1)
                batch_state["ids"] = torch.from_numpy(ids.astype(np.int64))
                batch_state["vocab"] = torch.from_numpy(vocab_index_of[corpus_tokens[ids].reshape(-1)])
                batch_state["pool"] = torch.from_numpy(pool_slot_of[ids])
                tick = time.perf_counter()
                run_decoder(subject, token_ids, stop_after_layer=n_layers - 1)
                forward_seconds += time.perf_counter() - tick
                for layer in range(n_layers):
                    maxima_files[layer].write(excerpt_max[layer].to(torch.float16).numpy().tobytes())
                done += len(ids)
                batches += 1
                bar.update(len(ids) * excerpt_len)
                if next_bounds is not None and done >= next_bounds:
                    _flush(maxima_files)
                    for layer, recorder in enumerate(recorders):
                        recorder.set_bounds(_read_maxima(work, layer, n_neurons, done))
                    next_bounds = next((c for c in BOUNDS_SCHEDULE if c > done), None)
                elif batches == 1 and not resumed_from:
                    for layer, recorder in enumerate(recorders):
                        recorder.set_bounds(excerpt_max[layer].numpy())
                if stop_after_batches is not None and batches >= stop_after_batches:
                    _save_checkpoint(work, recorders, generator, done, maxima_files)
                    raise _Interrupted
                if time.perf_counter() - last_checkpoint > cfg.checkpoint_seconds and done < n_excerpts:
                    _save_checkpoint(work, recorders, generator, done, maxima_files)
                    last_checkpoint = time.perf_counter()
    except _Interrupted:
        bar.close()
        _close(maxima_files)
        return RecordSummary(str(cache_path), done * excerpt_len, done, n_layers, n_neurons,
                             time.perf_counter() - started, resumed_from, forward_seconds, {"finished": False})
    bar.close()
    _close(maxima_files)

    _write_cache(subject, cache_path, plan, cfg, recorders, corpus_tokens, sources, pool_ids,
                 vocab_ids, vocab_counts, work, progress)
    shutil.rmtree(work, ignore_errors=True)
    elapsed = time.perf_counter() - started
    return RecordSummary(str(cache_path), n_excerpts * excerpt_len, n_excerpts, n_layers, n_neurons, elapsed,
                         resumed_from, forward_seconds, {"finished": True})


class _Interrupted(Exception):
    pass


def _tracked_vocab(corpus_tokens: np.ndarray, cap: int) -> tuple[np.ndarray, np.ndarray]:
    """The `cap` most frequent token ids of the corpus and their counts (ids ascending)."""
    ids, counts = np.unique(corpus_tokens, return_counts=True)
    if len(ids) > cap:
        keep = np.sort(np.argsort(-counts, kind="stable")[:cap])
        ids, counts = ids[keep], counts[keep]
    return ids.astype(np.int64), counts.astype(np.int64)


def _load_or_save_corpus(work: Path, plan: BuildPlan, loader: Callable[[], Corpus]) -> tuple[np.ndarray, list[str]]:
    plan_file = work / "plan.json"
    corpus_file = work / "corpus.npz"
    if plan_file.exists() and corpus_file.exists():
        saved = json.loads(plan_file.read_text())
        if saved != asdict(plan):
            raise RecordError(
                f"an interrupted build with other settings is in {work}; run that same command again to finish it, "
                f"or delete {work} to start this one"
            )
        data = np.load(corpus_file, allow_pickle=False)
        return data["token_ids"], [str(s) for s in data["sources"]]
    corpus = loader()
    work.mkdir(parents=True, exist_ok=True)
    tmp = work / "corpus.tmp.npz"
    np.savez(tmp, token_ids=corpus.token_ids.astype(np.int32), sources=np.array(corpus.sources, dtype=str))
    os.replace(tmp, corpus_file)
    _atomic_write_text(plan_file, json.dumps(asdict(plan), indent=1))
    (work / "corpus_report.json").write_text(json.dumps(asdict(corpus.report)))
    return corpus.token_ids, list(corpus.sources)


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _maxima_path(work: Path, layer: int) -> Path:
    return work / f"maxima-{layer:03d}.f16"


def _open_maxima(work: Path, n_layers: int, n_neurons: int, done: int) -> list[Any]:
    files = []
    for layer in range(n_layers):
        path = _maxima_path(work, layer)
        path.touch()
        handle = open(path, "r+b")  # noqa: SIM115 - closed by _close
        handle.truncate(done * n_neurons * 2)  # rows written after the last checkpoint are redone
        handle.seek(0, os.SEEK_END)
        files.append(handle)
    return files


def _read_maxima(work: Path, layer: int, n_neurons: int, rows: int) -> np.ndarray:
    data = np.fromfile(_maxima_path(work, layer), dtype=np.float16, count=rows * n_neurons)
    return data.reshape(rows, n_neurons).astype(np.float32)


def _flush(files: list[Any]) -> None:
    for handle in files:
        handle.flush()


def _close(files: list[Any]) -> None:
    for handle in files:
        handle.close()


def _save_checkpoint(
    work: Path, recorders: list[LayerRecorder], generator: torch.Generator, done: int, maxima_files: list[Any]
) -> None:
    _flush(maxima_files)
    for handle in maxima_files:
        os.fsync(handle.fileno())
    tmp = work / "checkpoint.tmp"
    torch.save(
        {"done": done, "generator": generator.get_state(), "layers": [r.state_dict() for r in recorders]}, tmp
    )
    os.replace(tmp, work / "checkpoint.pt")
    log.info("checkpoint at excerpt %d", done)


def _load_checkpoint(work: Path, recorders: list[LayerRecorder], generator: torch.Generator) -> int:
    path = work / "checkpoint.pt"
    if not path.exists():
        return 0
    state = torch.load(path, weights_only=True)
    generator.set_state(state["generator"])
    for recorder, layer_state in zip(recorders, state["layers"], strict=True):
        recorder.load_state_dict(layer_state)
    return int(state["done"])


def _write_cache(
    subject: SubjectModel,
    cache_path: Path,
    plan: BuildPlan,
    cfg: RecordConfig,
    recorders: list[LayerRecorder],
    corpus_tokens: np.ndarray,
    sources: list[str],
    pool_ids: np.ndarray,
    vocab_ids: np.ndarray,
    vocab_counts: np.ndarray,
    work: Path,
    progress: bool,
) -> None:
    """Write every table into CACHE.tmp, then rename it over the cache path."""
    n_excerpts, excerpt_len = corpus_tokens.shape
    tmp = temp_path(cache_path)
    tmp_wal = Path(str(tmp) + ".wal")
    tmp_wal.unlink(missing_ok=True)
    store = RecordingWriter.create(tmp)
    try:
        strings = token_strings(subject.tokenizer, list(range(int(corpus_tokens.max()) + 1)))
        store.insert_excerpts(corpus_tokens, [[strings[t] for t in row] for row in corpus_tokens], sources)
        all_ids, all_counts = np.unique(corpus_tokens, return_counts=True)
        store.insert_vocab(all_ids, [strings[t] for t in all_ids], all_counts)
        tokens_seen = n_excerpts * excerpt_len
        for layer, recorder in enumerate(tqdm(recorders, desc="writing cache", unit="layer", disable=not progress)):
            maxima = _read_maxima(work, layer, subject.n_neurons, n_excerpts)
            stats, excerpts, means = recorder.finish(layer, maxima, pool_ids, tokens_seen, vocab_counts, vocab_ids)
            store.insert_neuron_stats(stats)
            store.insert_neuron_excerpts(excerpts)
            store.insert_token_means(means)
        report_file = work / "corpus_report.json"
        store.set_meta(
            {
                "model": plan.model,
                "architecture": subject.architecture,
                "corpus": plan.corpus,
                "corpus_report": json.loads(report_file.read_text()) if report_file.exists() else {},
                "layers": subject.n_layers,
                "neurons_per_layer": subject.n_neurons,
                "tokens": tokens_seen,
                "excerpts": n_excerpts,
                "excerpt_len": excerpt_len,
                "bos_token_id": subject.bos_token_id,
                "settings": asdict(cfg),
                "histogram_token_stride": HIST_STRIDE,
                "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
        )
        store.checkpoint()
    finally:
        store.close()
    os.replace(tmp, cache_path)  # atomically: a reader keeps the old file it has open
