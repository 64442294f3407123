"""SQL as text: every value reaches DuckDB as a bound parameter. Search text with quotes, `%`, `_`, backslashes and SQL
fragments matches as plain text through the store's search, and a scan of core's source finds no value formatted into
SQL text (only identifiers and fixed fragments, each allowed below with the reason it is safe)."""

from __future__ import annotations

import ast
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.store import Store
from core.types import ExplanationStatus, NeuronId

ROOT = Path(__file__).resolve().parents[1]

# --- search text is plain text ---------------------------------------------------------------------------------------

TEXTS = [
    "it's the word \"quoted\" in quotes",
    "100% of the closing brackets",
    "snake_case names in code",
    "a back\\slash and a double \\\\ one",
    "'; DROP TABLE explanations; --",
    "\" OR 1=1 --",
    "50%_off labels",
    "plain words about code",
    "ESCAPE '\\' clauses",
    "100 percent and under score",
    "Robert'); DELETE FROM scores WHERE ('1'='1",
    "Ünïcödé İstanbul şehir",
]
"""Explanation texts, one per neuron of layer 0."""

SEARCHES = [
    "'", '"', "%", "_", "\\", "\\\\", "%_", "'; DROP TABLE explanations; --", "DROP TABLE", "' OR '1'='1",
    "\" OR 1=1 --", "100%", "_case", "%%", "\\s", "--", "*", "words", "'1'='1", "x' OR 'x'='x", ") OR (1=1",
    "ESCAPE", "percent", "şehir",
]
"""What a person might type into the search box, hostile or not."""


def search(store: Store, text: str) -> set[NeuronId]:
    """The store's search (the one place to re-point when the store's API moves)."""
    rows = store.neuron_table(search=text, limit=10_000)
    assert store.count_neurons(search=text) == len(rows)
    return {row.neuron for row in rows}


@pytest.fixture(scope="module")
def searchable(tiny_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    """A real cache whose layer-0 neurons carry TEXTS as their explanations."""
    path = Path(shutil.copy(tiny_cache, tmp_path_factory.mktemp("sql") / "search.duckdb"))
    with Store.open(path, writable=True) as store:
        for index, text in enumerate(TEXTS):
            store.add_explanation(NeuronId(0, index), text=text, explainer="human", model=None, prompt_version=None,
                                  simulator="baseline", status=ExplanationStatus.OK)
        yield store


@pytest.mark.parametrize("text", SEARCHES)
def test_search_text_matches_as_plain_text(searchable: Store, text: str) -> None:
    expected = {NeuronId(0, i) for i, t in enumerate(TEXTS) if text.strip().casefold() in t.casefold()}
    assert search(searchable, text) == expected


def test_hostile_text_is_stored_and_read_back_unchanged(searchable: Store) -> None:
    for index, text in enumerate(TEXTS):
        [record] = searchable.explanations(NeuronId(0, index))
        assert record.text == text
    assert searchable.info().explanations == len(TEXTS)  # nothing was dropped or deleted along the way
    assert len(searchable.neuron_table(limit=10_000)) == searchable.info().neurons_recorded


# --- no value is formatted into SQL text -----------------------------------------------------------------------------

SQL_TEXT = re.compile(
    r"\b(SELECT|INSERT|UPDATE|DELETE|CREATE|DROP|ALTER|ATTACH|DETACH|WHERE|FROM|JOIN|ORDER BY|GROUP BY|VALUES|"
    r"LIMIT|OFFSET|PRAGMA|COPY|CHECKPOINT|QUALIFY|UNION|ILIKE|INSTALL|LOAD|EXPORT|IMPORT)\b"
    r"|\b[a-z_]+\.[a-z_]+\s*(=|<>|!=|<=|>=|<|>)"  # alias.column compared: a WHERE fragment
)
"""Text that is SQL: an upper-case keyword, or an alias.column comparison."""

ALLOWED: dict[tuple[str, str], str] = {
    ("open", "_sql_path(path)"): "ATTACH takes no bound parameters; _sql_path doubles quotes, a path is one literal",
    ("create", "_sql_path(path)"): "ATTACH takes no bound parameters; _sql_path doubles quotes",
    ("attach_notes", "_sql_path(notes)"): "ATTACH takes no bound parameters; _sql_path doubles quotes",
    ("reload_cache", "_sql_path(self.path)"): "ATTACH takes no bound parameters; _sql_path doubles quotes",
    ("open", "mode"): "either '' or ' (READ_ONLY)', chosen by a bool",
    ("ensure_schema", "name"): "a table name, a key of the CACHE_TABLES constant",
    ("ensure_schema", "columns"): "column definitions, a value of the CACHE_TABLES constant",
    ("attach_notes", "name"): "a table name, a key of the NOTES_TABLES constant",
    ("attach_notes", "columns"): "column definitions, a value of the NOTES_TABLES constant",
    ("_insert_arrow", "database"): "a database name; every caller passes a literal",
    ("_insert_arrow", "table_name"): "a table name; every caller passes a literal",
    ("neuron_excerpts", "where"): "built by neuron_excerpt_filter from fixed clauses with ? placeholders",
    ("token_means", "order"): "'DESC' or 'ASC', chosen by a bool",
    ("add_explanation", "table"): "a table name from a literal tuple",
    ("add_explanation", "stale"): "a fixed subquery with ? placeholders",
    ("explanations", "self._EXPLANATION_COLUMNS"): "a class constant (column list)",
    ("explanations", "self._EXPLANATION_FROM"): "a class constant (joined tables)",
    ("explanation", "self._EXPLANATION_COLUMNS"): "a class constant (column list)",
    ("explanation", "self._EXPLANATION_FROM"): "a class constant (joined tables)",
    ("run_explanations", "self._EXPLANATION_COLUMNS"): "a class constant (column list)",
    ("run_explanations", "self._EXPLANATION_FROM"): "a class constant (joined tables)",
    ("best_explanations_sql", "self._EXPLANATION_FROM"): "a class constant (joined tables)",
    ("best_scores", "self.best_explanations_sql()"): "fixed SQL built from class constants",
    ("best_scores", "where"): "'' or a fixed clause with a ? placeholder",
    ("ensure_llm_cache", "database"): "'cache' or 'notes', checked by _check_llm_database",
    ("ensure_llm_cache", "CACHE_TABLES['llm_cache']"): "column definitions, a constant",
    ("llm_cache_get", "database"): "'cache' or 'notes', checked by _check_llm_database",
    ("llm_cache_put", "database"): "'cache' or 'notes', checked by _check_llm_database",
    ("related_layer_rows", "order"): "a fixed clause with a ? placeholder",
    ("start_related", "name"): "a table name from a literal tuple",
    ("insert_related_layer", "name"): "a table name from a literal tuple",
    ("_next_id", "table"): "a table name; every caller passes a literal",
    ("_next_id", "column"): "a column name; every caller passes a literal",
    ("notes_counts", "name"): "a table name, a key of the NOTES_TABLES constant",
    ("neuron_table", "self.best_explanations_sql()"): "fixed SQL built from class constants",
    ("neuron_table", "where"): "built by neuron_table_filter from fixed clauses with ? placeholders",
    ("neuron_table", "NEURON_ORDERS[order]"): "a value of the NEURON_ORDERS constant; `order` is checked to be a key",
    ("neuron_table", "direction"): "'DESC' or 'ASC', chosen by a bool",
    ("count_neurons", "self.best_explanations_sql()"): "fixed SQL built from class constants",
    ("count_neurons", "where"): "built by neuron_table_filter from fixed clauses with ? placeholders",
    ("neuron_rows", "self.best_explanations_sql()"): "fixed SQL built from class constants",
    ("scores_by_layer", "self.best_explanations_sql()"): "fixed SQL built from class constants",
}
"""(function, expression) -> why formatting it into SQL text is safe. Review each new entry: a value (anything a
person, a corpus or a model wrote) must be a bound parameter (?) instead."""


class _SqlText(ast.NodeVisitor):
    """Collects (function, expression, file:line) of everything formatted into SQL text."""

    def __init__(self, path: Path, shown: str) -> None:
        self.path = path
        self.shown = shown
        """The path as messages show it."""
        self.functions: list[str] = []
        self.found: list[tuple[str, str, str]] = []

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self.functions.append(node.name)
        self.generic_visit(node)
        self.functions.pop()

    visit_AsyncFunctionDef = visit_FunctionDef  # type: ignore[assignment]

    def add(self, node: ast.AST, expression: ast.AST) -> None:
        where = f"{self.shown}:{node.lineno}"  # type: ignore[attr-defined]
        self.found.append((self.functions[-1] if self.functions else "<module>", ast.unparse(expression), where))

    def visit_JoinedStr(self, node: ast.JoinedStr) -> None:
        text = "".join(part.value for part in node.values if isinstance(part, ast.Constant))
        if SQL_TEXT.search(text):
            for part in node.values:
                if isinstance(part, ast.FormattedValue):
                    self.add(node, part.value)
        self.generic_visit(node)

    def visit_BinOp(self, node: ast.BinOp) -> None:
        # "SELECT ..." + value, and "SELECT ... %s" % value
        sides = (node.left, node.right)
        sql = [s for s in sides if isinstance(s, ast.Constant) and isinstance(s.value, str)
               and SQL_TEXT.search(s.value)]
        if sql and isinstance(node.op, ast.Add | ast.Mod):
            for side in sides:
                if not isinstance(side, ast.Constant | ast.JoinedStr | ast.BinOp):
                    self.add(node, side)
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        # "SELECT ... {}".format(value)
        func = node.func
        if (isinstance(func, ast.Attribute) and func.attr == "format" and isinstance(func.value, ast.Constant)
                and isinstance(func.value.value, str) and SQL_TEXT.search(func.value.value)):
            for argument in [*node.args, *(k.value for k in node.keywords)]:
                self.add(node, argument)
        self.generic_visit(node)


def sql_formatting(folder: Path) -> list[tuple[str, str, str]]:
    """(function, expression, file:line) of every expression formatted into SQL text in the package at `folder`."""
    found = []
    for path in sorted(folder.rglob("*.py")):
        visitor = _SqlText(path, str(path.relative_to(folder.parent)))
        visitor.visit(ast.parse(path.read_text(), filename=str(path)))
        found += visitor.found
    return found


def test_the_scan_finds_a_value_formatted_into_sql(tmp_path: Path) -> None:
    (tmp_path / "bad.py").write_text(
        "def find(cur, name, text):\n"
        "    cur.execute(f\"SELECT * FROM t WHERE name = '{name}'\")\n"
        "    cur.execute(\"DELETE FROM t WHERE text = '\" + text + \"'\")\n"
        "    cur.execute(\"SELECT * FROM t WHERE x = %s\" % text)\n"
        "    cur.execute(\"UPDATE t SET a = '{}'\".format(text))\n"
        "    return [f\"s.layer = {name}\", f'cannot read {name}: is it a file?']\n"
    )
    found = sql_formatting(tmp_path)
    assert [(where.rsplit(":", 1)[1], expression) for _, expression, where in found] == [
        ("2", "name"), ("3", "text"), ("4", "text"), ("5", "text"), ("6", "name")]  # not the message on line 6


def test_core_formats_no_value_into_sql() -> None:
    found = sql_formatting(ROOT / "core")
    unexplained = [f"{where}: {expression!r} in {function}()" for function, expression, where in found
                   if (function, expression) not in ALLOWED]
    assert not unexplained, "values formatted into SQL text (bind them as ? parameters, or add an identifier-only " \
                            "case to ALLOWED with the reason):\n" + "\n".join(unexplained)
    stale = sorted(set(ALLOWED) - {(function, expression) for function, expression, _ in found})
    assert not stale, f"ALLOWED entries that no longer occur (remove them): {stale}"
