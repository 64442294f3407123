"""Neuron Atlas dashboard: `streamlit run app.py`.

The frame of every page: page config, navigation over pages/, the shared sidebar (the neuron, bound to the URL as
?layer=L&neuron=N; the cache; the backend for live work), the store opened once for all sessions, and the home page.
It opens $NEURON_ATLAS_CACHE, else the cache used last, else the demo cache that `make demo` builds.
"""

from __future__ import annotations

import streamlit as st

import components as ui
from core.store import CacheInfo, Store, StoreError
from core.types import NeuronId


@st.cache_data(show_spinner=False, max_entries=16)
def cache_info(_store: Store, key: tuple) -> CacheInfo:
    """The cache's summary, computed once per cache file version (`key`)."""
    return _store.info()


def home() -> None:
    """The first screen: what a neuron is, how explanations are scored, the cache in use, where to start."""
    st.title("Neuron Atlas")
    st.markdown(
        "A **neuron** here is one unit inside a transformer block's MLP: for every token the model reads it outputs "
        "one number, its *activation*. Some neurons fire on something a person can name. Neuron Atlas finds out "
        "which, in three steps:"
    )
    st.html(
        '<div style="display:flex;gap:10px;align-items:stretch;font-family:sans-serif;font-size:14px;'
        'margin:4px 0 12px 0">'
        '<div style="flex:1;background:#fff7f0;border:1px solid #f0c29a;border-radius:8px;padding:10px">'
        "<b>1. Explain</b><br>An explainer reads the excerpts where the neuron fires most and writes one sentence: "
        "<i>what does it look for?</i></div>"
        '<div style="align-self:center;font-size:22px;color:#d9480f">→</div>'
        '<div style="flex:1;background:#f0f5ff;border:1px solid #b6c8f5;border-radius:8px;padding:10px">'
        "<b>2. Simulate</b><br>A simulator reads only that sentence and guesses the activation (0-10) of every "
        "token of <i>other</i> excerpts.</div>"
        '<div style="align-self:center;font-size:22px;color:#d9480f">→</div>'
        '<div style="flex:1;background:#f0faf3;border:1px solid #a9dcb8;border-radius:8px;padding:10px">'
        "<b>3. Score</b><br>The score is the correlation between guessed and real activations: 1 is perfect, "
        "0 is no better than chance.</div></div>"
    )
    context = st.session_state.get("_atlas_context")
    if context is None:
        st.warning(ui.no_cache_message())
        return
    store, info = context.store, cache_info(context.store, ui.cache_key(context.store))
    cols = st.columns([2.2, 1.4, 1, 1, 1])
    cols[0].metric("Model", info.model)
    cols[1].metric("Corpus", info.corpus)
    cols[2].metric("Tokens", f"{info.tokens:,}")
    cols[3].metric("Neurons", f"{info.layers * info.neurons_per_layer:,}", help=f"{info.layers} layers x "
                   f"{info.neurons_per_layer:,}")
    cols[4].metric("Explained", f"{info.explanations:,}")
    st.button("Start at layer 0, neuron 0 →", type="primary", on_click=ui.go_to, args=(0, 0), key="start")
    if st.session_state.get("start"):
        st.switch_page(ui.PAGES["insights"])

    layer_scores = home_scores(store, ui.cache_key(store))
    if not layer_scores:
        ui.not_computed("Explanations and scores", f"python -m core explain {store.path} --layers 0 --explainer "
                        "baseline")
    else:
        st.subheader("How well each layer is explained")
        st.altair_chart(ui.scores_by_layer_chart(layer_scores), width="stretch")
        best, worst, surprising = home_lists(store, ui.cache_key(store), info.layers)
        left, middle, right = st.columns(3)
        for column, title, rows in ((left, "Best explained", best), (middle, "Worst explained", worst),
                                    (right, "Surprising: deep yet well explained", surprising)):
            with column:
                st.markdown(f"**{title}**")
                for row in rows:
                    ui.neuron_button(row.neuron, f"{row.neuron.layer}:{row.neuron.neuron} · {ui.fmt_score(row.score)}"
                                     f" · {(row.explanation or '')[:60]}", key=f"home_{title}_{row.neuron}")
    disagreements = store.disagreements()
    st.subheader("Where people and the score disagree")
    if not disagreements:
        st.caption("No disagreements yet: rate explanations on the Scoring page (right / partly / wrong).")
    for item in disagreements:
        verdict = "people say wrong" if item.rated_wrong > item.rated_right else "people say right"
        ui.neuron_button(item.neuron, f"{item.neuron.layer}:{item.neuron.neuron} · score {item.score:.2f} but "
                         f"{verdict} ({item.rated_right}✓ {item.rated_partly}~ {item.rated_wrong}✗) · "
                         f"{item.explanation_text[:60]}", key=f"home_disagree_{item.neuron}")
    ui.page_end()


@st.cache_data(show_spinner=False, max_entries=16)
def home_scores(_store: Store, key: tuple) -> list:
    return _store.scores_by_layer()


@st.cache_data(show_spinner=False, max_entries=16)
def home_lists(_store: Store, key: tuple, layers: int) -> tuple[list, list, list]:
    best = _store.neuron_table(order="score", descending=True, scored_only=True, limit=5)
    worst = _store.neuron_table(order="score", descending=False, scored_only=True, limit=5)
    surprising = _store.neuron_table(order="score", descending=True, scored_only=True, min_layer=(2 * layers) // 3,
                                     limit=5)
    return best, worst, surprising


def frame() -> None:
    """Set up the page, the sidebar and the store, then run the chosen page."""
    st.set_page_config(page_title="Neuron Atlas", page_icon=":material/neurology:", layout="wide")
    navigation = st.navigation(
        [
            st.Page(home, title="Home", icon=":material/home:", default=True),
            st.Page(ui.PAGES["picker"], title="Find a neuron", icon=":material/search:"),
            st.Page(ui.PAGES["scoring"], title="Scoring details", icon=":material/fact_check:"),
            st.Page(ui.PAGES["insights"], title="Insights", icon=":material/insights:"),
            st.Page(ui.PAGES["related"], title="Related neurons", icon=":material/hub:"),
            st.Page(ui.PAGES["try"], title="Try your own text", icon=":material/edit_note:"),
        ]
    )
    neuron_box = st.sidebar.container()
    path = ui.cache_sidebar()
    context, problem = None, None
    if path is not None:
        try:
            store = ui.open_store(path)
        except StoreError as error:
            problem = str(error)
            if not path.exists():  # a missing file is the build message; anything else is shown as it is
                problem = None
            st.sidebar.error(str(error))
        else:
            ui.remember_cache(path)
            info = cache_info(store, ui.cache_key(store))
            neuron: NeuronId = ui.neuron_selector(info.layers, info.neurons_per_layer, neuron_box)
            context = ui.PageContext(store, neuron, info.layers, info.neurons_per_layer, info.model,
                                     ui.live_settings_sidebar())
    ui.set_context(context, problem)
    navigation.run()


if __name__ == "__main__":  # `streamlit run app.py`; components imports it to reach frame()
    frame()
