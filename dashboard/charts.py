"""Altair charts as pure functions of core.views' records (nothing drawn here); the charts drawn for every neuron
are SVG (dashboard/svg.py)."""

from __future__ import annotations

from collections.abc import Sequence

import altair as alt
import pandas as pd

from core.types import LayerScores


def scores_by_layer_chart(rows: Sequence[LayerScores]) -> alt.Chart:
    """Mean and median best score per layer, with how many neurons were scored."""
    frame = pd.DataFrame([{"layer": r.layer, "mean": r.mean_score, "median": r.median_score, "scored": r.scored}
                          for r in rows])
    long = frame.melt(id_vars=["layer", "scored"], value_vars=["mean", "median"], var_name="statistic",
                      value_name="score")
    return (
        alt.Chart(long)
        .mark_line(point=True)
        .encode(
            x=alt.X("layer:O", title="layer"),
            y=alt.Y("score:Q", title="best score per neuron"),
            color=alt.Color("statistic:N", scale=alt.Scale(range=["#d9480f", "#2563eb"])),
            tooltip=["layer:O", "statistic:N", alt.Tooltip("score:Q", format=".2f"), "scored:Q"],
        )
        .properties(height=240)
    )
