"""Related neurons: upstream, downstream and correlated neighbours with their strength, explanation and score.

Data: core.views.related (cached per neuron and list length for every session)."""

from __future__ import annotations

import streamlit as st

from core import views
from core.types import NeuronId, RelatedNeuronKind
from dashboard import imported, onview, render, widgets
from dashboard.i18n import N_, _, number
from dashboard.state import page_context

ctx = page_context()
neuron = ctx.neuron
st.title(_("Neuron {neuron} — related neurons", neuron=neuron))
limit = st.slider(_("Neurons per list"), 3, 10, 5, key="related_limit")
view = ctx.view(views.related, neuron, limit)
if view.best is not None and view.best.explanation:
    widgets.explanation_card(view.best.explanation, _("best explanation"), widgets.score_badge(view.best.score))
elif (made := onview.on_view(ctx, neuron)) is not None:
    onview.explanation_card(made)

TITLES = {
    RelatedNeuronKind.UPSTREAM_POSITIVE: N_("Upstream: feed it positively"),
    RelatedNeuronKind.UPSTREAM_NEGATIVE: N_("Upstream: feed it negatively"),
    RelatedNeuronKind.DOWNSTREAM_POSITIVE: N_("Downstream: it excites"),
    RelatedNeuronKind.DOWNSTREAM_NEGATIVE: N_("Downstream: it inhibits"),
    RelatedNeuronKind.CORRELATED: N_("Correlated over the corpus"),
}


def move(kind: str, options: dict[str, NeuronId]) -> None:
    """Callback of a group's chips: go to the chosen neuron."""
    chosen = options.get(st.session_state.get(f"related_{kind}_{neuron}") or "")
    if chosen is not None:
        widgets.go_to(chosen.layer, chosen.neuron)


def none_because(kind: RelatedNeuronKind) -> str:
    """Why a list is empty when the tables are computed."""
    if kind.startswith("upstream") and neuron.layer == 0:
        return _("none (layer 0 has no earlier layers)")
    if kind.startswith("downstream") and neuron.layer == ctx.info.layers - 1:
        return _("none (the last layer has no later layers)")
    return _("none")


missing = imported.missing_model(ctx)  # an imported cache without its model: only correlated neurons exist
if missing is not None:
    imported.needs_model(ctx, missing, _("upstream and downstream neurons and related tokens (from the weights)"),
                         imported.related_command(ctx))
if not view.computed:
    if missing is None:
        widgets.not_computed(_("Related neurons"), f"python -m core related {ctx.reader.path}")
    else:
        st.caption(_("No correlated neurons: none shares enough excerpts with this one in the imported files."))
else:
    made_on_view, being_made = onview.listed(ctx, view.rows, (r.neuron for _kind, group in view.neurons for r in group))
    if being_made:
        st.info(_("Explaining {count} listed neurons with the offline default in the background; they appear here "
                  "when ready.", count=len(being_made)), icon=":material/hourglass_top:")
        onview.await_listed(ctx.cache, tuple(sorted(being_made, key=lambda n: (n.layer, n.neuron))))
    for kind, found in view.neurons:
        if missing is not None and kind != RelatedNeuronKind.CORRELATED:
            continue
        st.subheader(_(TITLES[kind]))
        if not found:
            st.caption(none_because(kind))
            continue
        options = {f"→ {r.neuron}": r.neuron for r in found}
        st.pills(_("Go to"), list(options), key=f"related_{kind}_{neuron}", on_change=move, args=(kind, options),
                 label_visibility="collapsed")
        table = []
        for related in found:
            shown = onview.shown_explanation(view.rows.get(related.neuron), made_on_view.get(related.neuron))
            if shown is None:
                shown = (_("(being explained by the offline default …)") if related.neuron in being_made
                         else _("(no explanation: the offline default found nothing to say)"), None)
            text, score = shown
            table.append([str(related.neuron), text, onview.score_text(score), number(related.strength, "+.3f")])
        st.html(render.table_html([_("neuron"), _("best explanation"), _("score"), _("strength")], table,
                                  bars=[r.strength for r in found],
                                  bar_scale=max(abs(r.strength) for r in found) or 1.0, widths=[10, 68, 10, 12]))
        if any(r.neuron in made_on_view for r in found):
            st.caption(_(onview.ON_VIEW_LEGEND))
        st.caption(_("Open a neuron in a new tab: {links}", links=" · ".join(
            f"[{r.neuron}]({widgets.share_url(r.neuron, 'related')})" for r in found)))

st.subheader(_("Related tokens"))
if missing is None:
    widgets.related_tokens_panel(ctx, view.tokens, "related.tokens")
elif any(tokens for _kind, tokens in view.tokens):
    widgets.related_tokens_panel(ctx, [(kind, tokens) for kind, tokens in view.tokens if tokens], "related.tokens")
else:
    st.caption(_("They need the model (see above)."))
widgets.page_end()
