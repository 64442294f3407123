"""dashboard/state.py: views shared by every session, and when they are computed again."""

from __future__ import annotations

from core import views
from core.types import NeuronId, Scores
from dashboard.roles import CLASS_BACKEND
from dashboard.state import PageContext


def test_a_neurons_notes_view_is_computed_again_only_after_a_write_about_that_neuron(tiny_dashboard):
    cache, a, b = tiny_dashboard, NeuronId(0, 1), NeuronId(1, 2)
    ctx = PageContext(cache, views.info(cache.reader), a, CLASS_BACKEND)
    computed: list[tuple[NeuronId, ...]] = []

    def suggested(reader, notes, neurons: tuple[NeuronId, ...]) -> dict[NeuronId, list[str]]:
        computed.append(neurons)
        return {n: [s.text for s in notes.suggestions(n)] for n in neurons}

    assert ctx.neuron_notes_view(suggested, (a,)) == {a: []}
    cache.notes.add_suggestion(b, "about b", "Ada")  # a class writing about another neuron
    cache.notes.add_live_score(b, "about b", "baseline", Scores(0.1, 0.1, 0.1, 5), [])
    assert ctx.neuron_notes_view(suggested, (a,)) == {a: []} and computed == [(a,)]
    assert ctx.neuron_notes_view(suggested, (a, b)) == {a: [], b: ["about b"]}
    cache.notes.add_suggestion(a, "about a", "Bob")
    assert ctx.neuron_notes_view(suggested, (a,)) == {a: ["about a"]}
    assert ctx.neuron_notes_view(suggested, (a, b)) == {a: ["about a"], b: ["about b"]}
    assert computed == [(a,), (a, b), (a,), (a, b)]


def test_a_view_of_all_the_notes_is_computed_again_after_any_write(tiny_dashboard):
    cache = tiny_dashboard
    ctx = PageContext(cache, views.info(cache.reader), NeuronId(0, 1), CLASS_BACKEND)

    def suggestions_everywhere(reader, notes) -> int:
        return notes.count_rows("suggestions")

    assert ctx.notes_view(suggestions_everywhere) == 0
    cache.notes.add_suggestion(NeuronId(1, 2), "about another neuron", "Ada")
    assert ctx.notes_view(suggestions_everywhere) == 1
