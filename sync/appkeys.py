"""Typed keys for the application's shared state (``web.AppKey``)."""

from __future__ import annotations

from aiohttp import web

from sync.auth import Authenticator
from sync.config import Config
from sync.people_store.ports import AccountStore
from sync.store.sqlite import SqliteStore

CONFIG = web.AppKey("config", Config)
STORE = web.AppKey("store", SqliteStore)
AUTH = web.AppKey("auth", Authenticator)
ACCOUNTS = web.AppKey("accounts", AccountStore)  # users, places, sessions (sync.people_store)
