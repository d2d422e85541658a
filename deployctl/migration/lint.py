"""`deployctl migrate lint`: each revision's offline SQL through squawk, plus our own checks (DESIGN §7):
an enum created without an idempotent guard, a downgrade that drops a table but leaves its enum type, more than
one head, an env.py without the advisory lock. Findings name the revision's file and line."""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from deployctl.errors import UsageError
from deployctl.migration.tree import Tree

# squawk rules whose finding is unsafe DDL on a live table: errors. Every other rule is advice: a warning.
SQUAWK_ERRORS = frozenset({
    "require-concurrent-index-creation", "require-concurrent-index-deletion", "constraint-missing-not-valid",
    "adding-foreign-key-constraint", "adding-not-nullable-field", "adding-required-field",
    "adding-field-with-default", "changing-column-type", "disallowed-unique-constraint", "renaming-column",
    "renaming-table", "ban-drop-database", "ban-concurrent-index-creation-in-transaction",
    "adding-serial-primary-key-field", "adding-primary-key-constraint", "ban-drop-table", "ban-drop-column",
})
SQUAWK_TIMEOUT = 30
CREATE_ENUM = re.compile(r"CREATE TYPE\s+(\"?[\w.]+\"?)\s+AS\s+ENUM", re.I)
DROP_TABLE = re.compile(r"DROP TABLE\s+(?:IF EXISTS\s+)?(\"?[\w.]+\"?)", re.I)
DROP_TYPE = re.compile(r"DROP TYPE\s+(?:IF EXISTS\s+)?(\"?[\w.]+\"?)", re.I)


@dataclass(frozen=True)
class Finding:
    service: str
    revision: str | None
    file: str
    line: int
    rule: str
    severity: str  # error | warning
    message: str
    source: str  # squawk | deployctl


def squawk_path() -> str:
    here = Path(sys.executable).parent / "squawk"
    found = str(here) if here.exists() else shutil.which("squawk")
    if not found:
        raise UsageError("squawk is not installed", hint="pip install squawk-cli (it is in the dev extras)")
    return found


def run_squawk(sql: str, label: str) -> list[dict]:
    proc = subprocess.run([squawk_path(), "--reporter", "json", "--pg-version", "15", "--stdin-filepath", label],
                          input=sql.encode(), capture_output=True, timeout=SQUAWK_TIMEOUT)
    out = proc.stdout.decode("utf-8", "replace").strip()
    try:
        return json.loads(out) if out else []
    except json.JSONDecodeError:
        raise UsageError(f"squawk failed on {label}: {proc.stderr.decode('utf-8', 'replace')[:300]}",
                         hint="run squawk by hand on `alembic upgrade A:B --sql` output") from None


def _line_of(source: str, pattern: str, default: int = 1) -> int:
    for i, line in enumerate(source.splitlines(), 1):
        if pattern in line:
            return i
    return default


IDENT = re.compile(r"\b[a-z_][a-z0-9_]*\b")  # alembic writes keywords in capitals, names in lower case


def _statement_at(sql_lines: list[str], at: int) -> str:
    """The whole statement of offline SQL around line `at` (Alembic puts a blank line after each)."""
    start = at
    while start > 0 and sql_lines[start - 1].strip():
        start -= 1
    end = at
    while end + 1 < len(sql_lines) and sql_lines[end + 1].strip():
        end += 1
    return "\n".join(sql_lines[start:end + 1])


def _function_lines(source: str, name: str) -> range:
    """The line numbers of a function's body in a revision's source (1-based), or an empty range."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return range(0)
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == name:
            return range(node.body[0].lineno, (node.end_lineno or node.lineno) + 1)
    return range(0)


def _source_line(source: str, body: range, snippet: str, statement: str, default: int) -> int:
    """Where in the revision a statement of its offline SQL comes from: the first line of the function body
    that quotes a name from the statement's own line, else the line quoting most of the statement's names."""
    lines = source.splitlines()

    def quoted(name: str, i: int) -> bool:
        text = lines[i - 1] if 0 < i <= len(lines) else ""
        return f'"{name}"' in text or f"'{name}'" in text

    for name in IDENT.findall(snippet):
        for i in body:
            if quoted(name, i):
                return i
    names = set(IDENT.findall(statement))
    best = max(body, key=lambda i: sum(quoted(n, i) for n in names), default=None)
    if best is not None and any(quoted(n, best) for n in names):
        return best
    return default


def _autocommit_mixing(source: str) -> list[tuple[str, int]]:
    """(function, line) for each upgrade/downgrade that runs an autocommit block beside transactional
    operations: the block commits what came before it, so a failure inside it (or after it) leaves the
    revision half applied and not recorded, and the next run fails on what is already there."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    out = []
    for node in tree.body:
        if not isinstance(node, ast.FunctionDef) or node.name not in ("upgrade", "downgrade"):
            continue
        blocks = [st for st in node.body if isinstance(st, ast.With) and
                  any("autocommit_block" in ast.unparse(item.context_expr) for item in st.items)]
        others = [st for st in node.body if st not in blocks and _calls_op(st)]
        if blocks and others:
            out.append((node.name, blocks[0].lineno))
    return out


def _calls_op(node: ast.AST) -> bool:
    return any(isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and isinstance(n.func.value, ast.Name)
               and n.func.value.id == "op" for n in ast.walk(node))


def _statements(sql: str) -> list[str]:
    return [s.strip() for s in sql.split(";\n\n") if s.strip()]


def _bare(name: str) -> str:
    return name.strip('"').split(".")[-1]


def lint_tree(tree: Tree) -> list[Finding]:
    script = tree.script()
    out: list[Finding] = []
    env = tree.directory / "env.py"
    env_src = env.read_text(errors="replace") if env.exists() else ""
    if "deployctl.migrate_env" not in env_src and "pg_advisory" not in env_src:
        out.append(Finding(tree.service, None, str(env), 1, "env-advisory-lock", "error",
                           "env.py takes no advisory lock: two concurrent runs (a deploy and a hand-run job) "
                           "would race; use `from deployctl.migrate_env import run_migrations`", "deployctl"))
    heads = list(script.get_heads())
    if len(heads) > 1:
        for h in heads:
            rev = script.get_revision(h)
            out.append(Finding(tree.service, h, rev.path, 1, "multiple-heads", "error",
                               f"the tree has {len(heads)} heads ({', '.join(heads)}): alembic upgrade head "
                               "fails; merge them (alembic merge heads)", "deployctl"))
    for rev in reversed(list(script.walk_revisions())):
        out += lint_revision(tree, rev)
    return out


def lint_revision(tree: Tree, rev) -> list[Finding]:
    down = rev.down_revision
    if isinstance(down, (tuple, list)):
        return []  # a merge point carries no DDL of its own
    source = Path(rev.path).read_text(errors="replace")
    up_sql = tree.offline_sql(down, rev.revision)
    down_sql = tree.offline_sql(rev.revision, down or "base", downgrade=True)
    up_line = _line_of(source, "def upgrade")
    up_body, down_body = _function_lines(source, "upgrade"), _function_lines(source, "downgrade")
    out: list[Finding] = []
    mixing = _autocommit_mixing(source)
    for fn, line in mixing:
        out.append(Finding(tree.service, rev.revision, rev.path, line, "autocommit-mixed", "error",
                           f"{fn}() runs an autocommit block beside transactional operations: the block commits "
                           "what came before it, so a failure in it leaves the revision half applied but not "
                           "recorded, and the next run fails on what is already there; put the autocommit "
                           "statements (CREATE INDEX CONCURRENTLY, ALTER TYPE ... ADD VALUE) in a revision of "
                           "their own", "deployctl"))
    autocommit = "autocommit_block" in source
    sql_lines = up_sql.splitlines()
    for f in run_squawk(up_sql, f"{rev.revision}.sql"):
        rule = f.get("rule_name") or "squawk"
        at = int(f.get("line", -1))  # squawk's lines count from 0
        snippet = sql_lines[at].strip() if 0 <= at < len(sql_lines) else ""
        statement = _statement_at(sql_lines, at) if snippet else ""
        if "alembic_version" in statement:
            continue  # Alembic's own bookkeeping table, not the revision's DDL
        message = f"{f.get('message', '').strip()} [{snippet[:80]}]" if snippet else f.get("message", "").strip()
        # Outside a transaction a re-run after a partial failure meets what the first run left: it must be
        # written to be run twice.
        severe = rule in SQUAWK_ERRORS or (autocommit and rule == "prefer-robust-stmts")
        out.append(Finding(tree.service, rev.revision, rev.path,
                           _source_line(source, up_body, snippet, statement, up_line), rule,
                           "error" if severe else "warning", message, "squawk"))
    created: list[str] = []
    for statement in _statements(up_sql):
        for m in CREATE_ENUM.finditer(statement):
            name = _bare(m[1])
            created.append(name)
            if "duplicate_object" not in statement and "IF NOT EXISTS" not in statement.upper():
                out.append(Finding(tree.service, rev.revision, rev.path,
                                   _source_line(source, up_body, name, statement, up_line),
                                   "enum-not-idempotent", "error",
                                   f"CREATE TYPE {name} has no idempotent guard: a run that died after it fails "
                                   f"the next with `type \"{name}\" already exists`; create it in a DO block "
                                   "with EXCEPTION WHEN duplicate_object (or checkfirst) and use "
                                   "postgresql.ENUM(..., create_type=False)", "deployctl"))
    dropped_types = {_bare(m[1]) for m in DROP_TYPE.finditer(down_sql)}
    dropped_table = DROP_TABLE.search(down_sql)
    if created and dropped_table:
        line = _source_line(source, down_body, _bare(dropped_table[1]), "", _line_of(source, "def downgrade"))
        for name in created:
            if name not in dropped_types:
                out.append(Finding(tree.service, rev.revision, rev.path, line,
                                   "enum-left-by-downgrade", "error",
                                   f"the downgrade drops a table but leaves enum type {name} (op.drop_table "
                                   f"does not drop it): the next upgrade fails; add DROP TYPE IF EXISTS {name}",
                                   "deployctl"))
    return out
