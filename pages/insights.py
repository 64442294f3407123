"""Insights: every explanation of the neuron, its activations by quantile, its histogram, related tokens."""

from __future__ import annotations

import pandas as pd
import streamlit as st

import components as ui
from core.types import QUANTILE_BINS, ExcerptKind, RelatedTokenKind

ctx = ui.page_context()
store, neuron = ctx.store, ctx.neuron
st.title(f"Neuron {neuron.layer}:{neuron.neuron} — insights")
stats = store.neuron_stats(neuron)
if stats is None:
    st.warning(f"Neuron {neuron} was not recorded in this cache.")
    st.stop()

# --- explanations -------------------------------------------------------------------------------------------
explanations = store.explanations(neuron)
suggestions = store.suggestions(neuron)
if explanations and explanations[0].text:
    best = explanations[0]
    ui.explanation_card(best.text, f"{best.explainer} · scored by {best.simulator}",
                        f"score {ui.fmt_score(best.score_all)}")
else:
    ui.not_computed("An explanation of this neuron",
                    f"python -m core explain {store.path} --neurons {neuron} --explainer baseline")
with st.expander(f"All explanations ({len(explanations)} from the pipeline, {len(suggestions)} suggested here)",
                 expanded=len(explanations) + len(suggestions) > 1):
    rows = [{"explanation": e.text or f"(failed: {e.failure})", "explainer": e.explainer, "model": e.model or "",
             "prompt": e.prompt_version or "", "simulator": e.simulator, "score": e.score_all, "top": e.score_top,
             "random": e.score_random, "status": str(e.status)} for e in explanations]
    rows += [{"explanation": s.text, "explainer": s.source if s.source != "person" else f"person: {s.author}",
              "model": "", "prompt": "", "simulator": s.score.simulator if s.score else "",
              "score": s.score.score_all if s.score else None, "top": s.score.score_top if s.score else None,
              "random": s.score.score_random if s.score else None, "status": "suggested"} for s in suggestions]
    if rows:
        st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
ui.generate_explanation(ctx)

# --- statistics and histogram ---------------------------------------------------------------------------------
st.subheader("Activations")
cols = st.columns(6)
cols[0].metric("max", f"{stats.max_activation:.3g}")
cols[1].metric("min", f"{stats.min_activation:.3g}")
cols[2].metric("mean", f"{stats.mean:.3g}")
cols[3].metric("density", f"{stats.density:.1%}", help="share of tokens with activation above zero")
cols[4].metric("skewness", f"{stats.skewness:.2f}")
cols[5].metric("kurtosis", f"{stats.kurtosis:.1f}", help="excess kurtosis: 0 for a normal distribution")
st.altair_chart(ui.histogram_chart(stats), width="stretch")

# --- excerpts: top, each quantile bin, random, bottom (one shared colour scale) ------------------------------
per_group = st.slider("Excerpts per group", 1, 20, 5, key="insights_per_group")
records = store.neuron_excerpts(neuron)
positive, negative = max(stats.max_activation, 1e-9), max(-stats.min_activation, 0.0)
ui.heatmap_legend(positive, negative)


def show(title: str, chosen: list) -> None:
    """One group of excerpts as a heatmap under a heading."""
    if not chosen:
        return
    st.markdown(f"**{title}**")
    ui.heatmap([ui.HeatmapRow(r.excerpt.tokens, r.activations,
                              f"#{r.rank + 1} · max {max(r.activations):.3g} · min {min(r.activations):.3g} · "
                              f"excerpt {r.excerpt.excerpt_id} · {r.split}")
                for r in chosen[:per_group]], positive_scale=positive, negative_scale=negative)


show("Top excerpts (highest maximum activation)", [r for r in records if r.kind == ExcerptKind.TOP])
for index in reversed(range(len(QUANTILE_BINS))):
    low, high = QUANTILE_BINS[index]
    show(f"Quantile bin {low:g}–{high:g} of the per-excerpt maximum",
         [r for r in records if r.kind == ExcerptKind.QUANTILE and r.quantile_bin == index])
show("Random sample", [r for r in records if r.kind == ExcerptKind.RANDOM])
show("Bottom excerpts (lowest minimum activation)", [r for r in records if r.kind == ExcerptKind.BOTTOM])

# --- related tokens ---------------------------------------------------------------------------------------------
st.subheader("Related tokens")
ui.related_tokens_panel(store, neuron, [RelatedTokenKind.ACTIVATION_TOP, RelatedTokenKind.INPUT_UP,
                                        RelatedTokenKind.OUTPUT_UP, RelatedTokenKind.OUTPUT_DOWN])
ui.page_end()
