"""Call-through to the embedded adapter's tables (:mod:`device_registry.embedded_schema`),
for code outside the registry that seeds an embedded store (the SMS gateway's bench)."""

from __future__ import annotations

from device_registry.embedded_schema import SCHEMA, ensure

__all__ = ["SCHEMA", "ensure"]
