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
import logging
import os
import re
import shutil
import signal
import time

from .builtin.pool import is_pool_session
from .castfile import CastWriter, cast_path, recordings_dir
from .model import LabRuntimeError
from .recwake import Wakeups, wake  # noqa: F401 (wake: what node workers call)
from .termmarks import MarkParser

log = logging.getLogger(__name__)

SCAN_SECONDS = 2.0
RETRY_SECONDS = 2.0
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_LAYOUT_SIZE = re.compile(rb"^%layout-change \S+ [0-9a-f]{4},(\d+)x(\d+),")


class Flood:
    """A flood going on: what is known of it so far."""

    def __init__(self, reads, commands_offset):
        self.reads = reads  # the tmux server's read counter when last looked at
        self.commands_offset = commands_offset  # the command log's size when it began
        self.skipped = 0  # bytes left out
        self.quiet = 0.0  # seconds tmux has read little
        self.marks_seen = []  # marks that came through the pipe before it closed


class NodeRecorder:
    """Records one node's terminal until the node or its tmux session ends.

    Two channels to the node's tmux: `pipe-pane` copies the pane's raw output
    into a FIFO in the node that this process reads from the host; a control
    client that gets no output (it attaches with the no-output flag, see
    runtime/model.py's CONTROL_FLAGS) reports resizes and answers commands
    (the screen, when recording begins). A control client that gets the
    output itself cost tmux so much that a flood
    ran at a third of its rate; a pipe costs it next to nothing.

    A flood (more than FLOOD_BYTES of output within a second: a `cat` of a big
    file, a loop printing) is not written: replaying megabytes nobody can read
    helps no one, and one flood would push the whole lesson out of the capped
    recording. The pipe is closed for the flood's length, so that tmux, the
    pipe's `cat` and this process spend nothing on it (kept open, reading
    and dropping it took a third of the flood's rate on two cores). Meanwhile
    the tmux server's read counter (/proc/<pid>/io) says when it has ended;
    then a marker says how much was left out, the commands that ended within
    it come from the shell's command log (their marks went with the output),
    and the screen as it stands is recorded before the pipe opens again.
    """

    FLOOD_BYTES = 512 * 1024
    # tmux answers in ms (seconds on a saturated machine); answers due longer
    # will not come, and the Recorder attaches a new client. (CI once had one
    # wait for its first screen forever: the learner's typing kept lines coming.)
    ANSWER_SECONDS = 5.0
    POLL_SECONDS = 0.25  # how often the read counter is looked at in a flood
    QUIET_SECONDS = 0.5  # a flood has ended when tmux read little for this long
    QUIET_BYTES = 64 * 1024  # "little": typing and the prompt, not a flood

    def __init__(self, driver, node, cap_bytes: int, name: str = "main", fifo: str = "",
                 commands: str = "/root/.lab_commands"):
        self.driver, self.node, self.cap_bytes, self.name = driver, node, cap_bytes, name
        self.fifo = fifo or f"/run/lab-record-{name}.fifo"  # in the node
        self.commands = commands  # in the node: the prompt hook's "<code>\t<command>" lines
        self.proc = None
        self.writer = None
        # Replies to come, in order: the attach's, then the commands sent in run().
        self.expect = collections.deque(["attach", "pid", "", "size", "screen"])
        self.answered_at = time.monotonic()  # the last answer (or when the first was asked)
        self.lines_since = 0  # other lines of tmux's since then
        self.block = None
        # The pipe's output read while a screen is on its way: it came after
        # that screen (see screen_commands) and is written after it.
        self.held = []
        self.size = (80, 24, 0, 0)
        self.tmux_pid = None  # the tmux server's, as the node sees it
        self.decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self.marks = MarkParser()
        self.window_start, self.window_bytes = 0.0, 0
        self.flood = None  # the flood going on (None: none)

    def screen_commands(self) -> str:
        """Open the pipe, then ask for the size and the screen: one command
        line, each command answered in its own block. tmux runs the commands
        of a line one after the other without reading the pane in between,
        so the pipe carries exactly what came after the screen. (As separate
        lines, output could come between them; and what the pipe brought
        before the screen's answer was dropped as already in it, but under
        load the answer came late and the pipe had meanwhile carried the
        prompt and a typed command that the screen did not have: CI once
        recorded a first command without its line.)"""
        return (f"pipe-pane -O -t {self.name} 'exec cat > {self.fifo}' ; "
                f"display-message -p -t {self.name} "
                "'#{window_width} #{window_height} #{cursor_x} #{cursor_y}' ; "
                f"capture-pane -p -e -t {self.name}\n")

    async def run(self) -> None:
        # Made from the host: an exec in the node for it cost the machine
        # some 15 ms of CPU per node, in the class's busiest seconds.
        try:
            self.driver.make_fifo_in_node(self.node.id, self.fifo)
        except OSError as exc:
            raise LabRuntimeError(f"could not make {self.fifo}: {exc}") from exc
        # Opened for writing too, by us: without a writer (before tmux's pipe
        # opens it, or between two pipes) a FIFO reads as ended.
        # Resolved in the node's root, and only if it is a FIFO: the learner
        # can put a link to any host file there between the mkfifo and this
        # open, and what is read here is played back to them.
        try:
            reading = self.driver.open_in_node(self.node.id, self.fifo,
                                               os.O_RDONLY | os.O_NONBLOCK, kind="fifo")
        except OSError as exc:
            raise LabRuntimeError(f"could not open {self.fifo}: {exc}") from exc
        # (The same FIFO again, through the descriptor just checked.)
        keep_open = os.open(f"/proc/self/fd/{reading}", os.O_WRONLY | os.O_NONBLOCK)
        self.proc = proc = await self.driver.open_control(self.node.id, self.name)
        self.answered_at = time.monotonic()
        output = asyncio.create_task(self.read_output(reading))
        try:
            while True:
                try:
                    async with asyncio.timeout(self.ANSWER_SECONDS if self.expect else 5):
                        line = await proc.stdout.readline()
                except TimeoutError:
                    # Quiet is normal. But tmux 3.3 now and then leaves a
                    # control client attached to nothing when its session ends
                    # (no %exit; seen in one unit run in eight): ask whether
                    # the session is still there.
                    if proc.returncode is not None:
                        break
                    self.check_answers()  # (a probe not answered either: stuck)
                    if not self.expect:
                        self.ask(["probe"], f"has-session -t {self.name}\n")
                    continue
                if not line or not self.line(line.rstrip(b"\n")):
                    break
                self.check_answers()
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
            # The whole process group, not the process alone: the driver's
            # entering helper forks the tmux client (a pid namespace applies
            # to children only), and that client, alive, holds the pipes that
            # wait() waits for. CI had a recorder wait so forever after it gave
            # up on an unanswering tmux: that node was never tried again.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            # (And the client itself, should it lead no group of its own, unless
            # it is known gone; not proc.kill(): that polls it, see below.)
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
            # And our ends of its pipes, closed now rather than at their EOF:
            # a tmux client hands its stdout to the tmux server, and a server
            # that is stuck (or stopped) never lets go of it. (asyncio's
            # Process has no public way to its transport.) Its pipes only: the
            # transport's own close() polls the process, and when that reaped
            # the killed client before asyncio's child watcher did (a busy
            # machine), the watcher logged "Unknown child process" and wait()
            # said 255.
            proc.stdin.close()
            transport = getattr(proc, "_transport", None)
            for fd in (1, 2):
                pipe = transport.get_pipe_transport(fd) if transport is not None else None
                if pipe is not None:
                    pipe.close()
            await proc.wait()

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
                    async with asyncio.timeout(self.POLL_SECONDS if self.flood is not None else None):
                        await ready.wait()
                except TimeoutError:
                    self.flood_poll()
                    continue
                ready.clear()
                try:
                    data = os.read(fd, 1 << 16)
                except BlockingIOError:
                    continue
                if not data:
                    continue
                if "screen" in self.expect:
                    self.hold(data)
                else:
                    self.output(data)
        finally:
            loop.remove_reader(fd)

    HOLD_BYTES = 1 << 20

    def hold(self, data: bytes) -> None:
        """Keep output that came before its screen's answer; past HOLD_BYTES
        (an answer that does not come) the oldest goes."""
        self.held.append(data)
        size = sum(map(len, self.held))  # a few reads, while an answer is on its way
        while size > self.HOLD_BYTES and len(self.held) > 1:
            size -= len(self.held.pop(0))

    def output(self, data: bytes) -> None:
        now = time.monotonic()
        if now - self.window_start > 1.0:
            self.window_start, self.window_bytes = now, 0
        self.window_bytes += len(data)
        if self.flood is not None:
            # What was in the pipe before tmux closed it.
            self.flood.skipped += len(data)
            found = self.marks.feed_marks(data)[1]
            self.flood.marks_seen.extend(found)
            self.write_marks(found)
            return
        clean, found = self.marks.feed_marks(data)
        self.writer.output(self.decoder.decode(clean))
        self.write_marks(found)
        if self.window_bytes > self.FLOOD_BYTES:
            self.flood_began()
        self.writer.flush()

    def flood_began(self) -> None:
        self.flood = Flood(self.tmux_reads(), self.commands_size())
        log.info("node %s: a flood, its pipe closed (tmux read counter: %s)", self.node.id,
                 "none" if self.flood.reads is None else "yes")
        self.ask([""], f"pipe-pane -t {self.name}\n")  # closes it

    def flood_poll(self) -> None:
        """In a flood, every POLL_SECONDS: has tmux stopped reading much?"""
        flood = self.flood
        reads = self.tmux_reads()
        if reads is None or flood.reads is None:
            flood.quiet += self.POLL_SECONDS  # no counter to go by: end it, try again
        elif reads - flood.reads < self.QUIET_BYTES * self.POLL_SECONDS / self.QUIET_SECONDS:
            flood.quiet += self.POLL_SECONDS
        else:
            flood.quiet = 0.0
            flood.skipped += reads - flood.reads
        flood.reads = reads
        if flood.quiet >= self.QUIET_SECONDS:
            self.flood_ended()

    def tmux_reads(self):
        """Bytes the node's tmux server has read so far (its terminals'
        output, mostly), or None when that cannot be known."""
        if self.tmux_pid is None:
            return None
        try:
            fd = self.driver.open_in_node(self.node.id, f"/proc/{self.tmux_pid}/io")
            with open(fd, "rb") as f:
                for line in f:
                    if line.startswith(b"rchar:"):
                        return int(line.split()[1])
        except (OSError, ValueError, LabRuntimeError):
            pass
        return None

    def commands_size(self):
        try:
            fd = self.driver.open_in_node(self.node.id, self.commands)
            try:
                return os.fstat(fd).st_size
            finally:
                os.close(fd)
        except FileNotFoundError:
            return 0  # not written yet: all of it will be new
        except (OSError, LabRuntimeError):
            return None

    def commands_since(self, offset) -> list:
        """The shell's command log from `offset` on, as marks: [(code, command)]."""
        if offset is None:
            return []
        try:
            with open(self.driver.open_in_node(self.node.id, self.commands), "rb") as f:
                f.seek(offset)
                text = f.read(1 << 16).decode("utf-8", "replace")
        except (OSError, LabRuntimeError):
            return []
        found = []
        for line in text.split("\n")[:-1]:  # the last: empty, or a line being written
            code, tab, command = line.partition("\t")
            if tab and code.isdigit():
                # As the mark would have carried it (lab.bashrc).
                found.append((int(code), _CONTROL.sub(" ", command)[:500]))
        return found

    def ask(self, kinds: list, commands: str) -> None:
        """Send tmux `commands`, whose answers are `kinds`."""
        if not self.expect:
            self.answered_at, self.lines_since = time.monotonic(), 0
        self.expect.extend(kinds)
        with contextlib.suppress(ConnectionError):
            self.proc.stdin.write(commands.encode())

    def check_answers(self) -> None:
        """LabRuntimeError when answers are due and none came for ANSWER_SECONDS."""
        waited = time.monotonic() - self.answered_at
        if self.expect and waited >= self.ANSWER_SECONDS:
            raise LabRuntimeError(
                f"tmux's control client left {'/'.join(k or '-' for k in self.expect)} "
                f"unanswered for {waited:.0f} s ({self.lines_since} other lines meanwhile)")

    def line(self, line: bytes) -> bool:
        """One line of tmux's control protocol; False when tmux is done."""
        self.lines_since += 1
        if self.block is not None:
            if line.startswith((b"%end ", b"%error ")):
                kind = self.expect.popleft() if self.expect else ""
                self.answered_at, self.lines_since = time.monotonic(), 0
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
        if kind == "attach":
            # Only now: commands written before tmux had attached the client
            # were at times never answered (tmux 3.3; a recorder waited for
            # its first screen forever, one unit run in six under load).
            with contextlib.suppress(ConnectionError):
                self.proc.stdin.write(("display-message -p '#{pid}'\n"
                                       + self.screen_commands()).encode())
        elif kind == "pid":
            with contextlib.suppress(IndexError, ValueError):
                self.tmux_pid = int(lines[0])
        elif kind == "size":
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
            held, self.held = self.held, []
            for data in held:
                self.output(data)

    def write_marks(self, found: list) -> None:
        for code, command in found:
            self.writer.marker(f"$ {command} [exit {code}]" if command else f"[exit {code}]")

    def flood_ended(self) -> None:
        flood, self.flood = self.flood, None
        log.info("node %s: the flood ended, %.1f MB left out; its pipe opens again", self.node.id,
                 flood.skipped / 1e6)
        self.writer.marker("%.1f MB of output not recorded (a flood: more than %d KB a second); "
                           "the screen after it follows" % (flood.skipped / 1e6, self.FLOOD_BYTES // 1024))
        # The commands that ended in the flood, but for those whose mark came
        # through the pipe before it closed.
        seen = list(flood.marks_seen)
        for mark in self.commands_since(flood.commands_offset):
            if seen and seen[0] == mark:
                seen.pop(0)
            else:
                self.write_marks([mark])
        self.writer.flush()
        self.window_start, self.window_bytes = time.monotonic(), 0
        self.decoder.reset()
        self.marks = MarkParser()  # a mark cut in two by the pipe's closing is gone
        self.ask(["", "size", "screen"], self.screen_commands())

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
                if not is_pool_session(n.session) and n.extra.get("state") == "running"
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
        for node_id in [k for k in self.tasks if k not in alive]:
            # A node no longer running (being saved, or stopped) is let go at
            # once: the pipe this process holds in its /run keeps its mounts,
            # and so its disk, in use (a save then waited for it in vain).
            if not self.tasks[node_id].done():
                self.tasks[node_id].cancel()
                continue
            del self.tasks[node_id]
            self.retry_at.pop(node_id, None)

    async def _record(self, node, cap: int) -> None:
        try:
            await NodeRecorder(self.driver, node, cap).run()
        except LabRuntimeError as exc:
            # A node stopping ends its recording this way: not worth a word.
            # A node still running that cannot be recorded is (CI once had a
            # session whose terminal was never recorded, and no reason why).
            running = any(n.id == node.id for n in await asyncio.to_thread(self.wanted))
            (log.warning if running else log.debug)(
                "cannot record node %s (%s/%s): %s", node.id, node.session, node.name, exc.reason)
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
        wakeups = Wakeups()
        try:
            while True:
                # Emptied before the scan: a wake that comes during it (its
                # node just too late for it) brings the next scan at once.
                wakeups.woken.clear()
                try:
                    await self.scan()
                    if time.monotonic() - last_prune > 3600:
                        last_prune = time.monotonic()
                        for path in await asyncio.to_thread(self.prune):
                            log.info("removed recording %s (older than %g days)", path, self.keep_days)
                except Exception:
                    log.exception("recorder scan failed")
                # A full scan reads every node's state: every SCAN_SECONDS, or
                # at once when a node worker says nodes are ready (wake()).
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(SCAN_SECONDS):
                        await wakeups.woken.wait()
        finally:
            wakeups.close()


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
