"""Many commands in one exec into a node: the shell program, and the reader of its output.

A step's check is a shell script that exits 0 once the step is done. Run as
an exec each, a check run cost a process start in the node per open step (for
the docker driver a `docker exec` each), plus one more for the published ports:
with a class of 50 checking at once, the verdict took p95 4.5 s. Here all of a
node's commands run in one exec: the program goes in on stdin (`sh -s`), each
command runs under its own `timeout` with stdin closed, and its output is framed
by lines carrying a random nonce, so nothing a command prints (container names
and logs are the learner's words) can forge another command's result.

    prog = Batch({"3": ["/bin/sh", "-c", script], "ports": ["docker", "ps"]}, timeout=20)
    result = await driver.exec(node_id, ARGV, input=prog.program().encode(), timeout=...)
    prog.results(result)  ->  {"3": ExecResult(...), "ports": ExecResult(...)}

Pure: no driver, no I/O (the fake driver uses `parse_program` to answer a batch
command by command).
"""
from __future__ import annotations

import codecs
import re
import secrets
import shlex
from dataclasses import dataclass, field

from .model import ExecResult

ARGV = ["/bin/sh", "-s"]
TIMED_OUT = 124  # what coreutils' timeout exits with
KEY_RE = re.compile(r"^[A-Za-z0-9_.-]{1,40}$")
# lab_run KEY ARGC ARGV...: ARGC lets parse_program read a program back
# whatever the scripts hold (newlines, quotes, the word lab_run).
PRELUDE = """lab_run() {{
    key=$1; shift 2
    printf '\\n@@{nonce} %s begin\\n' "$key"
    timeout -k 2 {timeout} "$@" </dev/null 2>&1
    printf '\\n@@{nonce} %s end %s\\n' "$key" "$?"
}}
"""


@dataclass
class Batch:
    commands: dict  # key -> argv, run in this order
    timeout: int = 20  # seconds, per command
    nonce: str = field(default_factory=lambda: secrets.token_hex(8))

    def __post_init__(self):
        for key in self.commands:
            if not KEY_RE.match(key):
                raise ValueError(f"batch key {key!r}: use letters, digits, _ . -")

    def program(self) -> str:
        lines = [PRELUDE.format(nonce=self.nonce, timeout=int(self.timeout))]
        for key, argv in self.commands.items():
            words = ["lab_run", key, str(len(argv)), *(shlex.quote(a) for a in argv)]
            lines.append(" ".join(words))
        return "\n".join(lines) + "\n"

    def exec_timeout(self) -> float:
        """For the one exec: every command's own limit, and a little to spare."""
        return self.timeout * len(self.commands) + 5.0

    def finished(self, output: str) -> tuple:
        """({key: ExecResult} of the commands whose frame is complete in `output`,
        {key: output so far} of the one begun but not ended)."""
        found, begun = {}, {}
        text = "\n" + output
        for mark in re.finditer(rf"\n@@{self.nonce} (\S+) (begin|end)(?: (-?\d+))?\n", text):
            key, what = mark.group(1), mark.group(2)
            if key not in self.commands:
                continue
            if what == "begin":
                begun[key] = mark.end()
            elif key in begun and key not in found:
                code = int(mark.group(3))
                found[key] = ExecResult(code, text[begun[key]:mark.start()],
                                        timed_out=code == TIMED_OUT)
        partial = {key: text[start:] for key, start in begun.items() if key not in found}
        return found, partial

    def results(self, result: ExecResult) -> dict:
        """Each command's ExecResult from the batch's output; a command that never
        finished (the exec timed out or the node went away) is timed_out."""
        found, partial = self.finished(result.output)
        for key in self.commands:
            if key not in found:
                found[key] = ExecResult(-1, partial.get(key, ""), timed_out=True)
        return found

    def reader(self) -> "Reader":
        return Reader(self)


class Reader:
    """A batch's results while its output arrives: `feed` each chunk, get back the
    commands that have just finished (so a step's verdict need not wait for the
    checks after it)."""

    def __init__(self, batch: Batch):
        self.batch = batch
        self.output = ""
        self.reported: set = set()
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, chunk: bytes) -> dict:
        self.output += self._decoder.decode(chunk)
        found, _ = self.batch.finished(self.output)
        new = {key: result for key, result in found.items() if key not in self.reported}
        self.reported.update(new)
        return new


def parse_program(program: str) -> tuple:
    """(nonce, {key: argv}) of a batch program (for the fake driver)."""
    nonce = re.search(r"@@([0-9a-f]+) ", program).group(1)
    words = shlex.split(program[program.index("\n}\n") + 3:])
    commands = {}
    while words:
        assert words[0] == "lab_run", words[:3]
        key, count = words[1], int(words[2])
        commands[key] = words[3:3 + count]
        words = words[3 + count:]
    return nonce, commands


def frame(nonce: str, key: str, result: ExecResult) -> str:
    """One command's part of a batch's output (for the fake driver)."""
    code = TIMED_OUT if result.timed_out else result.exit_code
    return f"\n@@{nonce} {key} begin\n{result.output}\n@@{nonce} {key} end {code}\n"
