"""Neuron Atlas dashboard: `streamlit run app.py`.

The frame around every page: page config, navigation over the page files in pages/, the shared sidebar (the neuron,
bound to the URL as ?layer=L&neuron=N; the cache; the backend for live work) and the context handed to the page.
It opens $NEURON_ATLAS_CACHE, else the cache used last, else the demo cache that `make demo` builds. Where a page's
data comes from: docs/DEVELOPING.md.
"""

from __future__ import annotations

import streamlit as st

from core import views
from core.paths import remember_cache
from core.store import StoreError
from dashboard import widgets
from dashboard.state import PAGES, Frame, PageContext, cached_view, frame_running, open_cache


def frame() -> Frame:
    """The sidebar and the open cache of this run (the page config and navigation are set before)."""
    neuron_box = st.sidebar.container()  # above the cache box, though it needs the cache to know its range
    path = widgets.cache_sidebar()
    if path is None:
        return Frame(None)
    try:
        cache = open_cache(path)
    except StoreError as error:
        st.sidebar.error(str(error))
        # a missing file gets the build message; anything else is shown as it is
        return Frame(None, None if not path.exists() else str(error))
    remember_cache(path)
    info = cached_view(cache, views.info)
    neuron = widgets.neuron_selector(info.layers, info.neurons_per_layer, neuron_box)
    widgets.fill_progress_sidebar(path, neuron)
    return Frame(PageContext(cache, info, neuron, widgets.live_settings_sidebar()))


st.set_page_config(page_title="Neuron Atlas", page_icon=":material/neurology:", layout="wide")
navigation = st.navigation([
    st.Page(PAGES["home"], title="Home", icon=":material/home:", default=True),
    st.Page(PAGES["picker"], title="Find a neuron", icon=":material/search:"),
    st.Page(PAGES["scoring"], title="Scoring details", icon=":material/fact_check:"),
    st.Page(PAGES["insights"], title="Insights", icon=":material/insights:"),
    st.Page(PAGES["related"], title="Related neurons", icon=":material/hub:"),
    st.Page(PAGES["try"], title="Try your own text", icon=":material/edit_note:"),
])
with frame_running(frame()):
    navigation.run()
