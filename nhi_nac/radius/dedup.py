"""RFC 5080 §2.2.2 duplicate detection.

Theory of operation
-------------------
An entry is keyed by (source address, source port, RADIUS identifier, Request
Authenticator) — the Request Authenticator is part of the key so that a NAS reusing an
identifier for a *new* request is not mistaken for a retransmission. Each key is in one
of two states:

* ``IN_PROGRESS`` — the request was accepted for processing but its reply is not ready
  (an Accounting-Request waiting for its record to be stored). A retransmission now is
  dropped: the reply will come.
* ``COMPLETED`` — the reply bytes are cached; a retransmission gets them byte for byte
  without any work being redone (an EAP-TLS round must never be fed to TLS twice).

Only authenticated requests are ever inserted (the server verifies before it looks
here), so a forged packet cannot poison the cache. Entries expire ``max_age`` seconds
after they were created, and the table holds at most ``max_entries`` (oldest evicted).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from enum import Enum

DuplicateKey = tuple[str, int, int, bytes]


class EntryState(Enum):
    IN_PROGRESS = "in-progress"
    COMPLETED = "completed"


@dataclass(slots=True)
class _Entry:
    created: float
    state: EntryState
    reply: bytes | None = None


@dataclass(frozen=True, slots=True)
class Lookup:
    """Result of :meth:`DuplicateCache.lookup`: ``state`` None means a new request."""

    state: EntryState | None
    reply: bytes | None = None


_NEW = Lookup(None)
_IN_PROGRESS = Lookup(EntryState.IN_PROGRESS)


class DuplicateCache:
    def __init__(self, max_age: float, max_entries: int) -> None:
        if max_age <= 0 or max_entries <= 0:
            raise ValueError("duplicate cache limits must be positive")
        self.max_age = max_age
        self.max_entries = max_entries
        self._entries: OrderedDict[DuplicateKey, _Entry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def expire(self, now: float) -> None:
        """Drop entries older than ``max_age`` (insertion order is age order)."""
        entries = self._entries
        limit = now - self.max_age
        while entries:
            key, entry = next(iter(entries.items()))
            if entry.created > limit:
                break
            del entries[key]

    def lookup(self, key: DuplicateKey, now: float) -> Lookup:
        # An entry past max_age is not a duplicate; trimming old entries is left to
        # expire() (the shell calls it every second) and to the size bound.
        entry = self._entries.get(key)
        if entry is None or entry.created <= now - self.max_age:
            return _NEW
        if entry.state is EntryState.IN_PROGRESS:
            return _IN_PROGRESS
        return Lookup(EntryState.COMPLETED, entry.reply)

    def begin(self, key: DuplicateKey, now: float) -> None:
        """Mark ``key`` in progress (its reply will come through :meth:`complete`)."""
        self._insert(key, _Entry(now, EntryState.IN_PROGRESS))

    def complete(self, key: DuplicateKey, reply: bytes, now: float) -> None:
        """Cache the reply for ``key`` (an entry in progress keeps its creation time)."""
        entry = self._entries.get(key)
        if entry is not None:
            entry.state = EntryState.COMPLETED
            entry.reply = reply
            return
        self._insert(key, _Entry(now, EntryState.COMPLETED, reply))

    def forget(self, key: DuplicateKey) -> None:
        """Remove ``key`` (processing failed; a retransmission should be retried)."""
        self._entries.pop(key, None)

    def _insert(self, key: DuplicateKey, entry: _Entry) -> None:
        entries = self._entries
        entries.pop(key, None)
        while len(entries) >= self.max_entries:
            entries.popitem(last=False)
        entries[key] = entry
