"""Plain data and the driver contract shared by every runtime driver.

Everything here is Django-free and I/O-free so unit tests can build and
compare these values exactly.
"""
from __future__ import annotations

import abc
import asyncio
import dataclasses
import os
import re
from dataclasses import dataclass, field
from typing import Callable, Optional

# Session and node names end up in hostnames, interface names and paths, so
# they are restricted to a conservative alphabet.
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,30}$")


class LabRuntimeError(Exception):
    """One family for every runtime failure.

    `reason` is a sentence an operator (or learner) can act on; `permanent`
    says whether retrying the same request can ever succeed.
    """

    def __init__(self, reason: str, *, permanent: bool = False):
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent


class NodeNotFound(LabRuntimeError):
    def __init__(self, node_id: str):
        super().__init__(f"no node with id {node_id!r}", permanent=True)
        self.node_id = node_id


class LabFull(LabRuntimeError):
    """No room for another node now (node limit or memory); later can succeed."""

    def __init__(self, reason: str):
        super().__init__(reason, permanent=False)


def check_name(kind: str, value: str) -> str:
    if not NAME_RE.match(value or ""):
        raise LabRuntimeError(
            f"invalid {kind} {value!r}: use 1-31 lower-case letters, digits or '-', "
            "starting with a letter or digit",
            permanent=True,
        )
    return value


@dataclass(frozen=True)
class NodeSpec:
    """What to start: a node called `name` (its hostname) in `session`.

    Nodes of one session share one network and reach each other by name.
    """

    session: str
    name: str = "node1"
    # Files to place in the node before it starts: (absolute path, str or bytes)
    # or (absolute path, content, mode) tuples.
    files: tuple = ()
    # A saved machine to start from (runtime/saves.py: its key), not a fresh one.
    restore: str = ""
    # How many nodes the session will have: a driver with a warm pool hands a
    # multi-node session a whole pre-built one (its nodes already on one network).
    session_nodes: int = 1

    def __post_init__(self):
        check_name("session", self.session)
        check_name("node name", self.name)


# (The session is usually there already, on a pool node or a reattach: then
# no lock and no second shell are needed to know it.)
_MAKE_SESSION = ("tmux has-session -t \"$1\" 2>/dev/null || "
                 "flock -o /run/lab-tmux.lock sh -c 'tmux has-session -t \"$1\" 2>/dev/null "
                 "|| tmux new-session -d -s \"$1\" -c /root' sh \"$1\"")


def tmux_attach(name: str, *options: str, client_flags: str = "") -> list:
    """argv, run in a node, of a tmux client (with `options`) attached to the
    session `name`, which is made first under a lock if it is not there: two
    clients that both start the node's tmux server at once make it exit
    ("server exited unexpectedly": the recorder and a page's terminal did,
    on a fresh node). `flock -o`: the server that `new-session -d` starts
    must not inherit the lock, or it holds it for good. `client_flags`: the
    client's flags (`-f`, as refresh-client -f sets them), set as it attaches."""
    flags = ["-f", client_flags] if client_flags else []
    return ["sh", "-c", f"{_MAKE_SESSION}; shift; exec tmux \"$@\"",
            "lab-tmux", name, *options, "new-session", "-A", *flags, "-s", name, "-c", "/root"]


# The recorder's control client reports no pane output (it reads the pane
# through pipe-pane), and says so as it attaches: turned off later with
# `refresh-client -f no-output`, tmux 3.3a (Debian's) orphans the output it
# had queued for the client, and every answer after it waits behind that
# output for good (tmux issue 5049, fixed upstream in 2026). The recorder
# gave up on 2-6 nodes of each class of 40 so (started cold: their shells
# were printing as it attached).
CONTROL_FLAGS = "no-output"


def tmux_make(name: str) -> list:
    """argv, run in a node, that makes the tmux session `name` (its shell
    started, its first prompt drawn) if it is not there, as tmux_attach does,
    and attaches nothing."""
    return ["sh", "-c", _MAKE_SESSION, "lab-tmux", name]


@dataclass(frozen=True)
class Node:
    id: str
    session: str
    name: str
    driver: str
    address: str = ""  # address on the session network
    created: float = 0.0
    # Driver-private facts (host pid, paths, ...), plain JSON.
    extra: dict = field(default_factory=dict, compare=False, hash=False)

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "Node":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass(frozen=True)
class ExecResult:
    exit_code: int
    output: str  # stdout and stderr, interleaved as produced
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out


ProgressCallback = Callable[[dict], None]


@dataclass(frozen=True)
class Screen:
    """A terminal's screen as tmux holds it: its text with ANSI styles (trailing
    blanks of each line dropped), its size and where the cursor is (0-based)."""
    text: str
    cols: int
    rows: int
    cursor_x: int
    cursor_y: int

    def replay(self) -> bytes:
        """Bytes that draw this screen on a terminal of the same size: clear,
        the lines, then the cursor put back. Without the last part a prompt's
        trailing space was lost (tmux drops it) and what came next was drawn
        against the prompt: `app#echo` for `app# echo`."""
        lines = self.text.rstrip("\n").replace("\n", "\r\n")
        return (f"\x1b[H\x1b[2J{lines}\x1b[{self.cursor_y + 1};{self.cursor_x + 1}H").encode()


class Terminal(abc.ABC):
    """An interactive shell in a node, attached through a PTY.

    A terminal is named; opening the same name again re-attaches to the same
    shell (it lives on inside the node, not in this process).
    """

    @abc.abstractmethod
    async def read(self) -> bytes:
        """Next chunk of output; b"" once the terminal has closed."""

    @abc.abstractmethod
    async def write(self, data: bytes) -> None: ...

    @abc.abstractmethod
    def resize(self, cols: int, rows: int) -> None: ...

    @abc.abstractmethod
    async def close(self) -> None:
        """Detach. The shell inside the node keeps running."""


class Driver(abc.ABC):
    """The contract every driver implements (shaped like JupyterHub's Spawner)."""

    name: str = "abstract"

    @abc.abstractmethod
    async def start(self, spec: NodeSpec, on_progress: Optional[ProgressCallback] = None) -> Node:
        """Start a node; return once its Docker engine answers.

        `on_progress` receives {"progress": 0-100, "message": str} as start proceeds.
        On failure every half-made part is removed and LabRuntimeError raised.
        """

    @abc.abstractmethod
    async def stop(self, node_id: str) -> None:
        """Remove every trace of the node. Stopping a node that is gone succeeds."""

    @abc.abstractmethod
    async def poll(self, node_id: str) -> Optional[str]:
        """None while the node runs, else a short reason why it is not running."""

    @abc.abstractmethod
    async def exec(self, node_id: str, argv: list, timeout: float = 30.0,
                   input: Optional[bytes] = None,
                   on_output: Optional[Callable[[bytes], None]] = None) -> ExecResult:
        """Run argv in the node as root; output collected (and passed to
        `on_output` as it arrives); killed after `timeout`."""

    @abc.abstractmethod
    async def open_terminal(self, node_id: str, cols: int = 80, rows: int = 24,
                            name: str = "main") -> Terminal: ...

    async def open_control(self, node_id: str, name: str = "main") -> asyncio.subprocess.Process:
        """A tmux control-mode client of the node's terminal `name` (made if it
        is not there yet): a process with stdin and stdout pipes, leading a
        process group of its own (the recorder ends the whole group). It
        reports the pane's own output whether or not a browser is attached,
        without changing the terminal's size (runtime/recorder.py records from it)."""
        raise LabRuntimeError(f"the {self.name} driver cannot record terminals", permanent=True)

    saves_machines = False  # save_and_stop keeps the node's state

    async def save_and_stop(self, node_id: str, key: str, limit_bytes: int = 0):
        """Stop the node and keep its state under `key` (runtime/saves.py) for a
        later start with NodeSpec(restore=key): a SaveInfo. The node is removed
        even when the save fails (saves.SaveError says why)."""
        await self.stop(node_id)
        raise LabRuntimeError(f"the {self.name} driver cannot save machines", permanent=True)

    opens_node_files = False  # open_in_node works

    def open_in_node(self, node_id: str, path: str, flags: int = os.O_RDONLY,
                     kind: str = "file") -> int:
        """A file descriptor, on the host, of `path` inside the running node,
        resolved as the node resolves it and never outside it (runtime/nodefs.py):
        the recorder reads the terminal's output from a pipe there, the engine
        watcher connects to the node's engine socket (kind="socket": an O_PATH
        descriptor to connect through /proc/self/fd/N). The caller closes it."""
        raise LabRuntimeError(f"the {self.name} driver cannot open files in its nodes",
                              permanent=True)

    def make_fifo_in_node(self, node_id: str, path: str) -> None:
        """A new FIFO at `path` in the running node, readable and writable by
        the node's root only, made from the host (the recorder's pipe: an exec
        in the node would cost a chain of processes per node). Whatever was
        at `path` is replaced, never followed (runtime/nodefs.py)."""
        raise LabRuntimeError(f"the {self.name} driver cannot make files in its nodes",
                              permanent=True)

    @staticmethod
    async def spawn_control(enter: list, name: str, **options) -> asyncio.subprocess.Process:
        """open_control for a driver whose `enter` argv runs a command in the node."""
        if not name.replace("-", "").isalnum():
            raise LabRuntimeError(f"invalid terminal name {name!r}", permanent=True)
        return await asyncio.create_subprocess_exec(
            *enter, *tmux_attach(name, "-C", client_flags=CONTROL_FLAGS),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL, start_new_session=True, **options)

    @abc.abstractmethod
    def list_nodes(self) -> list:
        """Every node this driver knows about (from its persisted state)."""

    def preflight(self) -> list:
        """Problems that stop this driver from starting nodes here, as sentences
        an operator can act on (empty when all is well)."""
        return []

    def get_node(self, node_id: str) -> Node:
        for node in self.list_nodes():
            if node.id == node_id:
                return node
        raise NodeNotFound(node_id)

    async def capture_terminal(self, node_id: str, name: str = "main", history: int = 0) -> str:
        """What the node's terminal `name` shows now, as text: its screen, after
        `history` earlier lines when asked (lines that wrapped joined again).
        "" when it cannot be had.

        Terminals of both drivers are tmux sessions in the node (open_terminal),
        so this asks that tmux.
        """
        options = ["-J", "-S", f"-{int(history)}"] if history else []
        try:
            result = await self.exec(node_id, ["tmux", "capture-pane", "-p", *options, "-t", name],
                                     timeout=5)
        except LabRuntimeError:
            return ""
        return result.output if result.ok else ""

    async def terminal_screen(self, node_id: str, name: str = "main") -> Optional[Screen]:
        """The screen of the node's terminal `name` with its size and cursor, in
        one exec (None when it cannot be had)."""
        script = ('tmux display -p -t "$1" "#{pane_width} #{pane_height} #{cursor_x} #{cursor_y}"'
                  ' && tmux capture-pane -p -e -t "$1"')
        try:
            result = await self.exec(node_id, ["sh", "-c", script, "sh", name], timeout=5)
        except LabRuntimeError:
            return None
        head, _, text = result.output.partition("\n")
        try:
            cols, rows, x, y = (int(part) for part in head.split())
        except ValueError:
            return None
        return Screen(text, cols, rows, x, y) if result.ok else None

    async def stop_session(self, session: str) -> list:
        """Stop every node of a session; returns their ids."""
        ids = [n.id for n in self.list_nodes() if n.session == session]
        for node_id in ids:
            await self.stop(node_id)
        return ids

    has_pool = False  # a warm pool: fill_pool, trim_pool and pool_counts do something

    def fill_pool(self, size: int, nodes: int = 1) -> list:
        """Start ready nodes until `size` wait for a learner (nodes=1), or `size`
        pre-built sessions of `nodes` nodes each; ids of new nodes. Drivers
        without a warm pool start nodes on demand only."""
        return []

    def trim_pool(self, size: int, nodes: int = 1) -> list:
        """Remove waiting pool nodes (or pre-built sessions of `nodes`) beyond `size`."""
        return []

    def pool_counts(self) -> dict:
        """{nodes per session: ready ones waiting}: {1: single nodes, 2: pairs, ...}."""
        return {}

    def reap_dead(self) -> list:
        """Remove nodes whose processes died; ids of the removed ones."""
        return []
