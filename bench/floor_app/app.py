"""The floor of bench/load.py: a trivial two-page Streamlit app (a title and a number input per page).

Its pages take the dashboard's query string (?layer=L&neuron=N, bound to number inputs as the dashboard binds them)
and show "Neuron L:N" as their title, so the load client drives and checks it exactly as it does the dashboard.
What a run of it costs is what Streamlit itself costs on the machine.
"""

from __future__ import annotations

import streamlit as st


def page(name: str) -> None:
    """A title and the neuron's number inputs, nothing else."""
    layer = st.sidebar.number_input("Layer", min_value=0, step=1, key="layer", bind="query-params")
    neuron = st.number_input("Neuron", min_value=0, step=1, key="neuron", bind="query-params")
    st.title(f"Neuron {layer}:{neuron} — {name}")


def first() -> None:
    page("first")


def second() -> None:
    page("second")


st.set_page_config(page_title="Floor", layout="wide")
st.navigation([st.Page(first, title="First", default=True), st.Page(second, title="Second")]).run()
