"""Packed activations: the stated bound holds, extremes are exact, and on a real cache of the default model the
numbers a page shows and the scores equal those from float32 activations (a fresh forward pass) within what is
shown."""

from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow as pa
import pytest
import torch

from core.baseline import BaselineSimulator
from core.models import capture_neurons, run_decoder
from core.offline.writer import write_phrases
from core.packing import (
    FORMAT_FLOAT32,
    HEADER,
    decode,
    decode_lists,
    decode_tuple,
    encode_lists,
    encode_rows,
    max_error,
    packed_width,
)
from core.score import simulate_and_score
from core.store import open_reader
from core.types import ExcerptKind, NeuronId, Split


def _round_trip(acts: np.ndarray) -> np.ndarray:
    column = encode_rows(acts)
    return np.stack([decode(blob) for blob in column.to_pylist()]) if len(acts) else np.zeros_like(acts)


@pytest.mark.parametrize("length", [1, 2, 7, 16, 63, 64, 2048])
def test_round_trip_within_the_bound_with_exact_extremes(length):
    rng = np.random.default_rng(length)
    acts = (rng.standard_normal((50, length)) * rng.lognormal(0, 2, (50, 1))).astype(np.float32)
    acts[0] = 3.25  # a constant row
    acts[1, 0] = 3000.0  # one huge value, as SmolLM2 has
    back = _round_trip(acts)
    assert back.dtype == np.float32 and back.shape == acts.shape
    np.testing.assert_array_less(np.abs(back - acts).max(1), max_error(acts) * 1.002 + 1e-30)
    assert (back.max(1) == acts.max(1)).all() and (back.min(1) == acts.min(1)).all()
    assert all(len(blob) == packed_width(length) for blob in encode_rows(acts).to_pylist())
    assert packed_width(64) == HEADER + 96  # 12 bits per activation, against 32


def test_non_finite_rows_are_kept_raw_and_old_lists_pass_through():
    acts = np.array([[1.0, np.inf, -2.0], [0.5, 0.25, 0.0], [np.nan, 1.0, 2.0]], dtype=np.float32)
    blobs = encode_rows(acts).to_pylist()
    assert blobs[0][0] == FORMAT_FLOAT32 and blobs[2][0] == FORMAT_FLOAT32
    np.testing.assert_array_equal(decode(blobs[0]), acts[0])
    assert np.isnan(decode(blobs[2])[0])
    assert np.abs(decode(blobs[1]) - acts[1]).max() <= max_error(acts[1:2])[0] * 1.002
    assert decode_tuple([0.5, -1.25]) == (0.5, -1.25)  # a cache built before packing stores FLOAT[]
    with pytest.raises(ValueError, match="unknown activation format"):
        decode(bytes([7]) + bytes(12))


def test_lists_of_any_length_pack_in_order_and_exact_rows_keep_every_value():
    rows = [[0.125, -3.5, 7.0], [1.0], [], [2.0, 4.0, 8.0], [0.1, 0.2]]
    column = pa.array(rows, type=pa.list_(pa.float32()))
    packed = [decode(blob) for blob in encode_lists(column).to_pylist()]
    for back, row in zip(packed, rows, strict=True):
        assert len(back) == len(row)
        if row:
            assert np.abs(back - np.float32(row)).max() <= max_error(np.float32([row]))[0] * 1.002 + 1e-9
    exact = encode_lists(column, exact=True)
    assert all(blob[0] == FORMAT_FLOAT32 for blob in exact.to_pylist())
    assert decode_lists(exact).to_pylist() == pa.array(rows, type=pa.list_(pa.float32())).to_pylist()
    assert decode_lists(column).to_pylist() == column.to_pylist()  # float lists (version 2) pass through


def _fresh_activations(subject, token_ids: list[tuple[int, ...]], nid: NeuronId) -> np.ndarray:
    """One neuron's float32 activations [excerpt, pos] from a new forward pass over these excerpts."""
    found: dict[int, torch.Tensor] = {}

    def sink(layer: int, acts: torch.Tensor) -> None:
        found[layer] = acts[:, :, nid.neuron].clone()

    assert subject.bos_token_id is None  # SmolLM2 adds none, so excerpts run as stored
    with subject.lock, capture_neurons(subject, sink, [nid.layer]):
        run_decoder(subject, torch.tensor(token_ids, dtype=torch.long), stop_after_layer=nid.layer)
    return found[nid.layer].numpy()


def _sample_neurons(n_layers: int, n_neurons: int, count: int) -> list[NeuronId]:
    rng = np.random.default_rng(11)
    return [NeuronId(int(layer), int(rng.integers(n_neurons))) for layer in rng.integers(0, n_layers, count)]


def test_pages_and_scores_match_float32_on_the_default_model(default_model, small_cache):
    """For 10 neurons over all layers: every stored activation is within the bound of a fresh float32 forward
    pass; each excerpt's max and min (shown to 3 significant digits) match; the tooltip's raw value (3 decimals)
    and level (1 decimal of 10) move by at most one unit of the last digit; the offline explanation written from
    the packed excerpts scores (shown to 2 decimals) within 0.01 of the one written from float32 excerpts, and the
    same explanation scores within 0.001 on both."""
    simulator = BaselineSimulator()
    changed_tooltips = shown_tooltips = 0
    with open_reader(small_cache) as store:
        info = store.info()
        neurons = _sample_neurons(info.layers, info.neurons_per_layer, 10)
        for nid in neurons:
            stored = store.neuron_excerpts(nid)
            fresh = _fresh_activations(default_model, [e.excerpt.token_ids for e in stored], nid)
            exact = [dataclasses.replace(e, activations=tuple(r.tolist())) for e, r in zip(stored, fresh, strict=True)]
            scale = max(max(e.activations) for e in exact if e.kind == ExcerptKind.TOP)
            for packed, truth in zip(stored, exact, strict=True):
                p, t = np.asarray(packed.activations), np.asarray(truth.activations)
                noise = 1e-4  # forward passes over other batches differ by ~1e-5
                assert np.abs(p - t).max() <= max_error(t[None, :])[0] * 1.002 + noise
                assert max(p) == pytest.approx(max(t), abs=noise) and min(p) == pytest.approx(min(t), abs=noise)
                assert np.abs(np.round(p, 3) - np.round(t, 3)).max() <= 0.001 + max_error(t[None, :])[0] + noise
                assert np.abs(np.round(10 * p / scale, 1) - np.round(10 * t / scale, 1)).max() <= 0.1 + 1e-9
                changed_tooltips += int((np.char.mod("%.3f", p) != np.char.mod("%.3f", t)).sum())
                shown_tooltips += len(p)
            texts = write_phrases([e for e in stored if e.split == Split.EXPLAIN], 1)
            texts_exact = write_phrases([e for e in exact if e.split == Split.EXPLAIN], 1)
            assert bool(texts) == bool(texts_exact)
            if texts_exact:
                score_packed = [e for e in stored if e.split == Split.SCORE]
                score_exact = [e for e in exact if e.split == Split.SCORE]
                same_text = [simulate_and_score(nid, texts_exact[0], simulator, excerpts, Split.SCORE).scores.all
                             for excerpts in (score_packed, score_exact)]
                own_text = simulate_and_score(nid, texts[0], simulator, score_packed, Split.SCORE).scores.all
                assert (same_text[0] is None) == (same_text[1] is None) == (own_text is None)
                if same_text[1] is not None:
                    assert same_text[0] == pytest.approx(same_text[1], abs=0.001), nid
                    assert own_text == pytest.approx(same_text[1], abs=0.01), nid
    assert changed_tooltips / shown_tooltips < 0.2
