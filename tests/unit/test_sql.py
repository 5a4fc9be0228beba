"""No SQL is built by string formatting: values go as parameters, identifiers through psycopg2.sql.

Two rules, read from the source of every module:

- the text of every ``sql.SQL(...)`` is constant: a literal, or an f-string, concatenation or
  conditional made only of literals and module constants. ``sql.SQL`` is the one way raw text
  enters a composed statement (``format`` and ``join`` take only Composables), so with this rule
  every Composable is safe;
- every statement given to a cursor (``execute``, ``executemany``, ``mogrify``, ``copy_expert``),
  to ``psycopg2.extras`` (``execute_values``, ``execute_batch``) or to the ``query`` helper is
  constant text or a Composable, never text built at run time.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "wal2http"
CURSOR_METHODS = {"execute", "executemany", "mogrify", "copy_expert"}  # the statement comes first
EXTRAS = {"execute_values": 1, "execute_batch": 1}  # psycopg2.extras.f(cursor, statement, ...)
# wal2http.pg.connection.query(conn, statement, ...) and execute(cur, statement, ...): position of the statement
HELPERS = {"query": 1, "execute": 1}
STATEMENT_KEYWORDS = ("query", "sql", "statement")
# The functions that may give sql.SQL text known only at run time, each for a documented reason
# (their docstrings say which): a backfill's conditions are SQL expressions by nature.
RUNTIME_TEXT_FUNCTIONS = {("wal2http/pg/backfill_tables.py", "condition"),
                          ("wal2http/pg/backfill_tables.py", "operator")}
COMPREHENSIONS = (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)


@dataclass
class Module:
    """One parsed module and what the rules need to know about its names."""

    where: str
    tree: ast.Module
    sql_functions: set[str]  # functions of the package declared to return a psycopg2.sql object
    parents: dict[ast.AST, ast.AST] = field(default_factory=dict)
    constants: set[str] = field(default_factory=set)  # module-level names bound once to literal data
    assigned: dict[str, list[ast.expr]] = field(default_factory=dict)  # every value of each plain name
    helper_parameters: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        for node in ast.walk(self.tree):
            for child in ast.iter_child_nodes(node):
                self.parents[child] = node
            if isinstance(node, ast.Assign):
                for target in node.targets:
                    if isinstance(target, ast.Name):
                        self.assigned.setdefault(target.id, []).append(node.value)
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
                self.assigned.setdefault(node.target.id, []).append(node.value)
            elif isinstance(node, ast.FunctionDef) and node.name in HELPERS:
                self.helper_parameters.add(node.args.args[HELPERS[node.name]].arg)
        top_level: dict[str, list[ast.expr]] = {}
        for statement in self.tree.body:
            if isinstance(statement, ast.Assign) and len(statement.targets) == 1:
                target, value = statement.targets[0], statement.value
            elif isinstance(statement, ast.AnnAssign) and statement.value is not None:
                target, value = statement.target, statement.value
            else:
                continue
            if isinstance(target, ast.Name):
                top_level.setdefault(target.id, []).append(value)
        self.constants = {name for name, values in top_level.items()
                          if len(values) == len(self.assigned[name]) == 1 and _literal_data(values[0])}


def _literal_data(node: ast.expr) -> bool:
    """A literal, or a tuple, list, set or dict of literals (nested)."""
    if isinstance(node, ast.Constant):
        return isinstance(node.value, str | int | float | bool) or node.value is None
    if isinstance(node, ast.Tuple | ast.List | ast.Set):
        return all(_literal_data(e) for e in node.elts)
    if isinstance(node, ast.Dict):
        return all(k is not None and _literal_data(k) for k in node.keys) and all(map(_literal_data, node.values))
    return False


def _names(target: ast.expr) -> set[str]:
    if isinstance(target, ast.Name):
        return {target.id}
    if isinstance(target, ast.Tuple | ast.List):
        return set().union(*(_names(e) for e in target.elts))
    return set()


def _bound_to_constant_data(name: ast.Name, module: Module) -> bool:
    """Whether ``name`` is a module constant, or the target of a comprehension over one."""
    if name.id in module.constants:
        return True
    node: ast.AST = name
    while node in module.parents:
        node = module.parents[node]
        if isinstance(node, COMPREHENSIONS):
            for generator in node.generators:
                if name.id in _names(generator.target):
                    source = generator.iter
                    return _literal_data(source) or (isinstance(source, ast.Name) and source.id in module.constants)
    return False


def constant_text(node: ast.expr, module: Module) -> bool:
    """Text fixed in the source: literals and module constants, however they are put together."""
    if isinstance(node, ast.Constant):
        return isinstance(node.value, str)
    if isinstance(node, ast.JoinedStr):
        return all(isinstance(part, ast.Constant) or (
            isinstance(part, ast.FormattedValue) and _constant_value(part.value, module)) for part in node.values)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return constant_text(node.left, module) and constant_text(node.right, module)
    if isinstance(node, ast.IfExp):
        return constant_text(node.body, module) and constant_text(node.orelse, module)
    if isinstance(node, ast.Name):
        return _bound_to_constant_data(node, module)
    return False


def _constant_value(node: ast.expr, module: Module) -> bool:
    return _literal_data(node) or constant_text(node, module)


def _is_sql_call(node: ast.expr, name: str | None = None) -> bool:
    """``sql.<name>(...)`` (any name when None)."""
    return (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and isinstance(node.func.value, ast.Name) and node.func.value.id == "sql"
            and (name is None or node.func.attr == name))


def composable(node: ast.expr, module: Module, seen: frozenset[str] = frozenset()) -> bool:
    """An expression whose value is a psycopg2.sql Composable (safe once every sql.SQL text is constant)."""
    if _is_sql_call(node):
        return True
    if isinstance(node, ast.Call):
        func = node.func
        if isinstance(func, ast.Attribute) and func.attr in ("format", "join"):
            return composable(func.value, module, seen)
        name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else None
        return name in module.sql_functions
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return composable(node.left, module, seen) and composable(node.right, module, seen)
    if isinstance(node, ast.IfExp):
        return composable(node.body, module, seen) and composable(node.orelse, module, seen)
    if isinstance(node, ast.Name) and node.id not in seen and node.id in module.assigned:
        return all(composable(value, module, seen | {node.id}) for value in module.assigned[node.id])
    return False


def safe_statement(node: ast.expr, module: Module, seen: frozenset[str] = frozenset()) -> bool:
    if constant_text(node, module) or composable(node, module):
        return True
    if isinstance(node, ast.IfExp):
        return safe_statement(node.body, module, seen) and safe_statement(node.orelse, module, seen)
    if isinstance(node, ast.Name) and node.id not in seen and node.id in module.assigned:
        return all(safe_statement(value, module, seen | {node.id}) for value in module.assigned[node.id])
    return False


def statement_of(node: ast.Call, where: str) -> ast.expr | None:
    """The SQL argument of a cursor method, a psycopg2.extras function or a helper, else None.

    The helpers are pg/'s (only pg/ imports psycopg2): elsewhere ``execute`` is another function.
    """
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else None
    if name in EXTRAS:
        position: int | None = EXTRAS[name]
    elif isinstance(func, ast.Attribute) and name in CURSOR_METHODS:
        position = 0
    elif isinstance(func, ast.Name) and name in HELPERS and where.startswith("wal2http/pg/"):
        position = HELPERS[name]
    else:
        return None
    if position is not None and len(node.args) > position:
        return node.args[position]
    return next((k.value for k in node.keywords if k.arg in STATEMENT_KEYWORDS), None)


def sql_functions(trees: list[ast.Module]) -> set[str]:
    """Functions declared (and by mypy --strict held) to return a psycopg2.sql object."""
    return {node.name for tree in trees for node in ast.walk(tree)
            if isinstance(node, ast.FunctionDef) and node.returns is not None
            and ast.unparse(node.returns).startswith("sql.")}


@dataclass(frozen=True)
class Found:
    where: str
    kind: str  # "statement" or "sql.SQL text"
    node: ast.expr
    safe: bool


def _enclosing_function(node: ast.AST, module: Module) -> str | None:
    while node in module.parents:
        node = module.parents[node]
        if isinstance(node, ast.FunctionDef):
            return node.name
    return None


def scan(module: Module) -> list[Found]:
    found: list[Found] = []
    for node in ast.walk(module.tree):
        if not isinstance(node, ast.Call):
            continue
        where = f"{module.where}:{node.lineno}"
        if _is_sql_call(node, "SQL"):
            (text,) = node.args or [ast.Constant(None)]
            allowed = (module.where, _enclosing_function(node, module)) in RUNTIME_TEXT_FUNCTIONS
            found.append(Found(where, "sql.SQL text", text, allowed or constant_text(text, module)))
        statement = statement_of(node, module.where)
        if statement is None or (isinstance(statement, ast.Name) and statement.id in module.helper_parameters):
            continue  # the helper's own call: its callers' statements are checked instead
        found.append(Found(where, "statement", statement, safe_statement(statement, module)))
    return found


def scan_package() -> list[Found]:
    paths = sorted(PACKAGE.rglob("*.py"))
    trees = [ast.parse(path.read_text(), str(path)) for path in paths]
    functions = sql_functions(trees)
    return [found for path, tree in zip(paths, trees, strict=True)
            for found in scan(Module(str(path.relative_to(PACKAGE.parent)), tree, functions))]


def scan_source(source: str) -> list[Found]:
    tree = ast.parse(source)
    return scan(Module("wal2http/pg/<example>", tree, sql_functions([tree])))  # where the helpers apply


FOUND = scan_package()


def test_the_scan_sees_the_queries_and_the_sql_texts() -> None:
    statements = [f.where for f in FOUND if f.kind == "statement"]
    texts = [f.where for f in FOUND if f.kind == "sql.SQL text"]
    for module in ("wal2http/pg/slot.py", "wal2http/pg/publication.py", "wal2http/pg/outbox.py"):
        assert any(where.startswith(module) for where in statements), module
        assert module == "wal2http/pg/slot.py" or any(where.startswith(module) for where in texts), module
    # The helpers' own ``cur.execute(statement, ...)``: their parameter is checked where they are called.
    helper = PACKAGE / "pg" / "connection.py"
    inside = {f"wal2http/pg/connection.py:{n}" for n, line in enumerate(helper.read_text().splitlines(), 1)
              if "cur.execute(statement" in line}
    assert inside and not inside & set(statements)


BUILT_FROM_TEXT = [
    'query(conn, "SELECT * FROM " + table, what="x")',
    'cur.execute(f"SELECT * FROM {table}")',
    'cur.execute("SELECT * FROM %s" % table)',
    'cur.execute("SELECT * FROM {}".format(table))',
    'statement = f"DELETE FROM {table}"\ncur.execute(statement)',
    'cur.execute(sql.SQL(f"SELECT * FROM {user}"))',
    'cur.execute(sql.SQL("SELECT " + column))',
    'cur.execute(sql.SQL("SELECT * FROM {}").format(sql.SQL(user)))',
    'def run(cur, text):\n    cur.execute(sql.SQL(text))',
    'COLUMNS = ("a",)\nCOLUMNS = (user,)\ncur.execute(sql.SQL(", ").join(sql.SQL(f"{c} int") for c in COLUMNS))',
    'cur.copy_expert(f"COPY {table} TO STDOUT", out)',
    'cur.copy_expert(sql.SQL(text).format(), out)',
    'execute_values(cur, "INSERT INTO " + table + " VALUES %s", rows)',
    'extras.execute_values(cur, f"INSERT INTO {table} VALUES %s", rows)',
    'extras.execute_batch(cur, sql=f"UPDATE {table} SET v = %s", argslist=rows)',
    'cur.executemany(sql.SQL("INSERT INTO {} ").format(sql.Identifier(t)) + sql.SQL(suffix), rows)',
]

SAFE = [
    'cur.execute("SELECT 1 WHERE x = %s", (v,))',
    'cur.execute(sql.SQL("SELECT * FROM {} WHERE a = %s").format(sql.Identifier(t)), (a,))',
    'cur.copy_expert(sql.SQL("COPY {} TO STDOUT").format(sql.Identifier(s, t)), out)',
    'execute_values(cur, "INSERT INTO t VALUES %s", rows)',
    'cur.execute(sql.SQL("SELECT {}").format(sql.SQL("a" if new else "b")))',
    'COLUMNS = (("a", "int"), ("b", "text"))\n'
    'cur.execute(sql.SQL("CREATE TABLE t ({})").format(sql.SQL(", ").join(sql.SQL(f"{n} {d}") for n, d in COLUMNS)))',
    'def statement(t: str) -> sql.Composed:\n    return sql.SQL("DROP TABLE {}").format(sql.Identifier(t))\n'
    'query(conn, statement("x"), what="drop")',
]


@pytest.mark.parametrize("source", BUILT_FROM_TEXT)
def test_the_scan_catches_sql_built_from_text(source: str) -> None:
    found = scan_source(source)
    assert found and not all(f.safe for f in found), [(f.kind, ast.unparse(f.node)) for f in found]


@pytest.mark.parametrize("source", SAFE)
def test_the_scan_accepts_parameters_and_composed_sql(source: str) -> None:
    found = scan_source(source)
    assert found and all(f.safe for f in found), [(f.kind, ast.unparse(f.node)) for f in found if not f.safe]


@pytest.mark.parametrize("found", FOUND, ids=[f"{f.where} {f.kind}" for f in FOUND])
def test_sql_is_constant_text_or_composed_with_psycopg2_sql(found: Found) -> None:
    assert found.safe, (
        f"{found.where}: SQL built from text ({ast.unparse(found.node)[:80]}); pass values as parameters, "
        "identifiers with psycopg2.sql.Identifier, and give sql.SQL only text fixed in the source"
    )


def test_runtime_text_enters_only_through_the_allowed_functions() -> None:
    """Each allowed function gives sql.SQL exactly one piece of run-time text: the allowance cannot grow unseen."""
    for where, function in RUNTIME_TEXT_FUNCTIONS:
        tree = ast.parse((PACKAGE.parent / where).read_text())
        module = Module(where, tree, sql_functions([tree]))
        (found,) = [node for node in ast.walk(tree) if isinstance(node, ast.FunctionDef) and node.name == function]
        texts = [call.args[0] for call in ast.walk(found) if _is_sql_call(call, "SQL") and call.args]
        assert [ast.unparse(t) for t in texts if not constant_text(t, module)] == ["text"], where
