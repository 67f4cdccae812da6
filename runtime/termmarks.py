"""Command-end marks in terminal output.

The shell in every node prints an OSC escape after each command finishes
(from its prompt hook): ESC ] 6973 ; cmd-end ; <exit code> BEL. Terminals in
the browser would ignore it, but we strip it and turn it into an event so the
site can check the learner's work right after each command.
"""
from __future__ import annotations

import re

MARK_PREFIX = b"\x1b]6973;cmd-end;"
_MARK_RE = re.compile(rb"\x1b\]6973;cmd-end;(-?\d{1,3})\x07")


class MarkParser:
    """Feed output chunks; get back (clean bytes, [exit codes]).

    A mark split across two chunks is held back until it is complete, so
    nothing of it ever reaches the browser.
    """

    def __init__(self):
        self._pending = b""

    def feed(self, chunk: bytes) -> tuple:
        data = self._pending + chunk
        self._pending = b""
        codes = [int(m.group(1)) for m in _MARK_RE.finditer(data)]
        clean = _MARK_RE.sub(b"", data)
        # Hold back a trailing partial mark (a prefix of MARK_PREFIX, or the
        # prefix plus digits still waiting for BEL).
        start = clean.rfind(b"\x1b")
        if start != -1 and _is_partial_mark(clean[start:]):
            self._pending = clean[start:]
            clean = clean[:start]
        return clean, codes


_PARTIAL_CODE_RE = re.compile(rb"-?\d{0,3}")


def _is_partial_mark(tail: bytes) -> bool:
    if MARK_PREFIX.startswith(tail):
        return True
    return tail.startswith(MARK_PREFIX) and bool(_PARTIAL_CODE_RE.fullmatch(tail[len(MARK_PREFIX):]))
