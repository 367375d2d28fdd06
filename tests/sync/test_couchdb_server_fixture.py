"""The CouchDB-API server fixture: databases can be used and are cleaned up by prefix."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from couchdb_server import couch_request, db_path, delete_databases


def all_dbs(url: str) -> list[str]:
    status, names = couch_request(url, "GET", "/_all_dbs")
    assert status == 200, names
    return list(names)


def test_a_database_with_a_dollar_holds_documents(couchdb_url: str, couch_prefix: str) -> None:
    name = couch_prefix + "health$log"
    assert couch_request(couchdb_url, "PUT", db_path(name)) == (201, {"ok": True})
    assert name in all_dbs(couchdb_url)

    status, written = couch_request(couchdb_url, "PUT", db_path(name) + "/p1", {"v": 1})
    assert status == 201, written
    status, doc = couch_request(couchdb_url, "GET", db_path(name) + "/p1")
    assert (status, doc) == (200, {"_id": "p1", "_rev": written["rev"], "v": 1})


def test_cleanup_deletes_only_the_prefixed_databases(couchdb_url: str, couch_prefix: str) -> None:
    inner = couch_prefix + "inner_"
    doomed = [inner + "a", inner + "b$c"]
    kept = couch_prefix + "other"
    for name in [*doomed, kept]:
        assert couch_request(couchdb_url, "PUT", db_path(name))[0] == 201

    assert sorted(delete_databases(couchdb_url, inner)) == sorted(doomed)

    left = all_dbs(couchdb_url)
    assert not set(doomed) & set(left)
    assert kept in left


def test_the_url_credentials_are_checked(couchdb_url: str) -> None:
    parts = urlsplit(couchdb_url)
    assert parts.username and parts.password, "the fixture URL carries an admin's credentials"
    # Another user's name: CouchDB >= 3.4 locks a name out for minutes after 5 failed logins.
    stranger = f"stranger-{parts.username}:{parts.password}@{parts.hostname}:{parts.port}"
    status, body = couch_request(urlunsplit(parts._replace(netloc=stranger)), "GET", "/_all_dbs")
    assert (status, body["error"]) == (401, "unauthorized")
