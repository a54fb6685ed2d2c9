"""Genomes: typed, immutable architecture descriptions that round-trip through plain JSON.

A space defines its genome as a frozen dataclass deriving from `Genome`; this module turns JSON into
that dataclass field by field, so a malformed document fails with one line naming the field
("block 4: 'heads' must be an integer, got '3'"). Rules about what the values may be live in the space.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal, Self, get_args, get_origin

from gas.errors import GenomeError


@dataclasses.dataclass(frozen=True, kw_only=True)
class Genome:
    """Base of every space's genome: the resolution it is costed at and its number of classes.

    Subclasses add their own fields and set `item_names` to label list items in messages
    (``{"blocks": "block"}`` makes an error in ``blocks[4]`` read "block 4: ...").
    """

    space: str
    resolution: int = 224
    num_classes: int = 1000

    item_names: ClassVar[Mapping[str, str]] = {}

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    def at_resolution(self, resolution: int) -> Self:
        return dataclasses.replace(self, resolution=resolution)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        return _parse(cls, data, "")


def read_json(path: str | Path) -> dict[str, Any]:
    """Read a genome JSON document, failing with one line if it cannot be read or parsed."""
    try:
        data = json.loads(Path(path).read_text())
    except OSError as error:
        raise GenomeError(f"cannot read genome {path}: {error.strerror}") from None
    except json.JSONDecodeError as error:
        raise GenomeError(f"{path} is not valid JSON: {error.msg} at line {error.lineno}") from None
    if not isinstance(data, dict):
        raise GenomeError(f"{path} must hold a JSON object, not {type(data).__name__}")
    return data


def _where(prefix: str, message: str) -> str:
    return f"{prefix}: {message}" if prefix else message


def _parse(kind: Any, value: Any, where: str, item_name: str = "") -> Any:
    """Convert one JSON value to `kind`, or raise GenomeError naming `where`."""
    origin = get_origin(kind)
    if dataclasses.is_dataclass(kind):
        return _parse_dataclass(kind, value, where)
    if origin is tuple:
        item_kind = get_args(kind)[0]
        if not isinstance(value, list | tuple):
            raise GenomeError(_where(where, f"must be a list, got {json.dumps(value)}"))
        label = item_name or f"{where} item"
        return tuple(_parse(item_kind, item, f"{label} {index}") for index, item in enumerate(value))
    if origin is Literal:
        choices = get_args(kind)
        if value not in choices:
            allowed = ", ".join(repr(choice) for choice in choices)
            raise GenomeError(_where(where, f"must be one of {allowed}, got {json.dumps(value)}"))
        return value
    if origin in (typing.Union, types.UnionType):
        raise TypeError(f"genome fields may not be unions ({where})")
    if kind is bool:
        if not isinstance(value, bool):
            raise GenomeError(_where(where, f"must be true or false, got {json.dumps(value)}"))
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise GenomeError(_where(where, f"must be an integer, got {json.dumps(value)}"))
        return value
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise GenomeError(_where(where, f"must be a number, got {json.dumps(value)}"))
        return float(value)
    if kind is str:
        if not isinstance(value, str):
            raise GenomeError(_where(where, f"must be a string, got {json.dumps(value)}"))
        return value
    raise TypeError(f"unsupported genome field type {kind!r} ({where})")


def _parse_dataclass(kind: type, value: Any, where: str) -> Any:
    if not isinstance(value, Mapping):
        raise GenomeError(_where(where, f"must be an object, got {json.dumps(value)}"))
    fields = {field.name: field for field in dataclasses.fields(kind) if field.init}
    unknown = sorted(set(value) - set(fields))
    if unknown:
        raise GenomeError(_where(where, f"unknown field {unknown[0]!r}"))
    hints = typing.get_type_hints(kind)
    item_names = getattr(kind, "item_names", {})
    values = {}
    for name, field in fields.items():
        if name not in value:
            if field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
                raise GenomeError(_where(where, f"missing field {name!r}"))
            continue
        label = f"{where}.{name}" if where else name
        # A nested list keeps its parent's place in messages: "stage 2 block 1", not just "block 1".
        item_name = item_names.get(name, "")
        if item_name and where:
            item_name = f"{where} {item_name}"
        values[name] = _parse(hints[name], value[name], label, item_name)
    return kind(**values)
