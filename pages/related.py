"""Related neurons: upstream, downstream and correlated neighbours with their strength, explanation and score."""

from __future__ import annotations

import streamlit as st

import components as ui
from core.types import RelatedNeuronKind, RelatedTokenKind

ctx = ui.page_context()
store, neuron = ctx.store, ctx.neuron
st.title(f"Neuron {neuron.layer}:{neuron.neuron} — related neurons")
best = store.neuron_rows([neuron]).get(neuron)
if best is not None and best.explanation:
    ui.explanation_card(best.explanation, "best explanation", f"score {ui.fmt_score(best.score)}")

GROUPS = [
    ("Upstream: feed it positively", RelatedNeuronKind.UPSTREAM_POSITIVE),
    ("Upstream: feed it negatively", RelatedNeuronKind.UPSTREAM_NEGATIVE),
    ("Downstream: it excites", RelatedNeuronKind.DOWNSTREAM_POSITIVE),
    ("Downstream: it inhibits", RelatedNeuronKind.DOWNSTREAM_NEGATIVE),
    ("Correlated over the corpus", RelatedNeuronKind.CORRELATED),
]
limit = st.slider("Neurons per list", 3, 10, 5, key="related_limit")
found = {kind: store.related_neurons(neuron, kind, limit) for _, kind in GROUPS}


def move(kind: str, options: dict[str, object]) -> None:
    """Callback of a group's chips: go to the chosen neuron."""
    chosen = options.get(st.session_state.get(f"related_{kind}_{neuron}") or "")
    if chosen is not None:
        ui.go_to(chosen.layer, chosen.neuron)


if not any(found.values()):
    ui.not_computed("Related neurons", f"python -m core related {store.path}")
else:
    rows = store.neuron_rows([r.neuron for related in found.values() for r in related])
    for title, kind in GROUPS:
        st.subheader(title)
        if not found[kind]:
            st.caption("none" + (" (layer 0 has no earlier layers)" if kind.startswith("upstream") and
                                 neuron.layer == 0 else " (the last layer has no later layers)"
                                 if kind.startswith("downstream") and neuron.layer == ctx.layers - 1 else ""))
            continue
        options = {f"→ {r.neuron.layer}:{r.neuron.neuron}": r.neuron for r in found[kind]}
        st.pills("Go to", list(options), key=f"related_{kind}_{neuron}", on_change=move, args=(kind, options),
                 label_visibility="collapsed")
        table = []
        for related in found[kind]:
            other = rows.get(related.neuron)
            table.append([f"{related.neuron.layer}:{related.neuron.neuron}",
                          other.explanation if other and other.explanation else "(no explanation yet)",
                          ui.fmt_score(other.score) if other else "undefined", f"{related.strength:+.3f}"])
        st.html(ui.table_html(["neuron", "best explanation", "score", "strength"], table,
                              bars=[r.strength for r in found[kind]],
                              bar_scale=max(abs(r.strength) for r in found[kind]) or 1.0, widths=[10, 68, 10, 12]))
        st.caption("Open a neuron in a new tab: " + " · ".join(
            f"[{r.neuron.layer}:{r.neuron.neuron}]({ui.share_url(r.neuron, 'related')})" for r in found[kind]))

st.subheader("Related tokens")
ui.related_tokens_panel(store, neuron, [RelatedTokenKind.INPUT_UP, RelatedTokenKind.INPUT_DOWN,
                                        RelatedTokenKind.OUTPUT_UP, RelatedTokenKind.OUTPUT_DOWN])
ui.page_end()
