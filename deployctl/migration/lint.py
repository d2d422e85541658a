"""`deployctl migrate lint`: each revision's offline SQL through squawk, plus our own checks (DESIGN §7):
an enum created without an idempotent guard, a downgrade that drops a table but leaves its enum type, more than
one head, an env.py without the advisory lock. Findings name the revision's file and line."""

from __future__ import annotations

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
    out: list[Finding] = []
    for f in run_squawk(up_sql, f"{rev.revision}.sql"):
        rule = f.get("rule_name") or "squawk"
        sql_lines, at = up_sql.splitlines(), int(f.get("line", -1))  # squawk's lines count from 0
        snippet = sql_lines[at].strip()[:80] if 0 <= at < len(sql_lines) else ""
        message = f"{f.get('message', '').strip()} [{snippet}]" if snippet else f.get("message", "").strip()
        out.append(Finding(tree.service, rev.revision, rev.path, up_line, rule,
                           "error" if rule in SQUAWK_ERRORS else "warning", message, "squawk"))
    created: list[str] = []
    for statement in _statements(up_sql):
        for m in CREATE_ENUM.finditer(statement):
            name = _bare(m[1])
            created.append(name)
            if "duplicate_object" not in statement and "IF NOT EXISTS" not in statement.upper():
                out.append(Finding(tree.service, rev.revision, rev.path, _line_of(source, f"'{name}'", up_line),
                                   "enum-not-idempotent", "error",
                                   f"CREATE TYPE {name} has no idempotent guard: a run that died after it fails "
                                   f"the next with `type \"{name}\" already exists`; create it in a DO block "
                                   "with EXCEPTION WHEN duplicate_object (or checkfirst) and use "
                                   "postgresql.ENUM(..., create_type=False)", "deployctl"))
    dropped_types = {_bare(m[1]) for m in DROP_TYPE.finditer(down_sql)}
    if created and DROP_TABLE.search(down_sql):
        for name in created:
            if name not in dropped_types:
                out.append(Finding(tree.service, rev.revision, rev.path, _line_of(source, "def downgrade"),
                                   "enum-left-by-downgrade", "error",
                                   f"the downgrade drops a table but leaves enum type {name} (op.drop_table "
                                   f"does not drop it): the next upgrade fails; add DROP TYPE IF EXISTS {name}",
                                   "deployctl"))
    return out
