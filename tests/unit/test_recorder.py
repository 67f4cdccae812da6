"""The terminal recorder (runtime/recorder.py): asciicast v2 files, their cap,
crash-cut files, and a real tmux control-mode client read for output, command
marks and resizes (this machine's tmux, on a private socket)."""
import asyncio
import contextlib
import os
import signal
import subprocess
import threading
import time

import pytest

from runtime import castfile, recorder
from runtime.model import CONTROL_FLAGS, Driver, Node


@pytest.fixture(autouse=True)
def no_pipe_left(tmp_path):
    """A recorder stopped just after it asked tmux for the pipe leaves that
    pipe's `sh -c 'exec cat > <fifo>'` waiting to open a FIFO nobody will
    read, and it outlives the tmux server: end those of this test."""
    yield
    subprocess.run(["pkill", "-f", f"cat > {tmp_path}/"], capture_output=True)


def events(path):
    header, items, damaged = castfile.read_cast(path)
    return header, items, damaged


def test_a_recording_is_asciicast_v2_and_goes_on_after_a_restart(runtime_dir):
    path = castfile.cast_path("s7", "node1")
    writer = castfile.CastWriter(path, 0, 100, 30, "node1 of s7")
    writer.resize(100, 30)
    writer.resize(100, 30)  # tmux reports layout changes that keep the size: one event
    writer.output("hello\r\n")
    writer.marker("$ echo hello [exit 0]")
    writer.close()
    again = castfile.CastWriter(path, 0, 80, 24, "node1 of s7")  # the recorder restarted
    again.output("more")
    again.close()
    header, items, damaged = events(path)
    assert header["version"] == 2 and (header["width"], header["height"]) == (100, 30)
    assert [e[1:] for e in items] == [["r", "100x30"], ["o", "hello\r\n"],
                                      ["m", "$ echo hello [exit 0]"], ["o", "more"]]
    assert damaged == 0 and oct(path.parent.stat().st_mode & 0o777) == "0o700"


def test_a_line_cut_by_a_crash_is_skipped_and_the_rest_plays(runtime_dir):
    path = castfile.cast_path("s7", "node1")
    castfile.CastWriter(path, 0, 80, 24, "t").output("kept")
    with open(path, "a") as f:
        f.write('[3.0, "o", "half wri')
    header, items, damaged = events(path)
    assert [e[2] for e in items] == ["kept"] and damaged == 1


def test_past_its_cap_the_oldest_output_goes_and_every_marker_stays(runtime_dir):
    path = castfile.cast_path("s7", "node1")
    cap = 4000
    writer = castfile.CastWriter(path, cap, 80, 24, "t")
    for i in range(200):
        writer.output(f"line {i:04d} " + "x" * 40 + "\r\n")
        if i % 20 == 0:
            writer.marker(f"$ command {i} [exit 0]")
    writer.close()
    assert path.stat().st_size <= cap
    _, items, _ = events(path)
    marks = [e[2] for e in items if e[1] == "m"]
    assert [m for m in marks if m.startswith("$ ")] == [f"$ command {i} [exit 0]" for i in range(0, 200, 20)]
    cut = [e for e in items if e[1] == "m" and e[2].startswith("output dropped before this point")]
    assert len(cut) == 1
    outputs = [e[2] for e in items if e[1] == "o"]
    assert outputs[-1].startswith("line 0199") and not any(o.startswith("line 0000") for o in outputs)
    first_output = next(e[0] for e in items if e[1] == "o")
    assert cut[0][0] == first_output  # the marker sits where the kept output begins


def test_recording_names_cannot_leave_the_recordings_directory(runtime_dir):
    for session, node in (("..", "node1"), ("s1", "../x"), ("s1/..", "n"), ("", "node1")):
        with pytest.raises(ValueError):
            castfile.cast_path(session, node)


def test_only_this_sites_running_lab_nodes_are_recorded():
    class Nodes:
        def list_nodes(self):
            return [Node(id="a", session="s12", name="node1", driver="x", extra={"state": "running"}),
                    Node(id="b", session="warm-pool", name="p", driver="x", extra={"state": "running"}),
                    Node(id="c", session="s13", name="node1", driver="x", extra={"state": "starting"}),
                    Node(id="d", session="t14", name="node1", driver="x", extra={"state": "running"}),
                    Node(id="e", session="s", name="node1", driver="x", extra={"state": "running"})]
    assert [n.id for n in recorder.Recorder(Nodes(), prefix="s").wanted()] == ["a"]


def test_a_node_worker_wakes_the_recorder_for_new_nodes_at_once():
    class Nodes:
        scans = 0

        def list_nodes(self):
            Nodes.scans += 1
            return []

    async def scenario():
        task = asyncio.create_task(recorder.Recorder(Nodes()).run_forever())
        await asyncio.sleep(0.3)
        before = Nodes.scans
        recorder.wake()  # what start_session does once a session's nodes are ready
        await asyncio.sleep(0.3)
        task.cancel()
        return before, Nodes.scans

    before, after = asyncio.run(scenario())
    assert (before, after) == (1, 2)  # without the wake, the next scan is SCAN_SECONDS away
    assert recorder.SCAN_SECONDS >= 1


def test_a_wake_during_a_scan_is_not_lost(monkeypatch):
    """A node worker's wake that comes while a scan is reading the nodes (its
    node just too late for that scan) brings another scan at once. The wake
    used to be a file's time, read after the scan: such a wake was taken for
    an old one, and the learner's first command came before the recording."""
    monkeypatch.setattr(recorder, "SCAN_SECONDS", 3600)
    scanning, woken = threading.Event(), threading.Event()

    class Nodes:
        scans = 0

        def list_nodes(self):
            Nodes.scans += 1
            if Nodes.scans == 2:
                scanning.set()
                assert woken.wait(10)  # the node is ready and its worker wakes us now
            return []

    async def scenario():
        task = asyncio.create_task(recorder.Recorder(Nodes()).run_forever())
        await asyncio.sleep(0.3)
        recorder.wake()  # the second scan
        assert await asyncio.to_thread(scanning.wait, 10)
        recorder.wake()
        woken.set()
        for _ in range(100):
            await asyncio.sleep(0.05)
            if Nodes.scans == 3:
                break
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return Nodes.scans

    assert asyncio.run(scenario()) == 3


def test_every_recorder_sharing_a_runtime_dir_is_woken_and_a_gone_one_is_forgotten():
    """Two sites on one machine may share its runtime directory: a wake
    reaches both recorders; the pipe of one that has stopped goes away."""
    class Nodes:
        def __init__(self):
            self.scans = 0

        def list_nodes(self):
            self.scans += 1
            return []

    async def scenario():
        first, second = Nodes(), Nodes()
        one = asyncio.create_task(recorder.Recorder(first).run_forever())
        two = asyncio.create_task(recorder.Recorder(second).run_forever())
        await asyncio.sleep(0.3)
        before = (first.scans, second.scans)
        recorder.wake()
        await asyncio.sleep(0.3)
        after = (first.scans, second.scans)
        for task in (one, two):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        return before, after

    before, after = asyncio.run(scenario())
    assert before == (1, 1) and after == (2, 2)
    # Both stopped: no pipe is left behind.
    assert list(castfile.recordings_dir().glob(".wake*")) == []
    # One killed before it could remove its pipe: the next wake removes it.
    os.mkfifo(castfile.recordings_dir() / ".wake-4242-dead", 0o600)
    recorder.wake()
    assert list(castfile.recordings_dir().glob(".wake*")) == []


def test_a_node_no_longer_running_is_let_go_at_once():
    """Being saved or stopped: its recording ends at the next scan (the pipe
    the recorder holds in the node's /run would keep its disk in use)."""
    class Nodes:
        state = "running"

        def list_nodes(self):
            return [Node(id="a", session="s12", name="node1", driver="x",
                         extra={"state": Nodes.state})]

    async def scenario():
        rec = recorder.Recorder(Nodes(), prefix="s")
        started = asyncio.Event()

        async def forever(node, cap):
            started.set()
            await asyncio.sleep(3600)
        rec._record = forever
        await rec.scan()
        await started.wait()
        task = rec.tasks["a"]
        Nodes.state = "saving"
        await rec.scan()
        await asyncio.sleep(0)
        cancelled = task.cancelled()
        await rec.scan()
        return cancelled, dict(rec.tasks)

    cancelled, tasks = asyncio.run(scenario())
    assert cancelled and tasks == {}


# ---- a real tmux ----------------------------------------------------------------------

async def start_recording(host, node, tmp_path, node_recorder=None, seconds=30) -> tuple:
    """(task, path) of a NodeRecorder (`node_recorder`, or one with the usual
    patience) on `host`'s tmux, once its file is there (within `seconds`); its
    error if it ended first. (It used to start another when one gave up on
    tmux's answers, which hid the tmux bug CONTROL_FLAGS is about.)"""
    node_recorder = node_recorder or recorder.NodeRecorder(
        host, node, 0, fifo=str(tmp_path / "rec.fifo"), commands=str(tmp_path / "commands"))
    task = asyncio.create_task(node_recorder.run())
    path = castfile.cast_path(node.session, node.name)
    deadline = time.monotonic() + seconds
    while not path.exists() and not task.done() and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    if task.done():
        task.result()  # its error, if it ended with one
    assert path.exists(), f"no screen recorded within {seconds} s"
    return task, path


async def until_recorded(path, done, seconds: float = 10) -> None:
    """Wait until the recording's events satisfy `done` (or time is up)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if done(events(path)[1]):
            return
        await asyncio.sleep(0.1)


async def stop(task) -> None:
    """Stop a NodeRecorder as the Recorder's process ending does: cancelled.
    (How a recording ends when its node stops is the integration tests' part:
    under pytest, tmux's control client here at times outlived its session.)"""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.wait_for(task, 10)


class HostTmux:
    """A driver's open_control, make_fifo_in_node and open_in_node on this machine's tmux, with
    `sh` as the shell: the "node" is this machine."""

    def __init__(self, socket):
        self.socket = socket

    def open_in_node(self, node_id, path, flags=os.O_RDONLY, kind="file"):
        from runtime import nodefs
        return nodefs.open_in_root("/", path, flags, kind)

    def make_fifo_in_node(self, node_id, path):
        from runtime import nodefs
        nodefs.make_fifo("/", path, os.getuid())

    # The control client as the driver's entering helper runs it: the child
    # of another process, in a session of its own (a pid namespace applies
    # to children only, so the helper forks it and waits).
    behind_a_helper = False

    async def open_control(self, node_id, name="main"):
        # Attached as the drivers attach it (Driver.spawn_control): with
        # the no-output flag from the start.
        argv = ["tmux", "-S", self.socket, "-f", "/dev/null", "-C", "new-session", "-A",
                "-f", CONTROL_FLAGS, "-s", name, "-x", "80", "-y", "24", "sh"]
        if self.behind_a_helper:
            # Its child has the pipes too (stdin through fd 3: a shell gives
            # a background job /dev/null as its stdin otherwise).
            argv = ["sh", "-c", 'exec 3<&0; "$@" <&3 3<&- & exec 3<&-; wait', "helper", *argv]
        return await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL, start_new_session=self.behind_a_helper,
            env={**os.environ, "PS1": "$ ", "ENV": ""})

    def tmux(self, *args):
        subprocess.run(["tmux", "-S", self.socket, *args], check=True, capture_output=True)


def test_a_tmux_session_is_recorded_with_its_command_marks_and_resizes(runtime_dir, tmp_path):
    host = HostTmux(str(tmp_path / "tmux.sock"))
    node = Node(id="n1", session="s21", name="node1", driver="x", extra={"state": "running"})

    async def scenario():
        task, path = await start_recording(host, node, tmp_path)
        # What the prompt hook prints inside tmux: the mark in tmux's passthrough.
        host.tmux("send-keys", "-t", "main",
                  r"echo hello_world; printf '\033Ptmux;\033\033]6973;cmd-end;3;echo hello_world\007\033\\'",
                  "Enter")
        await asyncio.sleep(0.5)
        host.tmux("resize-window", "-t", "main", "-x", "100", "-y", "30")
        await asyncio.sleep(0.5)
        await until_recorded(path, lambda items: ["r", "100x30"] in [e[1:] for e in items])
        await stop(task)
        return path

    try:
        path = asyncio.run(scenario())
    finally:
        subprocess.run(["tmux", "-S", host.socket, "kill-server"], capture_output=True)
    header, items, damaged = events(path)
    assert (header["width"], header["height"]) == (80, 24) and damaged == 0
    output = "".join(e[2] for e in items if e[1] == "o")
    assert "hello_world\r\n" in output
    # The typed command line shows; the mark the shell printed does not.
    assert "\x1b]6973" not in output and "\x1bPtmux" not in output
    assert ["m", "$ echo hello_world [exit 3]"] in [e[1:] for e in items]
    assert ["r", "100x30"] in [e[1:] for e in items]
    times = [e[0] for e in items]
    assert times == sorted(times)


class LateAnswers(HostTmux):
    """HostTmux whose control client's answers, past the first (the attach),
    reach the recorder `delay` seconds late: a niced recorder on a busy
    machine, whose pipe's `cat` (tmux's child) is not niced."""

    delay = 1.5

    async def open_control(self, node_id, name="main"):
        proc = await super().open_control(node_id, name)
        late = asyncio.StreamReader()

        async def relay():
            first = True
            while line := await proc.stdout.readline():
                late.feed_data(line)
                if first and line.startswith((b"%end", b"%error")):
                    first = False
                    await asyncio.sleep(self.delay)
            late.feed_eof()

        class Late:
            stdin, stdout = proc.stdin, late
            returncode = property(lambda _: proc.returncode)
            kill, wait, pid = proc.kill, proc.wait, proc.pid
        Late.relay = asyncio.create_task(relay())  # kept: a task nobody holds may be collected
        return Late()


def test_what_the_pipe_brings_before_a_late_screen_is_recorded_after_it(runtime_dir, tmp_path):
    """CI once recorded a first command without its line: the screen's answer
    came late, and the prompt and the typed line, which the pipe had brought
    meanwhile, were dropped as if already in that screen."""
    host = LateAnswers(str(tmp_path / "tmux.sock"))
    node = Node(id="n1", session="s24", name="node1", driver="x", extra={"state": "running"})

    async def scenario():
        task = asyncio.create_task(recorder.NodeRecorder(
            host, node, 0, fifo=str(tmp_path / "rec.fifo"), commands=str(tmp_path / "commands")).run())
        path = castfile.cast_path(node.session, node.name)
        # Typed once the pipe is open (so after the screen was taken), while
        # the screen's answer is still on its way.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            shown = subprocess.run(["tmux", "-S", host.socket, "display-message", "-p", "-t", "main",
                                    "#{pane_pipe}"], capture_output=True, text=True).stdout
            if shown.strip() == "1":
                break
            await asyncio.sleep(0.02)
        host.tmux("send-keys", "-t", "main", "echo typed_$((6*7))", "Enter")
        assert not path.exists()  # the screen has not come yet
        while not path.exists() and time.monotonic() < deadline + 10:
            await asyncio.sleep(0.05)
        await until_recorded(path, lambda items: "typed_42" in "".join(
            e[2] for e in items if e[1] == "o"))
        await stop(task)
        return path

    try:
        path = asyncio.run(scenario())
    finally:
        subprocess.run(["tmux", "-S", host.socket, "kill-server"], capture_output=True)
    _, items, _ = events(path)
    output = "".join(e[2] for e in items if e[1] == "o")
    screen_end = output.index("\x1b[2J")
    # The screen first, then the typed line and its output, once each.
    assert output.count("echo typed_$((6*7))") == 1, output
    assert screen_end < output.index("echo typed_$((6*7))") < output.index("typed_42\r\n"), output


class DriverTmux(HostTmux):
    """HostTmux whose control client is the drivers' own (Driver.spawn_control,
    here without entering a node) on a tmux server of the test's own
    (TMUX_TMPDIR). Its session is made first, so that client never takes the
    node's lock in /run."""

    def __init__(self, tmp_path):
        directory = tmp_path / f"tmux-{os.getuid()}"  # where tmux puts its socket
        directory.mkdir(mode=0o700)
        super().__init__(str(directory / "default"))
        self.env = {**{k: v for k, v in os.environ.items() if k != "TMUX"},
                    "TMUX_TMPDIR": str(tmp_path)}

    async def open_control(self, node_id, name="main"):
        return await Driver.spawn_control([], name, env=self.env)


def test_a_recorder_attaching_while_the_terminal_prints_gets_its_screen(runtime_dir, tmp_path):
    """tmux 3.3a's control client that turns its pane output off once attached
    (refresh-client -f no-output) gets no answer again if output was queued
    for it then: the recorder gave up on 2-6 nodes per class of 40, whose
    shells printed as it attached (here one attach in twenty did). The
    drivers' client attaches with its output off (CONTROL_FLAGS): each of
    40 attaches gets its screen, none gives up."""
    host = DriverTmux(tmp_path)
    host.tmux("-f", "/dev/null", "new-session", "-d", "-s", "main", "-x", "80", "-y", "24",
              "sh", "-c", "while :; do echo printing; sleep 0.001; done")

    async def scenario():
        for i in range(40):
            node = Node(id=f"n{i}", session="s29", name=f"node{i}", driver="x",
                        extra={"state": "running"})
            task, _ = await start_recording(host, node, tmp_path,
                                            impatient_recorder(host, node, tmp_path), seconds=10)
            await stop(task)

    try:
        asyncio.run(scenario())  # a recorder that gave up raises its LabRuntimeError here
    finally:
        subprocess.run(["tmux", "-S", host.socket, "kill-server"], capture_output=True)


class DeafTmux(HostTmux):
    """HostTmux whose control client never gets the recorder's first line
    asking for the screen: as a tmux that leaves commands unanswered."""

    async def open_control(self, node_id, name="main"):
        proc = await super().open_control(node_id, name)
        real = proc.stdin

        class Deaf:
            dropped = []

            def write(self, data):
                if b"capture-pane" in data and not self.dropped:
                    self.dropped.append(data)
                    data = b"".join(line for line in data.splitlines(keepends=True)
                                    if b"capture-pane" not in line)
                real.write(data)

            def __getattr__(self, name):
                return getattr(real, name)
        proc.stdin = Deaf()
        return proc


def impatient_recorder(host, node, tmp_path):
    """A NodeRecorder of `node` on `host` that gives up on answers after 1.5 s."""
    node_recorder = recorder.NodeRecorder(host, node, 0, fifo=str(tmp_path / "rec.fifo"),
                                          commands=str(tmp_path / "commands"))
    node_recorder.ANSWER_SECONDS = 1.5
    return node_recorder


def test_a_control_client_that_leaves_the_screen_unanswered_is_given_up_though_lines_come(
        runtime_dir, tmp_path):
    """CI once had a node's terminal go unrecorded, with nothing logged: its
    recorder waited for a first screen while other lines kept coming (the
    learner typing), so the probe of a quiet client never went out."""
    host = DeafTmux(str(tmp_path / "tmux.sock"))
    node = Node(id="n1", session="s25", name="node1", driver="x", extra={"state": "running"})

    async def scenario():
        task = asyncio.create_task(impatient_recorder(host, node, tmp_path).run())
        began = time.monotonic()
        renames = 0
        while not task.done() and time.monotonic() - began < 8:
            # A line from tmux every 0.2 s (%window-renamed): never quiet.
            with contextlib.suppress(subprocess.CalledProcessError):
                host.tmux("rename-window", "-t", "main", f"w{renames}")
                renames += 1
            await asyncio.sleep(0.2)
        assert task.done(), "still waiting for the screen after 8 s"
        with pytest.raises(recorder.LabRuntimeError) as raised:
            task.result()
        return raised.value.reason, time.monotonic() - began, renames

    try:
        reason, took, renames = asyncio.run(scenario())
    finally:
        subprocess.run(["tmux", "-S", host.socket, "kill-server"], capture_output=True)
    assert "size/screen unanswered" in reason, reason
    assert "other lines meanwhile" in reason and " (0 other" not in reason, reason
    assert took < 4, took
    assert renames >= 5
    assert not castfile.cast_path(node.session, node.name).exists()


class DeafBehindAHelper(DeafTmux):
    """DeafTmux whose control client runs behind a helper (HostTmux)."""

    behind_a_helper = True


def given_up(host, node, tmp_path) -> tuple:
    """Run a NodeRecorder on `host`, whose tmux leaves it unanswered: (the
    reason it gave up, seconds it took to end, its client's process); fails
    when it has not ended within 15 s."""
    async def scenario():
        node_recorder = impatient_recorder(host, node, tmp_path)
        task = asyncio.create_task(node_recorder.run())
        began = time.monotonic()
        done, _ = await asyncio.wait({task}, timeout=15)
        if not done:
            await stop(task)
        assert done, "the recorder did not end within 15 s of a tmux that left it unanswered"
        with pytest.raises(recorder.LabRuntimeError) as raised:
            task.result()
        return raised.value.reason, time.monotonic() - began, node_recorder.proc
    return asyncio.run(scenario())


def test_a_recorder_that_gives_up_lets_go_of_a_client_behind_a_helper(runtime_dir, tmp_path):
    """CI had a node's terminal go unrecorded, with nothing logged, for good:
    its recorder gave up on a tmux that did not answer and killed the helper
    it had started, but the tmux client, the helper's child, still held the
    pipes that asyncio's wait() waits for, and our end of its stdin kept it
    there. The recorder waited forever, so it never tried the node again."""
    host = DeafBehindAHelper(str(tmp_path / "tmux.sock"))
    node = Node(id="n1", session="s26", name="node1", driver="x", extra={"state": "running"})
    try:
        reason, took, client = given_up(host, node, tmp_path)
        helper = client.pid
    finally:
        subprocess.run(["tmux", "-S", host.socket, "kill-server"], capture_output=True)
    assert "screen unanswered" in reason, reason
    assert took < 10, took
    # Nothing of the helper's group is left (once the machine's init has
    # reaped the client, orphaned by the helper's death).
    deadline = time.monotonic() + 5
    with pytest.raises(ProcessLookupError):
        while time.monotonic() < deadline:
            os.killpg(helper, 0)
            time.sleep(0.05)


def test_a_recorder_that_gives_up_on_a_stopped_tmux_server_ends(runtime_dir, tmp_path):
    """A tmux client hands its stdout to the tmux server, which holds it until
    it has done with the client: a stuck (here: stopped) server kept the pipe
    open that asyncio's wait() waits for, after the recorder had given up."""
    host = HostTmux(str(tmp_path / "tmux.sock"))
    host.tmux("-f", "/dev/null", "new-session", "-d", "-s", "main", "-x", "80", "-y", "24", "sh")
    server = int(subprocess.run(["tmux", "-S", host.socket, "display-message", "-p", "#{pid}"],
                                capture_output=True, text=True, check=True).stdout)
    node = Node(id="n1", session="s27", name="node1", driver="x", extra={"state": "running"})
    os.kill(server, signal.SIGSTOP)
    try:
        reason, took, _ = given_up(host, node, tmp_path)
    finally:
        os.kill(server, signal.SIGCONT)
        subprocess.run(["tmux", "-S", host.socket, "kill-server"], capture_output=True)
    assert "attach/" in reason and "unanswered" in reason, reason
    assert took < 10, took


def test_a_recorder_that_gives_up_leaves_reaping_its_client_to_asyncio(runtime_dir, tmp_path,
                                                                       monkeypatch):
    """Its clean-up once closed the client's whole transport, which polls the
    process (Popen.poll: waitpid). On a busy machine (a class arriving) that
    poll reaped the killed client before asyncio's child watcher thread ran:
    the watcher logged "Unknown child process pid ..., will report returncode
    255" and wait() said 255, a few times per class. Now nothing but the
    watcher waits for it, and its status is the SIGKILL it got."""
    polled = []
    real_poll = subprocess.Popen.poll

    def poll(self, *args, **kwargs):
        polled.append(self.pid)
        return real_poll(self, *args, **kwargs)
    monkeypatch.setattr(subprocess.Popen, "poll", poll)
    host = DeafBehindAHelper(str(tmp_path / "tmux.sock"))
    node = Node(id="n1", session="s28", name="node1", driver="x", extra={"state": "running"})
    try:
        reason, _, client = given_up(host, node, tmp_path)
    finally:
        subprocess.run(["tmux", "-S", host.socket, "kill-server"], capture_output=True)
    assert "screen unanswered" in reason, reason
    assert client.pid not in polled
    assert client.returncode == -signal.SIGKILL, client.returncode


def test_a_flood_is_left_out_with_a_marker_and_the_screen_after_it(tmp_path):
    host = HostTmux(str(tmp_path / "tmux.sock"))
    node = Node(id="n1", session="s22", name="node1", driver="x", extra={"state": "running"})

    async def scenario():
        task, path = await start_recording(host, node, tmp_path)
        # Some 2 MB at once, then what the prompt hook does: a line in the
        # command log, and the mark (printed while the pipe is closed: lost).
        log = tmp_path / "commands"
        host.tmux("send-keys", "-t", "main",
                  f"seq 1 300000; printf '0\\tseq 1 300000\\n' >> {log}; "
                  r"printf '\033Ptmux;\033\033]6973;cmd-end;0;seq 1 300000\007\033\\'",
                  "Enter")
        await asyncio.sleep(3)
        host.tmux("send-keys", "-t", "main", "echo after_$((6*7))", "Enter")
        await until_recorded(path, lambda items: "after_42" in "".join(e[2] for e in items if e[1] == "o"))
        await stop(task)
        return path

    try:
        path = asyncio.run(scenario())
    finally:
        subprocess.run(["tmux", "-S", host.socket, "kill-server"], capture_output=True)
    _, items, _ = events(path)
    marks = [e[2] for e in items if e[1] == "m"]
    assert marks.count("$ seq 1 300000 [exit 0]") == 1  # from the command log, once
    (skipped,) = [m for m in marks if "MB of output not recorded" in m]
    assert float(skipped.split()[0]) > 1.0, skipped
    output = "".join(e[2] for e in items if e[1] == "o")
    assert "after_42" in output and "299999" in output  # the screen after the flood shows its end
    assert path.stat().st_size < 1_000_000


def test_a_command_that_ended_in_a_flood_is_marked_once(runtime_dir, tmp_path):
    """Its mark may have come through the pipe before tmux closed it, and its
    line is in the command log too: one marker."""
    class Stdin:
        def write(self, data):
            pass

    class Proc:
        stdin = Stdin()

    (tmp_path / "commands").write_bytes(b"0\tcat big\n2\tls \x1b[31mnope\n")
    node = Node(id="n1", session="s23", name="node1", driver="x", extra={"state": "running"})
    rec = recorder.NodeRecorder(HostTmux(""), node, 0, commands=str(tmp_path / "commands"))
    rec.proc, rec.writer = Proc(), castfile.CastWriter(castfile.cast_path("s23", "node1"), 0, 80, 24, "t")
    rec.flood = recorder.Flood(reads=None, commands_offset=0)
    rec.flood.skipped = 3_000_000
    rec.flood.marks_seen = [(0, "cat big")]  # (output() wrote its marker then)
    rec.flood_ended()
    rec.writer.close()
    _, items, _ = events(castfile.cast_path("s23", "node1"))
    assert [e[2] for e in items if e[1] == "m"] == [
        "3.0 MB of output not recorded (a flood: more than 512 KB a second); the screen after it follows",
        "$ ls  [31mnope [exit 2]"]
    assert rec.flood is None and list(rec.expect)[-3:] == ["", "size", "screen"]
