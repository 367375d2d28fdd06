"""Characters refused in identifiers: control characters and bidirectional controls.

A document id, attachment name, place id or user name is shown to people
(supervisor pages, logs, audit entries, file names) and compared byte for
byte.  NUL truncates it in C libraries and logs; other C0/C1 controls (and
DEL) rewrite terminals and split log lines; a bidirectional control (U+202E,
right-to-left override) makes an id display as something it is not ("Trojan
Source", CVE-2021-42574).  None of them belongs in a name, so they are refused.
"""

from __future__ import annotations

import re

_C0_DEL_C1 = "\x00-\x1f\x7f-\x9f"
# LRE RLE PDF LRO RLO, LRI RLI FSI PDI, LRM RLM, ALM
_BIDI = "\u202a-\u202e\u2066-\u2069\u200e\u200f\u061c"
_UNSAFE = re.compile(f"[{_C0_DEL_C1}{_BIDI}]")


def first_unsafe(text: str) -> str | None:
    """The first control or bidirectional-control character in ``text``, as ``U+XXXX``."""
    found = _UNSAFE.search(text)
    return None if found is None else f"U+{ord(found.group()):04X}"
