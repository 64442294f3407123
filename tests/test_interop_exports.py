"""Exports of a cache we built (a tiny random Llama, recorded and explained here): OpenAI's files round trip through
our import with our own splits, Neuronpedia's export rows and delphi's latent cache read back with loaders written
from their format definitions, delphi's activations checked against a fresh forward pass."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from core.cli import main
from core.interop.export_neuronpedia import ACTIVATION_COLUMNS, EXPLANATION_COLUMNS, FEATURE_COLUMNS
from core.models import neuron_activations
from core.store import open_reader, open_results_writer
from core.types import ExcerptKind, NeuronId, Split, random_split, top_split

TINY_TEXT = (
    "The cat sat on the mat while the dog ran in the park. def f(x):\n    return x + 1\n\nclass A:\n    pass\n"
    "A dog and a cat met at the park and sat on a mat together. "
) * 30
EXPLAINED = [NeuronId(0, 3), NeuronId(1, 7)]


@pytest.fixture(scope="module")
def built_cache(tiny_subject, tmp_path_factory) -> Path:
    """A cache of the tiny Llama (2 layers x 48 neurons, adds BOS) with every excerpt kind, related tables and
    offline explanations of two neurons."""
    from core.corpus import build_corpus
    from core.explain import explain_neurons, make_explainer
    from core.record import BuildPlan, RecordConfig, record_corpus
    from core.related import compute_related
    from core.simulate import make_simulator

    folder = tmp_path_factory.mktemp("tiny-export")
    corpus = folder / "corpus.txt"
    corpus.write_text("\n\n".join(f"line {i}: {TINY_TEXT[i * 37 % 900:(i * 37 % 900) + 300]}" for i in range(60)))
    cache = folder / "tiny.duckdb"
    plan = BuildPlan(model=tiny_subject.name, corpus=str(corpus), tokens=2048, excerpt_len=16, settings={})
    record_corpus(tiny_subject, lambda: build_corpus(str(corpus), tiny_subject.tokenizer, max_tokens=2048,
                                                     excerpt_len=16),
                  cache, plan, RecordConfig(top_k=8, bottom_k=4, quantile_samples=3, random_samples=6, batch_size=8,
                                            token_vocab=50), progress=False)
    with open_results_writer(cache) as store:
        compute_related(store, tiny_subject, progress=False)
        explain_neurons(store, EXPLAINED, make_explainer("baseline"), make_simulator("baseline"))
    return cache


def _snapshot(cache: Path, neurons: list[NeuronId]) -> dict[NeuronId, Any]:
    with open_reader(cache) as store:
        return {n: {
            "excerpts": [(e.kind, e.rank, e.quantile_bin, e.split, e.excerpt.tokens,
                          tuple(round(a, 5) for a in e.activations))
                         for e in store.neuron_excerpts(n) if e.kind != ExcerptKind.BOTTOM],
            "explanations": sorted((r.text, round(r.score_all or 0, 5), len(store.simulations(r.explanation_id)))
                                   for r in store.explanations(n)),
        } for n in neurons}


def test_openai_export_of_a_built_cache_round_trips_with_our_splits(built_cache, tmp_path):
    folder = tmp_path / "openai"
    assert main(["export", str(built_cache), "--format", "openai", str(folder), "--layers", "0-1", "--quiet"]) == 0
    sidecar = json.loads((folder / "neuron-atlas.json").read_text())
    assert sidecar["split_rule"] == "neuron-atlas" and sidecar["dropped"]["bottom_excerpts"] > 0
    again = tmp_path / "again.duckdb"
    assert main(["import-openai", str(folder), "--cache", str(again), "--quiet"]) == 0
    neurons = [NeuronId(layer, n) for layer in (0, 1) for n in range(48)]
    ours, back = _snapshot(built_cache, neurons), _snapshot(again, neurons)
    assert back == ours
    top = [e for e in ours[NeuronId(0, 3)]["excerpts"] if e[0] == ExcerptKind.TOP]
    assert [e[3] for e in top] == [top_split(rank) for rank in range(len(top))]
    rnd = [e for e in ours[NeuronId(0, 3)]["excerpts"] if e[0] == ExcerptKind.RANDOM]
    assert [e[3] for e in rnd] == [random_split(rank) for rank in range(len(rnd))]
    assert ours[NeuronId(0, 3)]["explanations"] and ours[NeuronId(0, 3)]["explanations"][0][2] > 0


# --- Neuronpedia ---------------------------------------------------------------------------------------------------

# Column types of Neuronpedia's Neuron, Activation and Explanation rows (apps/webapp/prisma/schema.prisma): "s"
# String, "f" Float, "i" Int, "b" Boolean, "[s]" String[], "[f]" Float[], "[i]" Int[]; a "?" allows null.
NEURONPEDIA_TYPES = {
    "features": {"modelId": "s", "layer": "s", "index": "s", "maxActApprox": "f?", "creatorId": "s?",
                 "frac_nonzero": "f", "freq_hist_data_bar_heights": "[f]", "freq_hist_data_bar_values": "[f]",
                 "logits_hist_data_bar_heights": "[f]", "logits_hist_data_bar_values": "[f]",
                 "neuron_alignment_indices": "[i]", "neuron_alignment_l1": "[f]", "neuron_alignment_values": "[f]",
                 "correlated_neurons_indices": "[i]", "correlated_neurons_l1": "[f]",
                 "correlated_neurons_pearson": "[f]", "decoder_weights_dist": "[f]", "neg_str": "[s]",
                 "neg_values": "[f]", "pos_str": "[s]", "pos_values": "[f]", "sourceSetName": "s?",
                 "topkCosSimIndices": "[i]", "topkCosSimValues": "[f]", "vector": "[f]", "vectorLabel": "s?",
                 "hookName": "s?", "vectorDefaultSteerStrength": "f?", "hasVector": "b"},
    "activations": {"id": "s", "modelId": "s", "layer": "s", "index": "s", "creatorId": "s", "dataSource": "s?",
                    "tokens": "[s]", "maxValue": "f", "minValue": "f", "values": "[f]", "maxValueTokenIndex": "i",
                    "dfaValues": "[f]", "dfaMaxValue": "f?", "dfaTargetIndex": "i?", "binContains": "f?",
                    "binMin": "f?", "binMax": "f?"},
    "explanations": {"id": "s", "modelId": "s", "layer": "s", "index": "s", "authorId": "s", "description": "s",
                     "embedding": "[f]?", "typeName": "s?", "explanationModelName": "s?", "umap_x": "f?",
                     "umap_y": "f?", "umap_cluster": "i?", "umap_log_feature_sparsity": "f?"},
}


def _is(value: Any, kind: str) -> bool:
    if kind.endswith("?"):
        return value is None or _is(value, kind[:-1])
    if kind.startswith("["):
        return isinstance(value, list) and all(_is(v, kind[1:-1]) for v in value)
    scalar = {"s": str, "b": bool, "i": int, "f": (int, float)}[kind]
    return isinstance(value, scalar) and (kind == "b" or not isinstance(value, bool))


def load_neuronpedia_export(base: Path) -> dict[str, list[dict[str, Any]]]:
    """Read a Neuronpedia export folder (MODEL/SOURCE/) as their importer would: gzipped JSON lines per batch,
    each row exactly the exporter's columns with the schema's types."""
    found: dict[str, list[dict[str, Any]]] = {}
    for name, types in NEURONPEDIA_TYPES.items():
        rows = []
        for path in sorted((base / name).glob("batch-*.jsonl.gz")):
            with gzip.open(path, "rt", encoding="utf-8") as f:
                rows += [json.loads(line) for line in f if line.strip()]
        for row in rows:
            assert set(row) == set(types), (name, set(row) ^ set(types))
            for column, kind in types.items():
                assert _is(row[column], kind), (name, column, row[column])
        found[name] = rows
    for name in ("model", "source", "sourceset"):
        lines = (base / f"{name}.jsonl").read_text().splitlines()
        assert len(lines) == 1
        found[name] = [json.loads(lines[0])]
    return found


def test_neuronpedia_export_rows_follow_its_schema_and_hold_the_cache(built_cache, tmp_path):
    folder = tmp_path / "np"
    assert main(["export", str(built_cache), "--format", "neuronpedia", str(folder), "--neurons", "0:0-5,1:7",
                 "--model-id", "tiny-llama", "--quiet"]) == 0
    assert sorted(p.name for p in (folder / "tiny-llama").iterdir()) == ["0-atlas-mlp", "1-atlas-mlp"]
    assert tuple(NEURONPEDIA_TYPES["features"]) == FEATURE_COLUMNS
    assert tuple(NEURONPEDIA_TYPES["activations"]) == ACTIVATION_COLUMNS
    assert tuple(NEURONPEDIA_TYPES["explanations"]) == EXPLANATION_COLUMNS
    layer0 = load_neuronpedia_export(folder / "tiny-llama" / "0-atlas-mlp")
    layer1 = load_neuronpedia_export(folder / "tiny-llama" / "1-atlas-mlp")
    assert [r["index"] for r in layer0["features"]] == [str(i) for i in range(6)]
    assert layer0["source"][0]["id"] == "0-atlas-mlp" and layer0["model"][0]["id"] == "tiny-llama"
    with open_reader(built_cache) as store:
        stats = store.neuron_stats(NeuronId(0, 3))
        excerpts = [e for e in store.neuron_excerpts(NeuronId(0, 3)) if e.kind != ExcerptKind.BOTTOM]
        (best, *_) = store.explanations(NeuronId(0, 3))
        from core.types import RelatedTokenKind

        up = store.related_tokens(NeuronId(0, 3), RelatedTokenKind.OUTPUT_UP, 10)
    assert stats is not None
    feature = next(r for r in layer0["features"] if r["index"] == "3")
    assert feature["maxActApprox"] == pytest.approx(stats.max_activation, rel=1e-6)
    assert feature["frac_nonzero"] == pytest.approx(stats.density)
    assert sum(feature["freq_hist_data_bar_heights"]) == sum(stats.hist_counts)
    assert feature["pos_str"] == [t.token for t in up] and len(up) == 10
    acts = [r for r in layer0["activations"] if r["index"] == "3"]
    assert len(acts) == len(excerpts)
    assert sorted(tuple(r["tokens"]) for r in acts) == sorted(e.excerpt.tokens for e in excerpts)
    for row in acts:
        assert len(row["values"]) == len(row["tokens"])
        assert row["maxValue"] == max(row["values"]) == row["values"][row["maxValueTokenIndex"]]
    assert len({r["id"] for r in layer0["activations"]}) == len(layer0["activations"])
    assert [r["description"] for r in layer0["explanations"] if r["index"] == "3"] == [best.text]
    assert [r["index"] for r in layer1["explanations"]] == ["7"]


# --- delphi --------------------------------------------------------------------------------------------------------


def load_delphi_cache(latents: Path) -> dict[str, dict[str, Any]]:
    """Read a delphi latent cache as its LatentDataset does: per hookpoint folder, every START_END.safetensors
    (latent = locations[:, 2] + START), the shared `tokens`, and config.json."""
    from safetensors.numpy import load_file

    found: dict[str, dict[str, Any]] = {}
    for module in sorted(p for p in latents.iterdir() if p.is_dir()):
        config = json.loads((module / "config.json").read_text())
        per_latent: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        tokens = None
        for path in sorted(module.glob("*.safetensors")):
            start, end = (int(v) for v in path.stem.split("_"))
            data = load_file(str(path))
            locations = data["locations"].astype(np.int64)
            locations[:, 2] += start
            assert locations[:, 2].min() >= start and locations[:, 2].max() <= end
            tokens = data["tokens"].astype(np.int64) if tokens is None else tokens
            assert np.array_equal(tokens, data["tokens"])
            for latent in np.unique(locations[:, 2]):
                mask = locations[:, 2] == latent
                per_latent[int(latent)] = (locations[mask], data["activations"][mask].astype(np.float32))
        found[module.name] = {"config": config, "tokens": tokens, "latents": per_latent}
    return found


def test_delphi_export_is_a_latent_cache_of_fresh_activations(built_cache, tiny_subject, tmp_path):
    folder = tmp_path / "delphi"
    chosen = [NeuronId(0, 3), NeuronId(0, 10), NeuronId(1, 7)]
    assert main(["export", str(built_cache), "--format", "delphi", str(folder), "--neurons", "0:3,0:10,1:7",
                 "--quiet"]) == 0
    cache = load_delphi_cache(folder / "latents")
    assert sorted(cache) == ["layers.0.mlp.neurons", "layers.1.mlp.neurons"]
    assert sorted(p.name for p in (folder / "latents" / "layers.0.mlp.neurons").glob("*.safetensors")) == \
        ["3_10.safetensors"]
    tokens = cache["layers.0.mlp.neurons"]["tokens"]
    assert cache["layers.0.mlp.neurons"]["config"]["ctx_len"] == tokens.shape[1] == 16
    with open_reader(built_cache) as store:
        stored = {n: store.neuron_excerpts(n) for n in chosen}
        by_id = {e.excerpt.excerpt_id: e.excerpt.token_ids for rows in stored.values() for e in rows}
    assert sorted(map(tuple, tokens.tolist())) == sorted(by_id.values())
    fresh = [neuron_activations(tiny_subject, list(row)) for row in tokens]
    for neuron in chosen:
        module = cache[f"layers.{neuron.layer}.mlp.neurons"]
        locations, values = module["latents"][neuron.neuron]
        dense = np.zeros(tokens.shape, dtype=np.float32)
        dense[locations[:, 0], locations[:, 1]] = values
        truth = np.stack([acts[neuron.layer][:, neuron.neuron] for acts in fresh])
        np.testing.assert_allclose(dense, np.where(truth > 0, truth, 0), rtol=2e-3, atol=2e-3)  # float16 storage
        top = next(e for e in stored[neuron] if e.kind == ExcerptKind.TOP and e.rank == 0)
        row = next(i for i, t in enumerate(tokens.tolist()) if tuple(t) == top.excerpt.token_ids)
        assert dense[row].max() == pytest.approx(max(top.activations), rel=2e-3)
    explanation = json.loads((folder / "explanations" / "layers.0.mlp.neurons_latent3.txt").read_text())
    with open_reader(built_cache) as store:
        assert explanation == store.explanations(NeuronId(0, 3))[0].text
    assert (folder / "tokenizer" / "tokenizer.json").exists()


def test_delphi_export_refuses_an_imported_cache(tmp_path, capsys):
    from core.store import RecordingWriter

    cache = tmp_path / "imported.duckdb"
    with RecordingWriter.create(cache) as store:
        store.set_meta({"settings": {"imported_from": "openai"}, "layers": 1, "neurons_per_layer": 1})
    assert main(["export", str(cache), "--format", "delphi", str(tmp_path / "d")]) == 2
    assert "token strings, not the model's token ids" in capsys.readouterr().err


def test_splits_survive_for_scoring(built_cache):
    """The score split of a built cache is what OpenAI's code calls test after the export (documented mapping)."""
    with open_reader(built_cache) as store:
        top = sorted((e for e in store.neuron_excerpts(NeuronId(0, 3)) if e.kind == ExcerptKind.TOP),
                     key=lambda e: e.rank)
    from core.interop.openai_format import TOP_SPLITS, openai_split

    for e in top[: len(top) // 4 * 4]:
        theirs = openai_split(e.rank, len(top), TOP_SPLITS)
        assert (e.split == Split.SCORE) == (theirs == "test")
        assert (e.split == Split.CALIBRATE) == (theirs == "calibration")
        assert e.split == Split.EXPLAIN or theirs in ("calibration", "test")
