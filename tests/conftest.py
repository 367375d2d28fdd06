"""Fixtures shared by every test folder; their code lives in ``couchdb_server``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from couchdb_server import couchdb_server, delete_databases, new_prefix


@pytest.fixture(scope="session")
def couchdb_url() -> Iterator[str]:
    """Admin base URL of a CouchDB-API server, credentials included (no trailing slash)."""
    with couchdb_server() as url:
        yield url


@pytest.fixture
def couch_prefix(couchdb_url: str) -> Iterator[str]:
    """A fresh database-name prefix; the test's databases with it are deleted afterwards."""
    prefix = new_prefix()
    yield prefix
    delete_databases(couchdb_url, prefix)
