"""Related neurons: upstream, downstream and correlated neighbours with their strength, explanation and score.

Data: core.views.related (cached per neuron and list length for every session)."""

from __future__ import annotations

import streamlit as st

from core import views
from core.score import format_score
from core.types import NeuronId, RelatedNeuronKind
from dashboard import render, widgets
from dashboard.state import page_context

ctx = page_context()
neuron = ctx.neuron
st.title(f"Neuron {neuron} — related neurons")
limit = st.slider("Neurons per list", 3, 10, 5, key="related_limit")
view = ctx.view(views.related, neuron, limit)
if view.best is not None and view.best.explanation:
    widgets.explanation_card(view.best.explanation, "best explanation", widgets.score_badge(view.best.score))

TITLES = {
    RelatedNeuronKind.UPSTREAM_POSITIVE: "Upstream: feed it positively",
    RelatedNeuronKind.UPSTREAM_NEGATIVE: "Upstream: feed it negatively",
    RelatedNeuronKind.DOWNSTREAM_POSITIVE: "Downstream: it excites",
    RelatedNeuronKind.DOWNSTREAM_NEGATIVE: "Downstream: it inhibits",
    RelatedNeuronKind.CORRELATED: "Correlated over the corpus",
}


def move(kind: str, options: dict[str, NeuronId]) -> None:
    """Callback of a group's chips: go to the chosen neuron."""
    chosen = options.get(st.session_state.get(f"related_{kind}_{neuron}") or "")
    if chosen is not None:
        widgets.go_to(chosen.layer, chosen.neuron)


def none_because(kind: RelatedNeuronKind) -> str:
    """Why a list is empty when the tables are computed."""
    if kind.startswith("upstream") and neuron.layer == 0:
        return "none (layer 0 has no earlier layers)"
    if kind.startswith("downstream") and neuron.layer == ctx.info.layers - 1:
        return "none (the last layer has no later layers)"
    return "none"


if not view.computed:
    widgets.not_computed("Related neurons", f"python -m core related {ctx.reader.path}")
else:
    for kind, found in view.neurons:
        st.subheader(TITLES[kind])
        if not found:
            st.caption(none_because(kind))
            continue
        options = {f"→ {r.neuron}": r.neuron for r in found}
        st.pills("Go to", list(options), key=f"related_{kind}_{neuron}", on_change=move, args=(kind, options),
                 label_visibility="collapsed")
        table = []
        for related in found:
            other = view.rows.get(related.neuron)
            table.append([str(related.neuron), other.explanation if other and other.explanation else
                          "(no explanation yet)", format_score(other.score if other else None),
                          f"{related.strength:+.3f}"])
        st.html(render.table_html(["neuron", "best explanation", "score", "strength"], table,
                                  bars=[r.strength for r in found],
                                  bar_scale=max(abs(r.strength) for r in found) or 1.0, widths=[10, 68, 10, 12]))
        st.caption("Open a neuron in a new tab: " + " · ".join(
            f"[{r.neuron}]({widgets.share_url(r.neuron, 'related')})" for r in found))

st.subheader("Related tokens")
widgets.related_tokens_panel(ctx, view.tokens, "related.tokens")
widgets.page_end()
