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
if not any(found.values()):
    ui.not_computed("Related neurons", f"python -m core related {store.path}")
else:
    rows = store.neuron_rows([r.neuron for related in found.values() for r in related])
    for title, kind in GROUPS:
        if not found[kind]:
            continue
        st.subheader(title)
        for related in found[kind]:
            other = rows.get(related.neuron)
            go, share, strength, described = st.columns([1.2, 0.3, 1, 5], vertical_alignment="center")
            with go:
                ui.neuron_button(related.neuron, f"→ neuron {related.neuron.layer}:{related.neuron.neuron}",
                                 key=f"related_{kind}_{related.neuron}", width="stretch")
            share.markdown(f"[↗]({ui.share_url(related.neuron, 'related')})", help="open in a new tab")
            strength.markdown(f"strength `{related.strength:+.3f}`")
            with described:
                text = other.explanation if other and other.explanation else "(no explanation yet)"
                score = ui.fmt_score(other.score) if other else "undefined"
                st.text(f"{text}  ·  score {score}")

st.subheader("Related tokens")
ui.related_tokens_panel(store, neuron, [RelatedTokenKind.INPUT_UP, RelatedTokenKind.INPUT_DOWN,
                                        RelatedTokenKind.OUTPUT_UP, RelatedTokenKind.OUTPUT_DOWN])
