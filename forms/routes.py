"""What the app factory mounts for forms: the definitions, and the document validator.

:func:`extend` registers one validator maker (:mod:`sync.extensions`).  At
start it loads and meta-validates the form definitions (``FIELDSYNC_FORMS_DIR``
or ``config.extra["forms_dir"]``, else the shipped ones), keeps them under
:data:`FORMS` for other packages (the SMS gateway reads them with
:func:`forms_of`), and makes the validator every written document passes.
Forms add no routes.
"""

from __future__ import annotations

import os
from pathlib import Path

from aiohttp import web

from barcode.settings import BarcodeSettings
from forms.docschema import DocumentValidator
from forms.load import load_forms
from forms.model import FormSet
from sync.appkeys import CONFIG
from sync.config import Config
from sync.extensions import Extensions
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


def extend(ext: Extensions) -> None:
    """Register the document validator and the forms' setting."""
    ext.validators.append(document_validator)
    ext.settings.extend(SETTINGS)


def forms_dir(config: Config) -> Path | None:
    configured = config.extra.get("forms_dir") or os.environ.get(FORMS_DIR_ENV)
    return Path(configured) if configured else None


def forms_of(app: web.Application) -> FormSet:
    """The app's form definitions, loaded and checked the first time they are asked for.

    Only while the app starts (it is frozen afterwards): whichever package asks
    first loads them, so no package depends on another's start-up order.
    """
    if FORMS not in app:
        app[FORMS] = load_forms(forms_dir(app[CONFIG]))
    return app[FORMS]


def document_validator(app: web.Application) -> DocumentValidator:
    """The validator of documents of the forms' types (``MakeValidator``)."""
    barcode = BarcodeSettings.from_mapping(app[CONFIG].extra.get("barcode", {}))
    return DocumentValidator(forms_of(app), barcode.scheme)
