"""Classroom mode (issue 13) in AppTest runs of the real app on the small real cache: what students and the teacher
see, the teacher's neuron reaching a student's page, and the class board ranking what students wrote."""

from __future__ import annotations

import html
import re

import pytest

from core import classroom
from core.types import NeuronId
from tests.app.test_pages import no_errors, opened, texts

PASSCODE = "QRST-2345"


@pytest.fixture
def class_mode(app_cache, monkeypatch):
    """Classroom mode as `make classroom` sets it (a join link), the passcode in the environment."""
    monkeypatch.setenv(classroom.CLASS_URL_ENV, "http://192.0.2.10:8501")
    monkeypatch.setenv(classroom.PASSCODE_ENV, PASSCODE)
    monkeypatch.setenv(classroom.STUDENT_LIVE_ENV, "100")
    return app_cache


def sign_in(at, passcode: str = PASSCODE):
    at.text_input(key="class_passcode").input(passcode)
    return at.button(key="FormSubmitter:class_sign_in-Sign in").click().run()


def keys(at) -> set[str]:
    """The keys of the run's widgets."""
    return {w.key for w in [*at.text_input, *at.selectbox, *at.radio, *at.button, *at.checkbox, *at.number_input,
                            *at.toggle] if w.key}


def test_students_see_no_teacher_controls_until_the_passcode_is_given(app, class_mode):
    at = app(layer=0, neuron=2).run()
    at.switch_page("pages/insights.py").run()
    no_errors(at)
    student = keys(at)
    assert {"class_follow", "class_passcode"} <= student
    assert not student & {"cache_select", "cache_other", "llm_backend", "generate", "class_share"}
    assert "the teacher generates" in texts(at)
    assert str(class_mode) not in texts(at)  # the cache's path is never shown to students

    sign_in(at, "WRONG-0000")
    assert "not the teacher's passcode" in texts(at) and "class_share" not in keys(at)
    sign_in(at)
    no_errors(at)
    teacher = keys(at)
    assert {"cache_select", "llm_backend", "generate", "class_share", "class_sign_out"} <= teacher
    assert "class_follow" not in teacher and "class_passcode" not in teacher
    at.button(key="class_sign_out").click().run()
    assert "cache_select" not in keys(at)


def test_the_home_page_shows_the_join_link_as_a_qr_code(app, class_mode):
    at = app().run()
    no_errors(at)
    assert "http://192.0.2.10:8501" in [c.value for c in at.code]
    (qr,) = at.image
    assert qr.captions == ["Scan to join"] and qr.value[0].endswith(".png")
    assert not qr.value[0].startswith(("http:", "https:", "//"))  # served by the app itself


def test_a_student_page_offers_the_teachers_neuron_and_follows_it(app, class_mode):
    teacher = app(layer=0, neuron=5).run()
    sign_in(teacher)
    teacher.switch_page("pages/insights.py").run()
    teacher.button(key="class_share").click().run()
    no_errors(teacher)
    assert opened(class_mode).notes.class_share().neuron == NeuronId(0, 5)

    student = app(layer=3, neuron=1).run()
    student.switch_page("pages/scoring.py").run()
    no_errors(student)
    assert any("Your teacher is at 0:5 (Insights): go there" in i.value for i in student.info)
    student.button(key="class_go").click().run()
    no_errors(student)
    assert student.title[0].value.startswith("Neuron 0:5 — insights")

    # wandering off is allowed; the next share brings a following student along
    student.checkbox(key="class_follow").check().run()
    student.number_input(key="neuron").set_value(7).run()
    assert student.title[0].value.startswith("Neuron 0:7")
    assert any("Your teacher is at 0:5" in i.value for i in student.info)
    teacher.number_input(key="neuron").set_value(6).run()
    teacher.button(key="class_share").click().run()
    student.run()
    no_errors(student)
    assert student.title[0].value.startswith("Neuron 0:6 — insights")
    assert not any("Your teacher is at" in i.value for i in student.info)


def board_rows(at) -> list[list[str]]:
    """The class board's rows as text cells (the board is an escaped HTML table)."""
    table = next(h.value for h in at.get("html") if "<table" in str(h.value))
    rows = re.findall(r"<tr>(.*?)</tr>", table)[1:]
    return [[html.unescape(re.sub(r"<[^>]+>", "", cell)) for cell in re.findall(r"<td[^>]*>(.*?)</td>", row)]
            for row in rows]


def test_the_class_board_ranks_what_students_wrote_by_live_score(app, class_mode):
    writings = [("Ada", "the tokens ' the' and ' a'"), ("Bob", "zebras on the moon"),
                ("Cem", "commas and full stops")]
    for author, text in writings:
        student = app(layer=0, neuron=3).run()
        student.switch_page("pages/classroom.py").run()
        student.text_input(key="board_text").input(text)
        student.text_input(key="board_author").input(author)
        student.button(key="FormSubmitter:board_form-Put it on the board").click().run()
        no_errors(student)
        assert "On the board with a score of" in student.success[0].value

    notes = opened(class_mode).notes
    written = {s.text: s for s in notes.suggestions(NeuronId(0, 3))}
    assert set(written) == {text for _, text in writings} and all(s.score for s in written.values())
    expected = sorted(written.values(), key=lambda s: (s.score.score_all is None, -(s.score.score_all or 0),
                                                       s.suggestion_id))
    rows = board_rows(student)
    students_rows = [row for row in rows if row[0] != "atlas"]
    assert [row[1] for row in students_rows] == [s.text for s in expected]
    assert [row[0] for row in students_rows] == ["1", "2", "3"]
    assert rows[-1][0] == "atlas"  # the atlas's own explanation, for comparison
    assert all(row[4].endswith("*") for row in students_rows)  # written with the scoring excerpts in view


def test_the_teacher_pins_and_clears_the_board_and_nothing_is_lost(app, class_mode):
    notes = opened(class_mode).notes
    first = notes.add_suggestion(NeuronId(0, 4), "first guess", "Ada")
    notes.add_suggestion(NeuronId(0, 4), "second guess", "Bob")
    teacher = app(layer=0, neuron=4).run()
    sign_in(teacher)
    teacher.switch_page("pages/classroom.py").run()
    teacher.selectbox(key="board_pin_0:4").set_value(first.suggestion_id).run()
    teacher.button(key="board_pin_go_0:4").click().run()
    no_errors(teacher)
    assert board_rows(teacher)[0][:2] == ["📌 1", "first guess"]
    teacher.checkbox(key="board_clear_sure_0:4").check().run()
    teacher.button(key="board_clear_0:4").click().run()
    no_errors(teacher)
    assert all(row[0] == "atlas" for row in board_rows(teacher))
    assert "2 earlier explanation(s) cleared" in texts(teacher)
    assert len(notes.suggestions(NeuronId(0, 4))) == 2  # hidden, not deleted
    teacher.toggle(key="board_open_0:4").set_value(False).run()
    student = app(layer=0, neuron=4).run()
    student.switch_page("pages/classroom.py").run()
    assert "closed the board" in texts(student) and "board_text" not in keys(student)


def test_a_students_live_work_is_rate_limited(app, class_mode, monkeypatch):
    monkeypatch.setenv(classroom.STUDENT_LIVE_ENV, "1")
    student = app(layer=0, neuron=2).run()
    student.switch_page("pages/scoring.py").run()
    for text in ("first try", "second try"):
        student.text_area(key="suggest_text").input(text)
        student.button(key="FormSubmitter:suggest_form-Score it").click().run()
    assert any("each student may start 1 live jobs a minute" in w.value for w in student.warning)
    assert [s.text for s in opened(class_mode).notes.suggestions(NeuronId(0, 2))] == ["first try"]
