"""Altair charts and the tables beside them, as pure functions of core.views' records (nothing drawn here)."""

from __future__ import annotations

from collections.abc import Sequence

import altair as alt
import pandas as pd

from core.types import LayerScores, NeuronStats
from core.views import SimulationView
from dashboard.i18n import _, language, number_symbols
from dashboard.render import EXCERPT_KINDS, display_token, named


def localized(chart: alt.Chart) -> alt.Chart:
    """The chart with axis and tooltip numbers in the session's decimal and group symbols (top level only: a
    configured chart cannot be layered)."""
    decimal, group = number_symbols(language())
    return chart.configure(locale=alt.Locale(number=alt.NumberLocale(decimal=decimal, thousands=group,
                                                                     grouping=[3], currency=["", ""])))


def histogram_chart(stats: NeuronStats) -> alt.Chart:
    """The neuron's activation histogram over every recorded token (symlog count axis)."""
    edges, counts = stats.hist_edges, stats.hist_counts
    frame = pd.DataFrame({"from": edges[:-1], "to": edges[1:], "tokens": counts})
    frame = frame[frame["tokens"] > 0]
    return localized(
        alt.Chart(frame)
        .mark_bar(color="#d9480f")
        .encode(
            x=alt.X("from:Q", title=_("activation"), bin="binned"),
            x2="to:Q",
            y=alt.Y("tokens:Q", title=_("tokens (symlog scale)"), scale=alt.Scale(type="symlog")),
            tooltip=[alt.Tooltip("from:Q", format=".3f", title=_("from")),
                     alt.Tooltip("to:Q", format=".3f", title=_("to")), alt.Tooltip("tokens:Q", title=_("tokens"))],
        )
        .properties(height=220)
    )


def scatter_frame(view: SimulationView) -> pd.DataFrame:
    """One row per simulated token: real (0-10 of the neuron's max), simulated, kind, token, excerpt."""
    points = [
        {"real": 10.0 * value / view.scale, "simulated": float(guess), "kind": str(item.excerpt.kind),
         "token": display_token(token), "excerpt": item.excerpt.excerpt.excerpt_id}
        for item in view.excerpts if item.predictions is not None
        for token, value, guess in zip(item.excerpt.excerpt.tokens, item.excerpt.activations, item.predictions,
                                       strict=False)
    ]
    return pd.DataFrame(points, columns=["real", "simulated", "kind", "token", "excerpt"])


def scatter_chart(view: SimulationView) -> alt.Chart:
    """Real (normalized 0-10) against simulated activation per token, coloured by excerpt kind."""
    frame = scatter_frame(view)
    kinds = {kind: _(name) for kind, name in EXCERPT_KINDS.items()}
    frame["kind"] = frame["kind"].map(lambda kind: kinds.get(kind, kind))  # the legend shows the values
    return localized(
        alt.Chart(frame)
        .mark_circle(opacity=0.55, size=28)
        .encode(
            x=alt.X("real:Q", title=_("real activation (0-10 of the neuron's max)")),
            y=alt.Y("simulated:Q", title=_("simulated (0-10)")),
            color=alt.Color("kind:N", title=_("excerpt"),
                            scale=alt.Scale(domain=[_("top"), _("random")], range=["#d9480f", "#2563eb"])),
            tooltip=[alt.Tooltip("token:N", title=_("token")),
                     alt.Tooltip("real:Q", format=".2f", title=_("real")),
                     alt.Tooltip("simulated:Q", format=".2f", title=_("simulated")),
                     alt.Tooltip("excerpt:Q", title=_("excerpt"))],
        )
        .properties(height=300)
    )


def excerpt_scores_frame(view: SimulationView) -> pd.DataFrame:
    """One row per scoring excerpt: excerpt, kind, score, max activation."""
    return pd.DataFrame([{"excerpt": item.excerpt.excerpt.excerpt_id, "kind": named(EXCERPT_KINDS, item.excerpt.kind),
                          "score": item.score, "max activation": round(max(item.excerpt.activations), 4)}
                         for item in view.excerpts])


def excerpt_score_headers() -> dict[str, str]:
    """Column labels of `excerpt_scores_frame` in the session's language."""
    return {"excerpt": _("excerpt"), "kind": _("kind"), "score": _("score"), "max activation": _("max activation")}


def scores_by_layer_chart(rows: Sequence[LayerScores]) -> alt.Chart:
    """Mean and median best score per layer, with how many neurons were scored."""
    # the statistic's values are the legend's labels
    frame = pd.DataFrame([{"layer": r.layer, _("mean"): r.mean_score, _("median"): r.median_score,
                           "scored": r.scored} for r in rows])
    long = frame.melt(id_vars=["layer", "scored"], value_vars=[_("mean"), _("median")], var_name="statistic",
                      value_name="score")
    return localized(
        alt.Chart(long)
        .mark_line(point=True)
        .encode(
            x=alt.X("layer:O", title=_("layer")),
            y=alt.Y("score:Q", title=_("best score per neuron")),
            color=alt.Color("statistic:N", title=_("statistic"), scale=alt.Scale(range=["#d9480f", "#2563eb"])),
            tooltip=[alt.Tooltip("layer:O", title=_("layer")), alt.Tooltip("statistic:N", title=_("statistic")),
                     alt.Tooltip("score:Q", format=".2f", title=_("score")),
                     alt.Tooltip("scored:Q", title=_("neurons scored"))],
        )
        .properties(height=240)
    )
