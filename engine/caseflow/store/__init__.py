"""The SQLite store: cases, their transition history and the GPU slots, in one file.

The file, its schema and its connections are store_schema's; the queries of cases are
store_cases', those of slots and hosts store_slots'. A transition, its history row and its
slot bookkeeping commit in one transaction, guarded by the state the case was loaded in, so
a crash at any point leaves every case in exactly one state.
"""

from __future__ import annotations

from .store_cases import CaseQueries
from .store_schema import MIGRATIONS, SCHEMA_VERSION, CaseRow, HistoryRow, SlotRow
from .store_slots import SlotQueries

__all__ = [
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "CaseRow",
    "HistoryRow",
    "SlotRow",
    "Store",
]


class Store(CaseQueries, SlotQueries):
    """All reads and writes of the database. Safe to share between threads."""
