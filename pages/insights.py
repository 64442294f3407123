"""Insights: every explanation of the neuron, its activations by quantile, its histogram, related tokens.

Data: core.views.insights and core.views.people (cached per neuron for every session)."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from core import views
from core.types import QUANTILE_BINS, ExcerptKind
from dashboard import charts, widgets
from dashboard.i18n import N_, _, number, number_columns
from dashboard.render import SPLITS, STATUSES, HeatmapRow, named
from dashboard.state import page_context

ctx = page_context()
neuron = ctx.neuron
st.title(_("Neuron {neuron} — insights", neuron=neuron))
view = ctx.view(views.insights, neuron)
stats = widgets.recorded(neuron, view.stats)
people = ctx.notes_view(views.people, neuron)

# --- explanations -------------------------------------------------------------------------------------------
explanations, suggestions = view.explanations, people.suggestions
best = explanations[0] if explanations else None
if best is not None and best.text:
    widgets.explanation_card(best.text, _("{explainer} · scored by {simulator}", explainer=best.explainer,
                                                                          simulator=best.simulator),
                             widgets.score_badge(best.score_all))
else:
    widgets.not_computed(_("An explanation of this neuron"),
                         f"python -m core explain {ctx.reader.path} --neurons {neuron} --explainer baseline")
with st.expander(_("All explanations ({pipeline} from the pipeline, {suggested} suggested here)",
                   pipeline=len(explanations), suggested=len(suggestions)),
                 expanded=len(explanations) + len(suggestions) > 1):
    rows = [{"explanation": e.text or _("(failed: {reason})", reason=e.failure), "explainer": e.explainer,
             "model": e.model or "",
             "prompt": e.prompt_version or "", "simulator": e.simulator, "score": e.score_all, "top": e.score_top,
             "random": e.score_random, "status": named(STATUSES, e.status)} for e in explanations]
    rows += [{"explanation": s.text,
              "explainer": s.source if s.source != "person" else _("person: {name}", name=s.author),
              "model": "", "prompt": "", "simulator": s.score.simulator if s.score else "",
              "score": s.score.score_all if s.score else None, "top": s.score.score_top if s.score else None,
              "random": s.score.score_random if s.score else None, "status": _("suggested")} for s in suggestions]
    if rows:
        st.dataframe(number_columns(pd.DataFrame(rows), score=2, top=2, random=2), hide_index=True, width="stretch",
                     column_config={
            "explanation": _("explanation"), "explainer": _("explainer"), "model": _("model"), "prompt": _("prompt"),
            "simulator": _("simulator"), "score": _("score"), "top": _("top"), "random": _("random"),
            "status": _("status")})
widgets.generate_panel(ctx)

# --- statistics and histogram ---------------------------------------------------------------------------------
st.subheader(_("Activations"))
cols = st.columns(6)
cols[0].metric(_("max"), number(stats.max_activation, ".3g"))
cols[1].metric(_("min"), number(stats.min_activation, ".3g"))
cols[2].metric(_("mean"), number(stats.mean, ".3g"))
cols[3].metric(_("density"), number(stats.density, ".1%"), help=_("share of tokens with activation above zero"))
cols[4].metric(_("skewness"), number(stats.skewness, ".2f"))
cols[5].metric(_("kurtosis"), number(stats.kurtosis, ".1f"), help=_("excess kurtosis: 0 for a normal distribution"))
st.altair_chart(charts.histogram_chart(stats), width="stretch")

# --- excerpts: top, each quantile bin, random, bottom (one shared colour scale) ------------------------------
per_group = st.slider(_("Excerpts per group"), 1, 20, 5, key="insights_per_group")
positive, negative = max(stats.max_activation, 1e-9), max(-stats.min_activation, 0.0)
widgets.heatmap_legend(positive, negative)
TITLES = {
    ExcerptKind.TOP: N_("Top excerpts (highest maximum activation)"),
    ExcerptKind.RANDOM: N_("Random sample"),
    ExcerptKind.BOTTOM: N_("Bottom excerpts (lowest minimum activation)"),
}
for group in view.groups:
    if not group.excerpts:
        continue
    if group.quantile_bin is not None:
        low, high = QUANTILE_BINS[group.quantile_bin]
        st.markdown(_("**Quantile bin {low}–{high} of the per-excerpt maximum**", low=number(low, "g"),
                      high=number(high, "g")))
    else:
        st.markdown(f"**{_(TITLES[group.kind])}**")
    widgets.heatmap([HeatmapRow(r.excerpt.tokens, r.activations,
                                _("#{rank} · max {max} · min {min} · excerpt {excerpt} · {split}", rank=r.rank + 1,
                                  max=number(max(r.activations), ".3g"), min=number(min(r.activations), ".3g"),
                                  excerpt=r.excerpt.excerpt_id, split=named(SPLITS, r.split)))
                     for r in group.excerpts[:per_group]], positive_scale=positive, negative_scale=negative)

# --- related tokens ---------------------------------------------------------------------------------------------
st.subheader(_("Related tokens"))
widgets.related_tokens_panel(ctx, view.tokens)
widgets.page_end()
