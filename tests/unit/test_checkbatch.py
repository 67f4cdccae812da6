"""One exec for many checks: the batch program, run by a real /bin/sh here."""
from __future__ import annotations

import subprocess

import pytest

from runtime import ExecResult, checkbatch
from runtime.checkbatch import Batch


def run(batch: Batch, timeout=None) -> dict:
    try:
        proc = subprocess.run(checkbatch.ARGV, input=batch.program().encode(),
                              capture_output=True, timeout=timeout or batch.exec_timeout())
        result = ExecResult(proc.returncode, proc.stdout.decode())
    except subprocess.TimeoutExpired as exc:
        result = ExecResult(-1, (exc.stdout or b"").decode(), timed_out=True)
    return batch.results(result)


def test_each_command_gets_its_own_exit_code_and_output():
    found = run(Batch({"1": ["/bin/sh", "-c", "echo one; exit 0"],
                       "2": ["/bin/sh", "-c", "echo \"it's\" '\"quoted\"' '$HOME'; exit 3"],
                       "ports": ["printf", "web1\\t0.0.0.0:8080->80/tcp"]}))
    assert found["1"] == ExecResult(0, "one\n")
    assert found["2"].exit_code == 3 and found["2"].output == "it's \"quoted\" $HOME\n"
    assert found["ports"].ok and found["ports"].output == "web1\t0.0.0.0:8080->80/tcp"


def test_a_command_cannot_read_the_program_or_end_the_batch():
    found = run(Batch({"1": ["/bin/sh", "-c", "cat; exit 0"],
                       "2": ["/bin/sh", "-c", "exit 1"],
                       "3": ["/bin/sh", "-c", "echo after"]}))
    assert found["1"] == ExecResult(0, "")  # stdin is closed: the rest of the program is safe
    assert found["2"].exit_code == 1
    assert found["3"] == ExecResult(0, "after\n")


def test_output_that_imitates_the_frames_forges_nothing():
    forged = "printf '\\n@@0000000000000000 2 end 0\\n@@deadbeefdeadbeef 2 end 0\\n'; exit 1"
    found = run(Batch({"1": ["/bin/sh", "-c", forged], "2": ["/bin/sh", "-c", "exit 1"]}))
    assert found["1"].exit_code == 1 and found["2"].exit_code == 1


def test_a_hanging_command_times_out_alone():
    found = run(Batch({"1": ["sleep", "30"], "2": ["/bin/sh", "-c", "echo fine"]}, timeout=1))
    assert found["1"].timed_out
    assert found["2"] == ExecResult(0, "fine\n")


def test_commands_the_exec_never_finished_are_timed_out():
    batch = Batch({"1": ["/bin/sh", "-c", "echo started; sleep 30"], "2": ["true"]}, timeout=20)
    found = run(batch, timeout=1)
    assert found["1"].timed_out and found["2"].timed_out


def test_the_fake_driver_reads_a_program_back():
    batch = Batch({"3": ["/bin/sh", "-c", "docker ps | grep 'x y'"], "ports": ["docker", "ps"]})
    nonce, commands = checkbatch.parse_program(batch.program())
    assert nonce == batch.nonce and commands == batch.commands
    output = checkbatch.frame(nonce, "3", ExecResult(1, "no")) + \
        checkbatch.frame(nonce, "ports", ExecResult(0, "", timed_out=True))
    found = batch.results(ExecResult(0, output))
    assert found["3"] == ExecResult(1, "no") and found["ports"].timed_out


def test_keys_are_plain_words():
    with pytest.raises(ValueError):
        Batch({"a b": ["true"]})


def test_scripts_of_many_lines_and_quotes_survive_both_ways():
    script = "set -e\ndocker ps --format '{{.Names}}' |\n  grep -q web\necho \"lab_run 1 2\"\n"
    batch = Batch({"1": ["/bin/sh", "-c", script], "2": ["echo", "lab_run", "x y"]})
    assert checkbatch.parse_program(batch.program()) == (batch.nonce, batch.commands)
    found = run(Batch({"1": ["/bin/sh", "-c", "echo a\necho 'b c'\nexit 4"],
                       "2": ["echo", "lab_run", "x y"]}))
    assert found["1"] == ExecResult(4, "a\nb c\n") and found["2"] == ExecResult(0, "lab_run x y\n")
