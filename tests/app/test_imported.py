"""Every page on a cache imported from OpenAI's files (issue 12 item 2): no model on disk, so the pages that need it
say so in one message with the command that adds it, and nothing raises. The fixture files are written in code in
OpenAI's format by the helpers of tests/test_interop_openai.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_interop_openai import _tokens, _write, neuron_record, simulation_results
from test_pages import no_errors, texts

from core.interop.importer import import_openai
from core.live import ON_VIEW_SOURCE
from core.paths import copy_cache
from core.score import is_readable
from core.types import NeuronId

PAGES = ["pages/home.py", "pages/picker.py", "pages/scoring.py", "pages/insights.py", "pages/related.py",
         "pages/try_text.py"]
ADD_MODEL = "hf download gpt2-xl"


@pytest.fixture(scope="module")
def imported_cache(tmp_path_factory) -> Path:
    """0:0 and 0:1 with GPT-4-style explanations, 0:2 without (it shares 3 top texts with 0:1, so the two are
    correlated), 1:0 with one; imported as `python -m core import-openai` does."""
    root = tmp_path_factory.mktemp("openai-pages") / "data"
    records, explanations = root / "collated-activations", root / "explanations"
    rng = np.random.default_rng(99)
    shared = [_tokens(rng) for _ in range(3)]
    for (layer, neuron, seed), text in zip([(0, 0, 1), (0, 1, 3), (0, 2, 5), (1, 0, 8)],
                                           ['the word "ME"', "cats sitting", None, "dogs"], strict=True):
        record = neuron_record(layer, neuron, seed, shared=shared if (layer, neuron) in ((0, 1), (0, 2)) else None)
        _write(records, layer, neuron, ".json", record)
        if text is not None:
            _write(explanations, layer, neuron, ".jsonl", simulation_results(layer, neuron, record, [text], seed + 1))
    cache = tmp_path_factory.mktemp("imported-pages") / "gpt2-xl-openai.duckdb"
    summary = import_openai(root, cache, block_size=2)
    assert summary.neurons == 4 and summary.correlated_pairs >= 1
    return cache


@pytest.fixture
def opened_imported(imported_cache, atlas_home, tmp_path, monkeypatch) -> Path:
    """The imported cache as hard links (this test's own notes file), set as NEURON_ATLAS_CACHE; an empty Hugging
    Face cache, so its model (gpt2-xl) is surely not on this machine."""
    link = tmp_path / "imported.duckdb"
    copy_cache(imported_cache, link, link=True)
    monkeypatch.setenv("NEURON_ATLAS_CACHE", str(link))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-empty"))
    return link


@pytest.mark.parametrize("page", PAGES)
def test_every_page_runs_on_an_imported_cache(app, opened_imported, page):
    for layer, neuron in ((0, 0), (0, 2), (1, 0)):
        at = app(layer=layer, neuron=neuron).run()
        if page != "pages/home.py":
            at.switch_page(page).run()
        no_errors(at)
        written = texts(at)
        assert "Traceback" not in written
        if page in ("pages/try_text.py", "pages/related.py", "pages/insights.py"):
            needs = [m.value for m in at.info if ADD_MODEL in m.value]
            assert len(needs) == 1 and "gpt2-xl" in needs[0]  # one message, with the command
            assert not any("not computed yet" in m.value for m in at.info)  # no command that cannot run
        if page == "pages/try_text.py":
            assert not [b for b in at.button if b.label == "Run the model"]


def test_related_neurons_by_correlation_show_on_an_imported_cache(app, opened_imported):
    at = app(layer=0, neuron=1).run()
    at.switch_page("pages/related.py").run()
    no_errors(at)
    assert [s.value for s in at.subheader] == ["Correlated over the corpus", "Related tokens"]
    tables = "\n".join(h.value for h in at.get("html") if "<table" in h.value)
    assert "0:2" in tables


def test_an_imported_neuron_without_an_explanation_gets_one_on_view(app, opened_imported):
    from dashboard.state import open_cache

    at = app(layer=0, neuron=2).run()
    at.switch_page("pages/insights.py").run()
    no_errors(at)
    kept = open_cache(opened_imported).notes.suggestions_from(ON_VIEW_SOURCE, [NeuronId(0, 2)])
    assert NeuronId(0, 2) in kept and is_readable(kept[NeuronId(0, 2)].text)
    assert "Tokens it fires on most" in texts(at)
