"""caseflow: ferries compute cases from a local inbox to a GPU host's queue.

Each case is a persisted state machine declared in ``specs/case_machine.yaml``.
"""

__version__ = "0.1.0"
