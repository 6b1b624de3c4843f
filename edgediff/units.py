"""Parsing human sizes ('96MiB', '96MB', '100000000') into bytes, with errors that name the flag."""

from __future__ import annotations

import re

from edgediff.errors import EdgediffError

_UNITS = {
    "": 1, "b": 1,
    "kb": 10**3, "mb": 10**6, "gb": 10**9,
    "kib": 2**10, "mib": 2**20, "gib": 2**30,
    "k": 2**10, "m": 2**20, "g": 2**30,
}


def parse_size(text: str, flag: str = "--memory-budget") -> int:
    """Bytes from '96MiB' / '96MB' / '96M' / '100000000'; anything else is a one-line error naming `flag`."""
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*", str(text))
    unit = m.group(2).lower() if m else None
    if m is None or unit not in _UNITS:
        raise EdgediffError(f"{flag} {text!r} is not a size: use a number with an optional unit, e.g. 96MiB, 96MB or 100000000")
    value = float(m.group(1)) * _UNITS[unit]
    if value <= 0:
        raise EdgediffError(f"{flag} {text!r} must be greater than zero")
    return int(value)


MIB = float(1 << 20)  # the one MiB constant: memory is reported in MiB everywhere
