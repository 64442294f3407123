"""SQL as text: every value reaches DuckDB as a bound parameter. Search text with quotes, `%`, `_`, backslashes and SQL
fragments matches as plain text through the store's search, and a scan of core's source finds no value formatted into
SQL text (only identifiers and fixed fragments, each allowed below with the reason it is safe)."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.paths import copy_cache
from core.store import CacheReader, open_reader, open_results_writer
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


def search(reader: CacheReader, text: str) -> set[NeuronId]:
    """The search of the neuron table (core/store/tables.py), as the dashboard's picker runs it."""
    rows = reader.neuron_table(search=text, limit=10_000)
    assert reader.count_neurons(search=text) == len(rows)
    return {row.neuron for row in rows}


@pytest.fixture(scope="module")
def searchable(tiny_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[CacheReader]:
    """A real cache whose layer-0 neurons carry TEXTS as their explanations (written as the command line writes)."""
    path = tmp_path_factory.mktemp("sql") / "search.duckdb"
    copy_cache(tiny_cache, path)
    with open_results_writer(path) as writer:
        for index, text in enumerate(TEXTS):
            writer.add_explanation(NeuronId(0, index), text=text, explainer="human", model=None, prompt_version=None,
                                   simulator="baseline", status=ExplanationStatus.OK)
    with open_reader(path) as reader:
        yield reader


@pytest.mark.parametrize("text", SEARCHES)
def test_search_text_matches_as_plain_text(searchable: CacheReader, text: str) -> None:
    expected = {NeuronId(0, i) for i, t in enumerate(TEXTS) if text.strip().casefold() in t.casefold()}
    assert search(searchable, text) == expected


def test_hostile_text_is_stored_and_read_back_unchanged(searchable: CacheReader) -> None:
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

ALLOWED: dict[tuple[str, str, str], str] = {
    ("core/store/database.py", "attach", "name"): "a database alias, checked to be one of DATABASES",
    ("core/store/database.py", "attach", "sql_path(file)"): "ATTACH takes no bound parameters; sql_path doubles "
                                                            "quotes, so a path is one literal",
    ("core/store/database.py", "attach", "mode"): "'' or ' (READ_ONLY)', chosen by a bool",
    ("core/store/database.py", "detach", "name"): "a database alias; every caller passes a DATABASES constant",
    ("core/store/database.py", "checkpoint", "name"): "a database alias; every caller passes a DATABASES constant",
    ("core/store/schema.py", "create_tables", "database"): "a database alias, a key of the TABLES constant",
    ("core/store/schema.py", "create_tables", "name"): "a table name, a key of the TABLES constant",
    ("core/store/schema.py", "create_tables", "columns"): "column definitions, a value of the TABLES constant",
    ("core/store/schema.py", "read_meta", "database"): "a database alias; every caller passes a constant",
    ("core/store/schema.py", "write_meta", "database"): "a database alias; every caller passes a constant",
    ("core/store/migrate.py", "migrate_cache", "sql_path(path)"): "ATTACH takes no bound parameters; sql_path "
                                                                  "doubles quotes",
    ("core/store/migrate.py", "migrate_cache", "sql_path(results_tmp)"): "ATTACH takes no bound parameters; "
                                                                         "sql_path doubles quotes",
    ("core/store/migrate.py", "migrate_cache", "sql_path(recording_tmp)"): "ATTACH takes no bound parameters; "
                                                                           "sql_path doubles quotes",
    ("core/store/migrate.py", "_attach_old", "sql_path(path)"): "ATTACH takes no bound parameters; sql_path "
                                                                "doubles quotes",
    ("core/store/migrate.py", "_pack_recording", "sql_path(recording_tmp)"): "ATTACH takes no bound parameters; "
                                                                             "sql_path doubles quotes",
    ("core/store/migrate.py", "_copy_packed", "columns"): "column names joined from the _NEURON_EXCERPT_COLUMNS "
                                                          "constant",
    ("core/store/migrate.py", "_copy_tables", "database"): "a database alias, a key of the TABLES constant",
    ("core/store/migrate.py", "_copy_tables", "name"): "a table name, a key of the TABLES constant",
    ("core/store/recording.py", "neuron_excerpts", "where"): "built by neuron_excerpt_filter from fixed clauses "
                                                             "with ? placeholders",
    ("core/store/recording.py", "token_means", "order"): "'DESC' or 'ASC', chosen by a bool",
    ("core/store/recording.py", "neuron_ids", "where"): "'' or a fixed clause with a ? placeholder",
    ("core/store/recording.py", "insert_arrow", "database"): "a database alias; every caller passes a constant",
    ("core/store/recording.py", "insert_arrow", "table_name"): "a table name; every caller passes a literal",
    ("core/store/explanations.py", "add_explanation", "table"): "a table name from a literal tuple",
    ("core/store/explanations.py", "add_explanation", "stale"): "a fixed subquery with ? placeholders",
    ("core/store/explanations.py", "add_score", "table"): "a table name from a literal tuple",
    ("core/store/explanations.py", "insert_explanation_rows", "name"): "a table name from a literal tuple",
    ("core/store/explanations.py", "insert_explanation_rows", "stamp"): "'' or a fixed expression, chosen by the "
                                                                        "table name",
    ("core/store/related.py", "start_related", "name"): "a table name from a literal tuple",
    ("core/store/related.py", "insert_related_layer", "name"): "a table name from a literal tuple",
    ("core/store/notes.py", "_next_id", "table"): "a table name; every caller passes a literal",
    ("core/store/notes.py", "count_rows", "table"): "a table name, checked against the keys of NOTES_TABLES first",
    ("core/store/notes.py", "_next_id", "column"): "a column name; every caller passes a literal",
    ("core/store/responses.py", "get", "self._database"): "'results' or 'notes', checked in ResponseCache.__init__",
    ("core/store/responses.py", "put", "self._database"): "'results' or 'notes', checked in ResponseCache.__init__",
    ("core/store/tables.py", "neuron_table", "where"): "built by neuron_table_filter from fixed clauses with ? "
                                                       "placeholders",
    ("core/store/tables.py", "neuron_table", "NEURON_ORDERS[order]"): "a value of the NEURON_ORDERS constant; "
                                                                      "`order` is checked to be a key",
    ("core/store/tables.py", "neuron_table", "direction"): "'DESC' or 'ASC', chosen by a bool",
    ("core/store/tables.py", "neuron_table", "source"): "_FROM or _FILLED, fixed relations chosen by _source (the "
                                                        "notes source they read is bound as ?)",
    ("core/store/tables.py", "neuron_table", "made"): "'false' or 'b.made', fixed, chosen by _source",
    ("core/store/tables.py", "count_neurons", "source"): "_FROM or _FILLED, fixed relations chosen by _source (the "
                                                         "notes source they read is bound as ?)",
    ("core/store/tables.py", "count_neurons", "where"): "built by neuron_table_filter from fixed clauses with ? "
                                                        "placeholders",
}
"""(file, function, expression) -> why formatting it into SQL text is safe. Review each new entry: a value (anything
a person, a corpus or a model wrote) must be a bound parameter (?) instead. Module constants whose text is fixed
(database aliases such as RESULTS, column lists, joined tables) need no entry: the scan resolves them."""


def _is_fixed(node: ast.AST, constants: set[str]) -> bool:
    """Whether an expression's text is fixed: string literals and constants joined by + or an f-string."""
    if isinstance(node, ast.Constant):
        return isinstance(node.value, str)
    if isinstance(node, ast.Name):
        return node.id in constants
    if isinstance(node, ast.JoinedStr):
        return all(isinstance(part, ast.Constant) or (isinstance(part, ast.FormattedValue) and part.format_spec is None
                                                      and _is_fixed(part.value, constants)) for part in node.values)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _is_fixed(node.left, constants) and _is_fixed(node.right, constants)
    return False


def fixed_constants(folder: Path) -> dict[Path, set[str]]:
    """Per module of the package at `folder`: the module-level names bound once to fixed text (see _is_fixed), or
    imported from a module of the package where they are. A name bound twice is not fixed."""
    package = folder.name
    trees = {path: ast.parse(path.read_text(), filename=str(path)) for path in sorted(folder.rglob("*.py"))}
    module_of = {".".join((package, *path.relative_to(folder).with_suffix("").parts)): path for path in trees}
    constants: dict[Path, set[str]] = {path: set() for path in trees}
    changed = True
    while changed:  # constants built from constants, across imports: repeat until nothing new is found
        changed = False
        for path, tree in trees.items():
            bound: dict[str, int] = {}
            fixed: set[str] = set()
            for statement in tree.body:
                if isinstance(statement, ast.Assign | ast.AnnAssign):
                    targets = statement.targets if isinstance(statement, ast.Assign) else [statement.target]
                    for target in targets:
                        if isinstance(target, ast.Name):
                            bound[target.id] = bound.get(target.id, 0) + 1
                            if statement.value is not None and _is_fixed(statement.value, constants[path]):
                                fixed.add(target.id)
                elif isinstance(statement, ast.ImportFrom) and statement.module in module_of:
                    source = constants[module_of[statement.module]]
                    for alias in statement.names:
                        bound[alias.asname or alias.name] = bound.get(alias.asname or alias.name, 0) + 1
                        if alias.name in source:
                            fixed.add(alias.asname or alias.name)
            found = {name for name in fixed if bound[name] == 1}
            if found != constants[path]:
                constants[path] = found
                changed = True
    return constants


class _SqlText(ast.NodeVisitor):
    """Collects (function, expression, file:line) of everything formatted into SQL text, except fixed constants."""

    def __init__(self, shown: str, constants: set[str]) -> None:
        self.shown = shown
        """The path as messages show it."""
        self.constants = constants
        self.functions: list[str] = []
        self.found: list[tuple[str, str, str]] = []

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self.functions.append(node.name)
        self.generic_visit(node)
        self.functions.pop()

    visit_AsyncFunctionDef = visit_FunctionDef  # type: ignore[assignment]

    def add(self, node: ast.AST, expression: ast.AST) -> None:
        if _is_fixed(expression, self.constants):
            return
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
    """(function, expression, file:line) of every expression formatted into SQL text in the package at `folder`
    (file relative to the package's parent, e.g. core/store/tables.py)."""
    found = []
    for path, constants in fixed_constants(folder).items():
        visitor = _SqlText(str(path.relative_to(folder.parent)), constants)
        visitor.visit(ast.parse(path.read_text(), filename=str(path)))
        found += visitor.found
    return found


def test_the_scan_finds_a_value_formatted_into_sql(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "names.py").write_text(
        'DB = "results"\nTABLE = f"{DB}.t"\nASKED = input()\nTWICE = "a"\nTWICE = input()\n'
    )
    (package / "bad.py").write_text(
        "from pkg.names import ASKED, TABLE, TWICE\n"
        "def find(cur, name, text):\n"
        "    cur.execute(f\"SELECT * FROM t WHERE name = '{name}'\")\n"
        "    cur.execute(\"DELETE FROM t WHERE text = '\" + text + \"'\")\n"
        "    cur.execute(\"SELECT * FROM t WHERE x = %s\" % text)\n"
        "    cur.execute(\"UPDATE t SET a = '{}'\".format(text))\n"
        "    return [f\"s.layer = {name}\", f'cannot read {name}: is it a file?']\n"
        "def constants(cur):\n"
        "    cur.execute(f\"SELECT * FROM {TABLE} WHERE a = ?\", [1])\n"
        "    cur.execute(f\"SELECT * FROM {ASKED}\")\n"
        "    cur.execute(f\"SELECT * FROM {TWICE}\")\n"
    )
    found = sql_formatting(package)
    assert [(where, expression) for _, expression, where in found] == [
        ("pkg/bad.py:3", "name"), ("pkg/bad.py:4", "text"), ("pkg/bad.py:5", "text"), ("pkg/bad.py:6", "text"),
        ("pkg/bad.py:7", "name"), ("pkg/bad.py:10", "ASKED"), ("pkg/bad.py:11", "TWICE"),
    ]  # not the message on line 7, not the fixed TABLE on line 9


def test_core_formats_no_value_into_sql() -> None:
    found = {(where.rsplit(":", 1)[0], function, expression): where for function, expression, where in
             sql_formatting(ROOT / "core")}
    unexplained = [f"{where}: {expression!r} in {function}()" for (file, function, expression), where in found.items()
                   if (file, function, expression) not in ALLOWED]
    assert not unexplained, "values formatted into SQL text (bind them as ? parameters, or add an identifier-only " \
                            "case to ALLOWED with the reason):\n" + "\n".join(unexplained)
    stale = sorted(set(ALLOWED) - set(found))
    assert not stale, f"ALLOWED entries that no longer occur (remove them): {stale}"
    assert all(reason.strip() for reason in ALLOWED.values())
