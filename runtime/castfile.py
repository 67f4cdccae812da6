"""The recordings' files: asciicast v2 (asciinema's format), one per node
and session under <runtime dir>/recordings, written by runtime/recorder.py
and read by the site's replays (labs/sandboxes/recordings.py)."""
from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import time
from pathlib import Path

from .paths import base_dir

log = logging.getLogger(__name__)

KEEP_AFTER_TRIM = 0.75  # of the cap: a trim makes room for a while, not one line
_SAFE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")


def recordings_dir() -> Path:
    return base_dir() / "recordings"


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
