"""The organisation most tests share: places, users, and how to seed them.

::

    country
    ├── district-a
    │   └── facility-a
    │       ├── area-a1     alice (chw)
    │       └── area-a2
    └── district-b
        └── area-b1         bob (chw)

    sam (supervisor): captures district-a, reads district-b too
    admin (admin)

Test folders extend these lists (a gateway account, a third district) and seed
with :func:`seed`; ``pythonpath = ["tests"]`` in pyproject.toml makes this module
importable as ``shared_org`` from every folder.
"""

from __future__ import annotations

import base64
import functools
from collections.abc import Sequence
from contextlib import closing
from pathlib import Path
from unittest import mock

from sync import accounts
from sync.people_store import embedded_tables
from sync.scopes import Role
from sync.store.schema import connect, db_path, initialise

PASSWORD = "correct horse"
PLACES: list[tuple[str, str | None]] = [
    ("country", None),
    ("district-a", "country"),
    ("facility-a", "district-a"),
    ("area-a1", "facility-a"),
    ("area-a2", "facility-a"),
    ("district-b", "country"),
    ("area-b1", "district-b"),
]
User = tuple[str, Role, list[str], list[str]]
USERS: list[User] = [
    ("admin", Role.ADMIN, [], []),
    ("alice", Role.CHW, ["area-a1"], []),
    ("bob", Role.CHW, ["area-b1"], []),
    ("sam", Role.SUPERVISOR, ["district-a"], ["district-b"]),
]


def seed(
    data_dir: Path,
    places: Sequence[tuple[str, str | None]] = PLACES,
    users: Sequence[User] = USERS,
    password: str = PASSWORD,
) -> None:
    """Create the SQLite file under ``data_dir`` with these places and users.

    The users are added by the store's own ``add_user`` (its checks run), but their
    password hash is made once per password and test process: a real scrypt hash,
    which the server verifies as any other, only with one salt for all of them.
    Seeding is done before most tests of the suite, and one scrypt costs about 60 ms
    (four users: a quarter of a second a test).
    """
    path = db_path(data_dir)
    initialise(path)
    with closing(connect(path)) as conn, mock.patch.object(accounts, "hash_password", _hashed):
        for place, parent in places:
            embedded_tables.add_place(conn, place, parent, None)
        for name, role, captured, read in users:
            embedded_tables.add_user(conn, name, role, password, captured, read)


# Bound to the real function now: seed() puts this one in its place while it runs.
_hashed = functools.cache(accounts.hash_password)


def basic_auth(name: str, password: str = PASSWORD) -> dict[str, str]:
    """HTTP Basic credentials as a header."""
    token = base64.b64encode(f"{name}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}
