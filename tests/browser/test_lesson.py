"""Classroom mode in a real browser: two browser contexts (two people), a teacher and a student, on one
`streamlit run app.py` in classroom mode. The teacher signs in and shows a neuron; the student's page offers it
and goes there; an explanation the student puts on the board reaches the teacher's board."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from harness import Server, run_app, wait_ready

from core import classroom
from core.paths import copy_cache

pytestmark = pytest.mark.browser

PASSCODE = "TEAC-H234"


@pytest.fixture(scope="module")
def class_server(dashboard_cache, atlas_home, tmp_path_factory, artifacts) -> Iterator[Server]:
    """The dashboard in classroom mode on the prepared small cache (its own notes file)."""
    link = tmp_path_factory.mktemp("class-cache") / "class.duckdb"
    copy_cache(dashboard_cache, link, link=True)
    env = {classroom.CLASS_URL_ENV: "http://192.0.2.10:8501", classroom.PASSCODE_ENV: PASSCODE}
    with run_app(link, atlas_home, artifacts / "server-classroom.log", env=env) as server:
        yield server


def person(browser):
    """A browser context of its own: a person on their own laptop."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    return context, context.new_page()


def heading(page) -> str:
    return page.locator("h1").first.inner_text().strip()


def sign_in(page) -> None:
    sidebar = page.locator("[data-testid='stSidebar']")
    sidebar.get_by_text("Teacher sign-in").click()
    sidebar.get_by_label("Passcode").fill(PASSCODE)
    sidebar.get_by_role("button", name="Sign in").click()
    page.get_by_role("button", name="Show this neuron to the class").wait_for(timeout=60_000)
    wait_ready(page)


def test_the_teacher_shows_a_neuron_and_the_students_page_offers_it(class_server, browser, artifacts):
    teacher_context, teacher = person(browser)
    student_context, student = person(browser)
    try:
        student.goto(f"{class_server.url}/related?layer=1&neuron=7")
        wait_ready(student)
        assert heading(student) == "Neuron 1:7 — related neurons"
        sidebar = student.locator("[data-testid='stSidebar']").inner_text()
        assert "Follow the teacher" in sidebar and "Cache" not in sidebar and "Live work" not in sidebar
        assert student.locator("img[alt], [data-testid='stImage']").count() == 0  # the QR code is on the home page

        teacher.goto(f"{class_server.url}/insights?layer=0&neuron=3")
        wait_ready(teacher)
        sign_in(teacher)
        assert "Live work" in teacher.locator("[data-testid='stSidebar']").inner_text()  # the teacher's settings
        teacher.get_by_role("button", name="Show this neuron to the class").click()
        wait_ready(teacher)

        # the student's page looks every few seconds (a fragment) and offers the teacher's neuron
        offer = student.get_by_text("Your teacher is at 0:3 (Insights): go there")
        offer.wait_for(timeout=30_000)
        student.screenshot(path=str(artifacts / "classroom-student-offer.png"))
        student.get_by_role("button", name="Go there").click()
        student.wait_for_url(re.compile(r"/insights\?.*neuron=3"), timeout=60_000)
        wait_ready(student)
        assert heading(student) == "Neuron 0:3 — insights"
        assert student.get_by_text("Your teacher is at").count() == 0

        # explain it together: the student's explanation reaches the teacher's board
        student.goto(f"{class_server.url}/classroom?layer=0&neuron=3")
        wait_ready(student)
        student.get_by_label("Your explanation (one short phrase)").fill("commas and full stops")
        student.get_by_label("Your name or nickname").fill("Ada")
        student.get_by_role("button", name="Put it on the board").click()
        student.get_by_text("On the board with a score of").wait_for(timeout=60_000)
        # through the sidebar, not a new link: a link opened anew is a new session, signed out
        teacher.locator("[data-testid='stSidebarNav'] a", has_text="Explain it together").click()
        teacher.wait_for_url(re.compile(r"/classroom\?.*neuron=3"), timeout=60_000)
        wait_ready(teacher)
        board = teacher.locator("table.na-table").first
        board.wait_for(timeout=30_000)
        assert "commas and full stops" in board.inner_text() and "Ada" in board.inner_text()
        assert teacher.get_by_text("Teacher: the board").count() == 1  # still signed in: the board's controls
        teacher.get_by_text("Teacher: the board").scroll_into_view_if_needed()
        teacher.screenshot(path=str(artifacts / "classroom-teacher-board.png"))  # README's workshop screenshots
    finally:
        teacher_context.close()
        student_context.close()


def test_the_home_page_shows_the_join_link_and_its_qr_code(class_server, page):
    page.goto(class_server.url)
    wait_ready(page)
    assert page.get_by_text("http://192.0.2.10:8501").count() >= 1
    image = page.locator("[data-testid='stImage'] img").first
    image.wait_for(timeout=30_000)
    source = image.get_attribute("src") or ""
    assert source.startswith(("/media/", f"{class_server.url}/media/")) and source.endswith(".png")
    assert page.evaluate("(img) => img.naturalWidth", image.element_handle()) > 50  # it loaded from the app
