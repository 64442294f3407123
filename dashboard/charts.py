"""Altair charts as pure functions of core.views' records (nothing drawn here); the charts drawn for every neuron
are SVG (dashboard/svg.py)."""

from __future__ import annotations

from collections.abc import Sequence

import altair as alt
import pandas as pd

from core.types import LayerScores
from dashboard.i18n import _, language, number_symbols


def localized(chart: alt.Chart) -> alt.Chart:
    """The chart with axis and tooltip numbers in the session's decimal and group symbols (top level only: a
    configured chart cannot be layered)."""
    decimal, group = number_symbols(language())
    return chart.configure(locale=alt.Locale(number=alt.NumberLocale(decimal=decimal, thousands=group,
                                                                     grouping=[3], currency=["", ""])))


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
