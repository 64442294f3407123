"""Neuron Atlas dashboard: `streamlit run app.py`.

The frame around every page: page config, navigation over the page files in pages/, the shared sidebar (the neuron,
bound to the URL as ?layer=L&neuron=N; the cache; the backend for live work) and the context handed to the page.
It opens $NEURON_ATLAS_CACHE, else the cache used last, else the demo cache that `make demo` builds. Where a page's
data comes from: docs/DEVELOPING.md. In classroom mode (`make classroom`, dashboard/roles.py) students get the
class's cache and the offline backend instead of those settings, a "follow the teacher" box and the class board.
"""

from __future__ import annotations

import streamlit as st

from core import views
from core.paths import default_cache, remember_cache
from core.store import StoreError, signatures
from dashboard import classroom, roles, widgets
from dashboard.i18n import N_, _, language, speaking
from dashboard.onview import BACKGROUND
from dashboard.state import (
    PAGES,
    Frame,
    PageContext,
    cached_view,
    frame_running,
    open_cache,
    run_page,
    settle_heap,
    watch_cache,
)

# page titles by PAGES name (marked: `_` at use; a comment: Streamlit would show a string standing alone here)
TITLES = {
    "home": N_("Home"),
    "picker": N_("Find a neuron"),
    "classroom": N_("Explain it together"),
    "scoring": N_("Scoring details"),
    "insights": N_("Insights"),
    "related": N_("Related neurons"),
    "try": N_("Try your own text"),
}


def frame(page: str) -> Frame:
    """The sidebar and the open cache of this run (the page config and navigation are set before)."""
    classroom.apply_move(page)  # a move to the teacher's neuron, before the neuron widgets are drawn
    neuron_box = st.sidebar.container()  # above the cache box, though it needs the cache to know its range
    class_box = st.sidebar.container()
    configure = roles.may_configure()  # students get the class's cache and the offline backend
    path = widgets.cache_sidebar() if configure else default_cache()
    if path is None:
        return Frame(None)
    try:
        cache = open_cache(path)
    except StoreError as error:
        widgets.cache_problem(path, error)
        watch_cache(str(path), signatures(path))  # runs the page again when the file is rebuilt or comes back
        # a missing file gets the build message; anything else is shown as it is
        return Frame(None, None if not path.exists() else str(error))
    watch_cache(str(path), cache.signature)
    if configure:
        remember_cache(path)
    info = cached_view(cache, views.info)
    neuron = widgets.neuron_selector(info.layers, info.neurons_per_layer, neuron_box)
    context = PageContext(cache, info, neuron, widgets.live_settings_sidebar() if configure else roles.CLASS_BACKEND)
    widgets.fill_progress_sidebar(path, neuron)
    classroom.sidebar(context, page, TITLES, class_box)
    classroom.banner(context, page, TITLES)
    return Frame(context)


settle_heap()  # freezes what earlier runs imported, so garbage collections skip the libraries
# the icon is an emoji: a Material icon name here makes every browser fetch it from a font server on the internet
st.set_page_config(page_title="Neuron Atlas", page_icon="🧠", layout="wide")
navigation = st.navigation([
    st.Page(PAGES["home"], title=_(TITLES["home"]), icon=":material/home:", default=True),
    st.Page(PAGES["picker"], title=_(TITLES["picker"]), icon=":material/search:"),
    *([st.Page(PAGES["classroom"], title=_(TITLES["classroom"]), icon=":material/groups:")]
      if roles.classroom_on() else []),
    st.Page(PAGES["scoring"], title=_(TITLES["scoring"]), icon=":material/fact_check:"),
    st.Page(PAGES["insights"], title=_(TITLES["insights"]), icon=":material/insights:"),
    st.Page(PAGES["related"], title=_(TITLES["related"]), icon=":material/hub:"),
    st.Page(PAGES["try"], title=_(TITLES["try"]), icon=":material/edit_note:"),
])
# after st.navigation: a widget made before it gets another identity on each page and loses its value (the titles
# above read the choice from the session or the URL, dashboard/i18n.py)
widgets.language_selector()
# the choice is fixed for the rest of the run: a page's thousands of numbers and messages look it up in a context
# variable instead of the session state, the URL and the browser's locale each time; the background's explanations
# of listed neurons wait while page runs are in flight
with BACKGROUND.page_running(), speaking(language()), frame_running(frame(classroom.page_name(navigation.url_path))):
    run_page(navigation.run)
