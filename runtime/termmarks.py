"""Command-end marks in terminal output.

The shell in every node prints an OSC escape after each command finishes
(from its prompt hook): ESC ] 6973 ; cmd-end ; <exit code> ; <command> BEL.
Inside tmux it wraps it in tmux's passthrough (ESC P tmux; ESC <mark> ESC \\),
so the terminal attached to tmux receives the bare mark; the recorder, which
reads the pane's own output, sees the wrapped one. Terminals in the browser
would ignore it, but we strip it and turn it into an event so the site can
check the learner's work right after each command, and the recording can put
each command on its timeline.
"""
from __future__ import annotations

import re

MARK_PREFIX = b"\x1b]6973;cmd-end;"
WRAP_PREFIX = b"\x1bPtmux;\x1b"
COMMAND_MAX = 2048  # bytes: the prompt hook cuts command lines to 500 characters
# Group 1: tmux's passthrough wrapper (then its ESC \ end must follow too).
_MARK_RE = re.compile(rb"(\x1bPtmux;\x1b)?\x1b\]6973;cmd-end;(-?\d{1,3})"
                      rb"(?:;([^\x07\x1b]{0,%d}))?\x07(?(1)\x1b\\)" % COMMAND_MAX)
_BODY_RE = re.compile(rb"-?\d{0,3}(?:;[^\x07\x1b]{0,%d})?" % COMMAND_MAX)
_WRAPPED_END_RE = re.compile(rb"-?\d{1,3}(?:;[^\x07\x1b]{0,%d})?\x07\x1b?" % COMMAND_MAX)
_LONGEST = len(WRAP_PREFIX) + len(MARK_PREFIX) + 4 + 1 + COMMAND_MAX + 3


class MarkParser:
    """Feed output chunks; get back (clean bytes, [exit codes]).

    A mark split across two chunks is held back until it is complete, so
    nothing of it ever reaches the browser.
    """

    def __init__(self):
        self._pending = b""

    def feed(self, chunk: bytes) -> tuple:
        clean, marks = self.feed_marks(chunk)
        return clean, [code for code, _ in marks]

    def feed_marks(self, chunk: bytes) -> tuple:
        """Like feed, with each mark as (exit code, command line)."""
        data = self._pending + chunk
        hold = _partial_start(data)
        data, self._pending = data[:hold], data[hold:]
        # Most output has no mark: a plain search is a hundred times faster
        # than the pattern (it cost a flood a third of its rate).
        if MARK_PREFIX not in data:
            return data, []
        marks = [(int(m.group(2)), (m.group(3) or b"").decode("utf-8", "replace"))
                 for m in _MARK_RE.finditer(data)]
        return _MARK_RE.sub(b"", data), marks


def _partial_start(data: bytes) -> int:
    """Where an incomplete mark starts at the end of `data` (len(data): none)."""
    start = max(0, len(data) - _LONGEST)
    p = data.find(b"\x1b", start)
    while p != -1:
        if not _MARK_RE.match(data, p) and _could_be_mark(data[p:]):
            return p
        p = data.find(b"\x1b", p + 1)
    return len(data)


def _could_be_mark(tail: bytes) -> bool:
    """Is `tail` the beginning of a mark that more output would complete?"""
    wrapped = tail.startswith(WRAP_PREFIX)
    if wrapped:
        tail = tail[len(WRAP_PREFIX):]
    elif WRAP_PREFIX.startswith(tail):
        return True
    if MARK_PREFIX.startswith(tail):
        return True
    if not tail.startswith(MARK_PREFIX):
        return False
    body = tail[len(MARK_PREFIX):]
    # Still in the code or command; or wrapped, its BEL seen, its ESC \ not yet.
    return bool(_BODY_RE.fullmatch(body) or (wrapped and _WRAPPED_END_RE.fullmatch(body)))
