"""Insights: every explanation of the neuron, its activations by quantile, its histogram, related tokens.

Data: core.views.insights and core.views.people (cached per neuron for every session)."""

from __future__ import annotations

import streamlit as st

from core import views
from core.score import format_score
from core.types import QUANTILE_BINS, ExcerptKind
from dashboard import render, svg, widgets
from dashboard.render import HeatmapRow
from dashboard.state import page_context

ctx = page_context()
neuron = ctx.neuron
st.title(f"Neuron {neuron} — insights")
view = ctx.view(views.insights, neuron)
stats = widgets.recorded(neuron, view.stats)
people = ctx.notes_view(views.people, neuron)

# --- explanations -------------------------------------------------------------------------------------------
explanations, suggestions = view.explanations, people.suggestions
best = explanations[0] if explanations else None
if best is not None and best.text:
    widgets.explanation_card(best.text, f"{best.explainer} · scored by {best.simulator}",
                             widgets.score_badge(best.score_all))
else:
    widgets.not_computed("An explanation of this neuron",
                         f"python -m core explain {ctx.reader.path} --neurons {neuron} --explainer baseline")


def explanations_table() -> str:
    """Every explanation of the neuron and every suggestion made here, as one table."""
    rows = [[e.text or f"(failed: {e.failure})", e.explainer, e.model or "", e.prompt_version or "", e.simulator,
             format_score(e.score_all), format_score(e.score_top), format_score(e.score_random), str(e.status)]
            for e in explanations]
    rows += [[s.text, s.source if s.source != "person" else f"person: {s.author}", "", "",
              s.score.simulator if s.score else "", format_score(s.score.score_all if s.score else None),
              format_score(s.score.score_top if s.score else None),
              format_score(s.score.score_random if s.score else None), "suggested"] for s in suggestions]
    header = ["explanation", "explainer", "model", "prompt", "simulator", "score", "top", "random", "status"]
    return render.table_html(header, rows, widths=[34, 12, 10, 6, 10, 7, 7, 7, 7]) if rows else ""


with st.expander(f"All explanations ({len(explanations)} from the pipeline, {len(suggestions)} suggested here)",
                 expanded=len(explanations) + len(suggestions) > 1):
    widgets.html(ctx.rendered("insights.explanations", (neuron,), explanations_table, notes=True))
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
widgets.html(ctx.rendered("insights.histogram", (neuron,), lambda: svg.histogram_svg(
    stats, x_title="activation", y_title="tokens (symlog scale)", bar_title="{low} to {high}: {tokens} tokens")))

# --- excerpts: top, each quantile bin, random, bottom (one shared colour scale) ------------------------------
per_group = st.slider("Excerpts per group", 1, 20, 5, key="insights_per_group")
positive, negative = max(stats.max_activation, 1e-9), max(-stats.min_activation, 0.0)
widgets.heatmap_legend(positive, negative)
TITLES = {
    ExcerptKind.TOP: "Top excerpts (highest maximum activation)",
    ExcerptKind.RANDOM: "Random sample",
    ExcerptKind.BOTTOM: "Bottom excerpts (lowest minimum activation)",
}


def group_title(group: views.ExcerptGroup) -> str:
    if group.quantile_bin is not None:
        low, high = QUANTILE_BINS[group.quantile_bin]
        return f"Quantile bin {low:g}–{high:g} of the per-excerpt maximum"
    return TITLES[group.kind]


def excerpt_groups() -> str:
    """Every group's excerpts as heatmaps under their titles (built once per neuron and count)."""
    return render.sections_html([(group_title(group), render.heatmap_html(
        [HeatmapRow(r.excerpt.tokens, r.activations, f"#{r.rank + 1} · max {max(r.activations):.3g} · min "
                                                     f"{min(r.activations):.3g} · excerpt {r.excerpt.excerpt_id} · "
                                                     f"{r.split}")
         for r in group.excerpts[:per_group]], positive_scale=positive, negative_scale=negative))
        for group in view.groups if group.excerpts])


widgets.html(ctx.rendered("insights.excerpts", (neuron, per_group), excerpt_groups))

# --- related tokens ---------------------------------------------------------------------------------------------
st.subheader("Related tokens")
widgets.related_tokens_panel(ctx, view.tokens, "insights.tokens")
widgets.page_end()
