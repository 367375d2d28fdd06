"""What the app factory mounts for forms: definitions loaded, and the document validator.

``setup(app)`` appends a ``cleanup_ctx`` that runs after the core's: it loads
and meta-validates the form definitions (``FIELDSYNC_FORMS_DIR`` or
``config.extra["forms_dir"]``, else the shipped ones), keeps them under
:data:`FORMS` for other packages (the SMS gateway), and appends the
document validator to the replication core's validators.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web

from barcode.settings import BarcodeSettings
from forms.docschema import DocumentValidator
from forms.load import load_forms
from forms.model import FormSet
from sync.appkeys import CONFIG
from sync.config import Config
from sync.replication.routes import REPLICATION
from sync.settings import Setting

FORMS = web.AppKey("forms", FormSet)
FORMS_DIR_ENV = "FIELDSYNC_FORMS_DIR"
SETTINGS = (
    Setting(
        FORMS_DIR_ENV,
        "none",
        "a folder of form definitions (`P.json`, ...) used instead of the shipped ones "
        "(`forms/definitions`); they are checked when the server starts",
    ),
)


def forms_dir(config: Config) -> Path | None:
    configured = config.extra.get("forms_dir") or os.environ.get(FORMS_DIR_ENV)
    return Path(configured) if configured else None


async def _forms(app: web.Application) -> AsyncIterator[None]:
    forms = load_forms(forms_dir(app[CONFIG]))
    app[FORMS] = forms
    validators = app[REPLICATION].parts.validators
    barcode = BarcodeSettings.from_mapping(app[CONFIG].extra.get("barcode", {}))
    validator = DocumentValidator(forms, barcode.scheme)
    validators.append(validator)
    yield
    if validator in validators:
        validators.remove(validator)


def setup(app: web.Application) -> None:
    app.cleanup_ctx.append(_forms)
