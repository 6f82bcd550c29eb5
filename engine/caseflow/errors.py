"""The error kinds every port raises; the engine never retries a bare Exception."""


class CaseflowError(Exception):
    """Base of caseflow's own errors."""


class ConfigError(CaseflowError):
    """A configuration mistake; the message names the file and the key."""


class SpecError(CaseflowError):
    """The machine definition in specs/ is inconsistent."""


class StoreError(CaseflowError):
    """The database cannot be used (newer schema, locked by another daemon, ...)."""


class AlreadyRunning(StoreError):
    """Another daemon holds the database."""

    def __init__(self, database: object, pid: int | None) -> None:
        self.database = database
        self.pid = pid
        who = f"pid {pid}" if pid else "unknown pid"
        super().__init__(f"another caseflow daemon ({who}) is already running on {database}")


class StaleCase(CaseflowError):
    """The case changed in the store since it was loaded; the transition was not applied."""


class StepError(CaseflowError):
    """An error raised by a step; subclasses say whether trying again can help."""


class TransientError(StepError):
    """Worth retrying later (network down, remote busy); the case keeps its state."""


class PermanentError(StepError):
    """Retrying cannot help; the case ends in `failure` with this message as the reason."""


class HostError(StepError):
    """The host cannot be used as configured (authentication failed, host key unknown or
    changed). Work on the host pauses and the problem is shown; no case fails for it.

    `kind` says which of the host problems it is (shown, and a label of the
    `caseflow_host_problem` metric that alert rules match): see the constants below."""

    kind = "config"

    def __init__(self, message: str, kind: str | None = None) -> None:
        super().__init__(message)
        if kind is not None:
            self.kind = kind


# the kinds of host problems (HostError.kind, and two the health probe finds itself)
HOST_KEY = "host_key"  # unknown or changed: nothing is sent to it
AUTH = "auth"  # the key, agent or ticket was refused
LOGIN = "login"  # only a person can log in (`caseflow login HOST`)
QUEUE_DOWN = "queue_down"  # the host answers; its queue's daemon does not
CONFIG = "config"  # the host cannot be used as configured (anything else)
UNREACHABLE = "unreachable"  # it does not answer at all
DISK_LOW = "disk_low"  # its remote root's file system is nearly full
HOST_PROBLEM_KINDS = (UNREACHABLE, HOST_KEY, AUTH, LOGIN, QUEUE_DOWN, CONFIG, DISK_LOW)
