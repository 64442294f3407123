"""Related tokens and neurons (core/related.py): every table against a brute-force computation on a tiny model of
each supported architecture, the real model's top input token through a real forward pass, resume, bad input."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pytest
import torch

from core.cli import main
from core.corpus import Corpus, CorpusReport
from core.models import SUPPORTED_MODEL_TYPES, SubjectModel, load_model, neuron_activations
from core.paths import copy_cache, results_path
from core.record import BuildPlan, RecordConfig, record_corpus
from core.related import (
    RelatedConfig,
    RelatedError,
    compute_related,
    input_token_values,
    normed_inputs,
    read_layer,
    sample_excerpts,
    token_residuals,
    top_k_rows,
    vocab_size,
)
from core.store import CacheReader, RecordingWriter, open_reader, open_results_writer
from core.types import NeuronId, RelatedNeuronKind, RelatedTokenKind

TINY_CFG = RelatedConfig(tokens_per_kind=8, neurons_per_kind=6, sample_tokens=96)
"""Small lists so ties are unlikely, and a sample of 6 excerpts of 16 tokens."""


# --- fixtures -----------------------------------------------------------------------------------------------------


def _record(subject: SubjectModel, folder: Path, path: Path) -> Path:
    """A real cache of `subject` over 24 random excerpts of 16 tokens."""
    rng = np.random.default_rng(0)
    ids = rng.integers(0, len(subject.tokenizer) - 1, size=(24, 16)).astype(np.int32)
    report = CorpusReport("random", 24, 0, 0, (), 24, 24 * 16, 0)
    corpus = Corpus(ids, tuple(f"random#{i}" for i in range(24)), report)
    plan = BuildPlan(model=str(folder), corpus="random", tokens=24 * 16, excerpt_len=16, settings={})
    record_corpus(subject, lambda: corpus, path, plan, RecordConfig(top_k=4, bottom_k=4), progress=False)
    return path


@pytest.fixture(scope="session")
def tiny_cache(tiny_model_folder, tmp_path_factory) -> Callable[[str], tuple[SubjectModel, Path]]:
    """Factory: model_type -> (its tiny subject, a recorded cache of it), built once per session."""
    built: dict[str, tuple[SubjectModel, Path]] = {}

    def make(model_type: str) -> tuple[SubjectModel, Path]:
        if model_type not in built:
            folder = tiny_model_folder(model_type)
            subject = load_model(str(folder))
            path = _record(subject, folder, tmp_path_factory.mktemp(f"cache-{model_type}") / "tiny.duckdb")
            built[model_type] = (subject, path)
        return built[model_type]

    return make


@pytest.fixture(scope="session")
def deep_llama(tiny_model_folder, tmp_path_factory) -> tuple[SubjectModel, Path]:
    """A 4-layer tiny Llama (so upstream lists span several layers) and its recorded cache."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    source = tiny_model_folder("llama")
    config = AutoConfig.from_pretrained(source)
    config.num_hidden_layers = 4
    torch.manual_seed(1)
    model = AutoModelForCausalLM.from_config(config)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0.0, 0.3)
    folder = tmp_path_factory.mktemp("deep-llama")
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(source).save_pretrained(folder)
    subject = load_model(str(folder))
    return subject, _record(subject, folder, folder / "deep.duckdb")


def _copy(path: Path, tmp_path: Path, name: str = "work.duckdb") -> Path:
    target = tmp_path / name
    copy_cache(path, target)
    return target


def _layer_rows(cache: Path, layer: int) -> tuple[pa.Table, pa.Table]:
    """All related_tokens and related_neurons rows of one layer, read from the results file as written."""
    with duckdb.connect(str(results_path(cache)), read_only=True) as con:
        order = "WHERE layer = ? ORDER BY neuron, kind, rank"
        tokens = con.sql(f"SELECT * FROM related_tokens {order}", params=[layer]).to_arrow_table()
        neurons = con.sql(f"SELECT * FROM related_neurons {order}", params=[layer]).to_arrow_table()
    return tokens, neurons


# --- brute force, written from the definitions in docs/related.md with the model's own modules -----------------


def _gain(norm: torch.nn.Module) -> tuple[np.ndarray, bool]:
    """A norm's gain read from its weight by class: LayerNorm weight (centres), Gemma 1 + weight, else weight."""
    weight = norm.weight.detach().double().numpy()
    if isinstance(norm, torch.nn.LayerNorm):
        return weight, True
    return (1.0 + weight if type(norm).__name__.startswith("Gemma") else weight), False


def _through(gain: np.ndarray, centers: bool, vectors: np.ndarray) -> np.ndarray:
    """gain * P v for each row v (P removes the mean when the norm centres)."""
    if centers:
        vectors = vectors - vectors.mean(-1, keepdims=True)
    return vectors * gain


def _output_vectors(subject: SubjectModel, layer: int) -> np.ndarray:
    """[n, d] what one unit of each neuron adds to the residual stream, by calling the output projection."""
    proj = subject.output_projection(layer)
    n = subject.n_neurons
    with torch.no_grad():
        vectors = (proj(torch.eye(n)) - proj(torch.zeros(1, n))).double().numpy()
    post = getattr(subject.block(layer), "post_feedforward_layernorm", None)
    if post is not None:
        vectors = _through(*_gain(post), vectors)
    return vectors


def _input_weights(subject: SubjectModel, layer: int) -> tuple[np.ndarray | None, np.ndarray]:
    """(gate [n, d] or None, up/fc [n, d]) read by module name."""
    mlp = subject.block(layer).mlp
    n = subject.n_neurons
    if hasattr(mlp, "gate_up_proj"):
        w = mlp.gate_up_proj.weight.detach().double().numpy()
        return w[:n], w[n:]
    if hasattr(mlp, "gate_proj"):
        return mlp.gate_proj.weight.detach().double().numpy(), mlp.up_proj.weight.detach().double().numpy()
    if hasattr(mlp, "c_fc"):
        return None, mlp.c_fc.weight.detach().double().numpy().T  # Conv1D stores [in, out]
    fc = mlp.fc1 if hasattr(mlp, "fc1") else mlp.dense_h_to_4h
    return None, fc.weight.detach().double().numpy()


def _brute_input_values(subject: SubjectModel, layer: int) -> tuple[np.ndarray, np.ndarray]:
    """(neuron values, pre-activations) [vocab, n] with each token's embedding alone at the MLP input, from a
    forward of the block's norm and MLP modules with hooks on the projections."""
    vocab = vocab_size(subject)
    block = subject.block(layer)
    captured: dict[str, torch.Tensor] = {}
    mlp = block.mlp
    first = next(getattr(mlp, name) for name in ("gate_up_proj", "up_proj", "c_fc", "fc1", "dense_h_to_4h")
                 if hasattr(mlp, name))
    handles = [
        subject.output_projection(layer).register_forward_pre_hook(
            lambda _m, inputs: captured.__setitem__("neurons", inputs[0])
        ),
        first.register_forward_hook(lambda _m, _i, out: captured.__setitem__("first", out)),
    ]
    try:
        with torch.no_grad():
            embedded = subject.model.get_input_embeddings()(torch.arange(vocab)[None])  # [1, vocab, d]
            mlp(subject.mlp_norm(layer)(embedded))
    finally:
        for handle in handles:
            handle.remove()
    neurons = captured["neurons"][0].double().numpy()
    pre = captured["first"][0].double().numpy()
    if hasattr(mlp, "gate_up_proj"):
        pre = pre[:, subject.n_neurons :]
    return neurons, pre


def _brute_output_values(subject: SubjectModel, layer: int) -> np.ndarray:
    """[n, vocab] logit change per unit of each neuron: lm_head(final gain * P v) - lm_head(0)."""
    base = subject.model.base_model
    final = next(getattr(base, name) for name in ("norm", "ln_f", "final_layer_norm", "final_layernorm")
                 if hasattr(base, name))
    vectors = _through(*_gain(final), _output_vectors(subject, layer))
    head = subject.model.get_output_embeddings()
    with torch.no_grad():
        logits = head(torch.from_numpy(vectors).float()) - head(torch.zeros(1, vectors.shape[1]))
    return logits.double().numpy()[:, : vocab_size(subject)]


def _brute_strengths(subject: SubjectModel) -> np.ndarray:
    """[N, N] strength[target, source] = r_target . (g * P out_source) / |P(g * r_target)| with g and P of the
    target's norm; r = gate/|gate| + up/|up| for gated MLPs, the input weights otherwise."""
    outputs = np.concatenate([_output_vectors(subject, layer) for layer in range(subject.n_layers)])  # [N, d]
    blocks = []
    for layer in range(subject.n_layers):
        gate, up = _input_weights(subject, layer)
        read = up if gate is None else _unit(gate) + _unit(up)
        gain, centers = _gain(subject.mlp_norm(layer))
        length = np.linalg.norm(_centred(read * gain) if centers else read * gain, axis=1)
        blocks.append(read @ _through(gain, centers, outputs).T / length[:, None])
    return np.concatenate(blocks)


def _centred(x: np.ndarray) -> np.ndarray:
    return x - x.mean(-1, keepdims=True)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _brute_correlations(subject: SubjectModel, store: CacheReader, cfg: RelatedConfig) -> np.ndarray:
    """[N, N] Pearson r of every pair of neurons over the documented sample, from neuron_activations per excerpt."""
    meta = store.meta()
    ids = sample_excerpts(meta["excerpts"], meta["excerpt_len"], cfg.sample_tokens, cfg.seed)
    excerpts = store.excerpts([int(i) for i in ids])
    acts = []
    for i in ids:
        per_layer = neuron_activations(subject, excerpts[int(i)].token_ids)
        acts.append(np.concatenate([per_layer[layer] for layer in range(subject.n_layers)], 1))
    corr = np.corrcoef(np.concatenate(acts).astype(np.float64).T)
    np.fill_diagonal(corr, -np.inf)
    return corr


def _check_list(stored_ids: list, stored_values: list[float], brute: np.ndarray, candidates: np.ndarray,
                k: int, largest: bool, label: str, *, signed: bool = False) -> None:
    """The stored list is the best k of `brute` over `candidates`: same values in order, and each stored item's
    brute-force value equals its stored value. `signed` lists keep only values of their own sign."""
    if len(candidates) == 0:
        assert stored_ids == [], label
        return
    order = np.argsort(-brute[candidates] if largest else brute[candidates], kind="stable")
    best = brute[candidates][order][:k]
    if signed:
        best = best[best > 0] if largest else best[best < 0]
    values = brute[candidates]
    scale = max(1.0, float(np.abs(values[np.isfinite(values)]).max()))
    tol = 2e-4 * scale
    assert len(stored_values) == len(best), label
    np.testing.assert_allclose(stored_values, best, atol=tol, err_msg=label)
    np.testing.assert_allclose(brute[np.array(stored_ids, dtype=np.int64)], stored_values, atol=tol, err_msg=label)


# --- tests ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model_type", sorted(SUPPORTED_MODEL_TYPES))
def test_tables_equal_brute_force(model_type: str, tiny_cache, tmp_path: Path) -> None:
    subject, source = tiny_cache(model_type)
    path = _copy(source, tmp_path)
    with open_results_writer(path) as store:
        summary = compute_related(store, subject, TINY_CFG, progress=False)
        assert summary.finished and summary.layers_computed == subject.n_layers
        n, n_layers = subject.n_neurons, subject.n_layers
        k_tok, k_neu = TINY_CFG.tokens_per_kind, TINY_CFG.neurons_per_kind
        strengths = _brute_strengths(subject)
        corr = _brute_correlations(subject, store, TINY_CFG)
        vocab = np.arange(vocab_size(subject))
        gated = read_layer(subject, 0).gate is not None
        for layer in range(n_layers):
            values, pre = _brute_input_values(subject, layer)  # [vocab, n]
            inputs = values if gated else pre
            outputs = _brute_output_values(subject, layer)  # [n, vocab]
            for i in [*range(0, n, 3), n - 1]:  # a third of the neurons keeps the test quick
                neuron = NeuronId(layer, i)
                for kind, brute, largest in (
                    (RelatedTokenKind.INPUT_UP, inputs[:, i], True),
                    (RelatedTokenKind.INPUT_DOWN, inputs[:, i], False),
                    (RelatedTokenKind.OUTPUT_UP, outputs[i], True),
                    (RelatedTokenKind.OUTPUT_DOWN, outputs[i], False),
                ):
                    found = store.related_tokens(neuron, kind)
                    _check_list([t.token_id for t in found], [t.value for t in found], brute, vocab, k_tok, largest,
                                f"{model_type} {neuron} {kind}")
                g = layer * n + i
                earlier, later = np.arange(layer * n), np.arange((layer + 1) * n, n_layers * n)
                for kind, brute, candidates, largest in (
                    (RelatedNeuronKind.UPSTREAM_POSITIVE, strengths[g], earlier, True),
                    (RelatedNeuronKind.UPSTREAM_NEGATIVE, strengths[g], earlier, False),
                    (RelatedNeuronKind.DOWNSTREAM_POSITIVE, strengths[:, g], later, True),
                    (RelatedNeuronKind.DOWNSTREAM_NEGATIVE, strengths[:, g], later, False),
                    (RelatedNeuronKind.CORRELATED, corr[g], np.arange(n_layers * n), True),
                ):
                    found = store.related_neurons(neuron, kind)
                    ids = [r.neuron.layer * n + r.neuron.neuron for r in found]
                    _check_list(ids, [r.strength for r in found], brute, candidates, k_neu, largest,
                                f"{model_type} {neuron} {kind}", signed=True)
            if not gated:  # the stored pre-activation really is the neuron's input: act(pre) is the neuron
                act = read_layer(subject, layer).act
                np.testing.assert_allclose(act(torch.from_numpy(pre)).numpy(), values, atol=1e-4)
        # the activation lists are the recorded token means, exposed with their counts
        for kind, highest in ((RelatedTokenKind.ACTIVATION_TOP, True), (RelatedTokenKind.ACTIVATION_BOTTOM, False)):
            found = store.related_tokens(NeuronId(1, 3), kind, limit=5)
            means = store.token_means(NeuronId(1, 3), 5, highest=highest)
            assert found and [(t.token_id, t.value, t.count) for t in found] == [
                (m.token_id, m.mean_activation, m.count) for m in means
            ]
            assert all(t.count is not None and t.count >= 3 for t in found)
        # several kinds in one query (the related page): each kind's list as checked above, cut to the limit
        neuron = NeuronId(1, 3)
        tokens = store.related_tokens_of_kinds(neuron, list(RelatedTokenKind), limit=4)
        assert tokens == {kind: store.related_tokens(neuron, kind)[:4] for kind in RelatedTokenKind}
        neurons = store.related_neurons_of_kinds(neuron, list(RelatedNeuronKind), limit=3)
        assert neurons == {kind: store.related_neurons(neuron, kind)[:3] for kind in RelatedNeuronKind}
        assert any(len(found) == 3 < len(store.related_neurons(neuron, kind)) for kind, found in neurons.items())


def test_resume_after_interruption_gives_the_same_tables(deep_llama, tmp_path: Path) -> None:
    subject, source = deep_llama
    whole, cut = _copy(source, tmp_path, "whole.duckdb"), _copy(source, tmp_path, "cut.duckdb")
    with open_results_writer(whole) as store:
        compute_related(store, subject, TINY_CFG, progress=False)
    with open_results_writer(cut) as store:
        first = compute_related(store, subject, TINY_CFG, progress=False, stop_after_layers=2)
        assert not first.finished and store.related_layers_done() == {0, 1}
        assert store.related_neurons(NeuronId(2, 0), RelatedNeuronKind.CORRELATED) == []
    with open_results_writer(cut) as store:  # a new process would open it again like this
        second = compute_related(store, subject, TINY_CFG, progress=False)
        assert second.finished and second.resumed_from_layer == 2 and second.layers_computed == 2
        again = compute_related(store, subject, TINY_CFG, progress=False)
        assert again.finished and again.layers_computed == 0
    for layer in range(subject.n_layers):
        (tokens_a, neurons_a), (tokens_b, neurons_b) = _layer_rows(whole, layer), _layer_rows(cut, layer)
        assert tokens_a.num_rows == 4 * subject.n_neurons * TINY_CFG.tokens_per_kind
        assert tokens_a.equals(tokens_b)
        assert neurons_a.num_rows > 0
        assert neurons_a.drop_columns(["strength"]).equals(neurons_b.drop_columns(["strength"]))
        np.testing.assert_allclose(neurons_a["strength"].to_numpy(), neurons_b["strength"].to_numpy(), rtol=1e-5)
    with open_reader(whole) as a:
        upstream = a.related_neurons(NeuronId(3, 0), RelatedNeuronKind.UPSTREAM_POSITIVE)
        assert len(upstream) == TINY_CFG.neurons_per_kind and {r.neuron.layer for r in upstream} <= {0, 1, 2}


def test_other_settings_recompute_and_same_settings_do_nothing(deep_llama, tmp_path: Path) -> None:
    subject, source = deep_llama
    path = _copy(source, tmp_path)
    with open_results_writer(path) as store:
        compute_related(store, subject, TINY_CFG, progress=False)
        fewer = RelatedConfig(tokens_per_kind=3, neurons_per_kind=2, sample_tokens=96)
        summary = compute_related(store, subject, fewer, progress=False)
        assert summary.layers_computed == subject.n_layers
        assert len(store.related_tokens(NeuronId(1, 1), RelatedTokenKind.INPUT_UP)) == 3
        assert len(store.related_neurons(NeuronId(1, 1), RelatedNeuronKind.CORRELATED)) <= 2


def test_real_model_top_input_token_gives_its_value_in_a_forward_pass(default_model: SubjectModel) -> None:
    """Placing the top input token's embedding in the residual stream at the MLP input (a hook on the norm's input,
    the rest of the model running as usual) gives the neuron the value the table says."""
    subject = default_model
    residuals = token_residuals(subject, vocab_size(subject))
    for layer in (0, 17):
        weights = read_layer(subject, layer)
        torch.testing.assert_close(weights.gain, subject.mlp_norm(layer).weight.float())  # Llama: gain = weight
        rows = slice(100, 104)
        with torch.inference_mode():
            values = input_token_values(weights, normed_inputs(weights, residuals), rows)  # [4, vocab]
        top_values, top_tokens = top_k_rows(values, 1)
        for offset in range(values.shape[0]):
            token = int(top_tokens[offset, 0])
            placed = residuals[token].clone()

            def put_token(_module: torch.nn.Module, _inputs: tuple, placed: torch.Tensor = placed) -> tuple:
                return (placed.expand(1, 1, -1),)

            handle = subject.mlp_norm(layer).register_forward_pre_hook(put_token)
            try:
                acts = neuron_activations(subject, [token], layers=[layer])[layer]  # [1 (+ BOS dropped), n]
            finally:
                handle.remove()
            neuron = rows.start + offset
            assert acts[-1, neuron] == pytest.approx(float(top_values[offset, 0]), rel=1e-4, abs=1e-4)
            assert float(top_values[offset, 0]) >= float(values[offset].max()) > 0


# --- the command line and bad input -----------------------------------------------------------------------------


def test_cli_computes_and_shows(tiny_cache, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, source = tiny_cache("llama")
    path = _copy(source, tmp_path)
    assert main(["related", str(path), "--show", "1:2"]) == 0
    assert "not computed yet" in capsys.readouterr().out
    assert main(["related", str(path), "--quiet", "--sample-tokens", "64"]) == 0
    assert "2 layers x 48 neurons" in capsys.readouterr().out
    assert main(["related", str(path), "--quiet", "--sample-tokens", "64"]) == 0
    assert "already has every related table" in capsys.readouterr().out
    assert main(["related", str(path), "--show", "1:2"]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line for line in out.splitlines() if line.startswith("  ")}
    assert set(lines) == {str(k) for k in RelatedTokenKind} | {str(k) for k in RelatedNeuronKind}
    assert "not computed" not in out and "0:" in lines["upstream_positive"] and "0:" in lines["correlated"]
    assert lines["downstream_positive"].split()[1] == "(none)"  # the last layer feeds nothing


def _error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in err
    return errors[0]


def test_a_cache_without_activations_says_build_first(
    tiny_subject: SubjectModel, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "empty.duckdb"
    with RecordingWriter.create(path) as recording:
        recording.set_meta({"model": "smollm2-135m"})
    assert main(["related", str(path)]) == 2
    assert "no recorded activations" in _error_line(capsys)
    with open_results_writer(path) as store, pytest.raises(RelatedError, match="python -m core build"):
        compute_related(store, tiny_subject)


def test_a_neuron_out_of_range(tiny_cache, capsys: pytest.CaptureFixture[str]) -> None:
    _, source = tiny_cache("llama")
    assert main(["related", str(source), "--show", "5:0"]) == 2
    assert "out of range" in _error_line(capsys)
    assert main(["related", str(source), "--show", "five"]) == 2
    assert "LAYER:NEURON" in _error_line(capsys)


def test_a_model_that_cannot_be_loaded(tiny_cache, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, source = tiny_cache("llama")
    path = _copy(source, tmp_path)
    with duckdb.connect(str(path)) as con:  # a cache recorded from a model that has since been deleted
        con.execute("UPDATE meta SET value = to_json(?) WHERE key = 'model'", [str(tmp_path / "gone")])
    assert main(["related", str(path)]) == 2
    assert "no such model" in _error_line(capsys)


def test_a_different_model_is_refused(tiny_cache, tmp_path: Path) -> None:
    _, source = tiny_cache("llama")
    other, _ = tiny_cache("qwen2")  # same shape (2 x 48), another architecture
    path = _copy(source, tmp_path)
    with open_results_writer(path) as store, pytest.raises(RelatedError, match="not the model"):
        compute_related(store, other, TINY_CFG, progress=False)


def test_a_missing_cache(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["related", str(tmp_path / "none.duckdb")]) == 2
    assert "no cache at" in _error_line(capsys)


def test_a_reader_holding_the_results_open_does_not_stop_related(tiny_cache, tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """A dashboard holds the published results open (as DuckDB does) while `related` runs: the command writes its
    working copy and renames it into place; the reader keeps the file it opened until it attaches the new one."""
    _, source = tiny_cache("llama")
    path = _copy(source, tmp_path)
    open_results_writer(path).close()  # the results file exists once anything was computed
    results = str(results_path(path))
    holder = subprocess.Popen(
        [sys.executable, "-c", f"import duckdb, sys; con = duckdb.connect({results!r}, read_only=True); "
         "print('open', flush=True); sys.stdin.readline(); "
         "print(con.execute('SELECT count(*) FROM related_layers').fetchone()[0], flush=True)"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "open"
        assert main(["related", str(path), "--quiet", "--sample-tokens", "96"]) == 0
        out, _ = holder.communicate("go\n", timeout=30)
        assert out.strip() == "0"  # the reader's open file is the one it opened
    finally:
        if holder.poll() is None:
            holder.kill()
    with open_reader(path) as reader:
        assert reader.related_layers_done() == {0, 1}
