"""The dashboard's shared parts, beside pages/ (Streamlit would list a module in pages/ as a page).

- state.py: the open cache of each file, cached views, the context the frame hands a page, the live-work queue.
- widgets.py: Streamlit pieces several pages use (neuron selector, sidebar settings, cards, panels).
- render.py: HTML as pure functions of data (every untrusted text escaped).
- charts.py: altair charts and tables as pure functions of core.views' records.

app.py is the frame; pages/*.py draw; what they draw is read by core/views.py (docs/DEVELOPING.md has the map).
"""
