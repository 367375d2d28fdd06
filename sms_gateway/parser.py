"""The coded-SMS parser: ``P 3 Jane`` → a typed :class:`Report`, or a :class:`ParseFailure`.

After :func:`normalise` (Unicode NFC; invisible format and control characters
dropped; curly quotes made straight; surrounding whitespace and trailing
punctuation cut), a message reads::

    message  = code sep* body
    code     = a form code or alias in any case ("p", "P"); a code glued to a digit ("P3") too
    sep      = whitespace | "!" | "-" | "," | ":" | "#"
    body     = labelled | compact
    labelled = segment ("#" segment)*       segment = key value   ("W 3", "N Jane", "W3")
    compact  = value (gap value)*           positional, gap = whitespace or ","; the last
                                            field, when it is a string, takes the rest
    value    = word | '"' text '"'          a quoted value keeps its spaces; "" is one "

The body is labelled when a ``#`` follows the code or stands in the body
(outside quotes) and the first word of its first segment is one of the
form's keys; otherwise it is compact.  This follows the TextForms formats of
CHT (https://docs.communityhealthtoolkit.org/apps/reference/forms/sms/) but is
written from this description.

:func:`parse` never raises; :func:`format_compact` and :func:`format_labelled`
write a valid report so that ``parse`` reads back the same report.
"""

from __future__ import annotations

import datetime as dt
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from barcode.checkdigit import Scheme, SchemeLike
from forms.model import Field, FieldType, Form, FormSet, Value
from forms.values import ErrorKind, FieldError, Reading, coerce, render

CODE_SEPARATORS = frozenset("!-,:#")
TRAILING_PUNCTUATION = frozenset(".,;:!?#\u3002\u3001\u061f\u060c\u0964")
CURLY_QUOTES = str.maketrans(dict.fromkeys("\u201c\u201d\u201e\u201f\u2033\u00ab\u00bb", '"'))


@dataclass(frozen=True)
class Report:
    """A valid message: the form's code and each present field's typed value."""

    code: str
    values: Mapping[str, Value]


@dataclass(frozen=True)
class ParseFailure:
    """An invalid message: the form (when the code was known) and every problem found."""

    code: str | None
    errors: tuple[FieldError, ...]


ParseResult = Report | ParseFailure


@dataclass(frozen=True)
class Token:
    text: str
    quoted: bool
    start: int


# -- normalising and tokens -------------------------------------------------------------
def normalise(text: str) -> str:
    """What the parser reads: NFC, no invisible characters, no trailing punctuation."""
    text = unicodedata.normalize("NFC", text).translate(CURLY_QUOTES)
    text = "".join(c for c in text if c.isspace() or unicodedata.category(c)[0] != "C")
    text = text.strip()
    while text and (text[-1] in TRAILING_PUNCTUATION or text[-1].isspace()):
        text = text[:-1]
    return text


def tokenize(body: str, gaps: str = ",") -> list[Token]:
    """Words and quoted values; whitespace and ``gaps`` separate words outside quotes."""
    tokens: list[Token] = []
    i, n = 0, len(body)
    while i < n:
        char = body[i]
        if char.isspace() or char in gaps:
            i += 1
        elif char == '"':
            text, i_end = _quoted(body, i)
            tokens.append(Token(text, True, i))
            i = i_end
        else:
            j = i
            while j < n and not (body[j].isspace() or body[j] in gaps or body[j] == '"'):
                j += 1
            tokens.append(Token(body[i:j], False, i))
            i = j
    return tokens


def _quoted(body: str, start: int) -> tuple[str, int]:
    """The text of the quoted value at ``start`` and the index after it (unclosed: the rest)."""
    chars: list[str] = []
    j, n = start + 1, len(body)
    while j < n:
        if body[j] == '"':
            if j + 1 < n and body[j + 1] == '"':
                chars.append('"')
                j += 2
                continue
            return "".join(chars), j + 1
        chars.append(body[j])
        j += 1
    return "".join(chars), n


def split_outside_quotes(body: str, mark: str = "#") -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    for char in body:
        if char == '"':
            quoted = not quoted
        if char == mark and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def _is_digit(char: str) -> bool:
    return unicodedata.decimal(char, None) is not None


# -- parsing ------------------------------------------------------------------------------
def parse(
    text: str, forms: FormSet, today: dt.date | None = None, scheme: SchemeLike = Scheme.LUHN30
) -> ParseResult:
    """Read one message; ``today`` (the report day) enables date checks relative to it."""
    reading = Reading(today, scheme)
    message = normalise(text)
    if not message:
        return ParseFailure(None, (FieldError(ErrorKind.EMPTY),))
    form, word, sep, body = split_code(message, forms)
    if form is None:
        return ParseFailure(None, (FieldError(ErrorKind.UNKNOWN_FORM, text=word),))
    if is_labelled(form, sep, body):
        values, errors = _labelled(form, body, reading)
    else:
        values, errors = _compact(form, body, reading)
    if errors:
        return ParseFailure(form.code, tuple(errors))
    return Report(form.code, values)


def split_code(message: str, forms: FormSet) -> tuple[Form | None, str, str, str]:
    """(form or None, the code word as sent, the separator after it, the body)."""
    i, n = 0, len(message)
    while i < n and not (message[i].isspace() or message[i] in CODE_SEPARATORS):
        i += 1
    j = i
    while j < n and (message[j].isspace() or message[j] in CODE_SEPARATORS):
        j += 1
    word, sep, body = message[:i], message[i:j], message[j:]
    form = forms.get(word)
    if form is not None:
        return form, word, sep, body
    for cut in range(len(word) - 1, 0, -1):  # "P3 Jane": a code glued to its first value
        glued = forms.get(word[:cut])
        if glued is not None and _is_digit(word[cut]):
            return glued, word[:cut], "", message[cut:]
    return None, word, sep, body


def is_labelled(form: Form, sep: str, body: str) -> bool:
    segments = split_outside_quotes(body)
    if "#" not in sep and len(segments) < 2:
        return False
    first = next((s for s in segments if s.strip()), "")
    return split_key(form, first.strip()) is not None


def split_key(form: Form, segment: str) -> tuple[Field, str] | None:
    """The field a labelled segment names and the text of its value; None if no key matches."""
    words = segment.split(maxsplit=1)
    if words:
        spec = form.field_for_key(words[0])
        if spec is not None:
            return spec, words[1] if len(words) > 1 else ""
    folded = segment.casefold()
    glued = [
        (len(key), spec)
        for spec in form.fields
        for key in spec.keys
        if folded.startswith(key.casefold())
        and len(segment) > len(key)
        and _is_digit(segment[len(key)])
    ]
    if not glued:
        return None
    length, spec = max(glued, key=lambda item: item[0])
    return spec, segment[length:]


def _value_text(text: str) -> str:
    """A value as sent: a lone quoted token keeps its spaces, otherwise spaces collapse."""
    tokens = tokenize(text, gaps="")
    if len(tokens) == 1 and tokens[0].quoted:
        return tokens[0].text
    return " ".join(text.split())


def _store(
    spec: Field,
    text: str,
    reading: Reading,
    values: dict[str, Value],
    errors: list[FieldError],
) -> None:
    if text == "":
        if spec.required:
            errors.append(FieldError(ErrorKind.MISSING_FIELD, spec.name))
        return
    value = coerce(spec, text, reading)
    if isinstance(value, FieldError):
        errors.append(value)
    else:
        values[spec.name] = value


def _compact(form: Form, body: str, reading: Reading) -> tuple[dict[str, Value], list[FieldError]]:
    tokens = tokenize(body)
    values: dict[str, Value] = {}
    errors: list[FieldError] = []
    rest, position = form.rest_field, 0
    for spec in form.fields:
        if spec is rest and position < len(tokens):
            remaining = tokens[position:]
            one_quoted = len(remaining) == 1 and remaining[0].quoted
            text = remaining[0].text if one_quoted else " ".join(body[remaining[0].start :].split())
            position = len(tokens)
        elif position < len(tokens):
            text = tokens[position].text
            position += 1
        else:
            text = ""
        _store(spec, text, reading, values, errors)
    if position < len(tokens):
        extra = " ".join(t.text for t in tokens[position:])
        errors.append(FieldError(ErrorKind.EXTRA_VALUES, text=extra))
    return values, errors


def _labelled(form: Form, body: str, reading: Reading) -> tuple[dict[str, Value], list[FieldError]]:
    values: dict[str, Value] = {}
    errors: list[FieldError] = []
    seen: set[str] = set()
    for segment in split_outside_quotes(body):
        segment = segment.strip()
        if not segment:
            continue
        found = split_key(form, segment)
        if found is None:
            errors.append(FieldError(ErrorKind.UNKNOWN_KEY, text=segment.split()[0]))
            continue
        spec, text = found
        if spec.name in seen:
            errors.append(FieldError(ErrorKind.REPEATED_FIELD, spec.name))
            continue
        seen.add(spec.name)
        _store(spec, _value_text(text), reading, values, errors)
    errors += [
        FieldError(ErrorKind.MISSING_FIELD, spec.name)
        for spec in form.fields
        if spec.required and spec.name not in seen
    ]
    return values, errors


# -- formatting -----------------------------------------------------------------------------
def format_compact(report: Report, form: Form) -> str:
    """``P 3 Jane``.  Raises ValueError when an absent optional field precedes a present one."""
    parts = [form.code]
    present = [spec for spec in form.fields if spec.name in report.values]
    if present != list(form.fields[: len(present)]):
        raise ValueError("the compact format cannot skip a field; use format_labelled")
    for spec in present:
        text = render(report.values[spec.name])
        if spec.type is FieldType.STRING:
            text = _quote(text, plain=_plain_rest if spec is form.rest_field else _plain_word)
        parts.append(text)
    return " ".join(parts)


def format_labelled(report: Report, form: Form) -> str:
    """``P#W 3#N Jane``."""
    segments = [
        f"{spec.key} {_quote(render(report.values[spec.name]), plain=_plain_rest)}"
        for spec in form.fields
        if spec.name in report.values
    ]
    return form.code + "#" + "#".join(segments)


def _plain_word(text: str) -> bool:
    return (
        text != ""
        and not any(c.isspace() or c in '",#' for c in text)
        and text[-1] not in TRAILING_PUNCTUATION
    )


def _plain_rest(text: str) -> bool:
    return (
        text != ""
        and text == " ".join(text.split())
        and not any(c in '"#' for c in text)
        and text[0] != ","
        and text[-1] not in TRAILING_PUNCTUATION
    )


def _quote(text: str, plain: Callable[[str], bool]) -> str:
    if plain(text):
        return text
    return '"' + text.replace('"', '""') + '"'
