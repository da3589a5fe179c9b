"""Human durations on the command line: ``90s``, ``15m``, ``24h``, ``7d``."""

from __future__ import annotations

import datetime as dt
import re

from nhi_nac.errors import InvalidInput

_DURATION = re.compile(r"^(\d{1,6})([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> dt.timedelta:
    m = _DURATION.match(text.strip())
    if not m:
        raise InvalidInput(f"invalid duration {text!r}: use a number and s, m, h or d (15m)")
    seconds = int(m.group(1)) * _UNITS[m.group(2)]
    if seconds <= 0:
        raise InvalidInput(f"duration {text!r} must be positive")
    return dt.timedelta(seconds=seconds)
