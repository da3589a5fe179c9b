"""Named limits on what a segment map may contain.

A map is written by people but arrives over the API too, so everything the loader
and the matcher hold is bounded. The numbers are generous for a real network and
small enough that validation (which compares rules pairwise) stays well under a
second.
"""

from __future__ import annotations

#: Largest accepted document, in characters.
MAX_DOCUMENT_CHARS = 1_000_000
#: Deepest nesting of YAML collections; the format itself needs 5.
MAX_NESTING_DEPTH = 16
#: One segment per VLAN id at most (IEEE 802.1Q ids 1-4094).
MAX_SEGMENTS = 4094
MAX_RULES = 4096
#: Label conditions in one rule (the inventory allows 32 labels per identity).
MAX_LABEL_CONDITIONS = 32
#: Values in one ``in`` set, one ``kind`` list, one ``owner_team`` or ``nas_site`` list.
MAX_SET_VALUES = 1024
MAX_NAME_LENGTH = 64
MAX_TEXT_LENGTH = 4096
#: RFC 2865 §5.11: Filter-Id is at most 253 octets.
MAX_FILTER_ID_LENGTH = 253
#: Problems collected before the loader stops reporting more.
MAX_PROBLEMS = 200
#: Entries the compiled matcher memoizes; past it, lookups evaluate the rules directly.
MAX_MEMO_ENTRIES = 1 << 16
#: Examples an assignment diff or fallback warning keeps (counts are always complete).
DEFAULT_MAX_EXAMPLES = 100

VLAN_MIN = 1
VLAN_MAX = 4094
#: Scope values as the inventory allows them; team and site names alike.
MAX_VALUE_LENGTH = 128
#: Scope keys as the inventory allows them.
MAX_SCOPE_KEY_LENGTH = 63
