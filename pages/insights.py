"""Insights: every explanation of the neuron, its activations by quantile, its histogram, related tokens.

Data: core.views.insights and core.views.people (cached per neuron for every session)."""

from __future__ import annotations

import streamlit as st

from core import views
from core.live import ON_VIEW_SOURCE
from core.types import QUANTILE_BINS, ExcerptKind
from dashboard import imported, onview, render, svg, widgets
from dashboard.i18n import N_, _, number
from dashboard.i18n import score as score_text
from dashboard.render import SPLITS, STATUSES, HeatmapRow, named
from dashboard.state import page_context

ctx = page_context()
neuron = ctx.neuron
st.title(_("Neuron {neuron} — insights", neuron=neuron))
view = ctx.view(views.insights, neuron)
stats = widgets.recorded(neuron, view.stats)
people = ctx.neuron_notes_view(views.people, neuron)

# --- explanations -------------------------------------------------------------------------------------------
explanations = view.explanations
best = explanations[0] if explanations else None
if best is not None and best.text:
    widgets.explanation_card(best.text, _("{explainer} · scored by {simulator}", explainer=best.explainer,
                                                                          simulator=best.simulator),
                             widgets.score_badge(best.score_all))
elif (made := onview.on_view(ctx, neuron)) is not None:
    onview.explanation_card(made)
    people = ctx.neuron_notes_view(views.people, neuron)  # with the one kept now
else:
    widgets.not_computed(_("An explanation of this neuron"),
                         f"python -m core explain {ctx.reader.path} --neurons {neuron} --explainer baseline")
onview.evidence_table(ctx, neuron, lambda: views.insights_evidence(view))
suggestions = people.suggestions


def explanations_table() -> str:
    """Every explanation of the neuron and every suggestion made here, as one table."""
    rows = [[render.visible_blanks(e.text) if e.text else _("(failed: {reason})", reason=e.failure), e.explainer,
             e.model or "", e.prompt_version or "", e.simulator, score_text(e.score_all), score_text(e.score_top),
             score_text(e.score_random), named(STATUSES, e.status)]
            for e in explanations]
    rows += [[s.text, s.source if s.source != "person" else _("person: {name}", name=s.author), "", "",
              s.score.simulator if s.score else "", score_text(s.score.score_all if s.score else None),
              score_text(s.score.score_top if s.score else None),
              score_text(s.score.score_random if s.score else None),
              _("made on view") if s.source == ON_VIEW_SOURCE else _("suggested") + (
                  f" · {onview.seen_note(s.score)}" if onview.seen_note(s.score) else "")] for s in suggestions]
    header = [_("explanation"), _("explainer"), _("model"), _("prompt"), _("simulator"), _("score"), _("top"),
              _("random"), _("status")]
    return render.table_html(header, rows, widths=[34, 12, 10, 6, 10, 7, 7, 7, 7]) if rows else ""


with st.expander(_("All explanations ({pipeline} from the pipeline, {suggested} suggested here)",
                   pipeline=len(explanations), suggested=len(suggestions)),
                 expanded=len(explanations) + len(suggestions) > 1):
    widgets.html(ctx.rendered("insights.explanations", (neuron,), explanations_table, notes=neuron))
widgets.generate_panel(ctx)

# --- statistics and histogram ---------------------------------------------------------------------------------
st.subheader(_("Activations"))
widgets.chart(ctx.rendered("insights.activations", (neuron,), lambda: render.stats_html([
    (_("max"), number(stats.max_activation, ".3g"), ""),
    (_("min"), number(stats.min_activation, ".3g"), ""),
    (_("mean"), number(stats.mean, ".3g"), ""),
    (_("density"), number(stats.density, ".1%"), _("share of tokens with activation above zero")),
    (_("skewness"), number(stats.skewness, ".2f"), ""),
    (_("kurtosis"), number(stats.kurtosis, ".1f"), _("excess kurtosis: 0 for a normal distribution")),
]) + svg.histogram_svg(stats, x_title=_("activation"), y_title=_("tokens (symlog scale)"),
                       bar_title=_("{low} to {high}: {tokens} tokens"))))

# --- excerpts: top, each quantile bin, random, bottom (one shared colour scale) ------------------------------
per_group = st.slider(_("Excerpts per group"), 1, 20, 5, key="insights_per_group")
positive, negative = max(stats.max_activation, 1e-9), max(-stats.min_activation, 0.0)
widgets.heatmap_legend(positive, negative)
TITLES = {
    ExcerptKind.TOP: N_("Top excerpts (highest maximum activation)"),
    ExcerptKind.RANDOM: N_("Random sample"),
    ExcerptKind.BOTTOM: N_("Bottom excerpts (lowest minimum activation)"),
}


def group_title(group: views.ExcerptGroup) -> str:
    if group.quantile_bin is not None:
        low, high = QUANTILE_BINS[group.quantile_bin]
        return _("Quantile bin {low}–{high} of the per-excerpt maximum", low=number(low, "g"), high=number(high, "g"))
    return _(TITLES[group.kind])


def excerpt_groups() -> str:
    """Every group's excerpts as heatmaps under their titles (built once per neuron and count)."""
    return render.sections_html([(group_title(group), render.heatmap_html(
        [HeatmapRow(r.excerpt.tokens, r.activations,
                    _("#{rank} · max {max} · min {min} · excerpt {excerpt} · {split}", rank=r.rank + 1,
                      max=number(max(r.activations), ".3g"), min=number(min(r.activations), ".3g"),
                      excerpt=r.excerpt.excerpt_id, split=named(SPLITS, r.split)))
         for r in group.excerpts[:per_group]], positive_scale=positive, negative_scale=negative))
        for group in view.groups if group.excerpts])


widgets.html(ctx.rendered("insights.excerpts", (neuron, per_group), excerpt_groups))

# --- related tokens ---------------------------------------------------------------------------------------------
st.subheader(_("Related tokens"))
imported.tokens_panel(ctx, view.tokens, imported.missing_model(ctx))
widgets.page_end()
