"""The valid range of every value raftbox stores for a client, and why. Pure.

A value the API accepts is one every supported client can represent (DESIGN.md §9): a stored
value outside that range does not fail one request, it fails every later sync of every client
of the account (a far-future date broke the sync client's SQLite index). So the range is
checked where the API parses a request — the answer is the Dropbox error the SDK expects, a
400 for an argument, `malformed_path` for a path — and again by the state machine, which
refuses a command outside it with `invalid_command`. Only new writes are checked: values
stored before these bounds existed are served as they are. (Applying stays deterministic for
members of one version; an entry an older leader accepted with such a value would be refused by
an upgraded member applying it, so members are upgraded with no such write in flight.)

Dates (`client_modified`, on every route that writes a file: `files/upload`, the upload
session finishes, and the native `commit_batch`): from 1970-01-01T00:00:00Z up to
2199-12-31T23:59:59Z, whole seconds, UTC. Why:
- the upper bound stays well before 2262-04-11, where nanoseconds since 1970 leave a signed
  64-bit integer (SQLite INTEGER, APFS, `st_mtime_ns`, Go's `time.Time.UnixNano`), with room to
  add offsets and time zones without overflowing;
- JavaScript `Date` (±275,760 years), Windows FILETIME (1601–30828), 64-bit `time_t` and
  Python `datetime` (years 1–9999) hold the whole range;
- the lower bound is the Unix epoch: a negative time is refused by `os.utime` on Windows and
  read as "unknown" by many tools;
- what does not hold it — a 32-bit `time_t` (2038), FAT/exFAT (1980–2107) — is a client's own
  limit: it keeps such a file and reports it (the sync client), the server does not narrow
  the range for it.

Names and paths (`raftbox.meta.paths`): valid UTF-8 without lone surrogates, no control
characters, each component at most 255 UTF-8 bytes (what ext4, APFS and NTFS hold), the whole
path at most 4096 bytes (Linux PATH_MAX), and a new path at most `paths.PATH_MAX_DEPTH`
components deep.

Account text (`email`, `display_name`): valid Unicode, no control characters; an email at
most `EMAIL_MAX_CHARS` (RFC 5321's limit on a path) and with an "@", a display name at most
`DISPLAY_NAME_MAX_CHARS`.

Numbers: sizes and offsets are within `commands.MAX_FILE_BYTES`; any other integer argument is
at most `INT_ARG_MAX` (2**53 - 1, the largest integer a JSON client written in JavaScript reads
exactly; SQLite's INTEGER holds it).
"""

from __future__ import annotations

import datetime as dt
import re

TS_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
CLIENT_MODIFIED_MIN = "1970-01-01T00:00:00Z"
CLIENT_MODIFIED_MAX = "2199-12-31T23:59:59Z"
CLIENT_MODIFIED_MAX_S = 7258118399  # CLIENT_MODIFIED_MAX in seconds since 1970
EMAIL_MAX_CHARS = 254
DISPLAY_NAME_MAX_CHARS = 1000
INT_ARG_MAX = 2**53 - 1

_TS = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z")
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def timestamp_problem(s: object) -> str | None:
    """Why `s` is not a storable `client_modified`, or None: `%Y-%m-%dT%H:%M:%SZ`, a real
    date, within [CLIENT_MODIFIED_MIN, CLIENT_MODIFIED_MAX]."""
    if not isinstance(s, str):
        return "expected a timestamp string"
    if _TS.fullmatch(s) is None:
        return f"timestamp does not match format {TS_FORMAT!r}"
    try:
        dt.datetime.strptime(s, TS_FORMAT)
    except ValueError:
        return "not a valid date"
    # The format is fixed-width, so the strings order like the dates they name.
    if not CLIENT_MODIFIED_MIN <= s <= CLIENT_MODIFIED_MAX:
        return f"{s} is out of range [{CLIENT_MODIFIED_MIN}, {CLIENT_MODIFIED_MAX}]"
    return None


def clamp_mtime_s(t: float) -> int:
    """A local file time (seconds since 1970) brought into the storable range, for a client
    that uploads it as client_modified: a file dated 1969 or 2300 still syncs."""
    return min(max(int(t), 0), CLIENT_MODIFIED_MAX_S)


def has_surrogate(s: str) -> bool:
    """True if `s` holds a lone surrogate (text that is not valid Unicode, not UTF-8-encodable:
    a `\\ud800` JSON escape, or an invalid byte decoded with `surrogateescape`)."""
    return _SURROGATE.search(s) is not None


def text_problem(s: object, max_chars: int) -> str | None:
    """Why `s` is not storable account text (an email, a display name), or None."""
    if not isinstance(s, str):
        return "expected a string"
    if has_surrogate(s):
        return "not valid Unicode (a lone surrogate)"
    if _CONTROL.search(s):
        return "control characters are not allowed"
    if len(s) > max_chars:
        return f"longer than {max_chars} characters"
    return None


def email_problem(s: object) -> str | None:
    why = text_problem(s, EMAIL_MAX_CHARS)
    if why is None and ("@" not in s or s != s.strip() or " " in s):  # type: ignore[operator]
        why = "not an email address"
    return why
