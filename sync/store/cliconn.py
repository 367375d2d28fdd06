"""The management commands' way into their data dir's SQLite file.

A command module parses its arguments with :mod:`sync.clitools`; a command
that works on the data dir's tables itself runs its function here, in one
transaction on the file (:func:`sync.store.schema.with_file`: safe while the
server runs, refused for a data dir without a store).
"""

from __future__ import annotations

import argparse
import sqlite3
from collections.abc import Callable
from typing import TypeVar

from sync.clitools import config_of
from sync.store.schema import with_file

T = TypeVar("T")


def with_conn(args: argparse.Namespace, fn: Callable[[sqlite3.Connection], T]) -> T:
    """``fn(conn)`` in one transaction on the store of the command's data dir."""
    return with_file(config_of(args).data_dir, fn)
