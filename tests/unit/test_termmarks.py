"""Command-end marks (runtime/termmarks.py): bare, as the terminal attached to
tmux receives them, and in tmux's passthrough, as the recorder reads the pane;
with the command line; split anywhere across chunks."""
import pytest

from runtime.termmarks import MarkParser

BARE = b"hi\r\n\x1b]6973;cmd-end;0;docker container run -d --name web nginx\x07[node1] ~# "
WRAPPED = (b"hi\r\n\x1bPtmux;\x1b\x1b]6973;cmd-end;127;dockr ps\x07\x1b\\"
           b"\x1b[1m[node1] ~# \x1b[0m")
OLD = b"x\x1b]6973;cmd-end;1\x07y"  # a node image from before the command line


@pytest.mark.parametrize("data,clean,marks", [
    (BARE, b"hi\r\n[node1] ~# ", [(0, "docker container run -d --name web nginx")]),
    (WRAPPED, b"hi\r\n\x1b[1m[node1] ~# \x1b[0m", [(127, "dockr ps")]),
    (OLD, b"xy", [(1, "")]),
])
def test_marks_are_found_and_stripped_wherever_the_chunks_split(data, clean, marks):
    for cut in range(len(data) + 1):
        parser = MarkParser()
        first, found1 = parser.feed_marks(data[:cut])
        second, found2 = parser.feed_marks(data[cut:])
        assert (first + second, found1 + found2) == (clean, marks), cut


def test_feed_gives_the_exit_codes_and_other_escapes_pass_at_once():
    parser = MarkParser()
    assert parser.feed(BARE) == (b"hi\r\n[node1] ~# ", [0])
    assert parser.feed(b"\x1b[31mred\x1b") == (b"\x1b[31mred", [])  # a lone ESC waits
    assert parser.feed(b"[0m") == (b"\x1b[0m", [])
    assert parser.feed(b"\x1bPq#0;2;0;0;0\x1b\\") == (b"\x1bPq#0;2;0;0;0\x1b\\", [])  # not tmux's
