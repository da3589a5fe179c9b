"""The web console for network admins, served under /ui/ by the API server."""
