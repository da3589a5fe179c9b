"""nhi-nac: network admission service and internal CA for non-human identities."""
