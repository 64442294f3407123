"""Related tokens and related neurons for every MLP neuron of a cache (the stage after record).

Reads the cache (meta, excerpts) and the subject model's weights; writes the tables related_tokens,
related_neurons, model_vocab and related_layers into the cache's results through `ResultsWriter`. The exact
formula of every table, and why, is in docs/related.md; in short, for neuron i of layer l:

- input tokens: the neuron's value with one token's embedding alone at the MLP input, for every token;
- output tokens: the logit change per unit of activation through the final norm's gain and the unembedding;
- upstream / downstream neurons: output weights of one neuron through the norm gain onto the unit direction that
  another reads (gated MLPs: gate and up directions summed, `effective_inputs`);
- correlated neurons: Pearson correlation of activations over a sample of the cache's excerpts, re-run here.

Everything is blockwise: one layer's neurons against the whole vocabulary or all other neurons at a time,
keeping only the best few per neuron (torch.topk). Each layer's rows are committed with a progress row, so
an interrupted run goes on where it stopped; weight and correlation pairs with the layers already written are
recomputed on resume (`_catch_up`).

Longer than 400 lines on purpose: the formulas, their blockwise computation and the resumable run are one
derivation, in the order docs/related.md explains them.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, cast

import numpy as np
import pyarrow as pa
import torch
from tqdm import tqdm

from core.killpoints import kill_point
from core.models import SubjectModel, capture_neurons, run_decoder, token_strings
from core.store import CacheReader, ResultsWriter
from core.types import RelatedNeuronKind, RelatedTokenKind

log = logging.getLogger(__name__)

RELATED_VERSION = 2
"""Bumped when a formula changes; a cache computed with another version is recomputed from scratch."""

_NEURON_CHUNK = 512
"""Neurons per block against the whole vocabulary: [512, vocab] floats (100 MB for a 49k vocabulary)."""


class RelatedError(Exception):
    """A cache or model that related cannot work on; the message says what to do."""


@dataclass(frozen=True)
class RelatedConfig:
    """What to keep per neuron; stored in the cache's meta as "related" (a change recomputes everything)."""

    tokens_per_kind: int = 20  # input/output tokens kept each way
    neurons_per_kind: int = 10  # upstream/downstream neurons kept each way, and correlated neurons
    sample_tokens: int = 2048  # corpus tokens re-run for correlations (whole excerpts, rounded up)
    seed: int = 0  # picks the sampled excerpts
    batch_size: int = 16  # excerpts per forward pass of the sample

    def check(self) -> None:
        for name in ("tokens_per_kind", "neurons_per_kind", "sample_tokens", "batch_size"):
            if getattr(self, name) < 1:
                raise RelatedError(f"{name} must be at least 1 (got {getattr(self, name)})")

    def settings(self) -> dict[str, Any]:
        """What decides the stored result (batch_size does not)."""
        values = asdict(self)
        values.pop("batch_size")
        return {"version": RELATED_VERSION, **values}


@dataclass
class RelatedSummary:
    """What a run reports."""

    cache: str
    layers: int
    neurons_per_layer: int
    layers_computed: int
    """Layers written by this run (0 when everything was already there)."""
    resumed_from_layer: int
    """First layer this run computed (0 for a fresh run)."""
    finished: bool
    sample_tokens: int
    """Tokens actually re-run for the correlations."""
    seconds: float
    timings: dict[str, float] = field(default_factory=dict)
    """Seconds per part: load, prepare, sample, catch_up, input_tokens, output_tokens, weights, correlation, write."""


# --- reading the model ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LayerWeights:
    """What the related tables read from one block's MLP: float32 tensors (views of the model's weights)."""

    norm: torch.nn.Module
    """The norm in front of the MLP, applied as the model applies it (input tokens)."""
    gain: torch.Tensor
    """[d_model] elementwise gain of that norm (Gemma's 1 + weight included), for the weight paths."""
    centers: bool
    """Whether the norm subtracts the mean first (LayerNorm)."""
    gate: torch.Tensor | None
    """[n, d_model] gate projection of a gated MLP; None for act(fc(x)) MLPs."""
    gate_bias: torch.Tensor | None
    up: torch.Tensor
    """[n, d_model] up projection (gated) or the input projection (c_fc, fc1, dense_h_to_4h)."""
    up_bias: torch.Tensor | None
    act: Callable[[torch.Tensor], torch.Tensor]
    """The MLP's activation function (applied to the gate in gated MLPs)."""
    output: torch.Tensor
    """[d_model, n]: what one unit of each neuron adds to the residual stream (Gemma 2/3: times the gain of
    the norm applied to the MLP output)."""


def norm_linear_part(norm: torch.nn.Module, width: int) -> tuple[torch.Tensor, bool]:
    """(gain [width], centers) of a LayerNorm or RMSNorm-like module: its action on directions, up to 1/scale.

    RMSNorm variants differ in how they apply the weight (Gemma multiplies by 1 + weight), so their gain is read
    by running the module on a constant vector of RMS 1000, where eps is negligible: norm(c * 1) = gain.
    """
    if isinstance(norm, torch.nn.LayerNorm):
        weight = norm.weight if norm.weight is not None else torch.ones(width)
        return weight.detach().float(), True
    with torch.inference_mode():
        probe = norm(torch.full((1, width), 1000.0))
    return probe[0].detach().float().clone(), False


def _weight(module: torch.nn.Module) -> torch.Tensor:
    """A layer's weight tensor (torch types attribute access on a Module as Tensor | Module)."""
    return cast(torch.Tensor, module.weight)


def _linear_weight(module: torch.nn.Module, n_in: int) -> torch.Tensor:
    """A projection's weight as [out, in]: Linear stores it so; GPT-2's Conv1D stores [in, out]."""
    weight = _weight(module).detach().float()
    if isinstance(module, torch.nn.Linear):
        return weight
    if weight.shape[0] == n_in:  # Conv1D
        return weight.T
    raise RelatedError(f"unexpected projection {type(module).__name__} of shape {tuple(weight.shape)}")


def _bias(module: torch.nn.Module) -> torch.Tensor | None:
    bias = getattr(module, "bias", None)
    return None if bias is None else bias.detach().float()


def _first_attr(obj: object, names: tuple[str, ...]) -> Any:
    for name in names:
        if hasattr(obj, name):
            return getattr(obj, name)
    raise RelatedError(f"{type(obj).__name__} has none of {', '.join(names)}; this MLP layout is not supported")


def read_layer(subject: SubjectModel, layer: int) -> LayerWeights:
    """The MLP weights of one layer, whatever the architecture (see core.models for the supported ones)."""
    block = subject.block(layer)
    mlp: Any = block.mlp  # each architecture names its parts differently (read by name below)
    n = subject.n_neurons
    norm = subject.mlp_norm(layer)
    d_model = _weight(subject.model.get_input_embeddings()).shape[1]
    gain, centers = norm_linear_part(norm, d_model)
    gate = gate_bias = None
    if hasattr(mlp, "gate_up_proj"):  # Phi-3 fuses them: the first n outputs are the gate, the next n the up
        fused = mlp.gate_up_proj
        weight, bias = _linear_weight(fused, d_model), _bias(fused)
        gate, up = weight[:n], weight[n:]
        gate_bias, up_bias = (None, None) if bias is None else (bias[:n], bias[n:])
        act = mlp.activation_fn
    elif hasattr(mlp, "gate_proj"):
        gate, gate_bias = _linear_weight(mlp.gate_proj, d_model), _bias(mlp.gate_proj)
        up, up_bias = _linear_weight(mlp.up_proj, d_model), _bias(mlp.up_proj)
        act = _first_attr(mlp, ("act_fn", "activation_fn", "act"))
    else:
        fc = _first_attr(mlp, ("c_fc", "fc1", "dense_h_to_4h"))
        up, up_bias = _linear_weight(fc, d_model), _bias(fc)
        act = _first_attr(mlp, ("act", "activation_fn", "act_fn"))
    output = _linear_weight(subject.output_projection(layer), n)  # [d_model, n]
    post = getattr(block, "post_feedforward_layernorm", None)  # Gemma 2/3 norm the MLP output before adding it
    if post is not None:
        post_gain, post_centers = norm_linear_part(post, d_model)
        output = post_gain[:, None] * output
        if post_centers:
            output = output - output.mean(0, keepdim=True)
    if up.shape != (n, d_model) or output.shape != (d_model, n) or (gate is not None and gate.shape != up.shape):
        raise RelatedError(f"layer {layer}: MLP weight shapes do not match {n} neurons of width {d_model}")
    return LayerWeights(norm, gain, centers, gate, gate_bias, up, up_bias, act, output)


def effective_inputs(weights: LayerWeights) -> torch.Tensor:
    """[n, d_model] unit vectors: the direction in the residual stream each neuron reads, through the norm's gain.

    act(fc(x)) MLPs: the input weights w. Gated MLPs: w_gate/|w_gate| + w_up/|w_up|, the direction of the
    gradient of act(w_gate . x) (w_up . x) where x is equally aligned with both weights and the gate is open
    (docs/related.md). The gain multiplies each coordinate and a LayerNorm also removes the mean: P(g * w), whose
    dot product with a vector v equals w . (g * P v). Rows are scaled to length 1 so that a neuron with large
    weights does not top every other neuron's downstream list: a strength is the part of an output vector that
    lands on the reading direction.
    """
    read = weights.up if weights.gate is None else _unit_rows(weights.gate) + _unit_rows(weights.up)
    eff = read * weights.gain
    if weights.centers:
        eff = eff - eff.mean(1, keepdim=True)
    return _unit_rows(eff)


def _unit_rows(x: torch.Tensor) -> torch.Tensor:
    """Rows scaled to length 1 (a zero row stays zero)."""
    return x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)


def vocab_size(subject: SubjectModel) -> int:
    """Tokens the related-token tables rank: embedding rows that the tokenizer can produce."""
    rows = _weight(subject.model.get_input_embeddings()).shape[0]
    return min(rows, len(subject.tokenizer))


def token_residuals(subject: SubjectModel, vocab: int) -> torch.Tensor:
    """[vocab, d_model] what each token alone puts in the residual stream: the embedding module's output
    (Gemma's sqrt(d_model) scale included; no position embedding)."""
    with torch.inference_mode():
        return subject.model.get_input_embeddings()(torch.arange(vocab)).float()


def readout(subject: SubjectModel, vocab: int) -> torch.Tensor:
    """[d_model, vocab] R such that R[:, v] . w is the change of token v's logit when the residual stream
    moves by w, through the final norm's gain (and centring, for LayerNorm) and the unembedding."""
    base = subject.model.base_model
    final = _first_attr(base, ("norm", "ln_f", "final_layer_norm", "final_layernorm"))
    unembed = subject.model.get_output_embeddings().weight.detach().float()[:vocab]  # [vocab, d_model]
    gain, centers = norm_linear_part(final, unembed.shape[1])
    rows = unembed * gain
    if centers:
        rows = rows - rows.mean(1, keepdim=True)
    return rows.T.contiguous()


def normed_inputs(weights: LayerWeights, residuals: torch.Tensor) -> torch.Tensor:
    """[vocab, d_model] the MLP input for each token's residual: the block's own norm applied to it."""
    with torch.inference_mode():
        return torch.cat([weights.norm(part).float() for part in residuals.split(8192)])


def input_token_values(weights: LayerWeights, inputs: torch.Tensor, rows: slice) -> torch.Tensor:
    """[len(rows), vocab]: each neuron's value for each token's MLP input `inputs` [vocab, d_model].

    Gated MLPs: act(gate . x + b) * (up . x + b), the neuron itself. act(fc(x)) MLPs: the pre-activation
    fc . x + b (GELU-like functions flatten below zero, so the pre-activation is what tells tokens apart).
    """
    up = torch.mm(weights.up[rows], inputs.T)
    if weights.up_bias is not None:
        up += weights.up_bias[rows, None]
    if weights.gate is None:
        return up
    gate = torch.mm(weights.gate[rows], inputs.T)
    if weights.gate_bias is not None:
        gate += weights.gate_bias[rows, None]
    values = weights.act(gate)
    values.mul_(up)
    return values


# --- keeping the best few per row ----------------------------------------------------------------------------


def top_k_rows(x: torch.Tensor, k: int, largest: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """The k best values of each row of a 2-D tensor, sorted, and their column ids (k is capped at the width).

    torch.topk selects in one pass over contiguous rows; measured here it is as fast as reducing column groups
    first, and a top-k along dim 0 is 3x slower than a transposed copy followed by this.
    """
    return torch.topk(x, min(k, x.shape[1]), dim=1, largest=largest)


class RunningTop:
    """The k best values (and their column ids) seen so far in each row, fed one block of columns at a time."""

    def __init__(self, rows: int, k: int, largest: bool) -> None:
        self.k, self.largest = k, largest
        self.values = torch.full((rows, k), -math.inf if largest else math.inf)
        self.ids = torch.full((rows, k), -1, dtype=torch.int64)

    def merge(self, start: int, values: torch.Tensor, ids: torch.Tensor) -> None:
        """Fold in candidates for rows start..start+len(values)-1 (values [m, j], global ids [m, j])."""
        stop = start + values.shape[0]
        all_values = torch.cat([self.values[start:stop], values], 1)
        all_ids = torch.cat([self.ids[start:stop], ids], 1)
        best, order = all_values.topk(self.k, dim=1, largest=self.largest)
        self.values[start:stop] = best
        self.ids[start:stop] = all_ids.gather(1, order)

    def merge_block(self, start: int, block: torch.Tensor, first_id: int) -> None:
        """Fold in a block of values [m, c] whose columns are ids first_id..first_id+c-1."""
        values, cols = top_k_rows(block, self.k, self.largest)
        self.merge(start, values, cols + first_id)


# --- the correlation sample ----------------------------------------------------------------------------------


def sample_excerpts(n_excerpts: int, excerpt_len: int, sample_tokens: int, seed: int) -> np.ndarray:
    """Ids of the excerpts re-run for correlations: ceil(sample_tokens / excerpt_len) of them (all when fewer),
    drawn uniformly without replacement with numpy's default_rng(seed), sorted."""
    count = min(n_excerpts, max(1, math.ceil(sample_tokens / excerpt_len)))
    return np.sort(np.random.default_rng(seed).choice(n_excerpts, size=count, replace=False))


def sample_activations(
    subject: SubjectModel, token_ids: np.ndarray, batch_size: int
) -> torch.Tensor:
    """Standardised activations Z [tokens, layers * n] of every neuron over excerpts `token_ids` [m, len]
    (BOS prepended when the model wants one, as the recorder does): Z^T Z is the correlation matrix.
    A neuron constant over the sample gets a zero column (no correlation with anything)."""
    m, length = token_ids.shape
    n_layers, n = subject.n_layers, subject.n_neurons
    z = torch.empty(m * length, n_layers * n)  # [token, neuron]
    bos = subject.bos_token_id
    skip = 1 if bos is not None else 0
    row = 0

    def sink(layer: int, acts: torch.Tensor) -> None:
        flat = acts[:, skip:, :].reshape(-1, n)  # [batch * pos, n]
        z[row : row + flat.shape[0], layer * n : (layer + 1) * n] = flat

    with subject.lock, capture_neurons(subject, sink):
        for start in range(0, m, batch_size):
            batch = torch.from_numpy(token_ids[start : start + batch_size].astype(np.int64))
            if bos is not None:
                batch = torch.cat([torch.full((batch.shape[0], 1), bos, dtype=torch.int64), batch], 1)
            run_decoder(subject, batch, stop_after_layer=n_layers - 1)
            row += batch.shape[0] * length
    for part in z.split(4096, dim=1):  # standardise a slice of columns at a time (in place)
        std, mean = torch.std_mean(part, dim=0, unbiased=False)
        scale = torch.where(std > 1e-6 * (mean.abs() + 1), 1.0 / (std * math.sqrt(part.shape[0])), 0.0)
        part.sub_(mean).mul_(scale)
    return z


# --- the run ---------------------------------------------------------------------------------------------------


class _Timer:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, part: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[part] = self.seconds.get(part, 0.0) + time.perf_counter() - started


@dataclass
class _Prepared:
    """Everything computed once per run, before the per-layer loop."""

    weights: list[LayerWeights]
    inputs_all: torch.Tensor  # [layers * n, d_model] effective input directions
    outputs_all: torch.Tensor  # [d_model, layers * n] output directions
    residuals: torch.Tensor  # [vocab, d_model]
    readout: torch.Tensor  # [d_model, vocab]
    z: torch.Tensor  # [tokens, layers * n] standardised sample activations


def check_cache(store: CacheReader) -> dict[str, Any]:
    """The cache's meta, or RelatedError when it holds no recorded activations."""
    meta = store.meta()
    if not meta.get("model") or not meta.get("layers") or store.recorded_neurons() == 0:
        raise RelatedError(
            f"{store.path} has no recorded activations; build it first with "
            f"`python -m core build --cache {store.path}`"
        )
    return meta


def check_subject(subject: SubjectModel, meta: dict[str, Any]) -> None:
    """RelatedError unless the model has the cache's architecture, layers and neurons."""
    shape = (int(meta["layers"]), int(meta["neurons_per_layer"]))
    recorded = f"{meta.get('architecture', '?')} {shape[0]} x {shape[1]}"
    loaded = f"{subject.architecture} {subject.n_layers} x {subject.n_neurons}"
    if recorded != loaded:
        raise RelatedError(
            f"model {subject.name} is a {loaded} (layers x neurons) but the cache was recorded from a {recorded}: "
            "it is not the model this cache was built from"
        )


def compute_related(
    store: ResultsWriter,
    subject: SubjectModel,
    cfg: RelatedConfig | None = None,
    *,
    force: bool = False,
    progress: bool = True,
    stop_after_layers: int | None = None,
) -> RelatedSummary:
    """Fill the cache's related tables for every neuron, resuming an interrupted run with the same settings.

    `force` recomputes what is there. `stop_after_layers` ends the run after that many
    layers are written (tests use it to interrupt at a known point).
    """
    cfg = cfg or RelatedConfig()
    cfg.check()
    started = time.perf_counter()
    meta = check_cache(store)
    check_subject(subject, meta)
    n_layers, n = subject.n_layers, subject.n_neurons
    settings = cfg.settings()
    timer = _Timer()
    vocab = vocab_size(subject)

    done = store.related_layers_done()
    saved = store.related_settings()
    if force or saved is None or saved.get("settings") != settings or done != set(range(len(done))):
        if done:
            log.info("related tables were made with other settings (or --force): recomputing them")
        store.start_related(settings, np.arange(vocab), token_strings(subject.tokenizer, range(vocab)))
        done = set()
    start = len(done)
    summary = RelatedSummary(
        cache=str(store.path), layers=n_layers, neurons_per_layer=n, layers_computed=0, resumed_from_layer=start,
        finished=False, sample_tokens=0, seconds=0.0, timings=timer.seconds,
    )
    if start == n_layers:
        store.finish_related(settings)
        summary.finished = True
        summary.seconds = time.perf_counter() - started
        return summary

    with torch.inference_mode():
        prep = _prepare(store, subject, cfg, meta, vocab, timer)
        summary.sample_tokens = prep.z.shape[0]
        finished = _write_layers(store, prep, cfg, summary, timer, progress, stop_after_layers)
    if not finished:
        summary.seconds = time.perf_counter() - started
        return summary
    store.finish_related(settings)
    summary.finished = True
    summary.seconds = time.perf_counter() - started
    log.info("related: %d layers in %.1f s (%s)", summary.layers_computed, summary.seconds,
             ", ".join(f"{k} {v:.1f} s" for k, v in timer.seconds.items()))
    return summary


def _write_layers(
    store: ResultsWriter,
    prep: _Prepared,
    cfg: RelatedConfig,
    summary: RelatedSummary,
    timer: _Timer,
    progress: bool,
    stop_after_layers: int | None,
) -> bool:
    """Compute and store each layer from `summary.resumed_from_layer` on, in order; False when stopped early."""
    n_layers, n, start = summary.layers, summary.neurons_per_layer, summary.resumed_from_layer
    upstream_pos = RunningTop(n_layers * n, cfg.neurons_per_kind, largest=True)
    upstream_neg = RunningTop(n_layers * n, cfg.neurons_per_kind, largest=False)
    correlated = RunningTop(n_layers * n, cfg.neurons_per_kind, largest=True)
    if start:
        with timer("catch_up"):
            _catch_up(prep, start, n, upstream_pos, upstream_neg, correlated)
    with tqdm(total=n_layers, initial=start, unit="layer", desc="related", disable=not progress,
              dynamic_ncols=True) as bar:
        for layer in range(start, n_layers):
            tokens = _layer_tokens(prep, layer, cfg.tokens_per_kind, timer)
            neurons = _layer_neurons(prep, layer, n, upstream_pos, upstream_neg, correlated, timer)
            with timer("write"):
                store.insert_related_layer(layer, token_rows(layer, tokens), neuron_rows(layer, n, neurons))
            kill_point("related.stored")  # tests/test_kill.py
            summary.layers_computed += 1
            bar.update(1)
            last = layer == n_layers - 1
            if stop_after_layers is not None and summary.layers_computed >= stop_after_layers and not last:
                return False
    return True


def _prepare(
    store: CacheReader, subject: SubjectModel, cfg: RelatedConfig, meta: dict[str, Any], vocab: int, timer: _Timer
) -> _Prepared:
    with timer("prepare"):
        weights = [read_layer(subject, layer) for layer in range(subject.n_layers)]
        inputs_all = torch.cat([effective_inputs(w) for w in weights])
        outputs_all = torch.cat([w.output for w in weights], 1).contiguous()
        residuals = token_residuals(subject, vocab)
        reads = readout(subject, vocab)
    with timer("sample"):
        ids = sample_excerpts(int(meta["excerpts"]), int(meta["excerpt_len"]), cfg.sample_tokens, cfg.seed)
        found = store.excerpts([int(i) for i in ids])
        token_ids = np.array([found[int(i)].token_ids for i in ids], dtype=np.int64)  # [excerpts, excerpt_len]
        z = sample_activations(subject, token_ids, cfg.batch_size)
    log.info("correlation sample: %d excerpts, %d tokens", len(ids), z.shape[0])
    return _Prepared(weights, inputs_all, outputs_all, residuals, reads, z)


def _catch_up(
    prep: _Prepared, start: int, n: int, upstream_pos: RunningTop, upstream_neg: RunningTop, correlated: RunningTop
) -> None:
    """On resume at layer `start`: the pairs of layers start.. with the layers already written, which the
    per-layer loop would have folded into their running lists before the interruption."""
    done_cols = start * n
    for target in range(start, len(prep.weights)):
        rows = slice(target * n, (target + 1) * n)
        strengths = prep.inputs_all[rows] @ prep.outputs_all[:, :done_cols]  # [n, start * n]
        upstream_pos.merge_block(rows.start, strengths, 0)
        upstream_neg.merge_block(rows.start, strengths, 0)
        corr = prep.z[:, rows].T @ prep.z[:, :done_cols]  # [n, start * n]
        correlated.merge_block(rows.start, corr, 0)


def _layer_tokens(prep: _Prepared, layer: int, k: int, timer: _Timer) -> dict[RelatedTokenKind, tuple]:
    """Input and output tokens of one layer's neurons: {kind: (values [n, k], token ids [n, k])}."""
    weights = prep.weights[layer]
    n = weights.up.shape[0]
    found: dict[RelatedTokenKind, list[tuple[torch.Tensor, torch.Tensor]]] = {kind: [] for kind in _TOKEN_KINDS}
    with timer("input_tokens"):
        inputs = normed_inputs(weights, prep.residuals)  # [vocab, d_model]
        for rows in _chunks(n, _NEURON_CHUNK):
            values = input_token_values(weights, inputs, rows)  # [chunk, vocab]
            found[RelatedTokenKind.INPUT_UP].append(top_k_rows(values, k, largest=True))
            found[RelatedTokenKind.INPUT_DOWN].append(top_k_rows(values, k, largest=False))
        del inputs
    with timer("output_tokens"):
        out_t = weights.output.T  # [n, d_model]
        for rows in _chunks(n, _NEURON_CHUNK):
            values = out_t[rows] @ prep.readout  # [chunk, vocab]
            found[RelatedTokenKind.OUTPUT_UP].append(top_k_rows(values, k, largest=True))
            found[RelatedTokenKind.OUTPUT_DOWN].append(top_k_rows(values, k, largest=False))
    return {kind: (torch.cat([v for v, _ in parts]), torch.cat([i for _, i in parts])) for kind, parts in found.items()}


_TOKEN_KINDS = (
    RelatedTokenKind.INPUT_UP, RelatedTokenKind.INPUT_DOWN, RelatedTokenKind.OUTPUT_UP, RelatedTokenKind.OUTPUT_DOWN
)


def _chunks(total: int, size: int) -> list[slice]:
    return [slice(start, min(start + size, total)) for start in range(0, total, size)]


def _layer_neurons(
    prep: _Prepared,
    layer: int,
    n: int,
    upstream_pos: RunningTop,
    upstream_neg: RunningTop,
    correlated: RunningTop,
    timer: _Timer,
) -> dict[RelatedNeuronKind, tuple]:
    """Related neurons of one layer: {kind: (strengths [n, k], global neuron ids [n, k], -1 for none)}.

    Each product block serves both ends: strengths of later neurons from this layer give this layer's
    downstream lists (columns) and fold into the later neurons' upstream lists (rows); correlations of this
    layer with later layers give this layer's list and fold into the later layers' lists.
    """
    n_layers = len(prep.weights)
    rows = slice(layer * n, (layer + 1) * n)
    k = upstream_pos.k
    empty = (torch.full((n, k), math.nan), torch.full((n, k), -1, dtype=torch.int64))
    down_pos = down_neg = empty
    with timer("weights"):
        if layer < n_layers - 1:
            later = slice(rows.stop, n_layers * n)
            strengths = prep.inputs_all[later] @ prep.outputs_all[:, rows]  # [later neurons, n]
            upstream_pos.merge_block(later.start, strengths, rows.start)
            upstream_neg.merge_block(later.start, strengths, rows.start)
            by_source = strengths.T.contiguous()  # [n, later neurons]
            del strengths
            values, cols = top_k_rows(by_source, k, largest=True)
            down_pos = (values, cols + later.start)
            values, cols = top_k_rows(by_source, k, largest=False)
            down_neg = (values, cols + later.start)
            del by_source
    with timer("correlation"):
        corr = prep.z[:, rows].T @ prep.z[:, rows.start :]  # [n, neurons of this and later layers]
        corr[:, :n].fill_diagonal_(-math.inf)  # not correlated with itself
        correlated.merge_block(rows.start, corr, rows.start)
        if layer < n_layers - 1:
            by_later = corr[:, n:].T.contiguous()  # [later neurons, n]
            del corr
            correlated.merge_block(rows.stop, by_later, rows.start)
            del by_later
    return {
        RelatedNeuronKind.UPSTREAM_POSITIVE: (upstream_pos.values[rows], upstream_pos.ids[rows]),
        RelatedNeuronKind.UPSTREAM_NEGATIVE: (upstream_neg.values[rows], upstream_neg.ids[rows]),
        RelatedNeuronKind.DOWNSTREAM_POSITIVE: down_pos,
        RelatedNeuronKind.DOWNSTREAM_NEGATIVE: down_neg,
        RelatedNeuronKind.CORRELATED: (correlated.values[rows], correlated.ids[rows]),
    }


# --- rows for the store ----------------------------------------------------------------------------------------


def token_rows(layer: int, found: dict[RelatedTokenKind, tuple]) -> pa.Table:
    """related_tokens rows (layer, neuron, kind, rank, token_id, value) of one layer."""
    parts = []
    for kind, (values, ids) in found.items():
        n, k = values.shape
        parts.append(
            pa.table(
                {
                    "layer": pa.array(np.full(n * k, layer, dtype=np.int16)),
                    "neuron": pa.array(np.repeat(np.arange(n, dtype=np.int32), k)),
                    "kind": pa.array([str(kind)] * (n * k), type=pa.string()),
                    "rank": pa.array(np.tile(np.arange(k, dtype=np.int16), n)),
                    "token_id": pa.array(ids.numpy().ravel().astype(np.int32)),
                    "value": pa.array(values.numpy().ravel().astype(np.float32)),
                }
            )
        )
    return pa.concat_tables(parts).sort_by(_ROW_ORDER)


def neuron_rows(layer: int, n: int, found: dict[RelatedNeuronKind, tuple]) -> pa.Table:
    """related_neurons rows (layer, neuron, kind, rank, other_layer, other_neuron, strength) of one layer.

    Positive lists keep strengths above zero, negative lists below zero, correlated lists above zero (a neuron
    constant over the sample correlates with nothing), so a list can be shorter than k."""
    parts = []
    for kind, (values, ids) in found.items():
        v, i = values.numpy(), ids.numpy()
        keep = (i >= 0) & np.isfinite(v) & ((v < 0) if kind in _NEGATIVE_KINDS else (v > 0))
        neuron, rank = np.nonzero(keep)  # each list is sorted, so the kept entries are a prefix
        other = i[neuron, rank]
        parts.append(
            pa.table(
                {
                    "layer": pa.array(np.full(len(neuron), layer, dtype=np.int16)),
                    "neuron": pa.array(neuron.astype(np.int32)),
                    "kind": pa.array([str(kind)] * len(neuron), type=pa.string()),
                    "rank": pa.array(rank.astype(np.int16)),
                    "other_layer": pa.array((other // n).astype(np.int16)),
                    "other_neuron": pa.array((other % n).astype(np.int32)),
                    "strength": pa.array(v[neuron, rank].astype(np.float32)),
                }
            )
        )
    return pa.concat_tables(parts).sort_by(_ROW_ORDER)


_ROW_ORDER = [("neuron", "ascending"), ("kind", "ascending"), ("rank", "ascending")]
"""Rows of a layer are stored by neuron so a neuron's rows share a few row groups."""

_NEGATIVE_KINDS = (RelatedNeuronKind.UPSTREAM_NEGATIVE, RelatedNeuronKind.DOWNSTREAM_NEGATIVE)
