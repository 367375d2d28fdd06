"""Only adapters reach storage: the rule of the ports (issue 11, point 1), checked on the source.

A module may import ``sqlite3`` or the concrete embedded store only if it is an
embedded adapter (its file name starts with ``embedded``, or it lies in the
document store's own package ``sync/store``), and the CouchDB client only if it
is a CouchDB adapter (its file name starts with ``couch``, or it lies in a
``couchdb`` package).  The composition roots that choose an adapter (the app
factory, each package's ``backends.py``) and the two tools whose subject is both
stores at once (``sync/migrate``, ``sync/backup``) may name both.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("sync", "sms_gateway", "device_registry", "barcode", "forms")
EMBEDDED = ("sqlite3", "sync.store.sqlite", "sync.store.schema")
COUCHDB = ("sync.store.couchdb",)
ROOTS = ("sync/app.py", "sync/appkeys.py")
BOTH = ("sync/migrate/", "sync/backup/")


def _imports(tree: ast.AST) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _reaches(names: set[str], stores: tuple[str, ...]) -> list[str]:
    return sorted(n for n in names if any(n == s or n.startswith(s + ".") for s in stores))


def _may(rel: str, kind: str) -> bool:
    name = rel.rsplit("/", 1)[-1]
    if rel in ROOTS or name == "backends.py" or rel.startswith(BOTH):
        return True
    if kind == "embedded":
        in_store = rel.startswith("sync/store/") and "/couchdb/" not in rel
        return name.startswith("embedded") or in_store
    return name.startswith("couch") or "/couchdb/" in rel


def offenders() -> list[str]:
    found = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            names = _imports(ast.parse(path.read_text(), rel))
            for kind, stores in (("embedded", EMBEDDED), ("couchdb", COUCHDB)):
                reached = _reaches(names, stores)
                if reached and not _may(rel, kind):
                    found.append(f"{rel}: {', '.join(reached)}")
    return found


def test_only_adapters_import_a_concrete_store() -> None:
    assert offenders() == []


def test_the_check_sees_an_import_outside_an_adapter() -> None:
    tree = ast.parse("import sqlite3\nfrom sync.store.sqlite import SqliteStore\n")
    reached = _reaches(_imports(tree), EMBEDDED)
    assert reached == ["sqlite3", "sync.store.sqlite", "sync.store.sqlite.SqliteStore"]
    assert not _may("sync/people.py", "embedded")
    assert _may("sync/people_store/embedded.py", "embedded")
    assert not _may("sync/people_store/embedded.py", "couchdb")
    assert _may("device_registry/couchdb_docs.py", "couchdb")
