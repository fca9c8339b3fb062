"""Charger-supplied text made safe for one log line: escaped and bounded.

A charger controls the strings in its frames (and websockets' close reasons, header
values): unescaped, a CR/LF forges log lines, an ANSI escape rewrites a terminal, a
lone surrogate breaks a UTF-8 handler, and a 60 KB frame makes a 60 KB line.
`printable` is for one value at a call site; `SafeLogFilter` rewrites every record
of a logger that may carry such text (the `ocpp` library's, websockets'), so what
the library logs on its own is one bounded line too.
"""

from __future__ import annotations

import logging
import traceback

# A whole log message (after escaping) is cut to this many characters.
MAX_LINE = 1000
# One charger-supplied value inside a message (vendor, action, tech info, ...).
MAX_VALUE = 200
CUT_MARKER = "...[cut, {} chars in all]"

# The loggers whose records carry frames or charger text the library itself formats:
# the `ocpp` library's default logger, the one certd hands its ChargePoints, websockets'.
LIBRARY_LOGGERS = ("ocpp", "certd.ocpp.protocol", "certd.ocpp.websockets")
# certd's own OCPP loggers: every value is escaped at the call site; the filter bounds
# the line and is a second line of defence.
CERTD_LOGGERS = ("certd.ocpp", "certd.audit")

_SHORT_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\\": "\\\\"}


def _escape_char(char: str) -> str:
    short = _SHORT_ESCAPES.get(char)
    if short is not None:
        return short
    code = ord(char)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def escape(text: str, backslash: bool = True) -> str:
    """Every character `str.isprintable` refuses (C0/C1 controls, DEL, U+2028/2029, format
    characters such as bidi overrides, lone surrogates, unassigned) and, with `backslash`,
    the backslash written as a Python-style escape: one unambiguous line."""
    if text.isprintable() and not (backslash and "\\" in text):
        return text
    return "".join(c if c.isprintable() and not (backslash and c == "\\") else _escape_char(c)
                   for c in text)


def safe_text(text: str, limit: int, backslash: bool = True) -> str:
    """`text` escaped and cut to `limit` characters, plus a marker with its full length.
    Only the first `limit` characters are escaped: a 60 KB value costs no 60 KB of work."""
    escaped = escape(text[:limit], backslash)
    if len(text) <= limit and len(escaped) <= limit:
        return escaped
    return escaped[:limit] + CUT_MARKER.format(len(text))


def printable(value: object, limit: int = MAX_VALUE) -> str:
    """A charger-supplied value as part of one log line: escaped, then cut to `limit`."""
    return safe_text("" if value is None else str(value), limit)


def describe_exception(exc: BaseException) -> str:
    """Type, escaped message and innermost location of an exception, on one line: where a
    library error happened without a traceback that repeats a frame's content."""
    where = ""
    frames = traceback.extract_tb(exc.__traceback__) if exc.__traceback__ else []
    if frames:
        last = frames[-1]
        where = f" at {last.filename.rsplit('/', 1)[-1]}:{last.lineno} in {last.name}"
    return f"{type(exc).__name__}: {printable(exc, MAX_VALUE)}{where}"


class SafeLogFilter(logging.Filter):
    """Rewrites a record into one escaped, bounded line.

    With `drop_traceback` (library loggers), an attached exception becomes a one-line
    summary: the `ocpp` library logs whole frames inside its exception messages.
    """

    def __init__(self, drop_traceback: bool) -> None:
        super().__init__()
        self.drop_traceback = drop_traceback

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string is not a reason to lose the record
            message = f"{record.msg!r} {record.args!r}"
        summary = ""  # kept whole: the message before it is what gets cut
        if self.drop_traceback and record.exc_info and record.exc_info[1] is not None:
            summary = f" ({describe_exception(record.exc_info[1])})"
            record.exc_info, record.exc_text = None, None
        if self.drop_traceback:
            record.stack_info = None
        # Backslashes stay: values escaped at the call site already show theirs doubled.
        safe = safe_text(message, MAX_LINE - len(summary), backslash=False) + summary
        if safe != message or record.args:
            record.msg, record.args = safe, None
        return True


def install() -> None:
    """Attach the filters (once) to the loggers that may carry charger-supplied text."""
    for names, drop_traceback in ((LIBRARY_LOGGERS, True), (CERTD_LOGGERS, False)):
        for name in names:
            logger = logging.getLogger(name)
            if not any(isinstance(f, SafeLogFilter) for f in logger.filters):
                logger.addFilter(SafeLogFilter(drop_traceback))
