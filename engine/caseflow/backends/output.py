"""What a queue printed that caseflow cannot read: one error for every backend.

A queue's answer that does not parse is most often a read cut short by a dropped connection,
so it is a transient error tried again a few times; then the case fails, quoting the start
of what was printed (`quote_start`)."""

from __future__ import annotations

from ..errors import TransientError


class BadOutput(TransientError):
    """The queue printed something caseflow cannot read (a few tries, then the case fails)."""

    max_attempts = 3


def quote_start(text: str, n: int = 120) -> str:
    """The first `n` characters of `text` on one line, quoted, for an error message."""
    text = text.strip().replace("\n", "\\n")
    return repr(text[:n] + ("..." if len(text) > n else ""))
