"""Who this session is in classroom mode, and what they may do (issue 13).

Classroom mode is on when `make classroom` started the server (core.classroom.CLASS_URL_ENV is set). Then a
session is a student until it signs in with the teacher's passcode. Spending is the teacher's: only the teacher
changes the cache or the live-work backend, sees the API key field, generates explanations or sees their cost;
students score with the offline baseline simulator, and each student session may start at most
`core.classroom.student_live_per_minute()` live jobs a minute. Outside classroom mode (`make app`) the one person at
the keyboard may do everything, as before.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import uuid

import streamlit as st

from core import classroom
from core.backends import BackendKind, BackendSpec
from core.live import LiveBackend
from dashboard.i18n import _

log = logging.getLogger(__name__)

CLASS_BACKEND = LiveBackend(BackendSpec(BackendKind.BASELINE))
"""What students' live work runs with: the offline simulator (free, no key)."""
WRONG_PASSCODE_DELAY_S = 1.0
"""A wrong passcode answers after this long, so guessing one over the network takes forever."""
TEACHER_KEY = "class_teacher"
"""session_state key: this session signed in with the passcode."""


def classroom_on() -> bool:
    """Whether the server runs in classroom mode."""
    return classroom.class_url() is not None


def teacher_passcode() -> str | None:
    """$NEURON_ATLAS_TEACHER_PASSCODE, else `teacher_passcode` in .streamlit/secrets.toml (None: not set)."""
    value = os.environ.get(classroom.PASSCODE_ENV, "").strip()
    if value:
        return value
    with contextlib.suppress(Exception):  # no secrets.toml is the normal case
        secret = st.secrets.get(classroom.PASSCODE_SECRET)
        if secret:
            return str(secret)
    return None


def is_teacher() -> bool:
    """Signed in as the teacher (in classroom mode)."""
    return bool(st.session_state.get(TEACHER_KEY))


def is_student() -> bool:
    """A session of classroom mode that has not signed in as the teacher."""
    return classroom_on() and not is_teacher()


def may_configure() -> bool:
    """May change the cache and the backend, see the key and the cost, and generate: everyone but students."""
    return not is_student()


def sign_in(typed: str) -> bool:
    """Sign this session in as the teacher when `typed` is the passcode."""
    if classroom.passcode_matches(typed, teacher_passcode()):
        st.session_state[TEACHER_KEY] = True
        return True
    time.sleep(WRONG_PASSCODE_DELAY_S)
    log.warning("a wrong teacher passcode was typed")
    return False


def sign_out() -> None:
    """Widget callback: this session is a student again."""
    st.session_state[TEACHER_KEY] = False


def student_key() -> str:
    """This session's own key for the rate limit (a reload is a new session)."""
    return str(st.session_state.setdefault("class_student_id", uuid.uuid4().hex))


@st.cache_resource(show_spinner=False)
def _rate_limit(per_minute: int) -> classroom.RateLimit:
    return classroom.RateLimit(per_minute)


def live_allowed() -> bool:
    """Whether this session may start a live job now (always, but for students over their limit); counts it.
    A student over the limit gets a warning with the wait and where the limit is set."""
    if not is_student():
        return True
    try:
        per_minute = classroom.student_live_per_minute()
    except ValueError as error:
        st.error(str(error))
        return False
    wait = _rate_limit(per_minute).take(student_key())
    if wait <= 0:
        return True
    st.warning(_("In class, each student may start {count} live jobs a minute (the teacher sets this with {setting}). "
                 "Try again in {seconds} s.", count=per_minute, setting=classroom.STUDENT_LIVE_ENV,
                 seconds=f"{wait:.0f}"), icon=":material/hourglass_top:")
    return False
