"""core.simulate and core.baseline's reader: every simulator path, with a scripted client for the APIs and the real
default model for the local one (whose forward passes are counted)."""

from __future__ import annotations

import json
import math

import pytest
from fake_llm import FakeClient, answer, split_tokens, with_tops

from core import prompts
from core.backends import BackendSpecError
from core.llm import LLMError
from core.simulate import (
    ApiSimulator,
    LocalSimulator,
    SimulationError,
    expected_value,
    make_simulator,
    read_json_predictions,
    read_line_predictions,
    ten_share,
)
from core.types import Excerpt


def _excerpts(*texts: list[str]) -> list[Excerpt]:
    return [Excerpt(i, tuple(range(len(t))), tuple(t)) for i, t in enumerate(texts)]


# --- making simulators --------------------------------------------------------------------------------------------


def test_make_simulator_makes_the_offline_default():
    simulator = make_simulator("baseline")
    assert simulator.spec == "baseline" and simulator.prompt_version == prompts.BASELINE_VERSION
    assert simulator.simulate("the word cat", _excerpts(["a", " cat"])) == [[0.0, 10.0]]


def test_make_simulator_rejects_unknown_specs():
    with pytest.raises(BackendSpecError, match="unknown simulator 'gpt4'"):
        make_simulator("gpt4")
    with pytest.raises(BackendSpecError):
        make_simulator("baseline:extra")


def test_make_simulator_openai_without_key_is_one_clear_error(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(LLMError, match="no OpenAI API key"):
        make_simulator("openai:gpt-4o-mini")


# --- reading API answers ------------------------------------------------------------------------------------------


def test_a_one_followed_by_zero_reads_as_ten():
    assert expected_value([("1", math.log(0.5)), ("3", math.log(0.5))], ten_share=1.0) == pytest.approx(6.5)
    assert ten_share([("0", math.log(0.6)), ("\n", math.log(0.2)), ("5", math.log(0.2))]) == pytest.approx(0.75)
    assert ten_share([("5", 0.0)]) is None
    # a numbered-lines answer whose tokenizer wrote 10 as "1" + "0": line 1 reads 10, line 2 reads 1
    text = "1\t10\n2\t1\n"
    tokens = split_tokens(text)
    tops = {2: [("1", math.log(0.9)), ("7", math.log(0.1))], 3: [("0", math.log(0.95)), ("\n", math.log(0.05))],
            7: [("1", 0.0)], 8: [("\n", math.log(0.99)), ("0", math.log(0.01))]}
    logprobs = with_tops(tokens, lambda i, t: tops.get(i, [(t, 0.0)]))
    predicted = read_line_predictions(answer(text, logprobs), 2)
    assert predicted[0] == pytest.approx(0.9 * (0.95 * 10 + 0.05 * 1) + 0.1 * 7)
    assert predicted[1] == pytest.approx(0.01 * 10 + 0.99 * 1)


def test_expected_value_renormalises_over_values():
    alternatives = [("3", math.log(0.2)), (" 7", math.log(0.2)), ("the", math.log(0.6))]
    assert expected_value(alternatives) == pytest.approx(5.0)
    assert expected_value([("x", 0.0)]) is None
    assert expected_value([("10", 0.0), ("11", 0.0)]) == pytest.approx(10.0)


def test_line_answers_read_expected_values_at_the_value_tokens():
    text = "1\t0\n2\t7\n3\t2"
    tokens = split_tokens(text)

    def tops(index: int, token: str) -> list[tuple[str, float]]:
        if token == "7":
            return [("7", math.log(0.5)), ("9", math.log(0.5))]
        return [(token, 0.0)]

    predictions = read_line_predictions(answer(text, with_tops(tokens, tops)), 3)
    assert predictions == pytest.approx([0.0, 8.0, 2.0])


def test_line_answers_must_align_with_the_text():
    text = "1\t0\n3\t7\n"
    with pytest.raises(SimulationError, match="not aligned"):
        read_line_predictions(answer(text, with_tops(split_tokens(text), lambda i, t: [(t, 0.0)])), 3)


def test_json_answers_are_checked_token_by_token():
    tokens = ["The", " cat", "\n"]
    good = json.dumps({"activations": [{"token": "The", "activation": 0}, {"token": "cat", "activation": 8},
                                       {"token": "\\n", "activation": 12}]})
    assert read_json_predictions(good, tokens) == [0.0, 8.0, 10.0]  # clamped to the scale
    assert read_json_predictions("```json\n[1, 2, 3]\n```", tokens) == [1.0, 2.0, 3.0]
    assert read_json_predictions('Here it is: {"activations": [1, 2, 3]}', tokens) == [1.0, 2.0, 3.0]
    with pytest.raises(SimulationError, match="2 entries for 3 tokens"):
        read_json_predictions(json.dumps({"activations": [0, 1]}), tokens)
    wrong = json.dumps({"activations": [["dog", 0], ["cat", 1], ["\\n", 2]]})
    with pytest.raises(SimulationError, match="1 of 3 tokens differ"):
        read_json_predictions(wrong, tokens)
    with pytest.raises(SimulationError, match=r"not JSON.*cut off"):
        read_json_predictions('{"activations": [0, ', tokens, truncated=True)


# --- the API simulator's three ways -------------------------------------------------------------------------------


def _echo(prompt: str, **options) -> object:
    """A completions server with echo + logprobs: the value 6 at every position."""
    assert options["echo"] and options["logprobs"] == 5
    tokens = [*split_tokens(prompt), "x"]
    return answer(prompt + "x", with_tops(tokens, lambda i, t: [("6", math.log(0.9)), ("foo", math.log(0.1))]))


def test_api_simulator_uses_completions_with_echo_when_the_server_has_them():
    client = FakeClient(on_complete=_echo)
    simulator = ApiSimulator(client)
    excerpts = _excerpts(["The", " cat"], ["a", "\tb", "\n"])
    assert simulator.simulate("cats", excerpts) == [[6.0, 6.0], [6.0, 6.0, 6.0]]
    assert simulator.mode == "completions"
    assert [kind for kind, _, _ in client.requests] == ["complete", "complete"]  # one call per excerpt
    assert client.requests[0][1] == prompts.simulate_all_prompt("cats", ["The", " cat"])


def test_api_simulator_falls_back_to_chat_logprobs():
    def chat(messages, **options):
        assert options["top_logprobs"] == 5
        assert "1\ta\n2\tb\n3\tc" in messages[1]["content"]
        text = "\n".join(f"{i}\t3" for i in range(1, 4))
        return [answer(text, with_tops(split_tokens(text), lambda i, t: [(t, 0.0)]))]

    client = FakeClient(on_chat=chat, on_complete=lambda prompt, **o: answer(prompt, None))
    simulator = ApiSimulator(client)
    assert simulator.simulate("x", _excerpts(["a", "b", "c"])) == [[3.0, 3.0, 3.0]]
    assert simulator.mode == "logprobs"
    # completions without logprobs, a one-token probe of chat logprobs, then the answer
    assert [(kind, o.get("max_tokens")) for kind, _, o in client.requests] == [
        ("complete", 1), ("chat", 1), ("chat", 34)]


def test_api_simulator_asks_for_json_when_no_logprobs_come_back():
    def chat(messages, **options):
        if options.get("json_mode"):
            return [answer(json.dumps({"activations": [["a", 1], ["b", 9]]}))]
        return [answer("1\t1\n2\t9", None)]  # a server without logprobs (transformers serve)

    client = FakeClient(on_chat=chat, on_complete=lambda prompt, **o: answer(prompt, None))
    simulator = ApiSimulator(client)
    assert simulator.simulate("x", _excerpts(["a", "b"], ["a", "b"])) == [[1.0, 9.0], [1.0, 9.0]]
    assert simulator.mode == "json"
    # settled: the second excerpt went straight to JSON (complete, chat probe, json for the first; json after)
    assert [(kind, o.get("json_mode", False)) for kind, _, o in client.requests] == [
        ("complete", False), ("chat", False), ("chat", True), ("chat", True)]


def test_api_simulator_failure_is_an_error_never_zeros():
    client = FakeClient(on_chat=lambda m, **o: [answer("I cannot help with that.", None)],
                        on_complete=lambda prompt, **o: answer(prompt, None))
    with pytest.raises(SimulationError, match="not JSON"):
        ApiSimulator(client).simulate("x", _excerpts(["a", "b"]))


# --- local, all at once -------------------------------------------------------------------------------------------


def _count_forward_passes(subject):
    """Install a counter on the decoder: the batch size of every forward pass."""
    calls: list[int] = []
    handle = subject.model.model.register_forward_hook(lambda module, args, kwargs, output: calls.append(
        int(kwargs["input_ids"].shape[0])), with_kwargs=True)
    return calls, handle


def test_local_simulator_makes_one_forward_pass_per_excerpt(default_model):
    excerpts = _excerpts(["The", " meeting", " is", " in", " March"], ["def", " f", "(", "x", "):"],
                         [" born", " in", " July"], ["1", "2"], ["a"])
    simulator = LocalSimulator("smollm2-135m", batch_size=2, subject=default_model)
    calls, handle = _count_forward_passes(default_model)
    try:
        predicted = simulator.simulate("names of months", excerpts)
        batched = list(calls)
        calls.clear()
        simulator = LocalSimulator("smollm2-135m", batch_size=1, reuse_prefix=False, subject=default_model)
        unshared = simulator.simulate("names of months", excerpts)
    finally:
        handle.remove()
    # the shared prefix once (batch of 1), then the 5 excerpts in batches of 2: 5 excerpt rows in 3 passes
    assert batched == [1, 2, 2, 1]
    # without prefix reuse and batching: exactly one forward pass per excerpt
    assert calls == [1, 1, 1, 1, 1]
    assert [len(p) for p in predicted] == [len(e.tokens) for e in excerpts]
    for a, b in zip(predicted, unshared, strict=True):
        assert a == pytest.approx(b, abs=1e-3)
    assert all(0.0 <= v <= 10.0 for row in predicted for v in row)
    # SmolLM2 writes "10" as two tokens: the values read are the single-token digits 0-9, and "1" + "0" for 10
    assert simulator.value_ids()[1] == [float(v) for v in range(10)]
    assert simulator.ten_ids() is not None


def test_local_simulator_reads_ten_split_into_one_and_zero_as_ten(default_model):
    """SmolLM2's tokenizer writes 10 as "1" + "0": the hidden probe must give exactly the two-step reading (first
    the value's first token, then "0" after a "1"), computed here directly with plain forward passes."""
    import torch

    tokenizer = default_model.tokenizer
    one, zero = (tokenizer(t, add_special_tokens=False)["input_ids"] for t in ("1", "0"))
    assert tokenizer("10", add_special_tokens=False)["input_ids"] == one + zero
    simulator = LocalSimulator("smollm2-135m", batch_size=2, subject=default_model)
    assert simulator.ten_ids() == (one[0], zero[0])
    tokens = ["The", " meeting", " is", " in", " March"]
    predicted = simulator.simulate("names of months", _excerpts(tokens, ["a", " b"], [" July"]))
    unshared = LocalSimulator("smollm2-135m", batch_size=1, reuse_prefix=False, subject=default_model).simulate(
        "names of months", _excerpts(tokens, ["a", " b"], [" July"]))
    for a, b in zip(predicted, unshared, strict=True):
        assert a == pytest.approx(b, abs=1e-3)

    ids, values = simulator.value_ids()
    prefix = [default_model.bos_token_id] if default_model.bos_token_id is not None else []
    prefix += tokenizer(prompts.simulate_all_prefix("names of months"), add_special_tokens=False)["input_ids"]
    for index, token in enumerate(tokens):
        head = prefix[:]
        for before in tokens[:index]:
            for part in prompts.simulate_all_line_parts(before):
                head += tokenizer(part, add_special_tokens=False)["input_ids"]
        head += tokenizer(prompts.simulate_all_line_parts(token)[0], add_special_tokens=False)["input_ids"]
        with torch.inference_mode():
            first = default_model.model(input_ids=torch.tensor([head])).logits[0, -1].double().softmax(-1)
            then = default_model.model(input_ids=torch.tensor([head + one])).logits[0, -1].double().softmax(-1)
        probs = first[ids] / first[ids].sum()
        share = then[zero[0]] / (1 - then[[i for i, v in zip(ids, values, strict=True) if 1 <= v <= 9]].sum())
        direct = sum(v * float(p) for v, p in zip(values, probs, strict=True)) + float(probs[1] * share) * 9
        assert predicted[0][index] == pytest.approx(direct, abs=1e-3)
    # the model reads " March" under "names of months" mostly as "1" + "0": without the probe it would read about 1
    assert float(probs[1]) > 0.2 and predicted[0][-1] > 5.0
