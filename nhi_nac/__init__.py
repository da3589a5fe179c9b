"""nhi-nac: network admission service and internal CA for non-human identities."""

__version__ = "0.1.0"
