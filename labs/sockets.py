"""What the lab's websocket consumers share: close codes, parsing a page's messages."""
from __future__ import annotations

import json
import logging

log = logging.getLogger(__name__)

# Close codes a page understands (4000 + the HTTP status it would have had).
CLOSE_FORBIDDEN = 4403
CLOSE_NOT_FOUND = 4404
CLOSE_NODE_GONE = 4410
# The node runs on another host: ask the site again where its terminal is.
CLOSE_ELSEWHERE = 4421


# A watching instructor's socket says hello to the learner's terminal this often;
# the terminal copies its output to watchers for 2.5 times as long after a hello.
WATCH_HELLO_SECONDS = 20


# Tasks started in the background, held here so they are not collected mid-run.
_background: set = set()


def client_message(text_data) -> dict:
    """A client's JSON control message; {} for anything that is not a JSON object
    (a page sends nothing else; whatever else comes is ignored)."""
    try:
        message = json.loads(text_data or "")
    except ValueError:
        return {}
    return message if isinstance(message, dict) else {}


def _size(value, default: int) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        return default
    return max(2, min(number, 500))
