"""The dashboard's languages (dashboard/i18n.py): the catalogs are complete and current, every user-visible string
literal in pages/, dashboard/ and app.py goes through `_`, and numbers follow each language's separators.

Cheap: no Streamlit run (tests/app/test_languages.py renders the pages in both languages)."""

from __future__ import annotations

import ast
import gettext
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.pofile import read_po

from dashboard import i18n

ROOT = Path(__file__).resolve().parents[1]
SOURCES = [ROOT / "app.py", *sorted((ROOT / "dashboard").rglob("*.py")), *sorted((ROOT / "pages").rglob("*.py"))]
KEYWORDS = {"_": None, "N_": None}
"""The marking functions, as `make messages` passes them to pybabel extract (-k N_; `_` is a default keyword)."""

TRANSLATED = [code for code in i18n.LANGUAGES if code != i18n.DEFAULT_LANGUAGE]
FIX = "run `make messages`, then translate what is new in the .po (README, Languages)"


def extracted() -> set[str]:
    """The messages pybabel extracts from the code with the project's babel.cfg (what `make messages` writes)."""
    with open(ROOT / "babel.cfg", encoding="utf-8") as cfg:
        method_map, options_map = parse_mapping_cfg(cfg)
    found = extract_from_dir(str(ROOT), method_map, options_map, keywords=KEYWORDS)
    return {message if isinstance(message, str) else message[0] for _file, _line, message, _comments, _ctx in found}


def po_messages(path: Path) -> dict[str, tuple[str, bool]]:
    """msgid -> (msgstr, fuzzy) of a .po or .pot file, without the header and obsolete entries."""
    with open(path, "rb") as handle:
        catalog = read_po(handle)
    return {str(m.id): (str(m.string), m.fuzzy) for m in catalog if m.id}


def test_the_template_holds_exactly_the_messages_of_the_code():
    code = extracted()
    template = set(po_messages(i18n.LOCALES_DIR / "messages.pot"))
    assert not code - template, f"messages missing from messages.pot ({FIX}): {sorted(code - template)}"
    assert not template - code, f"stale messages in messages.pot ({FIX}): {sorted(template - code)}"


@pytest.mark.parametrize("language", TRANSLATED)
def test_every_message_is_translated_and_no_translation_is_stale(language):
    code = extracted()
    po = po_messages(i18n.LOCALES_DIR / language / "LC_MESSAGES" / "messages.po")
    assert not code - set(po), f"{language}: messages without a translation ({FIX}): {sorted(code - set(po))}"
    assert not set(po) - code, f"{language}: stale translations ({FIX}): {sorted(set(po) - code)}"
    untranslated = sorted(msgid for msgid, (text, fuzzy) in po.items() if not text.strip() or fuzzy)
    assert not untranslated, f"{language}: empty or fuzzy translations: {untranslated}"
    for msgid, (text, _fuzzy) in po.items():
        # a translation may reorder the named placeholders, never drop, add or rename one
        assert i18n.placeholders(text) == i18n.placeholders(msgid), (language, msgid, text)


@pytest.mark.parametrize("language", TRANSLATED)
def test_the_compiled_catalog_is_the_po_file(language):
    """The committed .mo is what `pybabel compile` makes of the .po (the dashboard reads the .mo)."""
    folder = i18n.LOCALES_DIR / language / "LC_MESSAGES"
    po = {msgid: text for msgid, (text, fuzzy) in po_messages(folder / "messages.po").items() if not fuzzy}
    with open(folder / "messages.mo", "rb") as handle:
        compiled = gettext.GNUTranslations(handle)
    compiled_messages = {key: value for key, value in compiled._catalog.items() if key}  # type: ignore[attr-defined]
    assert compiled_messages == po, f"{folder / 'messages.mo'} is behind its .po: {FIX}"


@pytest.mark.parametrize("language", TRANSLATED)
def test_turkish_characters_survive_the_catalog(language):
    text = i18n.translate("Insights", language)
    assert text != "Insights" and text == text.encode("utf-8").decode("utf-8")
    if language == "tr":
        assert text == "İçgörüler"  # dotted capital İ and ç, read from the compiled catalog


# --- every user-visible literal is marked -----------------------------------------------------------------------

VISIBLE_CALLS = {
    "title", "header", "subheader", "markdown", "caption", "text", "info", "warning", "error", "success", "toast",
    "exception", "button", "form_submit_button", "download_button", "link_button", "page_link", "checkbox", "toggle",
    "radio", "selectbox", "multiselect", "select_slider", "slider", "number_input", "text_input", "text_area",
    "date_input", "time_input", "file_uploader", "color_picker", "pills", "segmented_control", "metric", "expander",
    "popover", "tabs", "spinner", "progress", "status", "chat_input", "form", "empty",
    # the dashboard's own drawing helpers, by the position of their visible arguments below
    "not_computed", "explanation_card", "neuron_button", "table_html", "steps_html", "HeatmapRow", "heatmap_html",
    "card_html", "Page",
}
"""Calls whose arguments a person reads (Streamlit elements by method name, whatever the receiver: st, st.sidebar,
a column; and the dashboard's helpers)."""

VISIBLE_POSITIONS: dict[str, tuple[int, ...]] = {
    "metric": (0,), "explanation_card": (1, 2), "neuron_button": (1,), "page_link": (1,), "HeatmapRow": (2,),
    "card_html": (1, 2), "Page": (), "form": (), "empty": (),
}
"""Positional arguments read by a person, where it is not the first one (the rest are data, keys or numbers)."""

VISIBLE_KEYWORDS = {"label", "help", "placeholder", "caption", "captions", "title", "body", "text", "format_func",
                    "source", "badge", "value_label"}
"""Keyword arguments read by a person, in any call (altair's title= too)."""

NOT_A_READER = {"log", "logger", "logging", "warnings", "sys", "os", "path", "handle", "file", "out", "parts"}
"""Receivers whose .info/.error/.write/... are not shown to a person."""

ICON = re.compile(r":material/[a-z_]+:|:[a-z_]+:")
ALLOWED = {"Language · Dil", "Neuron Atlas"}
"""Visible literals that are the same in every language on purpose: the language switch names both, the name."""
NOT_WORDS = re.compile(r"\S*[/.]\S*")
"""One word with a slash or a dot: a path, a URL or a file name (an example in a placeholder), not prose."""


def _call_name(node: ast.Call) -> tuple[str, str | None]:
    """(called name, receiver's root name) of a call: `st.sidebar.info` -> ("info", "st")."""
    func = node.func
    if isinstance(func, ast.Name):
        return func.id, None
    if isinstance(func, ast.Attribute):
        root: ast.AST = func.value
        while isinstance(root, (ast.Attribute, ast.Subscript, ast.Call)):
            root = root.value if not isinstance(root, ast.Call) else root.func
        return func.attr, root.id if isinstance(root, ast.Name) else None
    return "", None


def _is_marker(node: ast.AST) -> bool:
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in KEYWORDS


def _has_words(text: str) -> bool:
    text = ICON.sub("", text).strip()
    return text not in ALLOWED and not NOT_WORDS.fullmatch(text) and re.search(r"[A-Za-z]{2,}", text) is not None


def unmarked_literals(node: ast.AST) -> Iterator[str]:
    """String literals with words in an argument expression that do not go through `_` (f-strings by their fixed
    parts: f"Neuron {n}" is found, f"**{_(title)}**" is not)."""
    if _is_marker(node):
        return
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        if _has_words(node.value):
            yield node.value
    elif isinstance(node, ast.JoinedStr):
        fixed = "".join(part.value for part in node.values if isinstance(part, ast.Constant))
        if _has_words(fixed):
            yield ast.unparse(node)
    elif isinstance(node, ast.BinOp):
        yield from unmarked_literals(node.left)
        yield from unmarked_literals(node.right)
    elif isinstance(node, ast.IfExp):
        yield from unmarked_literals(node.body)
        yield from unmarked_literals(node.orelse)
    elif isinstance(node, ast.BoolOp):
        for value in node.values:
            yield from unmarked_literals(value)
    elif isinstance(node, (ast.List, ast.Tuple, ast.Set)):
        for element in node.elts:
            yield from unmarked_literals(element)
    elif isinstance(node, ast.Dict):
        for value in node.values:
            yield from unmarked_literals(value)
    elif isinstance(node, (ast.Attribute, ast.Subscript)):  # {"a": "Text"}.__getitem__, "...".format, f"..."[:60]
        yield from unmarked_literals(node.value)
    elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):  # "Text {x}".format(x=1)
        yield from unmarked_literals(node.func.value)
    elif isinstance(node, ast.Lambda):
        yield from unmarked_literals(node.body)


def unmarked_in(path: Path) -> list[str]:
    """"file:line: literal" for every visible literal in the file that is not marked."""
    name_of = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.Call):
            continue
        name, receiver = _call_name(node)
        if name == "add_argument":
            continue  # the command line's help (dashboard/serve.py) stays English
        arguments: list[ast.AST] = [k.value for k in node.keywords if k.arg in VISIBLE_KEYWORDS]
        if name in VISIBLE_CALLS and receiver not in NOT_A_READER:
            positions = VISIBLE_POSITIONS.get(name, (0,))
            arguments += [node.args[i] for i in positions if i < len(node.args)]
        elif name == "write" and receiver == "st":
            arguments += node.args
        for argument in arguments:
            found += [f"{name_of}:{node.lineno}: {text}" for text in unmarked_literals(argument)]
    return found


def test_every_visible_string_literal_goes_through_the_catalog():
    """Strings added to pages/ or dashboard/ without `_` are found here (wrap them, then `make messages`)."""
    found = [line for path in SOURCES for line in unmarked_in(path)]
    assert not found, "user-visible text not marked with _() from dashboard.i18n:\n" + "\n".join(found)


def test_the_check_finds_unmarked_text(tmp_path):
    """The scan above sees what it is meant to see (and not data, keys, icons or marked text)."""
    sample = tmp_path / "page.py"
    sample.write_text(
        'st.title(f"Neuron {n} — insights")\n'
        'st.sidebar.button("Go", key="go", icon=":material/search:")\n'
        'cols[0].metric("Tokens", f"{n:,}", help="all of them")\n'
        'st.radio(_("View"), ["a"], format_func={"a": "side by side"}.__getitem__)\n'
        'alt.X("real:Q", title="real activation")\n'
        'st.markdown(f"**{_(TITLES[kind])}**")\n'
        'st.caption(_("Fine {x}", x=1))\n'
        'log.info("not shown to a person")\n'
        'st.button(f"{row.neuron} · {score}", key="k")\n', encoding="utf-8")
    found = [line.split(": ", 1)[1] for line in unmarked_in(sample)]
    assert sorted(found) == sorted(["f'Neuron {n} — insights'", "Go", "Tokens", "all of them", "side by side",
                                    "real activation"])


def test_every_marked_literal_reaches_the_catalog():
    """`_("...")` inside an f-string's braces is invisible to pybabel on Python 3.11, and `_(f"...")` or
    `_("a" + b)` cannot be looked up: every marked message must be a plain literal the extractor sees."""
    code = extracted()
    problems = []
    for path in SOURCES:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not _is_marker(node):
                continue
            assert isinstance(node, ast.Call)
            where = f"{path.relative_to(ROOT)}:{node.lineno}"
            if not node.args:
                problems.append(f"{where}: no message")
            elif isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
                if node.args[0].value not in code:
                    problems.append(f"{where}: not extracted (inside an f-string?): {node.args[0].value!r}")
            elif isinstance(node.args[0], (ast.JoinedStr, ast.BinOp)):
                problems.append(f"{where}: a message built at run time: {ast.unparse(node.args[0])}")
    assert not problems, "\n".join(problems)


LOOKUPS = {"_", "N_", "number", "score", "score_text", "named", "language"}
"""Functions that read the session's language when called."""


def test_no_format_func_looks_the_language_up_when_called():
    """Option labels are made in the run: AppTest calls a widget's format_func afterwards, outside the session
    (English there), so a lookup inside format_func shows one language and finds the other; make a dict first."""
    problems = []
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            for keyword in node.keywords if isinstance(node, ast.Call) else []:
                if keyword.arg != "format_func":
                    continue
                value = keyword.value
                body = value.body if isinstance(value, ast.Lambda) else value
                names = {n.id for n in ast.walk(body) if isinstance(n, ast.Name)} if isinstance(value, ast.Lambda) \
                    else ({value.id} if isinstance(value, ast.Name) else set())
                if names & LOOKUPS:
                    problems.append(f"{path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(value)[:80]}")
    assert not problems, "format_func that looks up the language when called:\n" + "\n".join(problems)


def test_no_page_shows_a_bare_string():
    """Streamlit's magic writes a string standing alone in a page script (a docstring under a constant, say) onto the
    page, untranslated: only the module's docstring may stand alone."""
    problems = []
    for path in [ROOT / "app.py", *sorted((ROOT / "pages").rglob("*.py"))]:
        body = ast.parse(path.read_text(encoding="utf-8")).body
        for statement in body[1:]:
            if isinstance(statement, ast.Expr) and isinstance(statement.value, (ast.Constant, ast.JoinedStr)):
                problems.append(f"{path.relative_to(ROOT)}:{statement.lineno}")
    assert not problems, f"strings Streamlit would show as they are (make them comments): {problems}"


def test_no_file_that_uses_the_marker_rebinds_it():
    """`a, _ = ...` in a page would turn every later `_(...)` of that run into a call of something else."""
    problems = []
    for path in SOURCES:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            targets = [node.id] if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store) else []
            if isinstance(node, (ast.For, ast.comprehension)) and isinstance(node.target, ast.Name):
                targets.append(node.target.id)
            if "_" in targets:
                problems.append(f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', '?')}")
    assert not problems, f"`_` assigned (use another throwaway name): {problems}"


# --- languages and numbers --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("locale", "expected"), [
    ("tr-TR", "tr"), ("tr", "tr"), ("TR_tr", "tr"), ("en-GB", "en"), ("de-DE", "en"), (None, "en"), ("", "en"),
])
def test_the_browser_language_picks_the_nearest_dashboard_language(locale, expected):
    assert i18n.browser_language(locale) == expected


def test_outside_a_streamlit_run_everything_is_english():
    assert i18n.language() == "en"
    assert i18n._("Insights") == "Insights"
    assert i18n._("Neuron {neuron} — insights", neuron="3:42") == "Neuron 3:42 — insights"
    assert i18n.score(None) == "undefined" and i18n.score(0.4234) == "0.42"


def test_named_placeholders_let_a_translation_reorder_them():
    assert i18n.translate("Which neurons of layer {layer} fire most on one token", "tr", layer=3).startswith("3.")
    assert i18n.placeholders("{a} and {b:.2f}, not {{c}}") == {"a", "b"}


@pytest.mark.parametrize(("value", "spec", "english", "turkish"), [
    (4096, ",", "4,096", "4.096"),
    (46080, ",", "46,080", "46.080"),
    (0.4234, ".2f", "0.42", "0,42"),
    (-0.5, "+.3f", "-0.500", "-0,500"),
    (1234.5, ",.1f", "1,234.5", "1.234,5"),
    (0.123, ".1%", "12.3%", "%12,3"),
    (0.0000123, ".3g", "1.23e-05", "1,23e-05"),
    (3, "", "3", "3"),
])
def test_numbers_shown_as_text_use_the_language_separators(value, spec, english, turkish):
    assert i18n.number_in(value, spec, "en") == english
    assert i18n.number_in(value, spec, "tr") == turkish


def test_scores_keep_their_digits_in_every_language():
    """Scores stay comparable across languages: the same two decimals, only the separator differs."""
    for value in (0.0, 0.05, 0.4234, -0.31, 1.0):
        english, turkish = i18n.number_in(value, ".2f", "en"), i18n.number_in(value, ".2f", "tr")
        assert turkish == english.replace(".", ",")
