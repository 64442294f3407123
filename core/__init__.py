"""Neuron Atlas core: record, explain, simulate, score and relate the MLP neurons of a language model.

Plain Python with no Streamlit import; the dashboard (app.py, pages/) is a thin view over it.
"""
