"""Python source laid out as `ruff format` lays it out: literals, comments, docstrings and long lines.

Exports are committed and diffed, so what gas writes must not change when a user formats it.
"""

from __future__ import annotations

import json
import math
import textwrap
from collections.abc import Mapping
from typing import Any

from gas.errors import GasError

LINE_LENGTH = 120
INDENT = "    "


def scalar(value: Any) -> str:
    if value is None or isinstance(value, bool):
        return repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise GasError(f"cannot write the non-finite number {value!r} as a constant")
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # double quotes, as `ruff format` writes them
    raise GasError(f"cannot write a {type(value).__name__} as a constant; use plain literals")


def _items(value: Any) -> tuple[str, str, list[tuple[str, Any]]]:
    """Opening bracket, closing bracket, and (prefix, item) pairs of a collection."""
    if isinstance(value, Mapping):
        if not all(isinstance(key, str) for key in value):
            raise GasError("constant dicts must have string keys")
        return "{", "}", [(f"{scalar(key)}: ", item) for key, item in value.items()]
    if isinstance(value, list):
        return "[", "]", [("", item) for item in value]
    return "(", ")", [("", item) for item in value]


def flat(value: Any) -> str:
    if not isinstance(value, Mapping | list | tuple):
        return scalar(value)
    opening, closing, items = _items(value)
    inner = ", ".join(prefix + flat(item) for prefix, item in items)
    if isinstance(value, tuple) and len(value) == 1:
        inner += ","
    return opening + inner + closing


def is_table(value: Any) -> bool:
    return isinstance(value, list | tuple) and bool(value) and all(isinstance(row, list | tuple) for row in value)


def render_literal(value: Any, indent: int = 0, prefix: str = "", suffix: str = "", explode: bool = False) -> list[str]:
    """`value` as source lines the way `ruff format` lays out literals: one line if it fits, else one item per line.

    An exploded collection ends with a trailing comma, which also tells `ruff format` to keep it exploded.
    """
    pad = INDENT * (indent // len(INDENT))
    one_line = flat(value)
    if not explode and len(pad + prefix + one_line + suffix) <= LINE_LENGTH:
        return [pad + prefix + one_line + suffix]
    if not isinstance(value, Mapping | list | tuple) or not value:
        return [pad + prefix + one_line + suffix]
    opening, closing, items = _items(value)
    lines = [pad + prefix + opening]
    for item_prefix, item in items:
        lines += render_literal(item, indent + len(INDENT), item_prefix, ",")
    lines.append(pad + closing + suffix)
    return lines


def comment_lines(text: str, indent: str = "") -> list[str]:
    """`text` as comment lines within the line length; blank lines become a bare `#`."""
    lines = []
    for paragraph_line in text.splitlines() or [""]:
        if not paragraph_line.strip():
            lines.append(indent + "#")
            continue
        leading = paragraph_line[: len(paragraph_line) - len(paragraph_line.lstrip())]
        wrapped = textwrap.wrap(
            paragraph_line.strip(),
            width=LINE_LENGTH - len(indent) - 2,
            initial_indent=leading,
            subsequent_indent=leading,
            break_long_words=False,
            break_on_hyphens=False,
        )
        lines += [f"{indent}# {line}".rstrip() for line in wrapped]
    return lines


def docstring_text(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"""', '\\"\\"\\"')


def wrap_line(line: str) -> list[str]:
    if len(line) <= LINE_LENGTH:
        return [line]
    return textwrap.wrap(line, width=LINE_LENGTH, subsequent_indent=INDENT, break_long_words=False) or [line]
