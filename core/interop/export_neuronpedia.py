"""`python -m core export CACHE --format neuronpedia DIR`: a cache in Neuronpedia's export layout.

Neuronpedia publishes its data, and imports data into a self-hosted copy, as "exports" (docs.neuronpedia.org,
API & Data > Exports; bucket prefix v1/): per model and source, `features/`, `activations/` and `explanations/`
folders of gzipped JSON-lines batches (`batch-N.jsonl.gz`), plus `model.jsonl`, `source.jsonl` and
`sourceset.jsonl`. Each line is one database row with the columns Neuronpedia's own exporter writes
(utils/neuronpedia-utils/neuronpedia_utils/export-data.py in hijohnnylin/neuronpedia; types from
apps/webapp/prisma/schema.prisma). Each layer of the cache becomes one source, `LAYER-SET` (e.g. `3-atlas-mlp`),
and each neuron one feature. What has no column (our scores, simulations, bottom excerpts' meaning) is left out.
"""

from __future__ import annotations

import gzip
import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from core.interop import InteropError, cache_io
from core.interop.export_openai import ExportSummary, neuron_blocks, selected_neurons
from core.types import ExcerptKind, NeuronId

BATCH_FEATURES = 1024
"""Features per batch file, as Neuronpedia's exporter (FEATURES_EXPLANATIONS_BATCH_SIZE, ACTIVATIONS_BATCH_SIZE)."""
CREATOR_ID = "neuron-atlas"
"""creatorId/authorId written on every row (Neuronpedia's exporter writes one default id on all rows too)."""
OPENAI_TYPE_NAME = "oai_token-act-pair"
"""Neuronpedia's explanation type for OpenAI's token-and-activation-pair explainer (the imported GPT-4 ones)."""
EXPORTED_KINDS = (ExcerptKind.TOP, ExcerptKind.QUANTILE, ExcerptKind.RANDOM)

FEATURE_COLUMNS = (
    "modelId", "layer", "index", "maxActApprox", "creatorId", "frac_nonzero", "freq_hist_data_bar_heights",
    "freq_hist_data_bar_values", "logits_hist_data_bar_heights", "logits_hist_data_bar_values",
    "neuron_alignment_indices", "neuron_alignment_l1", "neuron_alignment_values", "correlated_neurons_indices",
    "correlated_neurons_l1", "correlated_neurons_pearson", "decoder_weights_dist", "neg_str", "neg_values", "pos_str",
    "pos_values", "sourceSetName", "topkCosSimIndices", "topkCosSimValues", "vector", "vectorLabel", "hookName",
    "vectorDefaultSteerStrength", "hasVector",
)
"""Columns of a features/ row (Neuron), as Neuronpedia's exporter selects them."""
ACTIVATION_COLUMNS = (
    "id", "modelId", "layer", "index", "creatorId", "dataSource", "tokens", "maxValue", "minValue", "values",
    "maxValueTokenIndex", "dfaValues", "dfaMaxValue", "dfaTargetIndex", "binContains", "binMin", "binMax",
)
"""Columns of an activations/ row (Activation)."""
EXPLANATION_COLUMNS = (
    "id", "modelId", "layer", "index", "authorId", "description", "embedding", "typeName", "explanationModelName",
    "umap_x", "umap_y", "umap_cluster", "umap_log_feature_sparsity",
)
"""Columns of an explanations/ row (Explanation)."""


def model_id_for(name: str) -> str:
    """A Neuronpedia model id from a model name: lower case letters, digits, '-' and '_' only."""
    cleaned = "".join(c if c.isalnum() or c in "-_" else "-" for c in Path(name).name.lower()).strip("-")
    return cleaned or "model"


def _write_jsonl_gz(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with gzip.open(tmp, "wt", encoding="utf-8", compresslevel=5) as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False, allow_nan=False) + "\n")
    os.replace(tmp, path)


def _write_jsonl(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")


def _feature_row(data: cache_io.NeuronData, model_id: str, source: str, source_set: str,
                 outputs: tuple[list[Any], list[Any]]) -> dict[str, Any]:
    stats = data.stats
    heights, centres = [], []
    if stats is not None and stats.hist_counts:
        heights = [float(c) for c in stats.hist_counts]
        edges = stats.hist_edges
        centres = [float((edges[i] + edges[i + 1]) / 2) for i in range(len(heights))]
    up, down = outputs
    row = {
        "modelId": model_id, "layer": source, "index": str(data.neuron.neuron),
        "maxActApprox": float(stats.max_activation) if stats else 0.0, "creatorId": CREATOR_ID,
        "frac_nonzero": float(stats.density) if stats else 0.0,
        "freq_hist_data_bar_heights": heights, "freq_hist_data_bar_values": centres,
        "logits_hist_data_bar_heights": [], "logits_hist_data_bar_values": [],
        "neuron_alignment_indices": [], "neuron_alignment_l1": [], "neuron_alignment_values": [],
        "correlated_neurons_indices": [], "correlated_neurons_l1": [], "correlated_neurons_pearson": [],
        "decoder_weights_dist": [],
        "neg_str": [t.token for t in down], "neg_values": [float(t.value) for t in down],
        "pos_str": [t.token for t in up], "pos_values": [float(t.value) for t in up],
        "sourceSetName": source_set, "topkCosSimIndices": [], "topkCosSimValues": [], "vector": [],
        "vectorLabel": None, "hookName": f"blocks.{data.neuron.layer}.mlp.hook_post",
        "vectorDefaultSteerStrength": 10.0, "hasVector": False,
    }
    return {column: row[column] for column in FEATURE_COLUMNS}


def _activation_rows(data: cache_io.NeuronData, model_id: str, source: str, corpus: str) -> list[dict[str, Any]]:
    edges = data.stats.quantile_edges if data.stats else ()
    rows = []
    for e in data.excerpts:
        if e.kind not in EXPORTED_KINDS:
            continue
        values = [float(v) for v in e.activations]
        peak = max(range(len(values)), key=values.__getitem__)
        qbin = e.quantile_bin
        in_bin = e.kind == ExcerptKind.QUANTILE and qbin is not None and qbin + 1 < len(edges)
        row = {
            "id": f"atlas-{model_id}-{source}-{data.neuron.neuron}-{e.kind}{'' if qbin is None else qbin}-{e.rank}",
            "modelId": model_id, "layer": source, "index": str(data.neuron.neuron), "creatorId": CREATOR_ID,
            "dataSource": f"{corpus} ({e.kind})", "tokens": list(e.excerpt.tokens), "maxValue": values[peak],
            "minValue": min(values), "values": values, "maxValueTokenIndex": peak, "dfaValues": [],
            "dfaMaxValue": None, "dfaTargetIndex": None, "binContains": None,
            "binMin": float(edges[qbin]) if in_bin and qbin is not None else None,
            "binMax": float(edges[qbin + 1]) if in_bin and qbin is not None else None,
        }
        rows.append({column: row[column] for column in ACTIVATION_COLUMNS})
    return rows


def _explanation_rows(data: cache_io.NeuronData, model_id: str, source: str) -> list[dict[str, Any]]:
    rows = []
    for record, _sims in data.explanations:
        imported = record.explainer == cache_io.IMPORTED_EXPLAINER
        row = {
            "id": f"atlas-{model_id}-{source}-{data.neuron.neuron}-explanation-{record.explanation_id}",
            "modelId": model_id, "layer": source, "index": str(data.neuron.neuron), "authorId": CREATOR_ID,
            "description": record.text, "embedding": None,
            "typeName": OPENAI_TYPE_NAME if imported else f"atlas_{record.explainer.split(':')[0]}",
            "explanationModelName": record.model or record.explainer,
            "umap_x": None, "umap_y": None, "umap_cluster": None, "umap_log_feature_sparsity": None,
        }
        rows.append({column: row[column] for column in EXPLANATION_COLUMNS})
    return rows


def export_neuronpedia(
    cache: Path,
    folder: Path,
    *,
    layers: Sequence[int] | None = None,
    neurons: Sequence[NeuronId] | None = None,
    model_id: str | None = None,
    source_set: str = "atlas-mlp",
    progress: Callable[[str, int], Callable[[int], None]] | None = None,
) -> ExportSummary:
    """Write the chosen neurons of `cache` under folder/MODEL_ID/LAYER-SET/ (see the module docstring)."""
    if not source_set or not all(c.isalnum() or c in "-_" for c in source_set):
        raise InteropError(f"--source-set {source_set!r}: use letters, digits, '-' and '_' only")
    folder = Path(folder)
    summary = ExportSummary(folder, "neuronpedia")
    with cache_io.open_cache(cache) as store:
        meta = cache_io.cache_meta(store)
        model_id = model_id_for(model_id or str(meta.get("model", "model")))
        chosen = selected_neurons(store, layers, neurons)
        by_batch: dict[tuple[int, int], list[NeuronId]] = {}
        for neuron in chosen:
            by_batch.setdefault((neuron.layer, neuron.neuron // BATCH_FEATURES), []).append(neuron)
        tick = progress("export", len(chosen)) if progress else None
        corpus = str(meta.get("corpus", ""))
        for (layer, batch), members in sorted(by_batch.items()):
            source = f"{layer}-{source_set}"
            features, activations, explanations = [], [], []
            for data in neuron_blocks(store, sorted(members)):
                features.append(_feature_row(data, model_id, source, source_set,
                                             cache_io.output_tokens(store, data.neuron)))
                activations += _activation_rows(data, model_id, source, corpus)
                explanations += _explanation_rows(data, model_id, source)
                if tick:
                    tick(1)
            base = folder / model_id / source
            for name, rows in (("features", features), ("activations", activations),
                               ("explanations", explanations)):
                _write_jsonl_gz(base / name / f"batch-{batch}.jsonl.gz", rows)
                summary.files += 1
            summary.neurons += len(features)
            summary.explanations += len(explanations)
        for layer in sorted({n.layer for n in chosen}):
            summary.files += _write_descriptions(folder / model_id / f"{layer}-{source_set}", meta, model_id, layer,
                                                 source_set)
    summary.notes.append("scores, simulations and bottom excerpts have no column in Neuronpedia's export rows and "
                         "are left out; imported GPT-4 explanations are typed oai_token-act-pair")
    return summary


def _write_descriptions(base: Path, meta: dict[str, Any], model_id: str, layer: int, source_set: str) -> int:
    """model.jsonl, source.jsonl and sourceset.jsonl of one source (one row each)."""
    now = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
    model = str(meta.get("model", model_id))
    _write_jsonl(base / "model.jsonl", [{
        "id": model_id, "displayNameShort": model, "displayName": model, "creatorId": CREATOR_ID, "tlensId": None,
        "dimension": None, "visibility": "PUBLIC", "defaultSourceSetName": source_set, "defaultSourceId": None,
        "inferenceEnabled": False, "instruct": False, "layers": int(meta.get("layers", 0)),
        "neuronsPerLayer": int(meta.get("neurons_per_layer", 0)), "createdAt": now, "owner": model,
        "updatedAt": now, "website": None,
    }])
    _write_jsonl(base / "source.jsonl", [{
        "id": f"{layer}-{source_set}", "modelId": model_id, "hasDashboards": True, "inferenceEnabled": False,
        "visibility": "PUBLIC", "setName": source_set, "creatorId": CREATOR_ID,
        "num_prompts": int(meta.get("excerpts", 0)), "num_tokens_in_prompt": int(meta.get("excerpt_len", 0)),
        "dataset": str(meta.get("corpus", "")), "notes": "MLP neurons exported by Neuron Atlas", "createdAt": now,
    }])
    _write_jsonl(base / "sourceset.jsonl", [{
        "modelId": model_id, "name": source_set, "hasDashboards": True, "allowInferenceSearch": False,
        "visibility": "PUBLIC", "description": "MLP neurons (the input of each block's MLP output projection)",
        "type": "neurons", "creatorName": "Neuron Atlas", "urls": [], "creatorId": CREATOR_ID, "releaseName": None,
        "defaultRange": 1, "defaultShowBreaks": True, "showDfa": False, "showCorrelated": False,
        "showHeadAttribution": False, "showUmap": False, "createdAt": now,
    }])
    return 3
