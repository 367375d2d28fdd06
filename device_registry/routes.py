"""Device registry routes (being written)."""

from __future__ import annotations

from aiohttp import web


def setup(app: web.Application) -> None:
    """Mount the device registry (routes, tables, device check)."""
