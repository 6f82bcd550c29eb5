"""The read-only status page and /metrics, served by the daemon (`web:` in the config)."""

from .server import StatusServer, start

__all__ = ["StatusServer", "start"]
