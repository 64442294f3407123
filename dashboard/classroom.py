"""The classroom's pieces of the frame (issue 13): the join link and its QR code on the home page, the teacher's
sign-in and "show this neuron to the class", the students' "follow the teacher" box and the banner that offers the
teacher's neuron.

The class's state is in the notes (core.classroom, core.store.NotesStore). Students' pages poll it with a fragment
that reruns every CLASS_POLL_S seconds and reads only `notes.class_version`, an int; the share itself is read from
the notes once per change for every session (st.cache_data keyed by that version).
"""

from __future__ import annotations

from collections.abc import Mapping

import streamlit as st
from streamlit.errors import StreamlitAPIException

from core import classroom
from core.classroom import Follow, follow_action
from core.store import DashboardCache
from core.types import ClassShare, NeuronId
from dashboard import roles
from dashboard.i18n import _
from dashboard.state import PAGES, PageContext
from dashboard.widgets import go_to

CLASS_POLL_S = 1.5
"""Seconds between two looks of a student's page at where the teacher is."""
MOVE_KEY = "class_move"
"""session_state: a share this session is about to go to (set by the banner, applied by the frame)."""
FOLLOWED_KEY = "class_followed"
"""session_state: the id of the last share this session went to."""
FOLLOW_KEY = "class_follow"
"""session_state: the student's "follow the teacher" box (a widget's state)."""
FOLLOWING_KEY = "class_following"
"""session_state: whether the student follows, kept apart from the box's widget state, which Streamlit drops when a
run that moved to another page did not draw the box."""


@st.cache_data(show_spinner=False, max_entries=16)
def _share(path: str, notes_id: int, class_version: int, _cache: DashboardCache) -> ClassShare | None:
    """The latest share, read once per class_version (of this notes object) for every session."""
    return _cache.notes.class_share()


def current_share(cache: DashboardCache) -> ClassShare | None:
    """Where the teacher asked the class to look (None before the first share)."""
    return _share(str(cache.reader.path), id(cache.notes), cache.notes.class_version, cache)


def page_name(url_path: str) -> str:
    """The PAGES name of a page's URL path ("" is the home page)."""
    for name, file in PAGES.items():
        if url_path and file.rsplit("/", 1)[-1].removesuffix(".py") == url_path:
            return name
    return "home"


# --- the frame: before the neuron widgets, in the sidebar, above the page ---------------------------------------


def apply_move(page: str) -> None:
    """Go where a banner or the follow box asked to (before the neuron widgets exist in this run: their values are
    set here); switch page when the share is on another one."""
    share: ClassShare | None = st.session_state.get(MOVE_KEY)
    if share is None:
        return
    go_to(share.neuron.layer, share.neuron.neuron)
    st.session_state[FOLLOWED_KEY] = share.share_id
    if share.page != page and share.page in PAGES:
        # the move stays asked for until a run on the page gets here: a run cut short by another rerun (a fragment
        # of the page polling) would otherwise lose it between taking it and switching
        # an empty mapping, not None: switch_page(page) would clear the URL's parameters, which Streamlit refuses
        # for those bound to widgets (layer, neuron); the widgets write them back on the new page
        try:
            st.switch_page(PAGES[share.page], query_params={})
        except StreamlitAPIException:  # a page this run's navigation lacks: give the move up, not on every run
            del st.session_state[MOVE_KEY]
            raise
    del st.session_state[MOVE_KEY]


def _follow_changed(cache: DashboardCache) -> None:
    """Callback of the follow box: ticking it goes to the teacher's neuron at once."""
    share = current_share(cache)
    st.session_state[FOLLOWING_KEY] = bool(st.session_state.get(FOLLOW_KEY))
    if st.session_state[FOLLOWING_KEY] and share is not None:
        st.session_state[MOVE_KEY] = share


def _share_now(cache: DashboardCache, neuron: NeuronId, page: str) -> None:
    """Callback of the teacher's button."""
    cache.notes.share(neuron, page)


def _sign_in() -> None:
    """Callback of the sign-in form."""
    typed = st.session_state.get("class_passcode", "")
    st.session_state["class_passcode"] = ""  # never kept in the session
    st.session_state["class_sign_in_failed"] = not roles.sign_in(typed)


def sidebar(ctx: PageContext, page: str, titles: Mapping[str, str], box: object) -> None:
    """The classroom box of the sidebar (classroom mode only): the teacher's sign-in or controls, or a student's
    "follow the teacher"."""
    if not roles.classroom_on():
        return
    share = current_share(ctx.cache)
    with box:  # type: ignore[attr-defined]
        st.markdown(_("**Classroom**"))
        if roles.is_teacher():
            st.button(_("Show this neuron to the class"), key="class_share", type="primary", icon=":material/cast:",
                      on_click=_share_now, args=(ctx.cache, ctx.neuron, page), width="stretch")
            if share is not None:
                st.caption(_("The class was asked to look at {neuron} ({page}) at {time} UTC.", neuron=share.neuron,
                             page=_(titles.get(share.page, share.page)), time=share.created_at[11:16]))
            else:
                st.caption(_("Nothing shown to the class yet."))
            st.button(_("Sign out"), key="class_sign_out", on_click=roles.sign_out)
            return
        st.checkbox(_("Follow the teacher"), key=FOLLOW_KEY, value=bool(st.session_state.get(FOLLOWING_KEY)),
                    on_change=_follow_changed, args=(ctx.cache,),
                    help=_("Go to each neuron the teacher shows, as soon as it is shown. You can still look around; "
                           "the next neuron the teacher shows brings you along."))
        with st.expander(_("Teacher sign-in")):
            if roles.teacher_passcode() is None:
                st.caption(_("No teacher passcode is set: start the class with `make classroom`."))
            with st.form("class_sign_in", border=False):
                st.text_input(_("Passcode"), type="password", key="class_passcode")
                st.form_submit_button(_("Sign in"), on_click=_sign_in)
            if st.session_state.get("class_sign_in_failed"):
                st.error(_("That is not the teacher's passcode."))


def banner(ctx: PageContext, page: str, titles: Mapping[str, str]) -> None:
    """Above a student's page: where the teacher is, with a way there (classroom mode, students only)."""
    if roles.is_student():
        _banner(ctx.cache, ctx.neuron, page, dict(titles))


@st.fragment(run_every=CLASS_POLL_S)
def _banner(cache: DashboardCache, here: NeuronId, page: str, titles: dict[str, str]) -> None:
    share = current_share(cache)
    action = follow_action(share, here, page, follow=bool(st.session_state.get(FOLLOWING_KEY)),
                           followed=int(st.session_state.get(FOLLOWED_KEY, 0)))
    if action == Follow.NOTHING or share is None:
        return
    if action == Follow.MOVE:
        st.session_state[MOVE_KEY] = share
        st.rerun(scope="app")
    text, go = st.columns([5, 1], vertical_alignment="center")
    text.info(_("Your teacher is at {neuron} ({page}): go there", neuron=share.neuron,
                page=_(titles.get(share.page, share.page))),
              icon=":material/school:")
    if go.button(_("Go there"), key="class_go", type="primary", width="stretch"):
        st.session_state[MOVE_KEY] = share
        st.rerun(scope="app")


# --- the home page -------------------------------------------------------------------------------------------------


@st.cache_data(show_spinner=False, max_entries=4)
def _qr(url: str) -> bytes:
    return classroom.qr_png(url)


def join_panel() -> None:
    """The link students open and its QR code, for the projector (classroom mode only)."""
    url = classroom.class_url()
    if url is None:
        return
    code, words = st.columns([1, 3], vertical_alignment="center")
    code.image(_qr(url), width=220, caption=_("Scan to join"), output_format="PNG")  # JPEG would blur the code
    with words:
        st.subheader(_("Join the class"))
        st.markdown(_("Open this link on your laptop or phone (on the same network):"))
        st.code(url, language=None)
        st.caption(_("Tick **Follow the teacher** in the sidebar to go where the teacher goes."))
