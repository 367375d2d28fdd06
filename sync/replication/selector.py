"""Mango selectors, matched the way CouchDB matches them for ``_changes?filter=_selector``.

Selector syntax: https://docs.couchdb.org/en/stable/api/database/find.html#selector-syntax
(semantics checked against CouchDB's ``mango_selector.erl``)::

    selector   := { member, ... }                   several members are an implicit $and;
                                                    {} at the root matches every document
    member     := "$and" | "$or" | "$nor" : [ clause, ... ]
                | "$not" : { member, ... }
                | condition
                | field : clause
    clause     := { member, ... }                   members apply at the current field path
                | value                             any other JSON value means {"$eq": value}
                                                    (and so does {}: equality with {})
    field      := name ( "." name )*                "\\." is a literal dot, "\\$" a literal $;
                                                    a numeric name indexes into an array
    condition  := ( "$lt" | "$lte" | "$eq" | "$ne" | "$gte" | "$gt" ) : value
                | ( "$in" | "$nin" | "$all" ) : [ value, ... ]
                | "$exists" : boolean
                | "$type" : "null" | "boolean" | "number" | "string" | "array" | "object"
                | "$size" : integer >= 0
                | "$mod" : [ divisor, remainder ]   integers, divisor non-zero
                | ( "$regex" | "$beginsWith" ) : string
                | ( "$elemMatch" | "$allMatch" | "$keyMapMatch" ) : { member, ... }
                                                    matched against each element (or key)

A combinator inside a field, ``{"a": {"$or": [{"$gt": 5}, {"b": 1}]}}``, applies its
clauses under that field (``a > 5`` or ``a.b == 1``).  A condition at the root applies to
the whole document.

CouchDB semantics kept here, some of them surprising:

* Comparisons (``$lt`` ... ``$gt``, ``$eq``, ``$ne``, ``$in``, ``$nin``) use view
  collation across types, null < false < true < numbers < strings < arrays < objects, so
  ``{"n": {"$lt": 5}}`` matches ``n: null`` and ``n: true``; equality is collation
  equality (``1 == 1.0``, ``1 != "1"``).  Arrays compare element-wise, then by length;
  objects compare key, then value, pair by pair in document order, then by size.
* A condition on a field the document lacks never matches, except ``$exists: false``;
  that includes ``$ne`` and ``$nin``.  CouchDB pushes ``$not`` and ``$nor`` down to the
  field conditions (De Morgan) before matching, so ``{"$not": {"a": 1}}`` means
  ``{"a": {"$ne": 1}}`` and does *not* match a document without ``a``.  A path that runs
  through a scalar or past an array's end matches nothing, not even ``$exists: false``.
* Inside ``$elemMatch``, ``$allMatch`` and ``$keyMapMatch`` CouchDB does not push
  negations down, so a ``$not`` there is a plain complement.
* An empty ``$and``, ``$or`` or ``$nor`` matches everything, even under ``$not``.
* ``$in`` on an array field matches when any element equals any argument; ``$nin`` is
  its complement.  ``$all`` matches an array containing every argument, or equal to the
  argument when that is a single array; ``$all: []`` matches nothing.  ``$allMatch``
  never matches an empty array.  ``$mod`` matches integers only, with Erlang's ``rem``
  (the remainder takes the dividend's sign).

Deliberate approximations:

* Strings compare by code point; CouchDB uses ICU collation, where "a" < "B" and
  canonically equivalent strings are equal.  (For ``_id`` CouchDB compares raw bytes,
  which code-point order reproduces exactly.)
* ``$regex`` is Python's :func:`re.search`, not PCRE (CouchDB also runs it over UTF-8
  bytes, not code points).
* ``$all`` tests membership by collation equality; CouchDB uses exact term equality,
  which tells ``1`` from ``1.0``.
* Stricter validation: an unknown ``$type`` name, a zero ``$mod`` divisor, ``$text`` and
  selectors nested deeper than 64 levels are rejected up front; CouchDB accepts
  the first three and then never matches, fails while matching, or trusts a text index.
* ``$nor`` inside ``$elemMatch`` works (CouchDB rejects it while matching).
"""

from __future__ import annotations

import enum
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final, Protocol, TypeAlias

from sync.errors import BadRequest

_Path: TypeAlias = tuple[str, ...]

_MAX_DEPTH: Final = 64  # deepest JSON nesting accepted; bounds recursion while matching
_TYPE_NAMES: Final = ("null", "boolean", "number", "string", "array", "object")
_TYPE_OF_RANK: Final = ("null", "boolean", "boolean", "number", "string", "array", "object")
_UNSUPPORTED: Final = frozenset(
    {"$text", "$where", "$geoWithin", "$geoIntersects", "$near", "$nearSphere"}
)
_UNESCAPED_DOT: Final = re.compile(r"(?<!\\)\.")
_ARRAY_INDEX: Final = re.compile(r"[+-]?[0-9]{1,18}")


# --- collation ----------------------------------------------------------------------


def _is_array(value: object) -> bool:
    return isinstance(value, list | tuple)


def _rank(value: object) -> int:
    """Position of the value's JSON type in CouchDB's collation order."""
    if value is None:
        return 0
    if isinstance(value, bool):
        return 2 if value else 1
    if isinstance(value, int | float):
        return 3
    if isinstance(value, str):
        return 4
    if _is_array(value):
        return 5
    if isinstance(value, Mapping):
        return 6
    raise TypeError(f"not a JSON value: {type(value).__name__}")


def _sign(a: Any, b: Any) -> int:
    return int(a > b) - int(a < b)


def _same(_a: object, _b: object) -> int:
    return 0


def _collate_arrays(a: Sequence[Any], b: Sequence[Any]) -> int:
    for x, y in zip(a, b, strict=False):
        order = _collate(x, y)
        if order:
            return order
    return _sign(len(a), len(b))


def _collate_objects(a: Mapping[str, Any], b: Mapping[str, Any]) -> int:
    for (key_a, val_a), (key_b, val_b) in zip(a.items(), b.items(), strict=False):
        order = _sign(key_a, key_b) or _collate(val_a, val_b)
        if order:
            return order
    return _sign(len(a), len(b))


_COLLATE_WITHIN_RANK: Final[tuple[Callable[[Any, Any], int], ...]] = (
    _same,  # null
    _same,  # false
    _same,  # true
    _sign,  # numbers
    _sign,  # strings, by code point (CouchDB: ICU)
    _collate_arrays,
    _collate_objects,
)


def _collate(a: Any, b: Any) -> int:
    """-1, 0 or 1 as ``a`` sorts before, with or after ``b`` in CouchDB view collation."""
    rank_a, rank_b = _rank(a), _rank(b)
    if rank_a != rank_b:
        return -1 if rank_a < rank_b else 1
    return _COLLATE_WITHIN_RANK[rank_a](a, b)


# --- field paths --------------------------------------------------------------------


class _Absent(enum.Enum):
    MISSING = "missing"  # an object on the path lacks the key
    BAD_PATH = "bad_path"  # the path runs through a scalar or past an array's end


def _lookup(value: Any, path: _Path) -> Any:
    """The value at ``path`` inside ``value``, or an :class:`_Absent` marker."""
    for name in path:
        if isinstance(value, Mapping):
            if name not in value:
                return _Absent.MISSING
            value = value[name]
        elif _is_array(value) and _ARRAY_INDEX.fullmatch(name) and 0 <= int(name) < len(value):
            value = value[int(name)]
        else:
            return _Absent.BAD_PATH
    return value


def _parse_field(name: str) -> _Path:
    parts = _UNESCAPED_DOT.split(name) if "\\" in name else name.split(".")
    if "" in parts:
        raise BadRequest(f"invalid field name '{name}' in selector")
    return tuple(part.replace("\\", "") for part in parts)


# --- the matching tree --------------------------------------------------------------


class _Mode(enum.Enum):
    PLAIN = "plain"
    NEGATED = "negated"  # under an odd number of $not/$nor, being pushed down (De Morgan)
    LITERAL = "literal"  # inside $elemMatch & co, where $not is a plain complement


class _Node(Protocol):
    def holds(self, value: Any, mode: _Mode) -> bool: ...


class _Cond(Protocol):
    def test(self, value: Any) -> bool: ...


@dataclass(frozen=True, slots=True)
class _Junction:
    """``$and`` (conjunctive) or ``$or``; negated, each turns into the other."""

    children: tuple[_Node, ...]
    conjunctive: bool

    def holds(self, value: Any, mode: _Mode) -> bool:
        if not self.children:
            return True
        results = (child.holds(value, mode) for child in self.children)
        every = self.conjunctive != (mode is _Mode.NEGATED)
        return all(results) if every else any(results)


@dataclass(frozen=True, slots=True)
class _Not:
    child: _Node

    def holds(self, value: Any, mode: _Mode) -> bool:
        if mode is _Mode.LITERAL:
            return not self.child.holds(value, mode)
        flipped = _Mode.PLAIN if mode is _Mode.NEGATED else _Mode.NEGATED
        return self.child.holds(value, flipped)


@dataclass(frozen=True, slots=True)
class _Field:
    path: _Path
    cond: _Cond

    def holds(self, value: Any, mode: _Mode) -> bool:
        found = _lookup(value, self.path)
        negated = mode is _Mode.NEGATED
        if found is _Absent.MISSING:
            # Only {"$exists": false} (or a negated {"$exists": true}) matches a missing field.
            return isinstance(self.cond, _Exists) and self.cond.want == negated
        if found is _Absent.BAD_PATH:
            return False
        return self.cond.test(found) != negated


_ORDER_TESTS: Final[Mapping[str, Callable[[int], bool]]] = MappingProxyType(
    {
        "$lt": lambda order: order < 0,
        "$lte": lambda order: order <= 0,
        "$eq": lambda order: order == 0,
        "$ne": lambda order: order != 0,
        "$gte": lambda order: order >= 0,
        "$gt": lambda order: order > 0,
    }
)


@dataclass(frozen=True, slots=True)
class _Compare:
    op: str
    arg: Any

    def test(self, value: Any) -> bool:
        return _ORDER_TESTS[self.op](_collate(value, self.arg))


@dataclass(frozen=True, slots=True)
class _In:
    args: tuple[Any, ...]
    want: bool  # True for $in, False for $nin

    def test(self, value: Any) -> bool:
        candidates = value if _is_array(value) else (value,)
        hit = any(_collate(item, arg) == 0 for arg in self.args for item in candidates)
        return hit == self.want


@dataclass(frozen=True, slots=True)
class _Exists:
    want: bool

    def test(self, value: Any) -> bool:
        return self.want


@dataclass(frozen=True, slots=True)
class _Type:
    name: str

    def test(self, value: Any) -> bool:
        return _TYPE_OF_RANK[_rank(value)] == self.name


@dataclass(frozen=True, slots=True)
class _Size:
    size: int

    def test(self, value: Any) -> bool:
        return _is_array(value) and len(value) == self.size


def _is_integer(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True, slots=True)
class _Mod:
    divisor: int
    remainder: int

    def test(self, value: Any) -> bool:
        if not _is_integer(value):
            return False
        rem: int = abs(value) % abs(self.divisor)  # Erlang rem: sign of the dividend
        return (-rem if value < 0 else rem) == self.remainder


@dataclass(frozen=True, slots=True)
class _Regex:
    pattern: re.Pattern[str]

    def test(self, value: Any) -> bool:
        return isinstance(value, str) and self.pattern.search(value) is not None


@dataclass(frozen=True, slots=True)
class _BeginsWith:
    prefix: str

    def test(self, value: Any) -> bool:
        return isinstance(value, str) and value.startswith(self.prefix)


@dataclass(frozen=True, slots=True)
class _AllOf:
    args: tuple[Any, ...]

    def test(self, value: Any) -> bool:
        if not _is_array(value) or not self.args:
            return False
        if all(any(_collate(item, arg) == 0 for item in value) for arg in self.args):
            return True
        only = self.args[0]
        return len(self.args) == 1 and _is_array(only) and _collate(only, value) == 0


@dataclass(frozen=True, slots=True)
class _ArrayMatch:
    """``$elemMatch`` (some element matches) or ``$allMatch`` (a non-empty array, all do)."""

    sub: _Node
    every: bool

    def test(self, value: Any) -> bool:
        if not _is_array(value):
            return False
        results = (self.sub.holds(item, _Mode.LITERAL) for item in value)
        return (bool(value) and all(results)) if self.every else any(results)


@dataclass(frozen=True, slots=True)
class _KeyMapMatch:
    sub: _Node

    def test(self, value: Any) -> bool:
        if not isinstance(value, Mapping):
            return False
        return any(self.sub.holds(key, _Mode.LITERAL) for key in value)


# --- parsing ------------------------------------------------------------------------


def _check_depth(raw: object) -> None:
    stack: list[tuple[object, int]] = [(raw, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > _MAX_DEPTH:
            raise BadRequest(f"selector is nested deeper than {_MAX_DEPTH} levels")
        if isinstance(value, Mapping):
            stack.extend((item, depth + 1) for item in value.values())
        elif isinstance(value, list | tuple):
            stack.extend((item, depth + 1) for item in value)


def _key(key: object) -> str:
    if not isinstance(key, str):
        raise BadRequest("selector keys must be strings")
    return key


def _freeze(value: object) -> Any:
    """A private, immutable copy of a JSON argument (arrays become tuples)."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise BadRequest("selector numbers must be finite")
        return value
    if isinstance(value, list | tuple):
        return tuple(_freeze(item) for item in value)
    if isinstance(value, Mapping):
        return MappingProxyType({_key(k): _freeze(v) for k, v in value.items()})
    raise BadRequest(f"selector holds a non-JSON value of type {type(value).__name__}")


def _array_arg(op: str, arg: object) -> tuple[Any, ...]:
    if not isinstance(arg, list | tuple):
        raise BadRequest(f"{op} needs an array")
    frozen: tuple[Any, ...] = _freeze(arg)
    return frozen


def _object_arg(op: str, arg: object) -> Mapping[str, Any]:
    if not isinstance(arg, Mapping):
        raise BadRequest(f"{op} needs a selector object")
    return arg


def _comparison(op: str) -> Callable[[object], _Cond]:
    return lambda arg: _Compare(op, _freeze(arg))


def _exists(arg: object) -> _Cond:
    if not isinstance(arg, bool):
        raise BadRequest("$exists needs a boolean")
    return _Exists(arg)


def _type(arg: object) -> _Cond:
    if not isinstance(arg, str) or arg not in _TYPE_NAMES:
        raise BadRequest(f"$type needs one of {', '.join(_TYPE_NAMES)}")
    return _Type(arg)


def _size(arg: object) -> _Cond:
    if isinstance(arg, bool) or not isinstance(arg, int) or arg < 0:
        raise BadRequest("$size needs a non-negative integer")
    return _Size(arg)


def _mod(arg: object) -> _Cond:
    if isinstance(arg, list | tuple) and len(arg) == 2 and all(map(_is_integer, arg)):
        divisor, remainder = (int(number) for number in arg)
        if divisor == 0:
            raise BadRequest("$mod divisor must not be zero")
        return _Mod(divisor, remainder)
    raise BadRequest("$mod needs an array of two integers, [divisor, remainder]")


def _regex(arg: object) -> _Cond:
    if not isinstance(arg, str):
        raise BadRequest("$regex needs a string")
    try:
        return _Regex(re.compile(arg))
    except (re.error, RecursionError, OverflowError) as exc:
        raise BadRequest(f"invalid regular expression in $regex: {exc}") from exc


def _begins_with(arg: object) -> _Cond:
    if not isinstance(arg, str):
        raise BadRequest("$beginsWith needs a string")
    return _BeginsWith(arg)


_CONDITIONS: Final[Mapping[str, Callable[[object], _Cond]]] = MappingProxyType(
    {
        **{op: _comparison(op) for op in _ORDER_TESTS},
        "$in": lambda arg: _In(_array_arg("$in", arg), want=True),
        "$nin": lambda arg: _In(_array_arg("$nin", arg), want=False),
        "$all": lambda arg: _AllOf(_array_arg("$all", arg)),
        "$exists": _exists,
        "$type": _type,
        "$size": _size,
        "$mod": _mod,
        "$regex": _regex,
        "$beginsWith": _begins_with,
        "$elemMatch": lambda arg: _ArrayMatch(_sub("$elemMatch", arg, ()), every=False),
        "$allMatch": lambda arg: _ArrayMatch(_sub("$allMatch", arg, ()), every=True),
        "$keyMapMatch": lambda arg: _KeyMapMatch(_sub("$keyMapMatch", arg, ())),
    }
)


def _clauses(op: str, arg: object, path: _Path) -> tuple[_Node, ...]:
    if not isinstance(arg, list | tuple):
        raise BadRequest(f"{op} needs an array")
    return tuple(_parse(item, path) for item in arg)


def _sub(op: str, arg: object, path: _Path) -> _Node:
    return _parse(_object_arg(op, arg), path)


_COMBINATORS: Final[Mapping[str, Callable[[object, _Path], _Node]]] = MappingProxyType(
    {
        "$and": lambda arg, path: _Junction(_clauses("$and", arg, path), conjunctive=True),
        "$or": lambda arg, path: _Junction(_clauses("$or", arg, path), conjunctive=False),
        "$nor": lambda arg, path: _Not(_Junction(_clauses("$nor", arg, path), conjunctive=False)),
        "$not": lambda arg, path: _Not(_sub("$not", arg, path)),
    }
)


def _parse(raw: object, path: _Path) -> _Node:
    """A clause applied at ``path``: an object of members, or a bare value (equality)."""
    if not isinstance(raw, Mapping) or not raw:
        return _Field(path, _Compare("$eq", _freeze(raw)))
    nodes = tuple(_parse_member(_key(key), arg, path) for key, arg in raw.items())
    return nodes[0] if len(nodes) == 1 else _Junction(nodes, conjunctive=True)


def _parse_member(key: str, arg: object, path: _Path) -> _Node:
    if key in _COMBINATORS:
        return _COMBINATORS[key](arg, path)
    if key in _CONDITIONS:
        return _Field(path, _CONDITIONS[key](arg))
    if key in _UNSUPPORTED:
        raise BadRequest(f"operator '{key}' is not supported in selectors")
    if key.startswith("$"):
        raise BadRequest(f"unknown operator '{key}' in selector")
    return _parse(arg, path + _parse_field(key))


# --- the public value ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Selector:
    """A validated Mango selector; equal when parsed from equal JSON (key order counts)."""

    source: str
    """The selector as compact JSON text."""
    _root: _Node = field(compare=False, repr=False)

    @classmethod
    def parse(cls, raw: object) -> Selector:
        """Validate a decoded JSON selector; :class:`BadRequest` says what is wrong."""
        if not isinstance(raw, Mapping):
            raise BadRequest("selector must be a JSON object")
        _check_depth(raw)
        root = _parse(raw, ()) if raw else _Junction((), conjunctive=True)
        source = json.dumps(raw, separators=(",", ":"), ensure_ascii=False, default=dict)
        return cls(source, root)

    def matches(self, doc: Mapping[str, Any]) -> bool:
        """Whether the document (a decoded JSON object) satisfies the selector."""
        return self._root.holds(doc, _Mode.PLAIN)
