"""The operator console: a server-rendered web UI over the link store, the history, Redis and both systems."""
