"""Running as a service: the log's two forms and systemd's readiness notification.

`text` is one line per event for a person (`journalctl`, a terminal); `json` is one JSON
object per line for a log collector, with the case's id, name and the transition as
fields of their own when the event concerns a case. Both go through the standard
`logging` module; nothing here knows what the daemon does.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import sys
from datetime import datetime, timezone
from pathlib import Path

LOG_FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# attributes a log call may add with `extra=` that the JSON form shows as fields
CASE_FIELDS = ("case_id", "case_name", "from_state", "to_state", "trigger")


class TextFormatter(logging.Formatter):
    """One line per event: a message of several lines (a YAML error in a case's reason, a
    hook's output) has its line breaks and indentation folded into single spaces. A
    traceback (a bug) still follows on lines of its own."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        return re.sub(r"\s*\n\s*", " ", line) if "\n" in line else line


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (UTC, ISO 8601), level, logger, message, the
    case fields given with `extra=`, and the traceback of an exception as `error`."""

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "time": datetime.fromtimestamp(record.created, timezone.utc)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in CASE_FIELDS:
            value = getattr(record, key, None)
            if value is not None:
                out[key] = value
        if record.exc_info:
            out["error"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, default=str)


class LogFile(logging.FileHandler):
    """`log.file`: appended to, and opened again by name on SIGHUP (`reopen`), as after
    logrotate moved it away (config/caseflow.logrotate): the lines go on into the new file."""

    def reopen(self) -> None:
        # setStream flushes the old stream and swaps them under the handler's lock: no line is
        # half in the old file
        old = self.setStream(open(self.baseFilename, "a", encoding=self.encoding))  # noqa: SIM115
        if old is not None:
            old.close()


def reopen_log_files() -> int:
    """Open every log file again by its name (SIGHUP); how many there were."""
    files = [h for h in logging.getLogger().handlers if isinstance(h, LogFile)]
    for handler in files:
        handler.reopen()
    return len(files)


def setup_logging(level: str = "INFO", file: Path | None = None, fmt: str = "text") -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if file:
        handlers.append(LogFile(file, encoding="utf-8"))
    formatter = JsonFormatter() if fmt == "json" else TextFormatter(TEXT_FORMAT)
    for h in handlers:
        h.setFormatter(formatter)
    logging.basicConfig(level=getattr(logging, level, logging.INFO), handlers=handlers, force=True)
    for noisy in ("transitions", "watchdog", "paramiko"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def notify_systemd(state: str) -> bool:
    """Tell systemd (a `Type=notify` unit) how the service stands, e.g. "READY=1" or
    "STOPPING=1". Does nothing outside such a unit (no $NOTIFY_SOCKET); True if sent."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # an abstract socket
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(address)
            sock.sendall(state.encode())
    except OSError as exc:
        logging.getLogger("caseflow.service").warning(
            "could not notify systemd at %s: %s", address, exc
        )
        return False
    return True
