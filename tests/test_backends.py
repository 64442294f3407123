"""Backend specs and the one place that builds explainers, simulators and their clients (core/backends.py)."""

from __future__ import annotations

import pytest

from core.backends import BackendKind, BackendSpec, BackendSpecError, LLMSettings, wire
from core.baseline import BaselineSimulator
from core.explain import ActivationExplainer, BaselineExplainer
from core.simulate import ApiSimulator


@pytest.mark.parametrize(
    ("text", "kind", "model", "shown"),
    [("baseline", BackendKind.BASELINE, "", "baseline"), (" Local ", BackendKind.LOCAL, "", "local"),
     ("local:/models/x", BackendKind.LOCAL, "/models/x", "local:/models/x"),
     ("openai:gpt-4o-mini", BackendKind.OPENAI, "gpt-4o-mini", "openai:gpt-4o-mini")],
)
def test_specs_read_and_write_back(text, kind, model, shown):
    spec = BackendSpec.parse(text)
    assert (spec.kind, spec.model, str(spec)) == (kind, model, shown)
    assert spec.is_llm == (kind != BackendKind.BASELINE)


@pytest.mark.parametrize(("text", "message"), [
    ("gpt-4o", "unknown simulator 'gpt-4o': use baseline"), ("", "unknown simulator ''"),
    ("baseline:x", "'baseline' takes no model"), ("openai:", "names no model"),
])
def test_bad_specs_say_what_to_write(text, message):
    with pytest.raises(BackendSpecError, match=message):
        BackendSpec.parse(text, "simulator")


def test_baseline_variants_belong_to_their_role():
    themes, words = BackendSpec.parse("baseline:themes", "explainer"), BackendSpec.parse("Baseline:Words", "simulator")
    assert (str(themes), themes.is_llm, themes.client_spec) == ("baseline:themes", False, "local")
    assert (str(words), words.client_spec) == ("baseline:words", None)
    with pytest.raises(BackendSpecError, match="use baseline, baseline:words"):
        BackendSpec.parse("baseline:themes", "simulator")
    with pytest.raises(BackendSpecError, match="use baseline, baseline:themes"):
        BackendSpec.parse("baseline:words", "explainer")


def test_the_themes_explainer_gets_the_built_in_model_as_its_client(monkeypatch):
    made = wire("baseline", explainer="baseline:themes")
    assert isinstance(made.explainer, BaselineExplainer) and made.explainer.spec == "baseline:themes"
    assert list(made.clients) == ["local"] and made.explainer.themes is made.clients["local"] and not made.uses_api


def test_the_key_never_shows_in_settings():
    settings = LLMSettings(api_key="sk-secret-123", base_url="http://127.0.0.1:9/v1")
    assert "sk-secret" not in repr(settings) and "sk-secret" not in str(settings)


def test_wire_shares_one_client_per_spec_and_none_for_baseline(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    made = wire("baseline", explainer="baseline")
    assert isinstance(made.explainer, BaselineExplainer) and isinstance(made.simulator, BaselineSimulator)
    assert made.clients == {} and not made.uses_api
    settings = LLMSettings(base_url="http://127.0.0.1:9/v1", max_cost_usd=0.25, concurrency=2)
    shared = wire("openai:gpt-4o-mini", explainer="openai:gpt-4o-mini", settings=settings)
    assert isinstance(shared.explainer, ActivationExplainer) and isinstance(shared.simulator, ApiSimulator)
    [client] = shared.clients.values()
    assert shared.explainer.client is client and shared.simulator.client is client and shared.uses_api
    assert client.max_cost_usd == 0.25 and client.base_url == "http://127.0.0.1:9/v1"
    assert wire("baseline").explainer is None


def test_wire_gives_the_clients_of_a_run_one_budget_and_the_timeout(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    settings = LLMSettings(base_url="http://127.0.0.1:9/v1", max_cost_usd=0.25, timeout_s=7.0)
    made = wire("openai:gpt-4o-mini", explainer="openai:gpt-4o", settings=settings)
    explainer, simulator = made.clients["openai:gpt-4o"], made.clients["openai:gpt-4o-mini"]
    assert explainer.budget is simulator.budget and explainer.budget.max_usd == 0.25  # one cap for both models
    assert explainer.timeout_s == simulator.timeout_s == 7.0
    assert wire("openai:gpt-4o-mini", settings=settings).clients["openai:gpt-4o-mini"].budget is not explainer.budget
