"""How deep a JSON value nests, asked cheaply: is it at most N levels of objects and arrays?

The outermost object or array is level 1; scalars add none.  orjson refuses
to write anything nested deeper than :data:`ORJSON_LEVELS` and does so in C,
so wrapping the value in ``ORJSON_LEVELS - limit`` arrays and writing it
answers "at most ``limit``" about eight times faster than a walk in Python
(10 ms against 80 ms for a 3.5 MB document).  The answer is trusted only when
orjson still refuses one level more (checked once, at import); whenever orjson
refuses, :func:`walk_fits` decides, level by level and without recursion.
"""

from __future__ import annotations

from typing import Any

import orjson

ORJSON_LEVELS = 254


def fits(value: Any, limit: int) -> bool:
    """True when ``value`` nests at most ``limit`` levels deep."""
    if _ORJSON_REFUSES_DEEPER and limit <= ORJSON_LEVELS:
        wrapped = value
        for _ in range(ORJSON_LEVELS - limit):
            wrapped = [wrapped]
        try:
            orjson.dumps(wrapped)
        except TypeError:
            pass  # too deep, or a value orjson cannot write at all: the walk decides
        else:
            return True
    return walk_fits(value, limit)


def walk_fits(value: Any, limit: int) -> bool:
    level = [value] if isinstance(value, (dict, list)) else []
    depth = 0
    while level:
        depth += 1
        if depth > limit:
            return False
        below: list[Any] = []
        for item in level:
            children = item.values() if isinstance(item, dict) else item
            below += [child for child in children if isinstance(child, (dict, list))]
        level = below
    return True


def _refuses(levels: int) -> bool:
    nested: Any = None
    for _ in range(levels):
        nested = [nested]
    try:
        orjson.dumps(nested)
    except TypeError:
        return True
    return False


_ORJSON_REFUSES_DEEPER = _refuses(ORJSON_LEVELS + 1)
