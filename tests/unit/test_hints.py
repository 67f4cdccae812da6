"""Known Docker errors a learner meets get a hint; anything else gets none."""
import pytest

from labs.sandboxes.hints import hint_for

CASES = [
    ("docker: Error response from daemon: driver failed programming external connectivity on "
     "endpoint web1: Bind for 0.0.0.0:8080 failed: port is already allocated.", "already taken"),
    ('docker: Error response from daemon: Conflict. The container name "/mydb" is already in use '
     'by container "3f4a1c9b2e7d". You have to remove (or rename) that container.',
     "A container called mydb already exists"),
    ("Unable to find image 'alpnie:latest' locally\ndocker: Error response from daemon: pull access "
     "denied for alpnie, repository does not exist or may require 'docker login'.",
     "could not find that image in the registry"),
    ("Error response from daemon: manifest for nginx:9.9 not found: manifest unknown",
     "could not find that image in the registry"),
    ("Error: No such image: ourfiglet", "no image with that name on this machine"),
    ("Unable to find image 'x:1' locally\ndocker: Error response from daemon: Get \"https://registry\": EOF",
     "Docker did not have x:1"),
    ("Error response from daemon: No such container: mydb", "no container with that name or ID"),
    ("Error: No such container: web1", "no container with that name or ID"),
    ("Error response from daemon: Container 3f4a is not running", "not running"),
    ("Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?",
     "engine on this machine is not answering"),
    ("docker: invalid reference format.\nSee 'docker run --help'.", "could not read that image name"),
    ("docker: invalid reference format: repository name must be lowercase.",
     "could not read that image name"),
    ("bash: ./run.sh: Permission denied", "Permission denied"),
    ("Got permission denied while trying to connect to the Docker daemon socket", "Permission denied"),
    ("Error response from daemon: network overnet not found", "no network with that name"),
    ("Error response from daemon: This node is not a swarm manager. Use \"docker swarm init\"",
     "needs a swarm"),
    ("unknown shorthand flag: 'z' in -z", "does not know one of those options"),
    # Colours and carriage returns from the terminal do not hide the error.
    ("\x1b[31mError response from daemon: No such container: web\x1b[0m\r\n",
     "no container with that name or ID"),
]


@pytest.mark.parametrize("output, phrase", CASES)
def test_known_error_gets_its_hint(output, phrase):
    hint = hint_for(output)
    assert hint is not None and phrase in hint


@pytest.mark.parametrize("output", [
    "", "3f4a1c9b2e7d", "bash: dokcer: command not found",
    "ls: cannot access '/nope': No such file or directory",
])
def test_other_output_gets_no_hint(output):
    assert hint_for(output) is None


def test_only_the_tail_of_long_output_is_scanned():
    assert hint_for("No such container: a\n" + "x" * 20000) is None
