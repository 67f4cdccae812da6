"""Typing into a node's real terminal as a learner would (for verify_lessons).

A step's variants and cheats are what a learner types, so verify_lessons types
them into the node's terminal (the tmux shell with the prompt hook that the
lesson page attaches to), not through an exec: history, the prompt hook,
interactive shells in containers and Ctrl-C all behave as for a learner.

A typed script is text, one line per line typed (Enter after each). A line
that is only one of these is a key or a pause instead:

    <ctrl-c>  <ctrl-d>  <ctrl-z>  <tab>  <enter>    that key, nothing else
    <wait 3>                                        wait 3 seconds (up to 120)
    <until bytes from>                              wait until the terminal shows
                                                    that text (after the last line)

`{{$ COMMAND }}` in a line is replaced, before the line is typed, by what
COMMAND prints when run in the node: what a learner copies from an earlier
output (a container's ID or address) that no script can know in advance.

After each typed line the typist waits for the shell's command-end mark, or
for the output to go quiet (a line typed into a container's shell has no
mark), then types the next; a line followed by a key, <wait> or <until> is
meant to keep running, so the typist goes straight on to those. At the end it types a line of its own and waits
for its mark: the script must end back in the node's shell.
"""
from __future__ import annotations

import asyncio
import re
import secrets
import time
from dataclasses import dataclass

from labs.sandboxes.hints import clean_output
from runtime.termmarks import MarkParser

KEYS = {"ctrl-c": b"\x03", "ctrl-d": b"\x04", "ctrl-z": b"\x1a", "tab": b"\t", "enter": b"\r"}
SPECIAL_RE = re.compile(r"^\s*<([a-z-]+)(?:\s+([^<>]+?))?>\s*$")
# "{{$ " ... " }}" with the spaces: a Go template inside ({{.Id}}) does not end it.
COPIED_RE = re.compile(r"\{\{\$\s(.+?)\s\}\}")
MAX_WAIT = 120.0
QUIET = 1.5  # seconds of silence that end a line without a mark
# seconds of silence after a prompt, with our line's output not shown, that
# mean the line was read by the command before and must be typed again
SWALLOWED_QUIET = 1.0


@dataclass(frozen=True)
class Action:
    kind: str  # "line", "keys", "wait" or "until"
    text: str = ""
    keys: bytes = b""
    seconds: float = 0.0


def parse(script: str) -> list:
    """The actions of a typed script; ValueError (with the 1-based line) when a
    <...> line is not a key or pause we know."""
    actions = []
    for number, line in enumerate(script.splitlines(), 1):
        special = SPECIAL_RE.match(line)
        if special is None:
            if line.strip():
                actions.append(Action("line", text=line))
            continue
        name, arg = special.groups()
        if name == "until" and arg:
            actions.append(Action("until", text=arg))
        elif name == "wait":
            try:
                seconds = float(arg or "")
            except ValueError:
                seconds = -1.0
            if not 0 < seconds <= MAX_WAIT:
                raise ValueError(number, f"<wait N> takes seconds from 0 to {MAX_WAIT:.0f}")
            actions.append(Action("wait", seconds=seconds))
        elif name in KEYS and arg is None:
            actions.append(Action("keys", keys=KEYS[name]))
        else:
            raise ValueError(number, f"<{name}> is not a key this knows "
                                     f"({', '.join(f'<{k}>' for k in KEYS)}, <wait N>, "
                                     "<until TEXT>)")
    if not any(a.kind == "line" for a in actions):
        raise ValueError(1, "nothing to type")
    return actions


async def _fill(line: str, copy) -> str:
    """The line with each {{$ command }} replaced by the command's output."""
    parts, at = [], 0
    for found in COPIED_RE.finditer(line):
        if copy is None:
            raise RuntimeError("a {{$ command }} needs a node to run in")
        parts += [line[at:found.start()], (await copy(found.group(1).strip())).strip()]
        at = found.end()
    return "".join(parts) + line[at:]


class Typist:
    """Types into one open terminal (runtime Terminal) and follows its output."""

    def __init__(self, terminal):
        self.terminal = terminal
        self.marks = MarkParser()
        self.screen = bytearray()  # everything shown, marks taken out
        self._codes: list = []
        self._last_output = time.monotonic()
        self._line_start = 0
        self._reader = asyncio.ensure_future(self._read())

    async def _read(self):
        while True:
            chunk = await self.terminal.read()
            if not chunk:
                return
            clean, codes = self.marks.feed(chunk)
            self.screen += clean
            # where on the screen each mark came (a mark ends the output before it)
            self._codes += [(code, len(self.screen)) for code in codes]
            self._last_output = time.monotonic()

    async def _until(self, done, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if done():
                return True
            if self._reader.done():
                raise RuntimeError("the terminal closed")
            await asyncio.sleep(0.05)
        return done()

    async def _line(self, text: str, timeout: float) -> None:
        self._line_start = len(self.screen)
        seen = len(self._codes)
        await self.terminal.write(text.encode() + b"\r")
        typed = time.monotonic()

        def settled():
            if len(self._codes) > seen:
                return True
            now = time.monotonic()
            return now - typed > QUIET and now - self._last_output > QUIET
        await self._until(settled, timeout)

    async def sync(self, timeout: float) -> bool:
        """Run a command of our own and wait for the mark after its output: True once
        the node's shell is back (lines typed ahead have all run by then).

        A line typed while a command still runs is read by that command if it
        reads its input (`docker run -it`, `read`): the shell's prompt then comes
        back without our line having run, as it would for a learner who typed
        ahead. So, like the learner, type it again once the prompt is back and
        the terminal has been quiet a moment without our word."""
        deadline = time.monotonic() + timeout
        while True:
            nonce = secrets.token_hex(4)
            start, seen = len(self.screen), len(self._codes)
            # The output, lab-verify-<nonce>, is not in the echo of what is typed.
            await self.terminal.write(f"\x15printf '%s-%s\\n' lab-verify {nonce}\r".encode())
            word = f"lab-verify-{nonce}".encode()

            def back():
                at = self.screen.find(word, start)
                return at != -1 and any(pos > at for _code, pos in self._codes)

            def swallowed():
                return (len(self._codes) > seen and self.screen.find(word, start) == -1
                        and time.monotonic() - self._last_output > SWALLOWED_QUIET)

            await self._until(lambda: back() or swallowed(), deadline - time.monotonic())
            if back():
                return True
            if time.monotonic() >= deadline:
                return False

    async def type(self, script: str, timeout: float, copy=None) -> bool:
        """Type a script; True when the node's shell prompt came back after it.

        `copy(command)` (a coroutine) runs a {{$ command }} in the node and
        returns what it printed."""
        deadline = time.monotonic() + timeout
        actions = parse(script)
        for index, action in enumerate(actions):
            left = max(1.0, deadline - time.monotonic())
            after = actions[index + 1] if index + 1 < len(actions) else None
            if action.kind == "wait":
                await asyncio.sleep(min(action.seconds, left))
            elif action.kind == "until":
                want = action.text.encode()
                if not await self._until(lambda: want in self.screen[self._line_start:], left):
                    raise RuntimeError(f"{action.text!r} never showed: ...{self.tail(300)}")
            elif action.kind == "keys":
                await self.terminal.write(action.keys)
                await asyncio.sleep(0.3)
            else:
                # A key, a pause or an <until> next: the command is meant to go
                # on running (a ping to stop with Ctrl-C); do not wait for its end.
                settle = after is None or after.kind == "line"
                await self._line(await _fill(action.text, copy), left if settle else 0.0)
        return await self.sync(max(5.0, deadline - time.monotonic()))

    def tail(self, limit: int = 600) -> str:
        text = clean_output(self.screen.decode(errors="replace"))
        return " ".join(text.split())[-limit:]

    async def close(self) -> None:
        self._reader.cancel()
        await self.terminal.close()
