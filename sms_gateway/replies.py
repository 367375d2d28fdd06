"""What the server texts back, in the worker's language (English and Swahili).

Every template is a ``str.format`` string; :func:`check_templates` proves at
import (and in the tests) that every language has every template with the
same placeholders.  Text a worker sent is cut to :data:`ECHO_CHARS` before it
is echoed, so one bad message cannot turn into a long, costly reply.
"""

from __future__ import annotations

import string
from collections.abc import Mapping

from forms.model import Form, FormSet
from forms.values import ErrorKind, FieldError
from sms_gateway.parser import ParseFailure

DEFAULT_LANGUAGE = "en"
ECHO_CHARS = 20
MAX_ERRORS = 3

TEMPLATES: dict[str, dict[str, str]] = {
    "en": {
        "registered": "{name} registered, ID {patient_id}. EDD {edd}. ANC reminders will follow.",
        "recorded": "{form} recorded for {name} ({patient_id}).",
        "confirm_V": "ANC visit recorded for {name} ({patient_id}) at {weeks} weeks.",
        "confirm_D": "Delivery recorded for {name} ({patient_id}): {outcome}. Reminders stopped.",
        "confirm_R": "Referral recorded for {name} ({patient_id}): {sign}. "
        "Take her to the health facility now.",
        "unknown_patient": "No patient with ID {patient_id} in your area. "
        "Check the ID and send again.",
        "unknown_sender": "This phone is not registered. Ask your supervisor to register it.",
        "lost_phone": "This phone was reported lost or stolen, so your message was not "
        "recorded. Contact your supervisor.",
        "no_place": "Your account has no area to record in. Ask your supervisor.",
        "not_saved": "Sorry, your message could not be saved. Your supervisor will follow up.",
        "empty": "Empty message. Start with a form code: {codes}.",
        "unknown_form": "Unknown form code '{code}'. Use one of: {codes}.",
        "invalid": "{form} not saved: {errors}. Send: {usage}",
        "reminder": "Reminder: {name} ({patient_id}) is due for ANC contact {contact} "
        "at {weeks} weeks, around {day}.",
        # one line per error kind
        ErrorKind.MISSING_FIELD.value: "{label} is missing",
        ErrorKind.EXTRA_VALUES.value: "unexpected extra text '{text}'",
        ErrorKind.UNKNOWN_KEY.value: "unknown label '{text}'",
        ErrorKind.REPEATED_FIELD.value: "{label} sent twice",
        ErrorKind.NOT_A_NUMBER.value: "{label}: '{text}' is not a number",
        ErrorKind.OUT_OF_RANGE.value: "{label} must be {range} (you sent {text})",
        ErrorKind.BAD_DATE.value: "{label}: '{text}' is not a date (use YYYY-MM-DD)",
        ErrorKind.DATE_OUT_OF_RANGE.value: "{label} must be {range} (you sent {text})",
        ErrorKind.BAD_BOOLEAN.value: "{label}: answer yes or no",
        ErrorKind.BAD_PHONE.value: "{label}: '{text}' is not a phone number",
        ErrorKind.BAD_CHOICE.value: "{label}: '{text}' is not one of {choices}",
        ErrorKind.TOO_SHORT.value: "{label} is too short",
        ErrorKind.TOO_LONG.value: "{label} is too long",
        ErrorKind.BAD_PATTERN.value: "{label}: '{text}' is not in the right form",
        ErrorKind.BAD_PATIENT_ID.value: "'{text}' is not a patient ID",
        ErrorKind.BAD_CHECK_DIGIT.value: "patient ID '{text}' is wrong (check digit); "
        "check the card",
        "range_both": "{min} to {max}",
        "range_min": "at least {min}",
        "range_max": "at most {max}",
    },
    "sw": {
        "registered": "{name} amesajiliwa, namba {patient_id}. Tarehe ya kujifungua {edd}. "
        "Utapokea vikumbusho vya kliniki.",
        "recorded": "{form} imerekodiwa kwa {name} ({patient_id}).",
        "confirm_V": "Hudhurio la kliniki limerekodiwa kwa {name} ({patient_id}) wiki {weeks}.",
        "confirm_D": "Kujifungua kumerekodiwa kwa {name} ({patient_id}): {outcome}. "
        "Vikumbusho vimesitishwa.",
        "confirm_R": "Rufaa imerekodiwa kwa {name} ({patient_id}): {sign}. "
        "Mpeleke kituo cha afya sasa.",
        "unknown_patient": "Hakuna mgonjwa mwenye namba {patient_id} katika eneo lako. "
        "Hakiki namba na utume tena.",
        "unknown_sender": "Simu hii haijasajiliwa. Muombe msimamizi wako aisajili.",
        "lost_phone": "Simu hii iliripotiwa kupotea au kuibiwa, kwa hiyo ujumbe wako "
        "haukurekodiwa. Wasiliana na msimamizi wako.",
        "no_place": "Akaunti yako haina eneo la kurekodi. Muulize msimamizi wako.",
        "not_saved": "Samahani, ujumbe wako haukuhifadhiwa. Msimamizi wako atafuatilia.",
        "empty": "Ujumbe mtupu. Anza na herufi ya fomu: {codes}.",
        "unknown_form": "Herufi ya fomu '{code}' haijulikani. Tumia mojawapo ya: {codes}.",
        "invalid": "{form} haikuhifadhiwa: {errors}. Tuma: {usage}",
        "reminder": "Kikumbusho: {name} ({patient_id}) anatakiwa kuhudhuria kliniki "
        "mara ya {contact} wiki {weeks}, karibu {day}.",
        ErrorKind.MISSING_FIELD.value: "{label} haipo",
        ErrorKind.EXTRA_VALUES.value: "maandishi ya ziada '{text}' hayatakiwi",
        ErrorKind.UNKNOWN_KEY.value: "lebo '{text}' haijulikani",
        ErrorKind.REPEATED_FIELD.value: "{label} imetumwa mara mbili",
        ErrorKind.NOT_A_NUMBER.value: "{label}: '{text}' si namba",
        ErrorKind.OUT_OF_RANGE.value: "{label} lazima iwe {range} (ulituma {text})",
        ErrorKind.BAD_DATE.value: "{label}: '{text}' si tarehe (tumia YYYY-MM-DD)",
        ErrorKind.DATE_OUT_OF_RANGE.value: "{label} lazima iwe {range} (ulituma {text})",
        ErrorKind.BAD_BOOLEAN.value: "{label}: jibu ndiyo au hapana",
        ErrorKind.BAD_PHONE.value: "{label}: '{text}' si namba ya simu",
        ErrorKind.BAD_CHOICE.value: "{label}: '{text}' si mojawapo ya {choices}",
        ErrorKind.TOO_SHORT.value: "{label} ni fupi mno",
        ErrorKind.TOO_LONG.value: "{label} ni ndefu mno",
        ErrorKind.BAD_PATTERN.value: "{label}: '{text}' haiko katika muundo sahihi",
        ErrorKind.BAD_PATIENT_ID.value: "'{text}' si namba ya mgonjwa",
        ErrorKind.BAD_CHECK_DIGIT.value: "namba ya mgonjwa '{text}' si sahihi "
        "(tarakimu ya kuhakiki); angalia kadi",
        "range_both": "kati ya {min} na {max}",
        "range_min": "angalau {min}",
        "range_max": "isiyozidi {max}",
    },
}
LANGUAGES = tuple(TEMPLATES)
# Outcomes of parsing without a form: their own whole-message templates.
_WHOLE_MESSAGE = {ErrorKind.EMPTY: "empty", ErrorKind.UNKNOWN_FORM: "unknown_form"}


def _placeholders(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


def check_templates() -> list[str]:
    """Every language has every English template, with the same placeholders."""
    problems = []
    english = TEMPLATES[DEFAULT_LANGUAGE]
    for language, templates in TEMPLATES.items():
        for key, text in english.items():
            if key not in templates:
                problems.append(f"{language}: no template {key!r}")
            elif _placeholders(templates[key]) != _placeholders(text):
                problems.append(f"{language}: template {key!r} has other placeholders")
    return problems


def language_or_default(language: str | None) -> str:
    return language if language in TEMPLATES else DEFAULT_LANGUAGE


def render(key: str, language: str, **params: object) -> str:
    templates = TEMPLATES[language_or_default(language)]
    return templates[key].format(**{k: str(v) for k, v in params.items()})


def has_template(key: str) -> bool:
    return key in TEMPLATES[DEFAULT_LANGUAGE]


def echo(text: str | None) -> str:
    text = text or ""
    return text if len(text) <= ECHO_CHARS else text[: ECHO_CHARS - 1] + "…"


def usage(form: Form, language: str) -> str:
    """``P <weeks since last period> <name>``: how to send the form."""
    parts = [f"<{f.label_in(language).lower()}>" for f in form.fields if f.required]
    parts += [f"[{f.label_in(language).lower()}]" for f in form.fields if not f.required]
    return " ".join([form.code, *parts])


def choice_text(form: Form, field_name: str, code: str, language: str) -> str:
    spec = form.field(field_name)
    texts: Mapping[str, str] = (spec.choices or {}).get(code, {}) if spec else {}
    return texts.get(language) or texts.get(DEFAULT_LANGUAGE) or code


def describe_error(error: FieldError, form: Form | None, language: str) -> str:
    spec = form.field(error.field) if form is not None and error.field else None
    label = spec.label_in(language) if spec is not None else (error.field or "")
    params = dict(error.params)
    span = _range(params, language)
    return render(
        error.kind.value,
        language,
        label=label,
        text=echo(error.text),
        range=span,
        choices=params.get("choices", ""),
    )


def _range(params: Mapping[str, str], language: str) -> str:
    low, high = params.get("min"), params.get("max")
    if low is not None and high is not None:
        return render("range_both", language, min=low, max=high)
    if low is not None:
        return render("range_min", language, min=low)
    return render("range_max", language, max=high or "")


def failure_reply(failure: ParseFailure, forms: FormSet, language: str) -> str:
    """The errors of an invalid message in plain words, and how to send the form."""
    first = failure.errors[0] if failure.errors else None
    codes = ", ".join(forms.codes)
    if first is not None and first.kind in _WHOLE_MESSAGE:
        return render(_WHOLE_MESSAGE[first.kind], language, code=echo(first.text), codes=codes)
    form = forms.get(failure.code or "")
    shown = [describe_error(e, form, language) for e in failure.errors[:MAX_ERRORS]]
    if len(failure.errors) > MAX_ERRORS:
        shown.append("…")
    return render(
        "invalid",
        language,
        form=failure.code or "",
        errors="; ".join(shown),
        usage=usage(form, language) if form else codes,
    )


_PROBLEMS = check_templates()
if _PROBLEMS:  # pragma: no cover - a broken template table is a programming error
    raise RuntimeError("reply templates: " + "; ".join(_PROBLEMS))
