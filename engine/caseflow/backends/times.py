"""Times as the queues print them, read into Unix time (`JobStatus.started`, `ended`). Each
reader returns None for what is not a time (Slurm's "Unknown", Grid Engine's "-/-", a field
left empty): a job's time the queue does not give is then taken from what caseflow saw."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

_EPOCH = re.compile(r"(\d{1,12})(\.\d+)?")
# pueue's RFC 3339 time: its fraction may have 9 digits (Python 3.10 reads at most 6)
_RFC3339 = re.compile(
    r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:?\d\d)", re.IGNORECASE
)
_ZONE = re.compile(r"([+-])(\d\d):?(\d\d)")
_ISO_LOCAL = re.compile(r"(\d{4})-(\d\d)-(\d\d)[T ](\d\d):(\d\d):(\d\d)(?:\.\d+)?")
# ctime's form, as qacct prints it: "Mon Dec  7 17:15:18 2026"
_CTIME = re.compile(r"(?:[A-Za-z]{3} +)?([A-Za-z]{3}) +(\d{1,2}) (\d\d):(\d\d):(\d\d) (\d{4})")
_MONTHS = {m: i for i, m in enumerate("jan feb mar apr may jun jul aug sep oct nov dec".split(), 1)}


def epoch(text: str | None) -> float | None:
    """Seconds since 1970 as `date +%s.%N` or SLURM_TIME_FORMAT=%s print them ("1765127718",
    "1765127718.123456789"; a `date` without %N leaves "1765127718.%N": its whole seconds)."""
    m = _EPOCH.match((text or "").strip())
    if not m or int(m.group(1)) == 0:  # 0: a time the queue never set
        return None
    return int(m.group(1)) + (float("0" + m.group(2)) if m.group(2) else 0.0)


def rfc3339(text: object) -> float | None:
    """A time with its offset, as pueue writes them ("2024-07-18T14:55:02.890447203+02:00")."""
    m = _RFC3339.fullmatch(text.strip()) if isinstance(text, str) else None
    if not m:
        return None
    zone = "+00:00" if m.group(3).upper() == "Z" else m.group(3)
    fraction = f".{m.group(2)[:6]}" if m.group(2) else ""
    try:
        return datetime.fromisoformat(f"{m.group(1)}{fraction}{_colon(zone)}").timestamp()
    except ValueError:
        return None


def zone_offset(text: str | None) -> timezone | None:
    """The host's offset from UTC as `date +%z` prints it ("+0100"), or None."""
    m = _ZONE.fullmatch((text or "").strip())
    if not m:
        return None
    minutes = int(m.group(2)) * 60 + int(m.group(3))
    return timezone(timedelta(minutes=-minutes if m.group(1) == "-" else minutes))


def local(text: str | None, zone: timezone | None) -> float | None:
    """A time without an offset in the host's zone `zone`, as Grid Engine prints them: qstat's
    "2026-12-07T17:15:19", qacct's "Mon Dec  7 17:15:18 2026". None without a zone (a time
    read in the wrong zone would be hours off)."""
    text = (text or "").strip()
    if zone is None:
        return None
    try:
        if m := _ISO_LOCAL.fullmatch(text):
            year, month, day, hour, minute, second = (int(g) for g in m.groups())
        elif (m := _CTIME.fullmatch(text)) and m.group(1).lower() in _MONTHS:
            year, month = int(m.group(6)), _MONTHS[m.group(1).lower()]
            day, hour, minute, second = (int(m.group(i)) for i in (2, 3, 4, 5))
        else:
            return None
        return datetime(year, month, day, hour, minute, second, tzinfo=zone).timestamp()
    except ValueError:  # a day or an hour out of range
        return None


def _colon(zone: str) -> str:
    return zone if ":" in zone else f"{zone[:3]}:{zone[3:]}"
