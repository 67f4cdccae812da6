"""The typist's own line at the end of a typed script (labs/courses/typist.py)."""
from __future__ import annotations

import asyncio
import re

from labs.courses.typist import Typist

MARK = b"\x1b]6973;cmd-end;0;printf\x07"


class Terminal:
    """A node's terminal whose running command reads the first `swallow` lines
    typed (as `docker run -it` does): their echo shows, then the node's prompt,
    but they never run. Lines after that run in the node's shell."""

    def __init__(self, swallow: int):
        self.swallow = swallow
        self.output: asyncio.Queue = asyncio.Queue()
        self.typed: list = []

    async def read(self) -> bytes:
        return await self.output.get()

    async def write(self, data: bytes) -> None:
        self.typed.append(data)
        line = data.lstrip(b"\x15").rstrip(b"\r")
        if self.swallow:
            self.swallow -= 1
            await self.output.put(line + b"\r\n[node1] ~# " + MARK)
            return
        word = re.search(rb"lab-verify ([0-9a-f]+)", line).group(1)
        await self.output.put(line + b"\r\nlab-verify-" + word + b"\r\n" + MARK + b"[node1] ~# ")

    async def close(self) -> None:
        pass


def test_a_line_read_by_the_command_before_is_typed_again_once_the_prompt_is_back():
    async def main():
        terminal = Terminal(swallow=1)
        typist = Typist(terminal)
        try:
            assert await asyncio.wait_for(typist.sync(10), 15)
        finally:
            await typist.close()
        return terminal.typed
    typed = asyncio.run(main())
    assert len(typed) == 2, typed
    assert typed[0] != typed[1]  # a new word, so an old line's output is never taken for it


def test_a_shell_that_never_runs_the_line_is_given_up_at_the_timeout():
    async def main():
        terminal = Terminal(swallow=1000)
        typist = Typist(terminal)
        try:
            return await asyncio.wait_for(typist.sync(3), 10), terminal.typed
        finally:
            await typist.close()
    back, typed = asyncio.run(main())
    assert back is False
    assert 2 <= len(typed) <= 3, typed  # typed again after each quiet prompt, not in a loop
