"""Terminal recordings: each node's terminal as an asciicast v2 file on its host.

One process per sandbox host (`python -m runtime record`, a line of the
Procfile) follows the runtime's nodes. For every node in a lab session it
reads the pane's own output through tmux's pipe-pane (whatever browser is or
is not attached) and its resizes through a control client (NodeRecorder),
and writes the output, the resizes and each command's end (the prompt hook's
mark, runtime/termmarks.py) to <runtime dir>/recordings/<session>/<node>.cast:

    {"version": 2, "width": 80, "height": 24, "timestamp": 1764579000, ...}
    [0.52, "o", "[node1] ~# "]
    [3.1, "m", "$ docker container run alpine hostname [exit 0]"]
    [9.0, "r", "120x30"]

The files live outside the node, where its learner cannot write. The site adds
its own markers (checks, steps done) when it serves a recording, so this file
only holds what the terminal itself said.

Caps: `cap_bytes` per session (shared by its nodes): past it the oldest output
is dropped, markers and resizes kept, and a marker says where. Recordings whose
last write is older than `keep_days` are deleted.
"""
from __future__ import annotations

import asyncio
import codecs
import collections
import contextlib
import json
import logging
import os
import re
import shutil
import time
from pathlib import Path

from .builtin.common import POOL_SESSION
from .model import LabRuntimeError
from .paths import base_dir
from .termmarks import MarkParser

log = logging.getLogger(__name__)

SCAN_SECONDS = 2.0
WAKE_POLL_SECONDS = 0.05
RETRY_SECONDS = 2.0
KEEP_AFTER_TRIM = 0.75  # of the cap: a trim makes room for a while, not one line
_SAFE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")


def recordings_dir() -> Path:
    return base_dir() / "recordings"


def wake() -> None:
    """Tell this host's recorder that lab nodes are ready: it scans at once
    rather than at its next full scan (the learner's first command counts)."""
    with contextlib.suppress(OSError):
        top = recordings_dir()
        top.mkdir(parents=True, exist_ok=True, mode=0o700)
        (top / ".wake").touch()


def _woken_at() -> float:
    try:
        return (recordings_dir() / ".wake").stat().st_mtime
    except OSError:
        return 0.0


def cast_path(session: str, node_name: str) -> Path:
    if not _SAFE.fullmatch(session) or not _SAFE.fullmatch(node_name):
        raise ValueError(f"not a recording name: {session!r}/{node_name!r}")
    return recordings_dir() / session / f"{node_name}.cast"


def parse_cast(lines) -> tuple:
    """(header, events, damaged lines) of a recording's lines. A line cut short
    by a crash or a full disk is skipped; everything before and after it stays."""
    header, events, damaged = None, [], 0
    for line in lines:
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except ValueError:
            damaged += 1
            continue
        if header is None and isinstance(item, dict):
            header = item
        elif isinstance(item, list) and len(item) == 3 and isinstance(item[0], (int, float)):
            events.append(item)
        else:
            damaged += 1
    return header, events, damaged


def read_cast(path: Path) -> tuple:
    """parse_cast of a recording file; ValueError when it has no header."""
    with open(path, encoding="utf-8", errors="replace") as f:
        header, events, damaged = parse_cast(f)
    if header is None:
        raise ValueError(f"{path}: no asciicast header")
    return header, events, damaged


class CastWriter:
    """Appends events to one recording; continues a file a crash left behind."""

    def __init__(self, path: Path, cap_bytes: int, width: int, height: int, title: str):
        self.path, self.cap_bytes = path, cap_bytes
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.started = None
        if path.exists():
            with contextlib.suppress(OSError, ValueError):
                header, _, _ = read_cast(path)
                self.started = float(header["timestamp"])
        if self.started is None:
            self.started = float(int(time.time()))
            header = {"version": 2, "width": width, "height": height, "timestamp": int(self.started),
                      "env": {"TERM": "xterm-256color", "SHELL": "/bin/bash"}, "title": title}
            path.write_text(json.dumps(header) + "\n")
        self.file = open(path, "a", encoding="utf-8")
        self.size = path.stat().st_size
        self.last_size = None

    def now(self) -> float:
        return round(time.time() - self.started, 3)

    def output(self, text: str) -> None:
        if text:
            self._write([self.now(), "o", text])

    def resize(self, cols: int, rows: int) -> None:
        if (cols, rows) != self.last_size:  # tmux reports layout changes that keep the size too
            self.last_size = (cols, rows)
            self._write([self.now(), "r", f"{cols}x{rows}"])

    def marker(self, label: str) -> None:
        self._write([self.now(), "m", label])

    def _write(self, event: list) -> None:
        line = json.dumps(event, ensure_ascii=False) + "\n"
        self.file.write(line)
        self.size += len(line.encode())
        if self.cap_bytes and self.size > self.cap_bytes:
            self.trim()

    def trim(self) -> None:
        """Drop the oldest output until the file is well under its cap, keeping
        every marker and resize, and say where output was dropped."""
        self.file.close()
        header, events, _ = read_cast(self.path)
        budget = int(self.cap_bytes * KEEP_AFTER_TRIM)
        kept, size = [], 0
        for event in reversed(events):
            line = json.dumps(event, ensure_ascii=False) + "\n"
            if event[1] == "o":
                if size + len(line.encode()) > budget:
                    continue
                size += len(line.encode())
            kept.append(event)
        kept.reverse()
        # The marker goes where the kept output begins: what came before is gone.
        first = next((e[0] for e in kept if e[1] == "o"), self.now())
        cut = "output dropped before this point (recording cap %.1f MB)" % (self.cap_bytes / 2**20)
        kept = [e for e in kept if not (e[1] == "m" and e[2] == cut)]
        kept.append([first, "m", cut])
        kept.sort(key=lambda e: e[0])
        tmp = self.path.with_suffix(".trim")
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(json.dumps(header) + "\n")
            for event in kept:
                f.write(json.dumps(event, ensure_ascii=False) + "\n")
        os.replace(tmp, self.path)
        self.file = open(self.path, "a", encoding="utf-8")
        self.size = self.path.stat().st_size
        log.info("recording %s past its cap: oldest output dropped", self.path)

    def flush(self) -> None:
        """Events reach the file (the site reads it) after each batch, not each event."""
        with contextlib.suppress(OSError):
            self.file.flush()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.file.close()


_LAYOUT_SIZE = re.compile(rb"^%layout-change \S+ [0-9a-f]{4},(\d+)x(\d+),")


class NodeRecorder:
    """Records one node's terminal until the node or its tmux session ends.

    Two channels to the node's tmux: `pipe-pane` copies the pane's raw output
    into a FIFO in the node that this process reads from the host; a control
    client that asks for no output (`refresh-client -f no-output`) reports
    resizes and answers commands (the screen, when recording begins). A
    control client that gets the output itself cost tmux so much that a flood
    ran at a third of its rate; a pipe costs it next to nothing.

    A flood (more than FLOOD_BYTES of output within a second: a `cat` of a big
    file, a loop printing) is not written: replaying megabytes nobody can read
    helps no one, and one flood would push the whole lesson out of the capped
    recording. Its commands' marks are still read, a marker says how much was
    left out, and the screen as it stands after the flood is recorded.
    """

    FLOOD_BYTES = 512 * 1024
    QUIET_SECONDS = 0.5  # a flood has ended when nothing came for this long

    def __init__(self, driver, node, cap_bytes: int, name: str = "main", fifo: str = ""):
        self.driver, self.node, self.cap_bytes, self.name = driver, node, cap_bytes, name
        self.fifo = fifo or f"/run/lab-record-{name}.fifo"  # in the node
        self.proc = None
        self.writer = None
        # Replies to come, in order: the attach's, then the commands sent in run().
        self.expect = collections.deque(["attach", "", "", "size", "screen"])
        self.block = None
        self.size = (80, 24, 0, 0)
        self.decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self.marks = MarkParser()
        self.window_start, self.window_bytes = 0.0, 0
        self.skipped = None  # bytes left out of the flood going on (None: no flood)

    def screen_commands(self) -> str:
        return (f"display-message -p -t {self.name} "
                "'#{window_width} #{window_height} #{cursor_x} #{cursor_y}'\n"
                f"capture-pane -p -e -t {self.name}\n")

    async def run(self) -> None:
        host_fifo = self.driver.node_path(self.node.id, self.fifo)  # raises for a driver that cannot
        made = await self.driver.exec(self.node.id, ["sh", "-c", 'rm -f "$1" && mkfifo -m 600 "$1"',
                                                     "sh", self.fifo], timeout=10)
        if not made.ok:
            raise LabRuntimeError(f"could not make {self.fifo}: {made.output.strip()}")
        # Opened for writing too, by us: without a writer (before tmux's pipe
        # opens it, or between two pipes) a FIFO reads as ended.
        reading = os.open(host_fifo, os.O_RDONLY | os.O_NONBLOCK)
        keep_open = os.open(host_fifo, os.O_WRONLY | os.O_NONBLOCK)
        self.proc = proc = await self.driver.open_control(self.node.id, self.name)
        output = asyncio.create_task(self.read_output(reading))
        try:
            proc.stdin.write((f"refresh-client -f no-output\n"
                              f"pipe-pane -O -t {self.name} 'exec cat > {self.fifo}'\n"
                              + self.screen_commands()).encode())
            await proc.stdin.drain()
            while True:
                try:
                    async with asyncio.timeout(5):
                        line = await proc.stdout.readline()
                except TimeoutError:
                    # Quiet is normal. But tmux 3.3 now and then leaves a
                    # control client attached to nothing when its session ends
                    # (no %exit; seen in one unit run in eight): ask whether
                    # the session is still there.
                    if proc.returncode is not None:
                        break
                    self.expect.append("probe")
                    with contextlib.suppress(ConnectionError):
                        proc.stdin.write(f"has-session -t {self.name}\n".encode())
                    continue
                if not line or not self.line(line.rstrip(b"\n")):
                    break
                # (tmux may be gone by now: the shell exited, the node stopped)
                with contextlib.suppress(ConnectionError):
                    await proc.stdin.drain()
        finally:
            output.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await output
            for fd in (reading, keep_open):
                with contextlib.suppress(OSError):
                    os.close(fd)
            if self.writer is not None:
                self.writer.close()
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            proc.stdin.close()  # else its transport outlives the event loop

    async def read_output(self, fd: int) -> None:
        """The pane's output from the FIFO: whatever has arrived since the
        last read is one event and one write."""
        loop = asyncio.get_running_loop()
        ready = asyncio.Event()
        loop.add_reader(fd, ready.set)
        try:
            while True:
                # asyncio.timeout, not wait_for: in Python 3.11 wait_for can
                # swallow the cancel that ends this task, and run() then
                # waited for it forever (one unit run in six).
                try:
                    async with asyncio.timeout(self.QUIET_SECONDS if self.skipped is not None else None):
                        await ready.wait()
                except TimeoutError:
                    self.flood_ended()
                    continue
                ready.clear()
                try:
                    data = os.read(fd, 1 << 16)
                except BlockingIOError:
                    continue
                if data and self.writer is not None:  # before the first screen: in it
                    self.output(data)
        finally:
            loop.remove_reader(fd)

    def output(self, data: bytes) -> None:
        now = time.monotonic()
        if now - self.window_start > 1.0:
            self.window_start, self.window_bytes = now, 0
        self.window_bytes += len(data)
        if self.skipped is not None:
            self.skipped += len(data)
            self.write_marks(self.marks.feed_marks(data)[1])  # commands that ended within it
            return
        clean, found = self.marks.feed_marks(data)
        self.writer.output(self.decoder.decode(clean))
        self.write_marks(found)
        if self.window_bytes > self.FLOOD_BYTES:
            self.skipped = 0
        self.writer.flush()

    def line(self, line: bytes) -> bool:
        """One line of tmux's control protocol; False when tmux is done."""
        if self.block is not None:
            if line.startswith((b"%end ", b"%error ")):
                kind = self.expect.popleft() if self.expect else ""
                if kind == "probe" and line.startswith(b"%error "):
                    return False  # the session is gone
                self.reply(kind, self.block)
                self.block = None
            else:
                self.block.append(line)
        elif line.startswith(b"%begin "):
            self.block = []
        elif line.startswith(b"%layout-change ") and self.writer is not None:
            m = _LAYOUT_SIZE.match(line)
            if m:
                self.writer.resize(int(m.group(1)), int(m.group(2)))
                self.writer.flush()
        elif line.startswith(b"%exit"):
            return False
        return True

    def reply(self, kind: str, lines: list) -> None:
        if kind == "size":
            with contextlib.suppress(IndexError, ValueError):
                cols, rows, x, y = (int(v) for v in lines[0].split())
                self.size = (cols, rows, x, y)
        elif kind == "screen":
            if self.writer is None:
                self.writer = self._open_writer()
            cols, rows, x, y = self.size
            screen = "\r\n".join(line.decode("utf-8", "replace") for line in lines)
            self.writer.output(f"\x1b[H\x1b[2J{screen.rstrip()}\x1b[{y + 1};{x + 1}H")
            self.writer.flush()

    def write_marks(self, found: list) -> None:
        for code, command in found:
            self.writer.marker(f"$ {command} [exit {code}]" if command else f"[exit {code}]")

    def flood_ended(self) -> None:
        self.writer.marker("%.1f MB of output not recorded (a flood: more than %d KB a second); "
                           "the screen after it follows" % (self.skipped / 1e6, self.FLOOD_BYTES // 1024))
        self.writer.flush()
        self.skipped = None
        self.window_start, self.window_bytes = time.monotonic(), 0
        self.decoder.reset()
        self.expect.extend(["size", "screen"])
        with contextlib.suppress(ConnectionError):
            self.proc.stdin.write(self.screen_commands().encode())

    def _open_writer(self) -> CastWriter:
        cols, rows, _, _ = self.size
        writer = CastWriter(cast_path(self.node.session, self.node.name), self.cap_bytes, cols, rows,
                            f"{self.node.name} of {self.node.session}")
        log.info("recording node %s (%s/%s)", self.node.id, self.node.session, self.node.name)
        writer.resize(cols, rows)
        return writer


class Recorder:
    """Follows the driver's nodes and records each lab node's terminal."""

    def __init__(self, driver, cap_mb: float = 20, keep_days: float = 30, prefix: str = ""):
        self.driver = driver
        # Sessions of one site are <prefix><number> (LAB_SESSION_PREFIX): a
        # second site on the machine records its own.
        self.sessions = re.compile(re.escape(prefix) + r"\d+") if prefix else None
        self.cap_bytes = int(cap_mb * 2**20)
        self.keep_days = keep_days
        self.tasks: dict = {}  # node id -> asyncio task
        self.retry_at: dict = {}

    def wanted(self) -> list:
        return [n for n in self.driver.list_nodes()
                if n.session != POOL_SESSION and n.extra.get("state") == "running"
                and (self.sessions is None or self.sessions.fullmatch(n.session))]

    async def scan(self) -> None:
        nodes = await asyncio.to_thread(self.wanted)
        per_session: dict = {}
        for node in nodes:
            per_session[node.session] = per_session.get(node.session, 0) + 1
        now = time.monotonic()
        for node in nodes:
            task = self.tasks.get(node.id)
            if (task and not task.done()) or self.retry_at.get(node.id, 0) > now:
                continue
            # The session's cap is shared by its nodes.
            cap = self.cap_bytes // per_session[node.session]
            self.tasks[node.id] = asyncio.create_task(self._record(node, cap))
        alive = {n.id for n in nodes}
        for node_id in [k for k in self.tasks if k not in alive and self.tasks[k].done()]:
            del self.tasks[node_id]
            self.retry_at.pop(node_id, None)

    async def _record(self, node, cap: int) -> None:
        try:
            await NodeRecorder(self.driver, node, cap).run()
        except LabRuntimeError as exc:
            log.debug("cannot record node %s: %s", node.id, exc.reason)
        except Exception:
            log.exception("recording of node %s failed", node.id)
        # The shell exited (its tmux session ended) or the node went: if the
        # node is still there, the next scan attaches again after a pause.
        self.retry_at[node.id] = time.monotonic() + RETRY_SECONDS

    def prune(self) -> list:
        """Delete recordings not written to for keep_days; returns their paths."""
        removed = []
        top = recordings_dir()
        if not top.is_dir() or self.keep_days <= 0:
            return removed
        horizon = time.time() - self.keep_days * 86400
        for session in top.iterdir():
            if not session.is_dir():
                continue
            with contextlib.suppress(OSError):
                newest = max((p.stat().st_mtime for p in session.iterdir()), default=0)
                if newest < horizon:
                    shutil.rmtree(session)
                    removed.append(str(session))
        return removed

    async def run_forever(self) -> None:
        log.info("recording terminals to %s (cap %.0f MB per session, kept %g days)",
                 recordings_dir(), self.cap_bytes / 2**20, self.keep_days)
        last_prune = 0.0
        while True:
            try:
                await self.scan()
                if time.monotonic() - last_prune > 3600:
                    last_prune = time.monotonic()
                    for path in await asyncio.to_thread(self.prune):
                        log.info("removed recording %s (older than %g days)", path, self.keep_days)
            except Exception:
                log.exception("recorder scan failed")
            # A full scan reads every node's state: every SCAN_SECONDS, or at
            # once when a node worker says new nodes are ready (wake(): a stat).
            woken, until = _woken_at(), time.monotonic() + SCAN_SECONDS
            while time.monotonic() < until and _woken_at() == woken:
                await asyncio.sleep(WAKE_POLL_SECONDS)


def serve(driver) -> None:
    """`python -m runtime record`: record this host's lab terminals until killed.
    With LAB_RECORD=0 it records nothing but keeps running, so the process
    manager (honcho) does not take the other processes down with it."""
    if os.environ.get("LAB_RECORD", "1") == "0":
        log.info("terminal recording is off (LAB_RECORD=0)")
        while True:
            time.sleep(3600)
    # Behind the learners' terminals and checks when the CPU is short: events
    # are stamped when read, so a late read costs a few ms of timing, not a keystroke.
    os.nice(10)
    recorder = Recorder(driver, cap_mb=float(os.environ.get("LAB_RECORD_MB", "20")),
                        keep_days=float(os.environ.get("LAB_RECORD_DAYS", "30")),
                        prefix=os.environ.get("LAB_SESSION_PREFIX", "s"))
    asyncio.run(recorder.run_forever())
