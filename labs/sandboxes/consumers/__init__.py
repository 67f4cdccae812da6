"""Websocket consumers: the lesson event stream and the node terminal.

Checks run after every finished command (the terminal's command-end marks)
and on Docker engine events: while a lesson page is open on a ready session,
an EngineWatcher per node follows `docker events` in that node (a blocked
process, no polling) and runs the checks shortly after container, image,
network, volume, service or swarm-node changes, so steps turn green whatever
terminal the learner used.

One module per consumer: lesson.py, terminal.py, engine.py (the engine-events
watcher). The instructor's sockets (grid, watch) are labs.classrooms.consumers;
close codes and helpers every socket shares are labs.sockets.
"""
from .engine import EngineWatcher, counts_as_change, events_argv
from .lesson import LessonConsumer
from .terminal import TerminalConsumer

__all__ = ["EngineWatcher", "LessonConsumer", "TerminalConsumer", "counts_as_change",
           "events_argv"]
