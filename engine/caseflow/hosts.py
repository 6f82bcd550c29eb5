"""The GPU hosts as the engine sees them: each with its own transport and queue backend
(created on first use, so read-only commands never connect), what is wrong with it, and
when it was last polled.
"""

from __future__ import annotations

from .backends import make_backend
from .config import HostConfig
from .transports import make_transport


class Host:
    def __init__(self, cfg: HostConfig, transport=None, backend=None):
        self.cfg = cfg
        self.name = cfg.name
        self._transport = transport
        self._backend = backend
        self.problem: str | None = None   # work paused (authentication, host key), shown
        self.notice: str | None = None    # something a person should know (a paused group)
        self.avoid_until = float("-inf")  # unreachable or paused: no new cases before this
        self.last_poll = float("-inf")
        self.down = False                 # the last contact failed: probed until it answers
        self.next_probe = float("-inf")
        self.probing = False

    @property
    def transport(self):
        if self._transport is None:
            self._transport = make_transport(self.cfg.transport)
        return self._transport

    @property
    def backend(self):
        if self._backend is None:
            self._backend = make_backend(self.cfg, self.transport)
        return self._backend

    def serves(self, group: str | None) -> bool:
        return group is not None and self.cfg.group(group) is not None

    def takes_new_cases(self, now: float) -> bool:
        """Not known to be unreachable or paused (after a while it is tried again)."""
        return now >= self.avoid_until

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


def is_unreachable(exc: BaseException) -> bool:
    """The error says the host cannot be reached at all (not that one command failed)."""
    return bool(getattr(exc, "unreachable", False))
