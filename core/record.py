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

import contextlib
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
from core.killpoints import kill_point
from core.models import SubjectModel, capture_neurons, run_decoder, token_strings
from core.packing import encode_rows
from core.paths import partial_dir, temp_path
from core.store import RecordingWriter
from core.types import QUANTILE_BINS, ExcerptKind, Split, random_split, top_split

log = logging.getLogger(__name__)

# fine histogram over t = sign(x) log1p(|x| / HIST_SCALE): about 6% relative resolution for |x| > 0.1 and
# 0.0006 absolute near zero, covering |x| up to 30,000; re-binned linearly between min and max at the end
HIST_SCALE = 0.01
HIST_FINE_BINS = 512
HIST_T_RANGE = 15.0
# the histogram reads one token in HIST_STRIDE: a bincount over every token costs ~40% of a forward pass;
# the moments, density, max and min read every token
HIST_STRIDE = 16
# per-excerpt-max quantile boundaries are re-estimated from the maxima so far at these counts
BOUNDS_SCHEDULE = tuple(64 * 2**k for k in range(20))
# the boundary estimates read at most this many maxima, evenly spread (np.quantile over all of them costs
# seconds per layer on a large corpus)
BOUNDS_SAMPLE = 16384


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
    """Fixed-size running state for the neurons of one layer, on the model's device.

    Top and bottom excerpts live in unsorted slots (sorted once, in `finish`): a batch writes the activations of
    only the excerpts that enter, never reshuffles the kept ones. Two recorders of the same layer over disjoint
    excerpts `merge` into the recorder of their union."""

    def __init__(
        self,
        n_neurons: int,
        excerpt_len: int,
        n_pool: int,
        n_vocab: int,
        cfg: RecordConfig,
        device: torch.device | str = "cpu",
    ) -> None:
        n, t = n_neurons, excerpt_len
        self.cfg = cfg
        self.n, self.t = n, t

        def full(shape: tuple[int, ...], value: float, dtype: torch.dtype = torch.float32) -> torch.Tensor:
            return torch.full(shape, value, dtype=dtype, device=device)

        self.top_vals = full((n, cfg.top_k), -math.inf)
        self.top_ids = full((n, cfg.top_k), -1, torch.int64)
        self.top_acts = full((n, cfg.top_k, t), 0.0)  # [neuron, slot, pos]
        self.bot_vals = full((n, cfg.bottom_k), -math.inf)  # negated minima, so the same top-k code serves
        self.bot_ids = full((n, cfg.bottom_k), -1, torch.int64)
        self.bot_acts = full((n, cfg.bottom_k, t), 0.0)
        bins, slots = len(QUANTILE_BINS), cfg.quantile_samples
        self.bin_bounds = full((n, bins), math.inf)  # q50, q90, q99, q999 estimates
        self.bin_seen = full((n, bins), 0, torch.int64)
        self.bin_ids = full((n, bins, slots), -1, torch.int64)
        self.bin_acts = full((n, bins, slots, t), 0.0)
        self.pool_acts = full((n_pool, n, t), 0.0)  # [pool slot, neuron, pos]
        self.pool_filled = full((n_pool,), False, torch.bool)
        self.power_sums = full((4, n), 0.0, torch.float64)  # sum of x, x^2, x^3, x^4
        self.positive = full((n,), 0, torch.int64)
        self.fine_hist = full((n * HIST_FINE_BINS,), 0, torch.int64)
        self.max_act = full((n,), -math.inf)
        self.min_act = full((n,), math.inf)
        # always cfg.token_vocab rows, however many distinct tokens a corpus has, so memory does not grow with
        # the corpus; row n_vocab collects the untracked tokens
        self.token_sums = full((max(n_vocab, cfg.token_vocab) + 1, n), 0.0)
        self._hist_offsets = torch.arange(n, device=device) * HIST_FINE_BINS

    @classmethod
    def from_state(cls, state: dict[str, torch.Tensor], cfg: RecordConfig) -> LayerRecorder:
        """A recorder holding a saved state (a copy: the state may be memory-mapped from a checkpoint)."""
        n_pool = state["pool_acts"].shape[0]
        n, t = state["top_acts"].shape[0], state["top_acts"].shape[2]
        recorder = cls(n, t, n_pool, state["token_sums"].shape[0] - 1, cfg, state["max_act"].device)
        recorder.load_state_dict({k: v.clone() for k, v in state.items()})
        return recorder

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v for k, v in vars(self).items() if isinstance(v, torch.Tensor) and not k.startswith("_")}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for key, value in state.items():
            setattr(self, key, value.to(self.max_act.device))
        if "pool_filled" not in state:  # a checkpoint from before the mask: filled pool rows are non-zero
            self.pool_filled = self.pool_acts.flatten(1).ne(0).any(1)

    def update(
        self,
        acts: torch.Tensor,  # [batch, pos, neuron]
        excerpt_ids: torch.Tensor,  # [batch]
        vocab_index: torch.Tensor,  # [batch * pos], index into the tracked vocabulary
        pool_slots: torch.Tensor,  # [batch], slot in the random pool or -1
        hist_index: torch.Tensor,  # rows of the flattened batch that the histogram reads
        generator: torch.Generator,
    ) -> torch.Tensor:
        """Fold one batch into the state; returns the per-excerpt maxima [batch, neuron]."""
        flat = acts.reshape(-1, self.n)  # [batch * pos, neuron]
        squares = flat * flat
        sums = torch.stack([flat.sum(0), squares.sum(0), (squares * flat).sum(0), squares.square_().sum(0)])
        self.power_sums += sums
        # counted as floats: a comparison's bool tensor sums about 3x slower on CPU than sign() does
        self.positive += flat.sign().clamp_(min=0).sum(0).long()
        self._add_histogram(flat.index_select(0, hist_index))
        self.token_sums.index_add_(0, vocab_index, flat)

        excerpt_max = acts.amax(1)  # [batch, neuron]
        excerpt_min = acts.amin(1)
        torch.maximum(self.max_act, excerpt_max.amax(0), out=self.max_act)
        torch.minimum(self.min_act, excerpt_min.amin(0), out=self.min_act)
        _enter_topk(self.top_vals, self.top_ids, self.top_acts, excerpt_max, excerpt_ids, acts)
        _enter_topk(self.bot_vals, self.bot_ids, self.bot_acts, excerpt_min.neg_(), excerpt_ids, acts)
        self._sample_bins(excerpt_max, excerpt_ids, acts, generator)
        for b in torch.nonzero(pool_slots >= 0).flatten().tolist():
            slot = int(pool_slots[b])
            self.pool_acts[slot] = acts[b].T
            self.pool_filled[slot] = True
        return excerpt_max

    def _add_histogram(self, sample: torch.Tensor) -> None:
        t = torch.log1p(sample.abs() * (1.0 / HIST_SCALE)).copysign_(sample)  # log1p is ~4x cheaper than asinh
        index = ((t + HIST_T_RANGE) * (HIST_FINE_BINS / (2 * HIST_T_RANGE))).long().clamp_(0, HIST_FINE_BINS - 1)
        index += self._hist_offsets
        self.fine_hist.index_add_(0, index.view(-1), torch.ones(index.numel(), dtype=torch.int64, device=index.device))

    def _sample_bins(
        self, excerpt_max: torch.Tensor, excerpt_ids: torch.Tensor, acts: torch.Tensor, generator: torch.Generator
    ) -> None:
        """Reservoir-sample excerpts into quantile bins under the current boundary estimates.

        The batch is handled at once: each excerpt's count within its (neuron, bin) comes from a cumulative
        sum over the batch, and where two excerpts of one batch draw the same slot the later one wins, as it
        would one at a time."""
        n_bins, slots = len(QUANTILE_BINS), self.cfg.quantile_samples
        batch = excerpt_max.shape[0]
        device = excerpt_max.device
        bins = (excerpt_max.unsqueeze(-1) > self.bin_bounds).sum(-1)  # [batch, neuron]; n_bins = above q999
        inside = bins < n_bins
        bin_c = bins.clamp_(max=n_bins - 1)
        onehot = torch.nn.functional.one_hot(bin_c, n_bins).mul_(inside.unsqueeze(-1))  # [batch, neuron, bin]
        order_in_batch = onehot.cumsum(0).gather(2, bin_c.unsqueeze(-1)).squeeze(-1)  # 1-based
        neurons = torch.arange(self.n, device=device)
        seen = self.bin_seen[neurons, bin_c] + order_in_batch  # [batch, neuron]
        self.bin_seen += onehot.sum(0)
        draw = (torch.rand(batch, self.n, generator=generator).to(device) * seen).long()
        slot = torch.where(seen <= slots, seen - 1, draw)
        take = inside & (slot < slots)
        b_idx, j_idx = take.nonzero(as_tuple=True)  # sorted by batch position
        if b_idx.numel() == 0:
            return
        bin_t, slot_t = bin_c[b_idx, j_idx], slot[b_idx, j_idx]
        key = (j_idx * n_bins + bin_t) * slots + slot_t
        # keep the last writer of each slot: the largest position per key
        position = torch.arange(key.numel(), device=device)
        last = torch.full((self.n * n_bins * slots,), -1, dtype=torch.int64, device=device)
        last.scatter_reduce_(0, key, position, reduce="amax")
        last = last[last >= 0]
        b_idx, j_idx, bin_t, slot_t = b_idx[last], j_idx[last], bin_t[last], slot_t[last]
        self.bin_ids[j_idx, bin_t, slot_t] = excerpt_ids[b_idx]
        self.bin_acts[j_idx, bin_t, slot_t] = acts[b_idx, :, j_idx]

    def set_bounds(self, maxima: np.ndarray) -> None:
        """Re-estimate the bin boundaries from the per-excerpt maxima seen so far [excerpts, neuron]."""
        if len(maxima) > BOUNDS_SAMPLE:  # estimates: an even spread of the maxima is enough
            maxima = maxima[np.linspace(0, len(maxima) - 1, BOUNDS_SAMPLE).astype(np.int64)]
        upper = [hi for _, hi in QUANTILE_BINS]
        bounds = np.quantile(maxima, upper, axis=0).T.astype(np.float32)
        self.bin_bounds = torch.from_numpy(np.ascontiguousarray(bounds)).to(self.max_act.device)

    def merge(self, other: LayerRecorder, generator: torch.Generator) -> None:
        """Fold in the state of the same layer over other excerpts. Exact for top and bottom excerpts, the random
        pool, sums, counts and histograms; the quantile reservoirs merge as weighted samples of their bins (each
        shard's bins come from its own boundary estimates; `finish` re-bins every sample by the exact ones)."""
        _merge_topk(self.top_vals, self.top_ids, self.top_acts, other.top_vals, other.top_ids, other.top_acts)
        _merge_topk(self.bot_vals, self.bot_ids, self.bot_acts, other.bot_vals, other.bot_ids, other.bot_acts)
        self.power_sums += other.power_sums
        self.positive += other.positive
        self.fine_hist += other.fine_hist
        self.token_sums += other.token_sums
        torch.maximum(self.max_act, other.max_act, out=self.max_act)
        torch.minimum(self.min_act, other.min_act, out=self.min_act)
        self.pool_acts[other.pool_filled] = other.pool_acts[other.pool_filled]
        self.pool_filled |= other.pool_filled
        self._merge_reservoirs(other, generator)

    def _merge_reservoirs(self, other: LayerRecorder, generator: torch.Generator) -> None:
        """Each slot of the merged reservoir comes from one side with probability proportional to what that side
        has seen and not yet given; a side's samples are taken in slot order (a uniform random subset in random
        order, so any prefix is uniform too)."""
        slots = self.cfg.quantile_samples
        left_a, left_b = self.bin_seen.clone(), other.bin_seen.clone()
        next_a = torch.zeros_like(left_a)
        next_b = torch.zeros_like(left_b)
        ids = torch.full_like(self.bin_ids, -1)
        acts = torch.zeros_like(self.bin_acts)
        for slot in range(slots):
            total = left_a + left_b
            u = torch.rand(total.shape, generator=generator, dtype=torch.float64).to(total.device)
            from_a = (u * total) < left_a
            some = total > 0
            ia = next_a.clamp(max=slots - 1).unsqueeze(-1)
            ib = next_b.clamp(max=slots - 1).unsqueeze(-1)
            id_a = self.bin_ids.gather(2, ia).squeeze(-1)
            id_b = other.bin_ids.gather(2, ib).squeeze(-1)
            ids[..., slot] = torch.where(some, torch.where(from_a, id_a, id_b), -1)
            t = self.t
            act_a = self.bin_acts.gather(2, ia.unsqueeze(-1).expand(-1, -1, 1, t)).squeeze(2)
            act_b = other.bin_acts.gather(2, ib.unsqueeze(-1).expand(-1, -1, 1, t)).squeeze(2)
            acts[..., slot, :] = torch.where(from_a.unsqueeze(-1), act_a, act_b)
            took_a, took_b = some & from_a, some & ~from_a
            left_a -= took_a.long()
            left_b -= took_b.long()
            next_a += took_a.long()
            next_b += took_b.long()
        self.bin_ids, self.bin_acts = ids, acts
        self.bin_seen = self.bin_seen + other.bin_seen

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
        if self.max_act.device.type != "cpu":
            self.load_state_dict({k: v.cpu() for k, v in self.state_dict().items()})
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
        centers = np.sign(t_centers) * np.expm1(np.abs(t_centers)) * HIST_SCALE
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

        for kind, (ids, acts_sorted) in (
            (ExcerptKind.TOP, _sorted_slots(self.top_vals, self.top_ids, self.top_acts)),
            (ExcerptKind.BOTTOM, _sorted_slots(self.bot_vals, self.bot_ids, self.bot_acts)),
        ):
            neuron, rank = np.nonzero(ids >= 0)
            if kind == ExcerptKind.TOP:
                split = np.array([str(top_split(int(r))) for r in range(ids.shape[1])], dtype=object)[rank]
            else:
                split = np.full(len(rank), str(Split.VIEW), dtype=object)
            add(neuron, ids[neuron, rank], kind, rank, np.full(len(rank), -1), split, acts_sorted[neuron, rank])

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
                "activations": encode_rows(activations),
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
        # [2 * kept, neuron]: the lowest and the highest means (top-k over each neuron's contiguous row)
        if 2 * kept < len(ids):
            by_neuron = torch.from_numpy(np.ascontiguousarray(means.T))
            low = by_neuron.topk(kept, dim=1, largest=False).indices.numpy().T
            high = by_neuron.topk(kept, dim=1).indices.numpy().T
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


def _enter_topk(
    vals: torch.Tensor,  # [neuron, k] in slot order
    ids: torch.Tensor,  # [neuron, k]
    acts: torch.Tensor,  # [neuron, k, pos]
    new_vals: torch.Tensor,  # [batch, neuron]
    new_ids: torch.Tensor,  # [batch]
    new_acts: torch.Tensor,  # [batch, pos, neuron]
) -> None:
    """Keep the k largest per neuron: each new excerpt that makes the cut takes the slot of one that drops out, so
    only the entering excerpts' activations are copied."""
    k = vals.shape[1]
    changed = (new_vals >= vals.amin(1)).any(0).nonzero().squeeze(1)  # >=: a tie may enter on its excerpt id
    if changed.numel() == 0:
        return
    batch = new_vals.shape[0]
    cand = torch.cat([vals[changed], new_vals[:, changed].T], 1)  # [m, k + batch]
    cand_ids = torch.cat([ids[changed], new_ids.unsqueeze(0).expand(changed.numel(), batch)], 1)
    pick = _best(cand, cand_ids, k)
    chosen = torch.zeros_like(cand, dtype=torch.bool).scatter_(1, pick, True)
    # per row, as many old slots drop out as new excerpts enter; nonzero lists both row by row, so they pair up
    out_row, out_slot = (~chosen[:, :k]).nonzero(as_tuple=True)
    _, in_batch = chosen[:, k:].nonzero(as_tuple=True)
    neuron = changed[out_row]
    vals[neuron, out_slot] = new_vals[in_batch, neuron]
    ids[neuron, out_slot] = new_ids[in_batch]
    acts[neuron, out_slot] = new_acts[in_batch, :, neuron]


def _best(vals: torch.Tensor, ids: torch.Tensor, k: int) -> torch.Tensor:
    """Column indices of the k best per row, best first: highest value, and on equal values the lowest excerpt
    id (excerpts that start alike reach equal maxima; one rule for every batching and sharding)."""
    by_id = ids.argsort(dim=1)
    by_value = vals.gather(1, by_id).argsort(dim=1, descending=True, stable=True)
    return by_id.gather(1, by_value[:, :k])


def _merge_topk(
    vals: torch.Tensor, ids: torch.Tensor, acts: torch.Tensor,
    other_vals: torch.Tensor, other_ids: torch.Tensor, other_acts: torch.Tensor,
) -> None:
    """The k best of two slot sets [neuron, k] (empty slots hold -inf and id -1), into the first."""
    k = vals.shape[1]
    cand_vals, cand_ids = torch.cat([vals, other_vals], 1), torch.cat([ids, other_ids], 1)
    pick = _best(cand_vals, cand_ids, k)
    acts.copy_(torch.cat([acts, other_acts], 1).gather(1, pick.unsqueeze(-1).expand(-1, -1, acts.shape[2])))
    ids.copy_(cand_ids.gather(1, pick))
    vals.copy_(cand_vals.gather(1, pick))


def _sorted_slots(vals: torch.Tensor, ids: torch.Tensor, acts: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """ids [neuron, k] and acts [neuron, k, pos] in rank order (empty slots last)."""
    order = _best(vals, ids, vals.shape[1])
    sorted_ids = ids.gather(1, order)
    sorted_acts = acts.gather(1, order.unsqueeze(-1).expand(-1, -1, acts.shape[2]))
    return sorted_ids.numpy(), sorted_acts.numpy()


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


@dataclass(frozen=True)
class ModelShape:
    """What the cache needs to know about the subject model (the driver of a Ray build never loads it)."""

    name: str
    architecture: str
    n_layers: int
    n_neurons: int
    bos_token_id: int | None

    @classmethod
    def of(cls, subject: SubjectModel) -> ModelShape:
        return cls(subject.name, subject.architecture, subject.n_layers, subject.n_neurons, subject.bos_token_id)


@dataclass
class CorpusPlan:
    """The tokenised corpus and every choice made from it before recording: the processing order, the random
    pool and the tracked vocabulary. Deterministic in (tokens, cfg), so every shard of a build derives the same."""

    token_ids: np.ndarray  # [excerpts, excerpt_len]
    sources: list[str]
    order: np.ndarray  # processing order: a shuffled stream makes early estimates unbiased
    pool_ids: np.ndarray  # the random excerpts shared by all neurons, ascending
    pool_slot_of: np.ndarray  # [excerpts] -> slot in the pool or -1
    vocab_ids: np.ndarray
    vocab_counts: np.ndarray
    vocab_index_of: np.ndarray  # token id -> row of the tracked vocabulary (len(vocab_ids) = untracked)

    @classmethod
    def make(cls, token_ids: np.ndarray, sources: list[str], cfg: RecordConfig) -> CorpusPlan:
        n_excerpts = len(token_ids)
        rng = np.random.default_rng(cfg.seed)
        order = rng.permutation(n_excerpts)
        pool_ids = np.sort(rng.choice(n_excerpts, size=min(n_excerpts, cfg.random_samples + 5), replace=False))
        pool_slot_of = np.full(n_excerpts, -1, dtype=np.int64)
        pool_slot_of[pool_ids] = np.arange(len(pool_ids))
        vocab_ids, vocab_counts = _tracked_vocab(token_ids, cfg.token_vocab)
        vocab_index_of = np.full(int(token_ids.max()) + 1, len(vocab_ids), dtype=np.int64)
        vocab_index_of[vocab_ids] = np.arange(len(vocab_ids))
        return cls(token_ids, sources, order, pool_ids, pool_slot_of, vocab_ids, vocab_counts, vocab_index_of)

    def shard(self, index: int, shards: int) -> np.ndarray:
        """The excerpts of one shard, in processing order: every shards-th excerpt of the shuffled stream."""
        return self.order[index::shards]


@dataclass
class ShardResult:
    """One shard's recording: its layers' state (in memory) and what it cost."""

    recorders: list[LayerRecorder]
    done: int
    total: int
    resumed_from: int
    forward_seconds: float
    hook_seconds: float

    @property
    def finished(self) -> bool:
        return self.done >= self.total


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
    if (work / SHARDS_FILE).exists():
        raise RecordError(
            f"{work} holds an interrupted Ray build: run that command again (with --ray) to finish it, or delete "
            f"{work} to start this one"
        )
    corpus = CorpusPlan.make(*load_or_save_corpus(work, plan, corpus_loader), cfg)
    result = record_shard(subject, corpus, work, 0, 1, cfg, progress=progress,
                          stop_after_batches=stop_after_batches)
    n_excerpts, excerpt_len = corpus.token_ids.shape
    if not result.finished:
        return RecordSummary(str(cache_path), result.done * excerpt_len, result.done, subject.n_layers,
                             subject.n_neurons, time.perf_counter() - started, result.resumed_from,
                             result.forward_seconds, {"finished": False, "hook_seconds": result.hook_seconds})
    tick = time.perf_counter()

    def layer_state(layer: int) -> tuple[LayerRecorder, np.ndarray]:
        return result.recorders[layer], read_maxima(work, layer, subject.n_neurons, n_excerpts)

    write_cache(ModelShape.of(subject), subject.tokenizer, cache_path, plan, cfg, corpus, work, layer_state,
                progress)
    shutil.rmtree(work, ignore_errors=True)
    elapsed = time.perf_counter() - started
    return RecordSummary(str(cache_path), n_excerpts * excerpt_len, n_excerpts, subject.n_layers, subject.n_neurons,
                         elapsed, result.resumed_from, result.forward_seconds,
                         {"finished": True, "hook_seconds": result.hook_seconds,
                          "write_seconds": time.perf_counter() - tick})


def record_shard(
    subject: SubjectModel,
    corpus: CorpusPlan,
    work: Path,
    shard: int,
    shards: int,
    cfg: RecordConfig,
    *,
    progress: bool | Callable[[int], None] = True,
    stop_after_batches: int | None = None,
    save_final: bool = False,
) -> ShardResult:
    """Record one shard's excerpts into in-memory state, checkpointing to `work` (its own folder) as it goes.

    Resumes from the checkpoint in `work`; with `save_final` a finished shard leaves its final state as its last
    checkpoint (a Ray worker's, for the driver to merge; a single process goes straight to the cache).
    `progress` is a bar (True), none (False), or a function called with the number of tokens of each batch."""
    excerpts = corpus.shard(shard, shards)
    excerpt_len = corpus.token_ids.shape[1]
    n_layers, n_neurons = subject.n_layers, subject.n_neurons
    device = next(subject.model.parameters()).device
    work.mkdir(parents=True, exist_ok=True)
    recorders = [
        LayerRecorder(n_neurons, excerpt_len, len(corpus.pool_ids), len(corpus.vocab_ids), cfg, device)
        for _ in range(n_layers)
    ]
    generator = torch.Generator().manual_seed(cfg.seed + 7919 * shard)
    done = _load_checkpoint(work, recorders, generator)
    maxima_files = _open_maxima(work, n_layers, n_neurons, done)
    resumed_from = done
    if done:
        log.info("shard %d: resuming at excerpt %d of %d", shard, done, len(excerpts))

    batch_state: dict[str, torch.Tensor] = {}
    excerpt_max: dict[int, torch.Tensor] = {}
    skip = 1 if subject.bos_token_id is not None else 0
    positions = np.arange(excerpt_len, dtype=np.int64)
    hook_seconds = 0.0

    one_thread = device.type == "cpu"

    def sink(layer: int, acts: torch.Tensor) -> None:
        nonlocal hook_seconds
        tick = time.perf_counter()
        # the update is some forty small memory-bound ops: on CPU one thread does them, as a second thread gains
        # little on an idle machine and, when other processes share the cores, made them 12x slower (measured)
        threads = torch.get_num_threads()
        if one_thread:
            torch.set_num_threads(1)
        try:
            excerpt_max[layer] = recorders[layer].update(
                acts[:, skip:, :].float(), batch_state["ids"], batch_state["vocab"], batch_state["pool"],
                batch_state["hist"], generator,
            )
        finally:
            if one_thread:
                torch.set_num_threads(threads)
        hook_seconds += time.perf_counter() - tick

    report = progress if callable(progress) else None
    bar = tqdm(
        total=len(excerpts) * excerpt_len, initial=done * excerpt_len, unit="tok", unit_scale=True,
        desc="recording", disable=progress is not True, dynamic_ncols=True,
    )
    last_checkpoint = time.perf_counter()
    forward_seconds = 0.0
    batches = 0
    next_bounds = next((c for c in BOUNDS_SCHEDULE if c > done), None)
    try:
        with capture_neurons(subject, sink):
            while done < len(excerpts):
                ids = excerpts[done : done + cfg.batch_size]
                tokens = corpus.token_ids[ids]
                token_ids = torch.from_numpy(tokens.astype(np.int64))
                if subject.bos_token_id is not None:  # skip == 1
                    token_ids = torch.cat([torch.full((len(ids), 1), subject.bos_token_id, dtype=torch.int64),
                                           token_ids], 1)
                # the histogram reads the tokens whose corpus position is a multiple of HIST_STRIDE: the same
                # tokens whatever the batching or sharding
                hist_rows = np.flatnonzero((ids[:, None] * excerpt_len + positions) % HIST_STRIDE == 0)
                batch_state["ids"] = torch.from_numpy(ids.astype(np.int64)).to(device)
                batch_state["vocab"] = torch.from_numpy(corpus.vocab_index_of[tokens.reshape(-1)]).to(device)
                batch_state["pool"] = torch.from_numpy(corpus.pool_slot_of[ids]).to(device)
                batch_state["hist"] = torch.from_numpy(hist_rows).to(device)
                tick = time.perf_counter()
                run_decoder(subject, token_ids.to(device), stop_after_layer=n_layers - 1)
                forward_seconds += time.perf_counter() - tick
                for layer in range(n_layers):
                    maxima_files[layer].write(excerpt_max[layer].to(torch.float16).cpu().numpy().tobytes())
                done += len(ids)
                batches += 1
                bar.update(len(ids) * excerpt_len)
                if report is not None:
                    report(len(ids) * excerpt_len)
                if next_bounds is not None and done >= next_bounds:
                    _flush(maxima_files)
                    for layer, recorder in enumerate(recorders):
                        recorder.set_bounds(read_maxima(work, layer, n_neurons, done))
                    next_bounds = next((c for c in BOUNDS_SCHEDULE if c > done), None)
                elif batches == 1 and not resumed_from:
                    for layer, recorder in enumerate(recorders):
                        recorder.set_bounds(excerpt_max[layer].cpu().numpy())
                if stop_after_batches is not None and batches >= stop_after_batches:
                    _save_checkpoint(work, recorders, generator, done, maxima_files)
                    break
                if time.perf_counter() - last_checkpoint > cfg.checkpoint_seconds and done < len(excerpts):
                    _save_checkpoint(work, recorders, generator, done, maxima_files)
                    last_checkpoint = time.perf_counter()
        if save_final and done >= len(excerpts) and done > resumed_from:
            _save_checkpoint(work, recorders, generator, done, maxima_files)
    finally:
        bar.close()
        _close(maxima_files)
    return ShardResult(recorders, done, len(excerpts), resumed_from, forward_seconds, hook_seconds)


def _tracked_vocab(corpus_tokens: np.ndarray, cap: int) -> tuple[np.ndarray, np.ndarray]:
    """The `cap` most frequent token ids of the corpus and their counts (ids ascending)."""
    ids, counts = np.unique(corpus_tokens, return_counts=True)
    if len(ids) > cap:
        keep = np.sort(np.argsort(-counts, kind="stable")[:cap])
        ids, counts = ids[keep], counts[keep]
    return ids.astype(np.int64), counts.astype(np.int64)


SHARDS_FILE = "shards.json"
"""In CACHE.partial/ of a Ray build: how many shards it has (a resume must use the same)."""


def load_or_save_corpus(work: Path, plan: BuildPlan, loader: Callable[[], Corpus]) -> tuple[np.ndarray, list[str]]:
    """The tokenised corpus of this build: read from `work` when an interrupted build left it, else loaded and
    saved there (with the plan, which a resume must match)."""
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
    atomic_write_text(plan_file, json.dumps(asdict(plan), indent=1))
    (work / "corpus_report.json").write_text(json.dumps(asdict(corpus.report)))
    return corpus.token_ids, list(corpus.sources)


def atomic_write_text(path: Path, text: str) -> None:
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


def read_maxima(work: Path, layer: int, n_neurons: int, rows: int) -> np.ndarray:
    """The per-excerpt maxima [rows, neuron] of one layer that a shard wrote to `work`."""
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
    layers = [{k: v.cpu() for k, v in r.state_dict().items()} for r in recorders]
    torch.save({"done": done, "generator": generator.get_state(), "layers": layers}, tmp)
    kill_point("build.checkpoint-written")  # tests/test_kill.py
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


def checkpoint_done(work: Path) -> int:
    """How many excerpts the checkpoint in `work` covers (0 when there is none)."""
    path = work / "checkpoint.pt"
    if not path.exists():
        return 0
    return int(torch.load(path, weights_only=True, mmap=True)["done"])


def load_layer_states(work: Path) -> list[dict[str, torch.Tensor]]:
    """Every layer's state from the checkpoint in `work`, memory-mapped: a layer is read when it is used."""
    return torch.load(work / "checkpoint.pt", weights_only=True, mmap=True)["layers"]


def write_cache(
    shape: ModelShape,
    tokenizer: Any,
    cache_path: Path,
    plan: BuildPlan,
    cfg: RecordConfig,
    corpus: CorpusPlan,
    work: Path,
    layer_state: Callable[[int], tuple[LayerRecorder, np.ndarray]],
    progress: bool,
    extra_meta: dict[str, Any] | None = None,
) -> None:
    """Write every table into CACHE.tmp, then rename it over the cache path. `layer_state(layer)` gives that
    layer's finished (merged) state and all its per-excerpt maxima."""
    tmp = temp_path(cache_path)
    tmp_wal = Path(str(tmp) + ".wal")
    tmp_wal.unlink(missing_ok=True)

    def write_tables() -> None:  # into `store`, from the arguments above
        n_excerpts, excerpt_len = corpus.token_ids.shape
        strings = token_strings(tokenizer, list(range(int(corpus.token_ids.max()) + 1)))
        store.insert_excerpts(corpus.token_ids, [[strings[t] for t in row] for row in corpus.token_ids],
                              corpus.sources)
        all_ids, all_counts = np.unique(corpus.token_ids, return_counts=True)
        store.insert_vocab(all_ids, [strings[t] for t in all_ids], all_counts)
        tokens_seen = n_excerpts * excerpt_len
        for layer in tqdm(range(shape.n_layers), desc="writing cache", unit="layer", disable=not progress):
            recorder, maxima = layer_state(layer)
            stats, excerpts, means = recorder.finish(layer, maxima, corpus.pool_ids, tokens_seen,
                                                     corpus.vocab_counts, corpus.vocab_ids)
            store.insert_neuron_stats(stats)
            store.insert_neuron_excerpts(excerpts)
            store.insert_token_means(means)
            kill_point("build.writing")  # tests/test_kill.py: CACHE.tmp half written
        report_file = work / "corpus_report.json"
        store.set_meta(
            {
                "model": plan.model,
                "architecture": shape.architecture,
                "corpus": plan.corpus,
                "corpus_report": json.loads(report_file.read_text()) if report_file.exists() else {},
                "layers": shape.n_layers,
                "neurons_per_layer": shape.n_neurons,
                "tokens": tokens_seen,
                "excerpts": n_excerpts,
                "excerpt_len": excerpt_len,
                "bos_token_id": shape.bos_token_id,
                "settings": asdict(cfg),
                "histogram_token_stride": HIST_STRIDE,
                "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                **(extra_meta or {}),
            }
        )
        store.checkpoint()

    store = RecordingWriter.create(tmp)
    try:
        write_tables()
    except BaseException:
        # a half-written file is of no use to the next build, and may be what filled the disk
        with contextlib.suppress(Exception):
            store.close()
        tmp.unlink(missing_ok=True)
        tmp_wal.unlink(missing_ok=True)
        raise
    store.close()
    kill_point("build.before-rename")  # tests/test_kill.py
    os.replace(tmp, cache_path)  # atomically: a reader keeps the old file it has open
    kill_point("build.renamed")  # tests/test_kill.py: the cache in place, CACHE.partial/ not yet removed
