"""Metadata filters: a small, typed query language over the top-level keys of a document's
metadata, evaluated by the SQLite document store.

Syntax (a JSON object; every entry must hold, i.e. entries are ANDed)::

    {"lang": "en"}                          equality (string, number, true/false, null)
    {"lang": {"$in": ["en", "fr"]}}         any of a list of such values
    {"lang": {"$ne": "en"}}                 not equal; a document without the key matches
    {"year": {"$gte": 2020, "$lt": 2024}}   numeric ranges: $gt, $gte, $lt, $lte (numbers only)
    {"$and": [{...}, {...}]}                every filter of the list
    {"$or": [{...}, {...}]}                 at least one filter of the list

Fields are top-level metadata keys, matched literally: a dotted name such as "a.b" is the key
"a.b", not a path into a nested object. Equality compares JSON types: `true` does not match 1,
the string "1" does not match the number 1, and 1 matches 1.0. A range matches only numbers;
a document without the key matches nothing but `$ne`. Any other operator, an object or list
as a value, or a filter over the limits below is refused with a ConfigError naming the part.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from densekit.errors import ConfigError

MAX_DEPTH = 8  # nesting of $and / $or
MAX_IN_VALUES = 1024  # values in one $in
MAX_VALUES = 4096  # values in a whole filter (bound parameters of its SQL)
MAX_FIELD_CHARS = 256
_INT64 = (-(2**63), 2**63 - 1)

Op = Literal["eq", "ne", "in", "gt", "gte", "lt", "lte"]
_RANGE_OPS = {"$gt": "gt", "$gte": "gte", "$lt": "lt", "$lte": "lte"}
_SQL_COMPARE = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
_NUMBER_TYPES = "('integer', 'real')"


@dataclass(frozen=True)
class Value:
    """A JSON scalar with its type kept apart from its value, so true and 1 (equal in Python)
    are different filters (the service groups identical filters into one faiss search)."""

    type: Literal["string", "number", "bool", "null"]
    value: str | int | float | bool | None


@dataclass(frozen=True)
class Compare:
    field: str
    op: Op
    values: tuple[Value, ...]  # one value, except for "in"


@dataclass(frozen=True)
class And:
    parts: tuple[Filter, ...]


@dataclass(frozen=True)
class Or:
    parts: tuple[Filter, ...]


Filter = Compare | And | Or


# ---- parsing ---------------------------------------------------------------------------
def parse_filter(raw: Any, where: str = "filter") -> Filter | None:
    """The typed filter of a JSON object (None for an empty or absent one); ConfigError naming
    the offending part (e.g. `filter.year.$gte`) for anything outside the syntax above."""
    if raw is None:
        return None
    budget = [MAX_VALUES]
    parsed = _parse_object(raw, where, 0, budget)
    return None if isinstance(parsed, And) and not parsed.parts else parsed


def _parse_object(raw: Any, where: str, depth: int, budget: list[int]) -> Filter:
    if not isinstance(raw, dict):
        raise ConfigError(where, f"must be an object of field conditions, got {_json_type(raw)}")
    if depth > MAX_DEPTH:
        raise ConfigError(where, f"$and/$or nested deeper than {MAX_DEPTH} levels")
    parts: list[Filter] = []
    for key, cond in raw.items():
        here = f"{where}.{key}"
        if not isinstance(key, str):
            raise ConfigError(where, "field names must be strings")
        if key in ("$and", "$or"):
            if not isinstance(cond, list) or not cond:
                raise ConfigError(here, "must be a non-empty list of filters")
            subs = tuple(_parse_object(c, f"{here}[{i}]", depth + 1, budget) for i, c in enumerate(cond))
            parts.append(And(subs) if key == "$and" else Or(subs))
        elif key.startswith("$"):
            raise ConfigError(here, "unknown operator at field level (known: $and, $or)")
        else:
            _check_field(key, where)
            parts.extend(_parse_condition(key, cond, here, budget))
    return parts[0] if len(parts) == 1 else And(tuple(parts))


def _check_field(name: str, where: str) -> None:
    if not name or len(name) > MAX_FIELD_CHARS:
        raise ConfigError(where, f"a field name must have 1 to {MAX_FIELD_CHARS} characters")
    _check_text(name, f"{where}.<field name>")


def _parse_condition(field: str, cond: Any, where: str, budget: list[int]) -> list[Compare]:
    if not isinstance(cond, dict):
        return [Compare(field, "eq", (_scalar(cond, where, budget),))]
    if not cond:
        raise ConfigError(where, "an empty condition; give a value or operators ($in, $ne, $gt, $gte, $lt, $lte)")
    out: list[Compare] = []
    for op, arg in cond.items():
        here = f"{where}.{op}"
        if op == "$eq":
            out.append(Compare(field, "eq", (_scalar(arg, here, budget),)))
        elif op == "$ne":
            out.append(Compare(field, "ne", (_scalar(arg, here, budget),)))
        elif op == "$in":
            if not isinstance(arg, list) or not arg:
                raise ConfigError(here, "must be a non-empty list of values")
            if len(arg) > MAX_IN_VALUES:
                raise ConfigError(here, f"at most {MAX_IN_VALUES} values")
            out.append(Compare(field, "in", tuple(_scalar(v, f"{here}[{i}]", budget) for i, v in enumerate(arg))))
        elif op in _RANGE_OPS:
            value = _scalar(arg, here, budget)
            if value.type != "number":
                raise ConfigError(here, f"a range compares numbers, got {_json_type(arg)}")
            out.append(Compare(field, _RANGE_OPS[op], (value,)))  # type: ignore[arg-type]
        else:
            raise ConfigError(here, "unknown operator (known: $eq, $ne, $in, $gt, $gte, $lt, $lte; objects are not compared)")
    return out


def _scalar(raw: Any, where: str, budget: list[int]) -> Value:
    budget[0] -= 1
    if budget[0] < 0:
        raise ConfigError(where, f"the filter holds more than {MAX_VALUES} values")
    if raw is None:
        return Value("null", None)
    if isinstance(raw, bool):
        return Value("bool", raw)
    if isinstance(raw, int):
        if not _INT64[0] <= raw <= _INT64[1]:
            raise ConfigError(where, "integer outside the 64-bit range")
        return Value("number", raw)
    if isinstance(raw, float):
        if not math.isfinite(raw):
            raise ConfigError(where, "number must be finite")
        return Value("number", raw)
    if isinstance(raw, str):
        _check_text(raw, where)
        return Value("string", raw)
    raise ConfigError(where, f"must be a string, number, true, false or null, got {_json_type(raw)} (use $in for a list of values)")


def _check_text(text: str, where: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ConfigError(where, "not valid Unicode text (a lone surrogate)") from None


def _json_type(raw: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(type(raw), "a number")


# ---- SQL -------------------------------------------------------------------------------
def to_sql(flt: Filter, metadata_column: str = "metadata") -> tuple[str, list[Any]]:
    """A SQL boolean expression over a JSON metadata column, and its bound parameters. Keys
    are matched through json_each (bound parameters, never spliced into a JSON path), so any
    key, dots and quotes included, is safe."""
    params: list[Any] = []
    return _sql(flt, metadata_column, params), params


def _sql(flt: Filter, col: str, params: list[Any]) -> str:
    # An empty $and holds for every document and an empty $or for none, as in logic.
    if isinstance(flt, And):
        return "(" + " AND ".join(_sql(p, col, params) for p in flt.parts) + ")" if flt.parts else "1"
    if isinstance(flt, Or):
        return "(" + " OR ".join(_sql(p, col, params) for p in flt.parts) + ")" if flt.parts else "0"
    if flt.op == "ne":
        return "NOT " + _sql(Compare(flt.field, "eq", flt.values), col, params)
    params.append(flt.field)
    if flt.op in _SQL_COMPARE:
        params.append(flt.values[0].value)
        test = f"j.type IN {_NUMBER_TYPES} AND j.atom {_SQL_COMPARE[flt.op]} ?"
    else:
        test = "(" + " OR ".join(_value_test(v, params) for v in flt.values) + ")"
    return f"EXISTS (SELECT 1 FROM json_each({col}) AS j WHERE j.key = ? AND {test})"


def _value_test(v: Value, params: list[Any]) -> str:
    if v.type == "null":
        return "j.type = 'null'"
    if v.type == "bool":
        return "j.type = 'true'" if v.value else "j.type = 'false'"
    params.append(v.value)
    if v.type == "string":
        return "(j.type = 'text' AND j.atom = ?)"
    return f"(j.type IN {_NUMBER_TYPES} AND j.atom = ?)"
