"""Fixtures for the in-process core tests; their code lives in ``sync_fixtures``.

Test modules import helpers from ``sync_fixtures`` (a unique module name), never
from ``conftest``: several test folders have a conftest, and whichever is imported
first would win.
"""

from __future__ import annotations

from password_checks import checks
from sync_fixtures import api, client, config, data_dir
from tcp_cut import cut

__all__ = ["api", "checks", "client", "config", "cut", "data_dir"]
