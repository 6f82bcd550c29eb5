"""Counts as a person reads them in messages: "1 file", "2 files" (`plural`). Imports nothing
of caseflow: any module may use it."""

from __future__ import annotations


def plural(n: int, word: str, words: str | None = None) -> str:
    """`n` and the word for it: `plural(1, "file")` is "1 file", `plural(3, "file")` "3 files";
    `words` for an irregular plural."""
    return f"{n:,} {word if n == 1 else words or word + 's'}"
