"""`python -m core export CACHE --format delphi DIR`: chosen neurons as a delphi latent cache, with explanations.

delphi (EleutherAI/delphi) explains and scores "latents" from an on-disk cache that its LatentDataset reads:
DIR/latents/HOOKPOINT/START_END.safetensors holding `locations` (n x 3: row, position, latent - START), `activations`
(n) and `tokens` (rows x ctx_len, the same in every file), plus DIR/latents/HOOKPOINT/config.json (its CacheConfig
with `model_name`); explanations are DIR/explanations/HOOKPOINT_latentN.txt holding a JSON string (as delphi's
pipeline writes them). Layout from delphi/latents/cache.py (save_splits, save_config) and delphi/latents/loader.py.

A delphi cache needs every latent's activation on every token of `tokens`, including the excerpts where it is
silent (delphi samples its non-activating examples there). The cache stores each neuron's activations only on its
own excerpts, so this export re-runs the subject model over the union of the chosen neurons' stored excerpts and
writes each chosen neuron (latent = neuron index, hookpoint `layers.L.mlp.neurons`) on all of them. Activations
at or below zero are left out: delphi treats latents as non-negative and their zeros as "not active".
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from core.interop import InteropError, cache_io
from core.interop.export_openai import ExportSummary, neuron_blocks, selected_neurons, write_text_atomic
from core.types import NeuronId

BATCH_EXCERPTS = 16
"""Excerpts per forward pass when re-running the model."""
MAX_VALUES = 200_000_000
"""Most (neuron, token) activations one export may cover (up to about 1.4 GB of locations and values)."""


def hookpoint(layer: int) -> str:
    """delphi's module name for the neurons of one layer."""
    return f"layers.{layer}.mlp.neurons"


def export_delphi(
    cache: Path,
    folder: Path,
    *,
    layers: Sequence[int] | None = None,
    neurons: Sequence[NeuronId] | None = None,
    model: str | None = None,
    batch_size: int = BATCH_EXCERPTS,
    progress: Callable[[str, int], Callable[[int], None]] | None = None,
) -> ExportSummary:
    """Write the chosen neurons as a delphi cache under `folder` (see the module docstring); needs the model."""
    import torch
    from safetensors.numpy import save_file

    from core.models import capture_neurons, load_model, run_decoder

    folder = Path(folder)
    summary = ExportSummary(folder, "delphi")
    with cache_io.open_cache(cache) as store:
        meta = cache_io.cache_meta(store)
        if meta.get("settings", {}).get("imported_from"):
            raise InteropError(f"{cache} was imported from {meta['settings']['imported_from']}'s files, which hold "
                               "token strings, not the model's token ids that delphi reads; export it "
                               "--format openai or neuronpedia instead")
        chosen = selected_neurons(store, layers, neurons)
        excerpt_ids: set[int] = set()
        explanations: dict[NeuronId, str] = {}
        for data in neuron_blocks(store, chosen):
            excerpt_ids |= {e.excerpt.excerpt_id for e in data.excerpts}
            if data.explanations and data.explanations[0][0].text:
                explanations[data.neuron] = str(data.explanations[0][0].text)
        rows = sorted(excerpt_ids)
        width = int(meta.get("excerpt_len", 0))
        if len(rows) * width * len(chosen) > MAX_VALUES:
            raise InteropError(f"{len(chosen):,} neurons over {len(rows):,} excerpts would be "
                               f"{len(rows) * width * len(chosen):,} activations, more than a delphi cache of dense "
                               f"MLP neurons should hold ({MAX_VALUES:,}); choose fewer with --neurons")
        found = cache_io.excerpt_token_ids(store, rows)
    tokens = np.array([found[i] for i in rows], dtype=np.int64)
    subject = load_model(model or str(meta.get("model")))
    if (subject.n_layers, subject.n_neurons) != (int(meta.get("layers", -1)), int(meta.get("neurons_per_layer", -1))):
        raise InteropError(f"{subject.name} has {subject.n_layers} layers x {subject.n_neurons} neurons but the cache "
                           f"has {meta.get('layers')} x {meta.get('neurons_per_layer')}: give the cache's own --model")

    wanted = {layer: np.array(sorted(n.neuron for n in chosen if n.layer == layer), dtype=np.int64)
              for layer in sorted({n.layer for n in chosen})}
    locations: dict[int, list[np.ndarray]] = {layer: [] for layer in wanted}
    values: dict[int, list[np.ndarray]] = {layer: [] for layer in wanted}
    bos = subject.bos_token_id
    skip = 1 if bos is not None else 0
    start_row = 0

    def sink(layer: int, acts: torch.Tensor) -> None:
        part = acts[:, skip:, :][:, :, torch.from_numpy(wanted[layer])].numpy()  # [batch, pos, chosen]
        row, pos, col = np.nonzero(part > 0)
        locations[layer].append(np.stack([row + start_row, pos, wanted[layer][col]], axis=1))
        values[layer].append(part[row, pos, col])

    tick = progress("re-run", len(rows)) if progress else None
    with subject.lock, capture_neurons(subject, sink, sorted(wanted)):
        for start_row in range(0, len(rows), batch_size):
            batch = torch.from_numpy(tokens[start_row:start_row + batch_size])
            if bos is not None:
                batch = torch.cat([torch.full((batch.shape[0], 1), bos, dtype=torch.int64), batch], 1)
            run_decoder(subject, batch, stop_after_layer=max(wanted))
            if tick:
                tick(batch.shape[0])

    config = {
        "dataset_repo": str(meta.get("corpus", "")), "dataset_split": "", "dataset_name": "", "dataset_row": "text",
        "batch_size": batch_size, "ctx_len": int(tokens.shape[1]), "n_tokens": int(tokens.size), "n_splits": 1,
        "model_name": str(meta.get("model")),
    }
    for layer, neurons_of_layer in sorted(wanted.items()):
        first, last = int(neurons_of_layer[0]), int(neurons_of_layer[-1])
        where = np.concatenate(locations[layer]) if locations[layer] else np.zeros((0, 3), dtype=np.int64)
        where[:, 2] -= first
        directory = folder / "latents" / hookpoint(layer)
        directory.mkdir(parents=True, exist_ok=True)
        target = directory / f"{first}_{last}.safetensors"
        tmp = directory / f".{first}_{last}.safetensors.tmp"
        save_file({
            "locations": where.astype(np.uint32),
            "activations": (np.concatenate(values[layer]) if values[layer] else np.zeros(0)).astype(np.float16),
            "tokens": tokens,
        }, str(tmp))
        tmp.replace(target)
        write_text_atomic(directory / "config.json", json.dumps(config, indent=2))
        summary.files += 2
    for neuron, text in explanations.items():
        write_text_atomic(folder / "explanations" / f"{hookpoint(neuron.layer)}_latent{neuron.neuron}.txt",
                          json.dumps(text))
        summary.files += 1
    subject.tokenizer.save_pretrained(str(folder / "tokenizer"))
    summary.neurons = len(chosen)
    summary.explanations = len(explanations)
    summary.notes.append(f"{len(rows):,} excerpts ({tokens.size:,} tokens) re-run through {subject.name}; pass "
                         f"the tokenizer saved in {folder / 'tokenizer'} to delphi's LatentDataset")
    return summary
