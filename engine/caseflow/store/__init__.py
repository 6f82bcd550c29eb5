"""The SQLite store: cases, their transition history and the GPU slots, in one file.

The file, its schema and its connections are store.schema's; the queries of cases are
store.cases', those of slots and hosts store.slots', those behind `caseflow prune`
store.pruning's. A transition, its history row and its slot bookkeeping commit in one
transaction, guarded by the state the case was loaded in, so a crash at any point leaves
every case in exactly one state.
"""

from __future__ import annotations

from .cases import CaseQueries
from .pruning import PruneQueries
from .schema import CaseRow, HistoryRow, JobTimes, SlotRow
from .slots import SlotQueries

__all__ = [
    "CaseRow",
    "HistoryRow",
    "JobTimes",
    "SlotRow",
    "Store",
]


class Store(CaseQueries, SlotQueries, PruneQueries):
    """All reads and writes of the database. Safe to share between threads."""
