"""Shared fixtures: the real default model (loaded once per session) and tiny random models built in code."""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

TINY_HIDDEN = 32
"""Residual width of the tiny models."""
TINY_NEURONS = 48
"""MLP width (neurons per layer) of the tiny models."""
TINY_LAYERS = 2
"""Decoder blocks of the tiny models."""
TINY_VOCAB = 320
"""Vocabulary of the tiny models (the tiny tokenizers have 300 tokens)."""

TINY_TEXT = [
    "the cat sat on the mat",
    "a dog ran in the park and the cat sat",
    "def f(x):\n    return x + 1\n",
]

# model_type -> (config class name, extra config arguments, tokenizer style)
TINY_ARCHITECTURES: dict[str, tuple[str, dict, str]] = {
    "gpt2": (
        "GPT2Config",
        {"n_embd": TINY_HIDDEN, "n_layer": TINY_LAYERS, "n_head": 4, "n_inner": TINY_NEURONS, "n_positions": 64},
        "byte",
    ),
    "llama": ("LlamaConfig", {}, "sp"),
    "mistral": ("MistralConfig", {}, "sp"),
    "qwen2": ("Qwen2Config", {}, "byte"),
    "qwen3": ("Qwen3Config", {"head_dim": 8}, "byte"),
    "smollm3": ("SmolLM3Config", {}, "byte"),
    "gemma": ("GemmaConfig", {"head_dim": 8}, "sp"),
    "gemma2": ("Gemma2Config", {"head_dim": 8, "query_pre_attn_scalar": 8}, "sp"),
    "gemma3_text": ("Gemma3TextConfig", {"head_dim": 8, "query_pre_attn_scalar": 8}, "sp"),
    "gpt_neox": ("GPTNeoXConfig", {}, "byte"),
    "phi": ("PhiConfig", {}, "byte"),
    "phi3": ("Phi3Config", {}, "sp"),
}
"""The architectures core.models supports, each as a tiny config; "sp" tokenizers add a BOS token, "byte" do not."""


def _tiny_tokenizer(style: str):
    """A 300-token tokenizer trained in code: "byte" is GPT-2-like byte-level BPE without BOS; "sp" is
    SentencePiece-like (▁ for spaces, byte fallback) and adds <s> (id 1) in front of every text."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    if style == "byte":
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=300,
            special_tokens=["<|endoftext|>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tok.train_from_iterator(TINY_TEXT, trainer)
        return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>")
    specials = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    tok.train_from_iterator(
        TINY_TEXT, trainers.BpeTrainer(vocab_size=300, special_tokens=specials, show_progress=False)
    )
    state = json.loads(tok.to_str())
    state["model"]["byte_fallback"] = True  # unknown characters become <0xNN> byte tokens, as in Llama 2
    tok = Tokenizer.from_str(json.dumps(state))
    tok.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)]
    )
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


def _save_tiny_model(folder: Path, model_type: str, seed: int = 0) -> Path:
    """Write a tiny randomly initialised causal LM of this model type, with its tokenizer, to folder."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM

    class_name, extra, style = TINY_ARCHITECTURES[model_type]
    args = {
        "vocab_size": TINY_VOCAB,
        "hidden_size": TINY_HIDDEN,
        "intermediate_size": TINY_NEURONS,
        "num_hidden_layers": TINY_LAYERS,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 64,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "pad_token_id": None,
    }
    if model_type in ("gpt2", "gpt_neox", "phi"):
        args.pop("num_key_value_heads")
    if model_type == "gpt2":
        for key in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads"):
            args.pop(key)
        args.pop("max_position_embeddings")
    config = getattr(transformers, class_name)(**args, **extra)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    with torch.no_grad():  # larger weights than the default init, so activations are far from zero
        for parameter in model.parameters():
            parameter.normal_(0.0, 0.3)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    _tiny_tokenizer(style).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def write_tiny_model() -> Callable[[Path, str], Path]:
    """Function (folder, model_type) -> folder: writes a tiny random model there (for tests that need the place)."""
    return _save_tiny_model


@pytest.fixture(scope="session")
def tiny_model_folder(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """Factory: model_type -> folder holding a tiny random model of that type (built once per session)."""
    built: dict[str, Path] = {}

    def make(model_type: str) -> Path:
        if model_type not in built:
            built[model_type] = _save_tiny_model(tmp_path_factory.mktemp(f"tiny-{model_type}"), model_type)
        return built[model_type]

    return make


@pytest.fixture(scope="session")
def tiny_subject(tiny_model_folder: Callable[[str], Path]):
    """A tiny Llama SubjectModel (2 layers x 48 neurons) whose tokenizer adds BOS."""
    from core.models import load_model

    return load_model(str(tiny_model_folder("llama")))


@pytest.fixture(scope="session")
def default_model():
    """The real default subject model, loaded once per session (converted under NEURON_ATLAS_HOME on first use)."""
    from core.models import load_model

    return load_model("smollm2-135m")


SMALL_CACHE_TOKENS = 4096
"""Tokens of the stdlib corpus recorded into the shared small cache of the default model."""


@pytest.fixture(scope="session")
def small_cache(default_model, tmp_path_factory) -> Path:
    """A real cache: every neuron of the default model over 4,096 stdlib tokens (64 excerpts), built once.

    Tests that write to a cache must copy it first (`copy_cache`)."""
    from core.corpus import build_corpus
    from core.record import BuildPlan, RecordConfig, record_corpus

    path = tmp_path_factory.mktemp("cache") / "small.duckdb"
    plan = BuildPlan(model="smollm2-135m", corpus="stdlib", tokens=SMALL_CACHE_TOKENS, excerpt_len=64, settings={})
    record_corpus(
        default_model,
        lambda: build_corpus("stdlib", default_model.tokenizer, max_tokens=SMALL_CACHE_TOKENS),
        path, plan, RecordConfig(), progress=False,
    )
    return path


@pytest.fixture
def copy_cache(small_cache, tmp_path) -> Callable[[], Path]:
    """A function returning a fresh writable copy of the small cache (its recording; no results yet) in this
    test's tmp dir."""
    import shutil

    def make() -> Path:
        target = tmp_path / f"copy{len(list(tmp_path.glob('copy*.duckdb')))}.duckdb"
        shutil.copy(small_cache, target)
        return target

    return make


OPENAI_SERVER_START_S = 300.0
"""Deadline for `transformers serve` to answer /v1/models (it took about 45 s on 2 busy cores)."""


@pytest.fixture(scope="session")
def openai_server(default_model, tmp_path_factory):
    """A real OpenAI-compatible server: `transformers serve` on 127.0.0.1 with the default model's safetensors
    folder (converted by `default_model`). Yields its base URL, e.g. "http://127.0.0.1:PORT/v1"; the served model's
    id is in `openai_server_model`. A server that cannot start fails the test with its log, never skips it."""
    import logging
    import os
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    from core.models import DEFAULT_MODEL, model_home
    from tests.browser.harness import stop

    folder = model_home() / DEFAULT_MODEL
    command = Path(sys.executable).with_name("transformers")
    if not command.is_file():
        pytest.fail(f"{command} is missing: pip install 'transformers[serving]' (requirements-dev.txt)")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log_path = tmp_path_factory.mktemp("serve") / "transformers-serve.log"
    started = time.monotonic()
    with open(log_path, "wb") as log_file:
        server = subprocess.Popen(
            [str(command), "serve", str(folder), "--host", "127.0.0.1", "--port", str(port), "--device", "cpu"],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
        )
    base_url = f"http://127.0.0.1:{port}/v1"

    def server_log() -> str:
        return log_path.read_text(errors="replace")[-4000:]

    try:
        while True:
            if server.poll() is not None:
                pytest.fail(f"transformers serve exited with status {server.returncode}:\n{server_log()}")
            if time.monotonic() - started > OPENAI_SERVER_START_S:
                pytest.fail(f"transformers serve did not answer within {OPENAI_SERVER_START_S:.0f} s:\n{server_log()}")
            try:
                with urllib.request.urlopen(f"{base_url}/models", timeout=5) as response:
                    if json.loads(response.read()).get("data"):
                        break
            except (OSError, ValueError):
                pass  # not listening yet
            time.sleep(0.5)
        logging.getLogger(__name__).info("transformers serve answered after %.1f s", time.monotonic() - started)
        yield base_url
    finally:
        stop(server)


@pytest.fixture(scope="session")
def openai_server_model(openai_server) -> str:
    """The model id `openai_server` reports in /v1/models (use it as "openai:" + id)."""
    import urllib.request

    with urllib.request.urlopen(f"{openai_server}/models", timeout=10) as response:
        return json.loads(response.read())["data"][0]["id"]


# --- the dashboard (tests/app, tests/browser) ---------------------------------------------------------------------

DASHBOARD_EXPLAINED = "0:0-7"
"""Neurons the dashboard's prepared cache explains with the baseline explainer."""


def _run_core(*args: str) -> None:
    """`python -m core ARGS` from the repository root; RuntimeError with its output when it fails."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-m", "core", *args], cwd=root, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"python -m core {' '.join(args)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")


@pytest.fixture(scope="session")
def atlas_home(tmp_path_factory):
    """NEURON_ATLAS_HOME for the session's dashboard runs: its own last-cache file, with the already converted
    default model linked in (so nothing is converted again and the user's own home is left alone)."""
    from core.models import model_home

    home = tmp_path_factory.mktemp("atlas-home")
    real = model_home() / "smollm2-135m"
    if real.is_dir():
        (home / "smollm2-135m").symlink_to(real.resolve(), target_is_directory=True)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("NEURON_ATLAS_HOME", str(home))
        yield home


DASHBOARD_RELATED_LAYERS = 2
"""Layers whose related tokens and neurons the dashboard's prepared cache holds (all 30 take minutes)."""


@pytest.fixture(scope="session")
def dashboard_cache(small_cache, default_model, atlas_home, tmp_path_factory) -> Path:
    """The small cache with what the pipeline adds for the dashboard: baseline explanations of some layer-0
    neurons (`python -m core explain`) and the related tables of the first layers (core.related, stopped after
    DASHBOARD_RELATED_LAYERS). Read-only for the tests: hard-link it (core.paths.copy_cache(..., link=True))."""
    import shutil

    from core.related import compute_related
    from core.store import open_results_writer

    path = tmp_path_factory.mktemp("dashboard-cache") / "dashboard.duckdb"
    shutil.copy(small_cache, path)
    _run_core("explain", str(path), "--neurons", DASHBOARD_EXPLAINED, "--explainer", "baseline",
              "--simulator", "baseline", "--quiet")
    with open_results_writer(path) as writer:
        compute_related(writer, default_model, progress=False, stop_after_layers=DASHBOARD_RELATED_LAYERS)
    return path


# --- a tiny real cache for the store, views and live work (tests/test_store*.py, test_views.py, test_live.py) -----

TINY_CORPUS = "The cat sat on the mat. def f(x):\n    return x + 1\n100% of_the values. " * 30
"""The tiny cache's corpus: words, code, a literal % and _ (search must take them literally)."""

TINY_EXPLAINED = [("0:1", "cats and mats", 0.61), ("0:2", "100% literal", 0.12), ("1:5", "the word return", 0.48)]
"""(neuron, explanation, score) stored in the tiny cache by explainer "baseline" and simulator "baseline" (with the
score as calibration score too: the best explanation is chosen on it); 1:5 also has a worse explanation scored by
simulator "other"."""


@pytest.fixture(scope="session")
def tiny_explained_cache(tiny_subject, tmp_path_factory) -> Path:
    """A real cache of the tiny Llama (2 layers x 48 neurons, 512 tokens in excerpts of 16) with the explanations of
    TINY_EXPLAINED in its results file. Read-only for the tests: copy it (core.paths.copy_cache)."""
    from core.corpus import build_corpus
    from core.record import BuildPlan, RecordConfig, record_corpus
    from core.store import open_results_writer
    from core.types import ExplanationStatus, NeuronId, Scores

    folder = tmp_path_factory.mktemp("tiny-explained")
    corpus = folder / "corpus.txt"
    corpus.write_text(TINY_CORPUS)
    cache = folder / "tiny.duckdb"
    plan = BuildPlan(model=tiny_subject.name, corpus=str(corpus), tokens=512, excerpt_len=16, settings={})
    record_corpus(tiny_subject, lambda: build_corpus(str(corpus), tiny_subject.tokenizer, max_tokens=512,
                                                     excerpt_len=16), cache, plan, RecordConfig(top_k=4),
                  progress=False)
    stored = [(NeuronId.parse(n), text, score, "baseline") for n, text, score in TINY_EXPLAINED]
    with open_results_writer(cache) as writer:
        for neuron, text, score, simulator in [*stored, (NeuronId(1, 5), "a worse one", 0.05, "other")]:
            writer.add_explanation(neuron, text=text, explainer="baseline", model=None, prompt_version="t",
                                   simulator=simulator, status=ExplanationStatus.OK, calibration_score=score,
                                   scores=Scores(score, score, None, 32))
    return cache


@pytest.fixture
def tiny_dashboard(tiny_explained_cache, tmp_path):
    """A fresh copy of the tiny cache opened as the dashboard opens it (its own notes file)."""
    from core.paths import copy_cache
    from core.store import DashboardCache

    path = tmp_path / "dashboard.duckdb"
    copy_cache(tiny_explained_cache, path)
    cache = DashboardCache(path)
    yield cache
    cache.close()


@pytest.fixture(scope="session")
def tiny_cache(tiny_subject, tmp_path_factory) -> Path:
    """A real cache of the tiny Llama over 512 stdlib tokens in 8-token excerpts (tests/fault_server.py), cheap to
    explain through the fault server. Read-only for the tests: copy it to write."""
    from fault_server import build_tiny_cache

    return build_tiny_cache(tiny_subject, tmp_path_factory.mktemp("tiny-cache") / "tiny.duckdb")


@pytest.fixture(scope="session")
def bench_module() -> Callable[[str], ModuleType]:
    """bench(NAME) -> bench/NAME.py loaded as a module (the smoke tests run a benchmark's machinery); bench/ goes on
    the path first, since one benchmark imports another."""
    bench = Path(__file__).resolve().parents[1] / "bench"

    def load(name: str) -> ModuleType:
        sys.path.insert(0, str(bench))
        spec = importlib.util.spec_from_file_location(f"bench_{name}", bench / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
        return module

    return load
