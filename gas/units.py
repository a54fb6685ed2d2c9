"""Human-readable counts: parse budgets like '2.5G' and print params/FLOPs compactly."""

from __future__ import annotations

import math
import re

from gas.errors import GasError

_SUFFIXES = {"": 1, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)(?:[eE]([+-]?\d+))?\s*([KMGT]?)\s*$", re.IGNORECASE)


def parse_count(text: str | float | int, what: str = "budget") -> int:
    """Parse '2.5G', '500M', '2.5e9' or a number into a positive integer count.

    >>> parse_count("2.5G")
    2500000000
    >>> parse_count("15M")
    15000000
    """
    if isinstance(text, int | float) and not isinstance(text, bool):
        value = float(text)
    else:
        match = _PATTERN.match(str(text))
        if match is None:
            raise GasError(f"{what} {text!r} is not a count; write it like 2.5G, 500M or 2.5e9")
        mantissa, exponent, suffix = match.groups()
        value = float(mantissa) * 10 ** int(exponent or 0) * _SUFFIXES[suffix.upper()]
    if not math.isfinite(value) or value <= 0:
        raise GasError(f"{what} {text!r} must be a positive count")
    return round(value)


def format_count(value: float, digits: int = 2) -> str:
    """12660000 -> '12.66M'; 2260000000 -> '2.26G'."""
    for suffix, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.{digits}f}{suffix}"
    return f"{value:.0f}"


def compact_count(value: float) -> str:
    """2500000000 -> '2.5G': the shortest exact form, for names."""
    for suffix, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:g}{suffix}"
    return f"{value:g}"
