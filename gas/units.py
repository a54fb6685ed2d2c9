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


_DURATION = re.compile(r"^\s*([+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)\s*([a-zµ]*)\s*$", re.IGNORECASE)
_PER_SECOND = {"s": 1, "ms": 1000, "us": 1_000_000, "µs": 1_000_000}  # dividing keeps 800us exactly 0.0008


def parse_duration(text: str, what: str = "latency") -> float:
    """Parse '25ms', '800us' or '0.1s' into positive seconds; the unit is required.

    A bare number is refused rather than guessed: '25' could mean seconds or milliseconds, and a latency
    budget off by 1000x would silently let everything through or nothing.

    >>> parse_duration("25ms")
    0.025
    """
    match = _DURATION.match(str(text))
    example = "write it like 25ms, 800us or 0.1s"
    if match is None:
        raise GasError(f"{what} {text!r} is not a duration; {example}")
    number, unit = match.groups()
    if not unit:
        raise GasError(f"{what} {text!r} has no unit; {example}")
    per_second = _PER_SECOND.get(unit.lower())
    if per_second is None:
        raise GasError(f"{what} {text!r} has an unknown unit {unit!r}; {example}")
    value = float(number) / per_second
    if not math.isfinite(value) or value <= 0:
        raise GasError(f"{what} {text!r} must be a positive duration")
    return value


def format_duration(seconds: float) -> str:
    """'25.0ms', '830us' or '1.20s': three significant figures in the unit that reads best.

    >>> format_duration(0.025)
    '25.0ms'
    """
    if seconds >= 1:
        return f"{seconds:.3g}s" if seconds >= 100 else f"{seconds:.2f}s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.3g}ms" if seconds >= 0.1 else f"{seconds * 1e3:.1f}ms"
    return f"{seconds * 1e6:.0f}us"
