"""Plain data (JSON, YAML) -> nested dataclasses, strictly: every field known, every value of its
declared type, the field named by its dotted path when not; and the dotted names of the fields two
such objects differ in. The one loader behind model configs (config.json) and recipes (YAML)."""

from __future__ import annotations

import dataclasses
import types
import typing


class StrictError(ValueError):
    """Data that does not fit the dataclass; the message names the field."""


def build(cls, data: object, where: str = ""):
    """cls(**data) with every value converted by its type hint; nested dataclasses from mappings."""
    if not isinstance(data, dict):
        raise StrictError(f"{where.rstrip('.') or 'the top level'} must be a mapping of fields, got "
                          f"{type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise StrictError(f"unknown field(s) {', '.join(where + str(k) for k in unknown)}; "
                          f"known: {', '.join(sorted(fields))}")
    kwargs = {name: convert(hints[name], value, f"{where}{name}") for name, value in data.items()}
    missing = [n for n, f in fields.items() if n not in kwargs and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    if missing:
        raise StrictError(f"missing field(s) {', '.join(where + m for m in missing)}")
    return cls(**kwargs)


def convert(kind, value, where: str):
    """One value to its type hint: Optional, nested dataclass, tuple (fixed or variadic), dict, bool,
    int, float (an integer or a YAML 1.1 string such as 1e-4 accepted), str."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (kind,) = [a for a in args if a is not type(None)]
        return convert(kind, value, where)
    if dataclasses.is_dataclass(kind):
        return build(kind, {} if value is None else value, f"{where}.")
    if origin is tuple:
        variadic = len(args) == 2 and args[1] is Ellipsis
        if not isinstance(value, list | tuple) or (not variadic and len(value) != len(args)):
            raise StrictError(f"{where} must be a list of {'values' if variadic else len(args)} values, "
                              f"got {value!r}")
        kinds = [args[0]] * len(value) if variadic else args
        return tuple(convert(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(kinds, value)))
    if kind is dict or origin is dict:
        if not isinstance(value, dict):
            raise StrictError(f"{where} must be a mapping, got {value!r}")
        return value
    if kind is bool:
        if not isinstance(value, bool):
            raise StrictError(f"{where} must be true or false, got {value!r}")
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise StrictError(f"{where} must be an integer, got {value!r}")
        return value
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise StrictError(f"{where} must be a number, got {value!r}")
        try:
            return float(value)
        except ValueError:
            raise StrictError(f"{where} must be a number, got {value!r}") from None
    if kind is str:
        if not isinstance(value, str):
            raise StrictError(f"{where} must be text, got {value!r}")
        return value
    raise TypeError(f"field {where}: unsupported type {kind}")


def plain(value):
    """Dataclasses -> dicts, tuples -> lists, recursively: what JSON / YAML and comparisons see."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def diff(a: object, b: object, prefix: str = "") -> list[str]:
    """Dotted names of the fields that differ between two dataclasses or mappings, sorted."""
    a, b = plain(a), plain(b)
    if isinstance(a, dict) and isinstance(b, dict):
        return [name for key in sorted(set(a) | set(b), key=str) for name in diff(a.get(key), b.get(key),
                                                                                  f"{prefix}{key}.")]
    return [] if a == b else [prefix.rstrip(".")]
