"""MAC addresses as RADIUS carries them, normalized once per spelling.

A NAS sends the same device's MAC in User-Name, User-Password (MAB) and
Calling-Station-Id on every request, in its own notation. Parsing each of them with
:func:`nhi_nac.domain.try_normalize_mac` costs several microseconds; the answer for a
given spelling never changes, so it is remembered in a bounded memo (``MAC_MEMO_SIZE``
entries, emptied when full, so a NAS sending random names cannot grow it).
"""

from __future__ import annotations

from nhi_nac.domain import try_normalize_mac
from nhi_nac.radius.limits import MAC_MEMO_SIZE

_memo: dict[str, str | None] = {}


def station_mac(text: str) -> str | None:
    """``aa:bb:cc:dd:ee:ff`` for any common MAC notation in ``text``, else None."""
    try:
        return _memo[text]
    except KeyError:
        pass
    mac = try_normalize_mac(text)
    if len(_memo) >= MAC_MEMO_SIZE:
        _memo.clear()
    _memo[text] = mac
    return mac
