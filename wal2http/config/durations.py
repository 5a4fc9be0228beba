"""Durations as people type them: ``15`` (seconds), ``15s``, ``250ms``, ``2m``, ``1h30m``, ``1d``."""

from __future__ import annotations

import math
import re

UNIT_SECONDS = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
_NUMBER = r"\d+(?:\.\d+)?"
# Units largest first, each at most once, so "1h1h" or "30s1m" is a typo rather than a sum.
_DURATION_RE = re.compile(
    r"^" + "".join(rf"(?:(?P<{name}>{_NUMBER}){unit}\s*)?"
                   for name, unit in (("d", "d"), ("h", "h"), ("m", "m(?!s)"), ("s", "s"), ("ms", "ms")))
    + r"$",
    re.IGNORECASE,
)
EXAMPLES = "seconds (15) or a number with a unit (15s, 2m, 1h; also ms and d)"


def parse_duration(text: str) -> float:
    """Seconds; ValueError naming the accepted forms for anything else (negative, nan and inf included)."""
    value = text.strip()
    try:
        seconds = float(value)  # a plain number, as these options always took (a range check follows)
    except ValueError:
        pass
    else:
        if math.isfinite(seconds):
            return seconds
        raise ValueError(f"{text!r} is not a duration: use {EXAMPLES}")
    match = _DURATION_RE.match(value)
    if not value or match is None or not any(match.groupdict().values()):
        raise ValueError(f"{text!r} is not a duration: use {EXAMPLES}")
    return sum(float(number) * UNIT_SECONDS[unit] for unit, number in match.groupdict().items() if number)
