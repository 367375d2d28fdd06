"""A fixture that counts password checks (scrypt), shared by the login-limit tests.

Import it into a test module (``from password_checks import checks``) to use it.
"""

from __future__ import annotations

import pytest

from sync import accounts


@pytest.fixture
def checks(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The passwords handed to scrypt, in order."""
    seen: list[str] = []
    real = accounts.verify_password

    def counting(password: str, stored: str) -> bool:
        seen.append(password)
        return real(password, stored)

    monkeypatch.setattr(accounts, "verify_password", counting)
    return seen
