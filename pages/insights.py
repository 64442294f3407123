"""Insights: every explanation of the neuron, its activations by quantile, its histogram, related tokens.

Data: core.views.insights and core.views.people (cached per neuron for every session)."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from core import views
from core.live import ON_VIEW_SOURCE
from core.types import QUANTILE_BINS, ExcerptKind
from dashboard import charts, imported, onview, widgets
from dashboard.render import HeatmapRow
from dashboard.state import page_context

ctx = page_context()
neuron = ctx.neuron
st.title(f"Neuron {neuron} — insights")
view = ctx.view(views.insights, neuron)
stats = widgets.recorded(neuron, view.stats)
people = ctx.notes_view(views.people, neuron)

# --- explanations -------------------------------------------------------------------------------------------
explanations = view.explanations
best = explanations[0] if explanations else None
if best is not None and best.text:
    widgets.explanation_card(best.text, f"{best.explainer} · scored by {best.simulator}",
                             widgets.score_badge(best.score_all))
elif (made := onview.on_view(ctx, neuron)) is not None:
    onview.explanation_card(made)
    people = ctx.notes_view(views.people, neuron)  # with the one kept now
else:
    widgets.not_computed("An explanation of this neuron",
                         f"python -m core explain {ctx.reader.path} --neurons {neuron} --explainer baseline")
onview.evidence_table(ctx, neuron)
suggestions = people.suggestions
with st.expander(f"All explanations ({len(explanations)} from the pipeline, {len(suggestions)} suggested here)",
                 expanded=len(explanations) + len(suggestions) > 1):
    rows = [{"explanation": e.text or f"(failed: {e.failure})", "explainer": e.explainer, "model": e.model or "",
             "prompt": e.prompt_version or "", "simulator": e.simulator, "score": e.score_all, "top": e.score_top,
             "random": e.score_random, "status": str(e.status), "scoring excerpts": ""} for e in explanations]
    rows += [{"explanation": s.text, "explainer": s.source if s.source != "person" else f"person: {s.author}",
              "model": "", "prompt": "", "simulator": s.score.simulator if s.score else "",
              "score": s.score.score_all if s.score else None, "top": s.score.score_top if s.score else None,
              "random": s.score.score_random if s.score else None,
              "status": "made on view" if s.source == ON_VIEW_SOURCE else "suggested",
              "scoring excerpts": onview.seen_note(s.score)} for s in suggestions]
    if rows:
        st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
widgets.generate_panel(ctx)

# --- statistics and histogram ---------------------------------------------------------------------------------
st.subheader("Activations")
cols = st.columns(6)
cols[0].metric("max", f"{stats.max_activation:.3g}")
cols[1].metric("min", f"{stats.min_activation:.3g}")
cols[2].metric("mean", f"{stats.mean:.3g}")
cols[3].metric("density", f"{stats.density:.1%}", help="share of tokens with activation above zero")
cols[4].metric("skewness", f"{stats.skewness:.2f}")
cols[5].metric("kurtosis", f"{stats.kurtosis:.1f}", help="excess kurtosis: 0 for a normal distribution")
st.altair_chart(charts.histogram_chart(stats), width="stretch")

# --- excerpts: top, each quantile bin, random, bottom (one shared colour scale) ------------------------------
per_group = st.slider("Excerpts per group", 1, 20, 5, key="insights_per_group")
positive, negative = max(stats.max_activation, 1e-9), max(-stats.min_activation, 0.0)
widgets.heatmap_legend(positive, negative)
TITLES = {
    ExcerptKind.TOP: "Top excerpts (highest maximum activation)",
    ExcerptKind.RANDOM: "Random sample",
    ExcerptKind.BOTTOM: "Bottom excerpts (lowest minimum activation)",
}
for group in view.groups:
    if not group.excerpts:
        continue
    if group.quantile_bin is not None:
        low, high = QUANTILE_BINS[group.quantile_bin]
        st.markdown(f"**Quantile bin {low:g}–{high:g} of the per-excerpt maximum**")
    else:
        st.markdown(f"**{TITLES[group.kind]}**")
    widgets.heatmap([HeatmapRow(r.excerpt.tokens, r.activations,
                                f"#{r.rank + 1} · max {max(r.activations):.3g} · min {min(r.activations):.3g} · "
                                f"excerpt {r.excerpt.excerpt_id} · {r.split}")
                     for r in group.excerpts[:per_group]], positive_scale=positive, negative_scale=negative)

# --- related tokens ---------------------------------------------------------------------------------------------
st.subheader("Related tokens")
imported.tokens_panel(ctx, view.tokens, imported.missing_model(ctx))
widgets.page_end()
