"""An in-memory driver for unit tests: no root, no engine, no processes.

`exec` answers from `responder(node, argv) -> ExecResult` (default: exit 0,
no output), and every call is recorded in `calls` so tests can assert on it.
Terminals echo what is written to them.
"""
from __future__ import annotations

import asyncio
import itertools
import json
import tempfile
import time
from pathlib import Path
from typing import Callable, Optional

from . import checkbatch, saves
from .model import Driver, ExecResult, LabRuntimeError, Node, NodeNotFound, NodeSpec, Terminal


class FakeTerminal(Terminal):
    def __init__(self, node_id: str, cols: int, rows: int):
        self.node_id = node_id
        self.size = (cols, rows)
        self.queue: asyncio.Queue = asyncio.Queue()
        self.closed = False

    async def read(self) -> bytes:
        if self.closed:
            return b""
        return await self.queue.get()

    async def write(self, data: bytes) -> None:
        await self.queue.put(data)

    def resize(self, cols: int, rows: int) -> None:
        self.size = (cols, rows)

    async def close(self) -> None:
        self.closed = True
        await self.queue.put(b"")


class FakeDriver(Driver):
    name = "fake"

    # Saves (runtime/saves.py) are off unless a test turns them on: then
    # save_and_stop stores a small real save, and a start with restore= needs one.
    saves_machines = False

    def __init__(self, responder: Optional[Callable] = None, fail_start: Optional[str] = None):
        self.nodes: dict = {}
        self.calls: list = []
        self.terminals: list = []
        self.responder = responder
        self.fail_start = fail_start
        self._ids = itertools.count(1)
        # The warm pool, counted only: {nodes per session: ready ones}; at most
        # pool_room nodes in it when set (a full lab).
        self.pool: dict = {}
        self.pool_room: Optional[int] = None
        self.pool_calls: list = []

    async def start(self, spec: NodeSpec, on_progress=None) -> Node:
        self.calls.append(("start", spec))
        if on_progress:
            on_progress({"progress": 10, "message": "creating node"})
        if self.fail_start:
            raise LabRuntimeError(self.fail_start)
        if spec.restore:
            meta = json.loads((saves.get_store().fetch(spec.restore) / saves.META).read_text())
            if meta.get("image") != self.name:
                raise saves.SaveError("the saved machine was made on an older node image; "
                                      "start fresh", permanent=True)
        claimed = False
        if not spec.restore and spec.session_nodes > 1:
            claimed = any(n.session == spec.session and n.extra.get("claimed")
                          for n in self.nodes.values())
            if not claimed and not any(n.session == spec.session for n in self.nodes.values()) \
                    and self.pool.get(spec.session_nodes):
                self.pool[spec.session_nodes] -= 1
                claimed = True
        elif not spec.restore and self.pool.get(1):
            self.pool[1] -= 1
            claimed = True
        node = Node(id=f"fake{next(self._ids)}", session=spec.session, name=spec.name,
                    driver=self.name, address="10.0.0.2", created=time.time(),
                    extra={"claimed": claimed})
        self.nodes[node.id] = node
        if on_progress:
            on_progress({"progress": 100, "message": "ready"})
        return node

    has_pool = True

    def fill_pool(self, size: int, nodes: int = 1) -> list:
        self.pool_calls.append(("fill_pool", size, nodes))
        used = sum(k * n for k, n in self.pool.items())
        room = size - self.pool.get(nodes, 0)
        if self.pool_room is not None:
            room = min(room, (self.pool_room - used) // nodes)
        room = max(0, room)
        self.pool[nodes] = self.pool.get(nodes, 0) + room
        return [f"pool{next(self._ids)}" for _ in range(room * nodes)]

    def trim_pool(self, size: int, nodes: int = 1) -> list:
        self.pool_calls.append(("trim_pool", size, nodes))
        extra = max(0, self.pool.get(nodes, 0) - size)
        self.pool[nodes] = self.pool.get(nodes, 0) - extra
        return [f"trimmed{next(self._ids)}" for _ in range(extra * nodes)]

    def pool_counts(self) -> dict:
        return {k: n for k, n in self.pool.items()}

    async def stop(self, node_id: str) -> None:
        self.calls.append(("stop", node_id))
        self.nodes.pop(node_id, None)

    async def save_and_stop(self, node_id: str, key: str, limit_bytes: int = 0):
        self.calls.append(("save", node_id, key))
        node = self.nodes.get(node_id)
        await self.stop(node_id)
        if node is None:
            raise NodeNotFound(node_id)
        store = saves.get_store()
        staging = store.staging(key)
        with tempfile.TemporaryDirectory() as tmp:
            disk = Path(tmp) / "disk.img"
            disk.write_bytes(node.name.encode() * 1000)
            saves.pack(disk, staging, {"node": node.name, "image": self.name, "disk": "disk.img",
                                       "running": []}, limit_bytes)
        return store.put(key, staging)

    async def poll(self, node_id: str):
        return None if node_id in self.nodes else "gone"

    async def exec(self, node_id, argv, timeout=30.0, input=None, on_output=None) -> ExecResult:
        batch = list(argv) == checkbatch.ARGV and input
        if not batch:
            self.calls.append(("exec", node_id, list(argv)))
        node = self.nodes.get(node_id)
        if node is None:
            raise NodeNotFound(node_id)
        if batch:
            result = self._batch(node, input.decode())
        else:
            result = self.responder(node, list(argv)) if self.responder else ExecResult(0, "")
        if on_output and result.output:
            on_output(result.output.encode())
        return result

    def _batch(self, node, program: str) -> ExecResult:
        """A checkbatch program, answered command by command by the responder (each
        command is also recorded in `calls`, as if it had been an exec of its own)."""
        nonce, commands = checkbatch.parse_program(program)
        parts = []
        for key, argv in commands.items():
            self.calls.append(("exec", node.id, list(argv)))
            result = self.responder(node, list(argv)) if self.responder else ExecResult(0, "")
            parts.append(checkbatch.frame(nonce, key, result))
        return ExecResult(0, "".join(parts))

    async def open_terminal(self, node_id, cols=80, rows=24, name="main") -> Terminal:
        if node_id not in self.nodes:
            raise NodeNotFound(node_id)
        term = FakeTerminal(node_id, cols, rows)
        self.terminals.append(term)
        return term

    def list_nodes(self) -> list:
        return list(self.nodes.values())
