"""Declarative validation of nested settings sections: typed fields, bounds, validators, every problem at once.

Why not pydantic: on the Pi the memory budget of ``edge-mfr run`` is tight, and importing pydantic plus
building the config's model classes cost about 11 MiB of its resident memory, for the few features the
config uses. This module keeps those features and their public names (``model_validate``, ``model_dump``,
``model_copy``, ``model_fields``), so callers read the same.

A section declares its fields as annotated class attributes::

    class DoorSection(Section):
        name: Annotated[str, After(check_name)] = field("front", description="door name")
        unlock_seconds: float = field(5.0, gt=0, le=300, description="how long a grant unlocks")

Annotations understood: bool, int, float, str, Path, Any, Literal, unions (``X | None``), list[X], fixed
tuple[X, Y, ...], dict[K, V], Section subclasses, and ``Annotated[X, After(fn)]`` / ``Annotated[X, Plain(fn)]``.

The coercions are pydantic v2's lax mode, which TOML and the JSON-parsed environment variables rely on: a
number in text (``"8883"``) or an integral float (``5.0``) is an int, a number is text where text is expected
(``id = 123``), ``"yes"``/``"off"``/``1``/``0`` are booleans. Two deliberate exceptions, because this
validates door-lock settings: a bool is never a number (``unlock_seconds = true`` is a mistake, not 1 s), and
``inf``/``nan`` are never accepted (an infinite unlock would never end). Unknown keys are always refused; a
field with an alias is found under the alias or its own name. Defaults are not validated; section validators
run on them too. Assignment after construction is not validated (the config fills derived values that way).

Errors are collected, not stopped at the first, and raised as one :class:`ValidationError` whose
``errors()`` are dicts {loc, type, msg, input} with pydantic's types and, for the common cases, its messages.
"""

from __future__ import annotations

import copy
import math
import operator
import re
import sys
import types
import typing
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Self


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()  # a field without a default: the key is required
_INVALID: Any = object()  # a value that failed; its error is already recorded


@dataclass(frozen=True)
class FieldInfo:
    """One declared field; ``annotation`` is its resolved type hint (Annotated markers included)."""

    default: Any = MISSING
    default_factory: Callable[[], Any] | None = None
    alias: str | None = None
    description: str | None = None
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    min_length: int | None = None
    max_length: int | None = None
    annotation: Any = None

    @property
    def required(self) -> bool:
        return self.default is MISSING and self.default_factory is None

    def make_default(self) -> Any:
        """A fresh default: instances never share a mutable one."""
        return self.default_factory() if self.default_factory is not None else copy.deepcopy(self.default)


def field(default: Any = MISSING, *, default_factory: Callable[[], Any] | None = None, alias: str | None = None,
          description: str | None = None, ge: float | None = None, gt: float | None = None, le: float | None = None,
          lt: float | None = None, min_length: int | None = None, max_length: int | None = None) -> Any:
    """Declare a field: its default (or a factory for mutable ones), bounds, the key it is read from (alias)
    and the description shown to people. Typed Any so that ``x: int = field(5)`` type-checks."""
    if default is not MISSING and default_factory is not None:
        raise TypeError("give default or default_factory, not both")
    return FieldInfo(default, default_factory, alias, description, ge, gt, le, lt, min_length, max_length)


@dataclass(frozen=True)
class After:
    """Annotated marker: ``fn(value)``, or ``fn(value, context)`` with ``context=True``, runs after the type
    check; it returns the value to keep or raises ValueError."""

    fn: Callable[..., Any]
    context: bool = False


@dataclass(frozen=True)
class Plain:
    """Annotated marker: ``fn(value)`` replaces the type check (it sees the raw input); raises ValueError."""

    fn: Callable[[Any], Any]


def field_validator(*names: str, mode: Literal["before", "after"] = "after") -> Callable[[Any], Any]:
    """Mark a classmethod ``(cls, value) -> value`` that checks the named fields and raises ValueError.

    ``before`` sees the raw input (to accept another spelling); ``after`` the value of the declared type.
    """

    def mark(fn: Any) -> Any:
        func = fn.__func__ if isinstance(fn, classmethod) else fn
        func.__section_check__ = (names, mode)
        return fn if isinstance(fn, classmethod) else classmethod(fn)

    return mark


def section_validator(fn: Callable[[Any], None]) -> Callable[[Any], None]:
    """Mark a method ``(self) -> None`` that checks the whole section once every field is valid, raising
    ValueError; it may also fill in values that depend on several fields."""
    fn.__section_check__ = ((), "section")  # type: ignore[attr-defined]
    return fn


class ValidationError(ValueError):
    """Every problem of one validation; ``errors()`` gives them as dicts {loc, type, msg, input}."""

    def __init__(self, title: str, errors: list[dict[str, Any]]):
        self.title = title
        self._errors = errors
        lines = [f"{'.'.join(map(str, e['loc'])) or '(section)'}: {e['msg']} [type={e['type']}]" for e in errors]
        super().__init__(f"{len(errors)} validation error{'s' * (len(errors) != 1)} for {title}\n" + "\n".join(lines))

    def errors(self) -> list[dict[str, Any]]:
        return [dict(e) for e in self._errors]


# ------------------------------------------------------------------------------------------- type checks


class _Run:
    """One validation: the caller's context (e.g. the config file's folder) and the problems found so far."""

    def __init__(self, context: Mapping[str, Any] | None):
        self.context: Mapping[str, Any] = context or {}
        self.errors: list[dict[str, Any]] = []

    def fail(self, loc: tuple[Any, ...], kind: str, msg: str, value: Any) -> Any:
        self.errors.append({"type": kind, "loc": loc, "msg": msg, "input": value})
        return _INVALID


_NOUNS: dict[Any, str] = {bool: "boolean", int: "integer", float: "number", str: "string", Path: "path",
                          list: "list", tuple: "tuple", dict: "dictionary"}
_TRUE, _FALSE = {"1", "on", "t", "true", "y", "yes"}, {"0", "off", "f", "false", "n", "no"}
_INT_TEXT = re.compile(r"\s*([+-]?[0-9][0-9_]*)(?:\.0*)?\s*")  # "8883", " 1_000 ", "640.0"
_BOUNDS = (("gt", "greater_than", "greater than", operator.gt),
           ("ge", "greater_than_equal", "greater than or equal to", operator.ge),
           ("lt", "less_than", "less than", operator.lt),
           ("le", "less_than_equal", "less than or equal to", operator.le))


def _one_of(words: list[str]) -> str:
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} or {words[-1]}"


def _number(limit: float) -> str:
    return str(int(limit)) if isinstance(limit, float) and limit.is_integer() else str(limit)


def _bool(value: Any, loc: tuple[Any, ...], run: _Run) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
        return value.lower() in _TRUE
    return run.fail(loc, "bool_type", "Input should be a valid boolean", value)


def _int(value: Any, loc: tuple[Any, ...], run: _Run) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            return run.fail(loc, "finite_number", "Input should be a finite number", value)
        if not value.is_integer():
            return run.fail(loc, "int_from_float", "Input should be a valid integer, got a number with a "
                                                   "fractional part", value)
        return int(value)
    if isinstance(value, str):
        if m := _INT_TEXT.fullmatch(value):
            try:
                return int(m.group(1))
            except ValueError:  # misplaced underscores: "1__0"
                pass
        return run.fail(loc, "int_parsing", "Input should be a valid integer, unable to parse string as an "
                                            "integer", value)
    return run.fail(loc, "int_type", "Input should be a valid integer", value)


def _float(value: Any, loc: tuple[Any, ...], run: _Run) -> Any:
    number = value
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return run.fail(loc, "float_parsing", "Input should be a valid number, unable to parse string as a "
                                                  "number", value)
    elif isinstance(value, int) and not isinstance(value, bool):
        try:
            number = float(value)
        except OverflowError:  # beyond any float: as good as infinite
            number = math.inf
    elif not isinstance(value, float):
        return run.fail(loc, "float_type", "Input should be a valid number", value)
    if not math.isfinite(number):
        return run.fail(loc, "finite_number", "Input should be a finite number", value)
    return number


def _str(value: Any, loc: tuple[Any, ...], run: _Run) -> Any:
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):  # `id = 123` in TOML, or JSON from env
        return str(value)
    return run.fail(loc, "string_type", "Input should be a valid string", value)


def _path(value: Any, loc: tuple[Any, ...], run: _Run) -> Any:
    if isinstance(value, Path):
        return value
    if isinstance(value, str):
        return Path(value)
    return run.fail(loc, "path_type", "Input is not a valid path", value)


_SCALARS: dict[Any, Callable[[Any, tuple[Any, ...], _Run], Any]] = {
    bool: _bool, int: _int, float: _float, str: _str, Path: _path}


def _call(fn: Callable[..., Any], args: tuple[Any, ...], value: Any, loc: tuple[Any, ...], run: _Run) -> Any:
    try:
        return fn(*args)
    except ValueError as exc:
        return run.fail(loc, "value_error", str(exc), value)


def _expected(tp: Any) -> str:
    base = typing.get_args(tp)[0] if typing.get_origin(tp) is Annotated else tp
    base = typing.get_origin(base) or base
    return "a valid " + _NOUNS.get(base, "dictionary" if isinstance(base, type) and issubclass(base, Section)
                                   else str(base))


def _check(tp: Any, value: Any, loc: tuple[Any, ...], run: _Run) -> Any:
    """``value`` as type ``tp``, or _INVALID with the problems recorded in ``run``."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Annotated:
        raw = value
        plain = next((m for m in tp.__metadata__ if isinstance(m, Plain)), None)
        value = _call(plain.fn, (raw,), raw, loc, run) if plain else _check(args[0], raw, loc, run)
        for marker in tp.__metadata__:
            if isinstance(marker, After) and value is not _INVALID:
                value = _call(marker.fn, (value, run.context) if marker.context else (value,), raw, loc, run)
        return value
    if origin in (types.UnionType, typing.Union):
        return _check_union(args, value, loc, run)
    if origin is Literal:  # the same type too: True is not 1, 5 is not "5"
        if any(type(value) is type(choice) and value == choice for choice in args):
            return value
        return run.fail(loc, "literal_error", f"Input should be {_one_of([repr(c) for c in args])}", value)
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            return run.fail(loc, f"{origin.__name__}_type", f"Input should be a valid {_NOUNS[origin]}", value)
        if origin is tuple and len(value) != len(args):
            return run.fail(loc, "too_short" if len(value) < len(args) else "too_long",
                            f"Tuple should have {len(args)} items, not {len(value)}", value)
        kinds = args if origin is tuple else args * len(value)  # as long as value either way
        items = [_check(kind, item, (*loc, i), run) for i, (kind, item) in enumerate(zip(kinds, value, strict=True))]
        return _INVALID if any(item is _INVALID for item in items) else origin(items)
    if origin is dict:
        if not isinstance(value, Mapping):
            return run.fail(loc, "dict_type", "Input should be a valid dictionary", value)
        pairs = [(_check(args[0], k, (*loc, k), run), _check(args[1], v, (*loc, k), run)) for k, v in value.items()]
        return _INVALID if any(_INVALID in (k, v) for k, v in pairs) else dict(pairs)
    if isinstance(tp, type) and issubclass(tp, Section):
        if isinstance(value, tp):
            return value
        if isinstance(value, Mapping):
            return tp._build(value, loc, run)
        return run.fail(loc, "model_type", f"Input should be a valid dictionary or instance of {tp.__name__}", value)
    if tp is Any:
        return value
    if tp not in _SCALARS:
        raise TypeError(f"no check for the annotation {tp!r}")
    return _SCALARS[tp](value, loc, run)


def _check_union(args: tuple[Any, ...], value: Any, loc: tuple[Any, ...], run: _Run) -> Any:
    """The first member that accepts ``value``; else that member's problems when only one is possible (``X |
    None``, or a value of the right kind whose items fail), else one line naming what was expected."""
    if value is None and type(None) in args:
        return None
    members = [a for a in args if a is not type(None)]
    tries = []
    for member in members:
        attempt = _Run(run.context)
        out = _check(member, value, loc, attempt)
        if out is not _INVALID:
            return out
        tries.append(attempt.errors)
    deeper = [errors for errors in tries if errors and all(len(e["loc"]) > len(loc) for e in errors)]
    if len(members) == 1 or deeper:
        run.errors += (deeper or tries)[0]
        return _INVALID
    return run.fail(loc, "union_type", f"Input should be {_one_of([_expected(m) for m in members])}", value)


def _constrain(info: FieldInfo, value: Any, raw: Any, loc: tuple[Any, ...], run: _Run) -> Any:
    """The field's bounds and length limits on ``value``, the input ``raw`` as checked (None passes: it is the
    absence of a value); an error quotes ``raw``, as the user wrote it."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        for name, kind, words, holds in _BOUNDS:
            limit = getattr(info, name)
            if limit is not None and not holds(value, limit):
                return run.fail(loc, kind, f"Input should be {words} {_number(limit)}", raw)
    if isinstance(value, str | list | tuple | dict):
        noun, unit = ("String", "character") if isinstance(value, str) else (type(value).__name__.title(), "item")
        kind = "string_too_" if isinstance(value, str) else "too_"
        got = "" if isinstance(value, str) else f", not {len(value)}"
        if info.min_length is not None and len(value) < info.min_length:
            n = info.min_length
            return run.fail(loc, kind + "short", f"{noun} should have at least {n} {unit}{'s' * (n != 1)}{got}", raw)
        if info.max_length is not None and len(value) > info.max_length:
            n = info.max_length
            return run.fail(loc, kind + "long", f"{noun} should have at most {n} {unit}{'s' * (n != 1)}{got}", raw)
    return value


def _dump(value: Any, by_alias: bool) -> Any:
    if isinstance(value, Section):
        return value.model_dump(by_alias=by_alias)
    if isinstance(value, list | tuple):
        return type(value)(_dump(item, by_alias) for item in value)
    if isinstance(value, dict):
        return {key: _dump(item, by_alias) for key, item in value.items()}
    return value


# --------------------------------------------------------------------------------------------- sections


class Section:
    """Base of a settings section: typed fields from the annotations, unknown keys refused, every problem
    reported at once. Keyword construction validates too: ``DoorConfig(name="x")``."""

    model_fields: ClassVar[dict[str, FieldInfo]] = {}
    _checks: ClassVar[list[Callable[..., Any]]] = []

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # the defining frame's names too, so that a section declared inside a function (a test) resolves
        hints = typing.get_type_hints(cls, localns=sys._getframe(1).f_locals, include_extras=True)
        fields: dict[str, FieldInfo] = {}
        for base in reversed(cls.__mro__[1:]):
            fields.update(vars(base).get("model_fields", {}))
        for name in vars(cls).get("__annotations__", {}):
            if typing.get_origin(hints[name]) is ClassVar:
                continue
            declared = vars(cls).get(name, MISSING)
            info = declared if isinstance(declared, FieldInfo) else FieldInfo(default=declared)
            fields[name] = replace(info, annotation=hints[name])
            if name in vars(cls):
                delattr(cls, name)  # the instance holds the value; the class holds model_fields
        cls.model_fields = fields
        checks: dict[str, Callable[..., Any]] = {}
        for base in reversed(cls.__mro__):
            for name, attr in vars(base).items():
                func = getattr(attr, "__func__", attr)
                if hasattr(func, "__section_check__"):
                    checks[name] = func  # a subclass's method of the same name replaces its base's
        for func in checks.values():
            unknown = set(func.__section_check__[0]) - set(fields)
            if unknown:
                raise TypeError(f"{cls.__name__}.{func.__name__} checks unknown fields {sorted(unknown)}")
        cls._checks = list(checks.values())

    def __init__(self, **data: Any) -> None:
        run = _Run(None)
        type(self)._build(data, (), run, into=self)
        if run.errors:
            raise ValidationError(type(self).__name__, run.errors)

    @classmethod
    def model_validate(cls, data: Any, context: Mapping[str, Any] | None = None) -> Self:
        """A section from a mapping (keys as written: aliases or names); an instance is returned as is.
        ``context`` reaches the ``After(fn, context=True)`` checks."""
        if isinstance(data, cls):
            return data
        run = _Run(context)
        built = _check(cls, data, (), run)
        if run.errors:
            raise ValidationError(cls.__name__, run.errors)
        return built

    @classmethod
    def _build(cls, data: Mapping[Any, Any], loc: tuple[Any, ...], run: _Run, into: Section | None = None) -> Any:
        start = len(run.errors)
        values: dict[str, Any] = {}
        used = set()
        for name, info in cls.model_fields.items():
            key = info.alias if info.alias is not None and info.alias in data else name
            if key not in data:
                if info.required:
                    run.fail((*loc, info.alias or name), "missing", "Field required", data)
                else:
                    values[name] = info.make_default()
                continue
            used.add(key)
            values[name] = cls._field(name, info, data[key], (*loc, key), run)
        for key, value in data.items():
            if key not in used:
                run.fail((*loc, key), "extra_forbidden", "Extra inputs are not permitted", value)
        if len(run.errors) > start:
            return _INVALID
        self = into if into is not None else cls.__new__(cls)
        self.__dict__.update(values)
        for check in cls._checks:
            if check.__section_check__[1] == "section" and _call(check, (self,), data, loc, run) is _INVALID:
                return _INVALID  # later checks may rely on this one's rule
        return self

    @classmethod
    def _field(cls, name: str, info: FieldInfo, value: Any, loc: tuple[Any, ...], run: _Run) -> Any:
        """One field's value: its before checks, type, bounds, then its after checks; errors quote the input."""
        raw = value
        mine = [(f, f.__section_check__[1]) for f in cls._checks if name in f.__section_check__[0]]
        for check, mode in mine:
            if mode == "before" and value is not _INVALID:
                value = _call(check, (cls, value), raw, loc, run)
        if value is not _INVALID:
            value = _constrain(info, _check(info.annotation, value, loc, run), value, loc, run)
        for check, mode in mine:
            if mode == "after" and value is not _INVALID:
                value = _call(check, (cls, value), raw, loc, run)
        return value

    def model_dump(self, *, by_alias: bool = False, exclude: Collection[str] | None = None) -> dict[str, Any]:
        """The fields as plain dicts, lists and values, nested sections included; keys are the aliases with
        ``by_alias``; ``exclude``: field names left out of this section."""
        return {(info.alias or name) if by_alias else name: _dump(getattr(self, name), by_alias)
                for name, info in self.model_fields.items() if not exclude or name not in exclude}

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        """A copy (``deep``: nested sections and lists copied too) with ``update`` set as is, unvalidated."""
        new = copy.deepcopy(self) if deep else copy.copy(self)
        new.__dict__.update(update or {})
        return new

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Section):
            return NotImplemented
        return type(other) is type(self) and all(getattr(self, n) == getattr(other, n) for n in self.model_fields)

    __hash__ = None  # type: ignore[assignment]  # mutable, like the dicts they replace

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{n}={getattr(self, n)!r}' for n in self.model_fields)})"
