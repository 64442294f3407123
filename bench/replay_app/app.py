"""A Streamlit app that sends a dashboard page's own messages again on every run (bench/content_floor.py).

$REPLAY_MESSAGES names a JSON file that bench/content_floor.py wrote: for each page's URL path, the delta messages
(elements and containers, sidebar included) one run of the dashboard's page enqueued. A run of a page here parses
them and hands each to Streamlit's script run context, the same call every st.* element ends in: Streamlit hashes,
queues, serialises and sends them as it did for the dashboard. Nothing else runs: no code of ours, no store, not
even Streamlit's element functions, so what a run costs here is less than any app drawing that content can cost.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Callable
from functools import cache

import streamlit as st
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
from streamlit.runtime.scriptrunner_utils.script_run_context import get_script_run_ctx


@cache
def recorded() -> dict[str, list[bytes]]:
    """Page URL path -> its run's messages, as serialised protobuf."""
    with open(os.environ["REPLAY_MESSAGES"]) as file:
        pages = json.load(file)
    return {page: [base64.b64decode(message) for message in messages] for page, messages in pages.items()}


def replay(page: str) -> Callable[[], None]:
    def run() -> None:
        context = get_script_run_ctx()
        assert context is not None
        for data in recorded()[page]:
            context.enqueue(ForwardMsg.FromString(data))  # a fresh message each run: Streamlit hashes it anew

    run.__name__ = page  # st.Page names the page after its function
    return run


st.set_page_config(page_title="Replay", layout="wide")
# the default page is served at "/" whatever its url_path: an empty one first, so every replayed page keeps its own
st.navigation([st.Page(lambda: None, title="Start", url_path="start", default=True),
               *(st.Page(replay(page), url_path=page) for page in recorded())]).run()
