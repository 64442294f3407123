"""A class in the dashboard (issue 13), without Streamlit: who the teacher is, where the class is asked to look, the
class board of explanations, and how much live work a student may start.

What the class shares lives in the notes file (core.store.NotesStore: `share`, `set_board`, suggestions and
ratings), so it is the same for every session of the server and survives a restart. The dashboard polls
`NotesStore.class_version`, an int the notes' only writer counts up, and reads the notes again only when it moved.

Settings (environment variables, set by `make classroom`, i.e. `python -m dashboard.serve`):
- NEURON_ATLAS_CLASS_URL: the link students open; set, it turns classroom mode on.
- NEURON_ATLAS_TEACHER_PASSCODE: the teacher's passcode (else `teacher_passcode` in .streamlit/secrets.toml).
- NEURON_ATLAS_STUDENT_LIVE_PER_MINUTE: live jobs (scoring, generating, running the model) one student session may
  start per minute (default STUDENT_LIVE_PER_MINUTE).
"""

from __future__ import annotations

import hmac
import io
import os
import secrets
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass
from enum import StrEnum

from core.store import CacheReader, NotesQueries
from core.types import BoardSettings, ClassShare, ExplanationRecord, ExplanationStatus, NeuronId, Suggestion

CLASS_URL_ENV = "NEURON_ATLAS_CLASS_URL"
"""The link students open; classroom mode is on when it is set."""
PASSCODE_ENV = "NEURON_ATLAS_TEACHER_PASSCODE"
"""The teacher's passcode (`make classroom` generates one when .streamlit/secrets.toml has none)."""
PASSCODE_SECRET = "teacher_passcode"
"""The key of the teacher's passcode in .streamlit/secrets.toml."""
STUDENT_LIVE_ENV = "NEURON_ATLAS_STUDENT_LIVE_PER_MINUTE"
STUDENT_LIVE_PER_MINUTE = 6
"""Live jobs one student session may start per minute unless $NEURON_ATLAS_STUDENT_LIVE_PER_MINUTE says otherwise:
one baseline scoring takes well under a second, so six a minute is plenty for a person and keeps thirty of them
from filling the one live queue."""
PASSCODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
"""Letters and digits that cannot be misread for each other on a projector (no I/1, O/0)."""
PASSCODE_GROUPS = 2
PASSCODE_GROUP_LENGTH = 4
"""A generated passcode is two groups of four (40 bits): e.g. 7KQM-P3XD."""
MAX_EXPLANATION_CHARS = 100
"""An explanation is one phrase a person can read aloud (the team's rule for every stored explanation)."""
MAX_NAME_CHARS = 40


# --- who is who ----------------------------------------------------------------------------------------------


def class_url() -> str | None:
    """The link students open, or None outside classroom mode."""
    return os.environ.get(CLASS_URL_ENV, "").strip() or None


def new_passcode() -> str:
    """A fresh passcode for the teacher, easy to type and to read off a terminal."""
    groups = ("".join(secrets.choice(PASSCODE_ALPHABET) for _ in range(PASSCODE_GROUP_LENGTH))
              for _ in range(PASSCODE_GROUPS))
    return "-".join(groups)


def passcode_matches(typed: str, expected: str | None) -> bool:
    """Whether `typed` is the passcode (case, spaces and dashes aside; in constant time). No passcode: nobody."""
    if not expected:
        return False

    def canonical(text: str) -> bytes:
        return "".join(text.split()).replace("-", "").upper().encode()

    return hmac.compare_digest(canonical(typed), canonical(expected))


def lan_address() -> str | None:
    """This machine's address on the local network (the interface a packet to a private address would leave by),
    or None when it has none. Sends nothing: connecting a UDP socket only chooses a route."""
    for probe in ("10.255.255.255", "192.168.255.255", "172.31.255.255"):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            try:
                udp.connect((probe, 1))
            except OSError:
                continue
            address = str(udp.getsockname()[0])
            if not address.startswith("127.") and address != "0.0.0.0":
                return address
    return None


def qr_png(text: str, scale: int = 8) -> bytes:
    """A QR code of `text` as PNG bytes (segno: made here, nothing fetched)."""
    import segno

    out = io.BytesIO()
    segno.make(text, error="m").save(out, kind="png", scale=scale, border=2)
    return out.getvalue()


# --- following the teacher ---------------------------------------------------------------------------------------


class Follow(StrEnum):
    """What a student's page does about the teacher's latest share."""

    NOTHING = "nothing"
    """No share yet, or the student is already there."""
    OFFER = "offer"
    """Show "your teacher is at ...: go there"."""
    MOVE = "move"
    """Go there now (the student ticked "follow" and this share is new to them)."""


def follow_action(share: ClassShare | None, here: NeuronId, page: str, *, follow: bool, followed: int) -> Follow:
    """What to do on a student's page at `here` on `page` about `share`. `followed`: the id of the last share this
    student went to (0: none). A share is followed once, so a student who wanders off afterwards is offered the
    way back, not dragged."""
    if share is None or (share.neuron == here and share.page == page):
        return Follow.NOTHING
    if follow and share.share_id > followed:
        return Follow.MOVE
    return Follow.OFFER


# --- the class board -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Votes:
    """How the class rated one explanation."""

    right: int = 0
    partly: int = 0
    wrong: int = 0

    @property
    def total(self) -> int:
        return self.right + self.partly + self.wrong


@dataclass(frozen=True)
class BoardEntry:
    """One explanation a student put on the board, with its live score and the class's ratings."""

    suggestion: Suggestion
    rank: int
    """1 for the first row (the pinned one when there is one), then by live score."""
    pinned: bool
    votes: Votes

    @property
    def ref(self) -> str:
        """How a rating refers to it (HumanRating.explanation_ref)."""
        return f"suggestion:{self.suggestion.suggestion_id}"

    @property
    def score(self) -> float | None:
        return self.suggestion.score.score_all if self.suggestion.score else None


@dataclass(frozen=True)
class Board:
    """A neuron's class board: the students' explanations ranked, and the atlas's own for comparison."""

    neuron: NeuronId
    settings: BoardSettings
    entries: tuple[BoardEntry, ...]
    hidden: int
    """Explanations cleared from the board by the teacher (kept in the notes)."""
    reference: ExplanationRecord | None
    """The neuron's best explanation from the pipeline (None when it has none)."""
    reference_votes: Votes

    @property
    def reference_ref(self) -> str:
        return f"explanation:{self.reference.explanation_id}" if self.reference else ""


def rank_entries(suggestions: list[Suggestion], settings: BoardSettings,
                 votes: dict[str, tuple[int, int, int]]) -> tuple[BoardEntry, ...]:
    """The board's rows: the pinned suggestion first, then the best live score first (unscored last); a tie goes
    to whoever was first."""
    def order(s: Suggestion) -> tuple[bool, bool, float, int]:
        score = s.score.score_all if s.score and s.score.score_all is not None else None
        return (s.suggestion_id != settings.pinned_suggestion, score is None, -(score or 0.0), s.suggestion_id)

    ranked = sorted(suggestions, key=order)
    return tuple(BoardEntry(s, rank, s.suggestion_id == settings.pinned_suggestion,
                            Votes(*votes.get(f"suggestion:{s.suggestion_id}", (0, 0, 0))))
                 for rank, s in enumerate(ranked, start=1))


def board(reader: CacheReader, notes: NotesQueries, neuron: NeuronId) -> Board:
    """The class board of `neuron` (a view of the notes: what people wrote, less what the teacher cleared)."""
    settings = notes.board_settings(neuron)
    written = [s for s in notes.suggestions(neuron) if s.source == "person"]
    shown = [s for s in written if s.suggestion_id > settings.cleared_suggestions]
    votes = notes.rating_counts(neuron, after=settings.cleared_ratings)
    reference = next((e for e in reader.explanations(neuron) if e.status == ExplanationStatus.OK and e.text), None)
    reference_votes = Votes(*votes.get(f"explanation:{reference.explanation_id}", (0, 0, 0))) if reference else Votes()
    return Board(neuron, settings, rank_entries(shown, settings, votes), len(written) - len(shown), reference,
                 reference_votes)


def check_explanation(text: str) -> str:
    """A student's explanation, trimmed; ValueError with what to change when it cannot go on the board."""
    text = " ".join(text.split())
    if not text:
        raise ValueError("Type an explanation first.")
    if len(text) > MAX_EXPLANATION_CHARS:
        raise ValueError(f"Keep it to one phrase of at most {MAX_EXPLANATION_CHARS} characters.")
    return text


# --- live work per student ---------------------------------------------------------------------------------------


class RateLimit:
    """At most `per_minute` jobs per key in any 60 seconds (a sliding window), shared by every thread."""

    def __init__(self, per_minute: int, window_s: float = 60.0) -> None:
        self.per_minute, self.window_s = max(int(per_minute), 1), window_s
        self._started: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def take(self, key: str, now: float | None = None) -> float:
        """Count a job for `key` and return 0.0, or return the seconds until one is allowed (nothing counted)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            started = self._started.setdefault(key, deque())
            while started and now - started[0] >= self.window_s:
                started.popleft()
            if len(started) >= self.per_minute:
                return self.window_s - (now - started[0])
            started.append(now)
            if len(self._started) > 10_000:  # forget idle keys (sessions that left)
                self._started = {k: v for k, v in self._started.items() if v and now - v[-1] < self.window_s}
            return 0.0


def student_live_per_minute() -> int:
    """$NEURON_ATLAS_STUDENT_LIVE_PER_MINUTE, else STUDENT_LIVE_PER_MINUTE; ValueError when it is not a number."""
    value = os.environ.get(STUDENT_LIVE_ENV, "").strip()
    if not value:
        return STUDENT_LIVE_PER_MINUTE
    try:
        return max(int(value), 1)
    except ValueError:
        raise ValueError(f"{STUDENT_LIVE_ENV}={value!r} is not a whole number of live jobs per minute") from None
