"""Known Docker errors a learner meets get a hint; anything else gets none."""
import pytest

from labs.sandboxes.hints import STAND_IN_TAGS, hint_for, parse_image_ref

CASES = [
    ("docker: Error response from daemon: driver failed programming external connectivity on "
     "endpoint web1: Bind for 0.0.0.0:8080 failed: port is already allocated.", "already taken"),
    ('docker: Error response from daemon: Conflict. The container name "/mydb" is already in use '
     'by container "3f4a1c9b2e7d". You have to remove (or rename) that container.',
     "A container called mydb already exists"),
    ("Unable to find image 'alpnie:latest' locally\ndocker: Error response from daemon: pull access "
     "denied for alpnie, repository does not exist or may require 'docker login'.",
     "could not find that image in the registry"),
    ("Error response from daemon: manifest for ada/linux_tweet_app:9.9 not found: manifest unknown",
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


# ---- a tag the lab registry does not have -----------------------------------
# The lab registry holds stand-ins for a few Docker Hub images, under one tag
# each (runtime/lessonimages.py); asking for another tag names the ones it has.

@pytest.mark.parametrize("output, wanted, repository", [
    ("Error response from daemon: manifest for ubuntu:22.04 not found: manifest unknown: "
     "manifest unknown", "ubuntu:22.04", "ubuntu"),
    ("Unable to find image 'mysql:8.0' locally\ndocker: Error response from daemon: manifest for "
     "mysql:8.0 not found: manifest unknown: manifest unknown.", "mysql:8.0", "mysql"),
    # Docker Hub names, in full
    ("Error response from daemon: manifest for docker.io/library/nginx:1.25 not found: "
     "manifest unknown", "nginx:1.25", "nginx"),
    # only "manifest unknown": the image is in the command the terminal echoed
    ("root@node1:~# docker pull -q alpine:3.19\nError response from daemon: manifest unknown",
     "alpine:3.19", "alpine"),
    # a Dockerfile's FROM
    ("Step 1/5 : FROM alpine:3.19\nmanifest for alpine:3.19 not found: manifest unknown",
     "alpine:3.19", "alpine"),
    # the mirror had no such tag and Docker Hub is out of reach
    ("Unable to find image 'ubuntu:jammy' locally\ndocker: Error response from daemon: Get "
     "\"https://registry-1.docker.io/v2/\": dial tcp: lookup registry-1.docker.io: no such host.",
     "ubuntu:jammy", "ubuntu"),
])
def test_a_missing_tag_of_a_stand_in_names_the_tags_there_are(output, wanted, repository):
    hint = hint_for(output)
    assert hint == (f"The lab registry has no {wanted}. It has a stand-in for the Docker Hub "
                    f"image {repository}, under the tag latest only: use {repository}:latest, "
                    f"or just {repository}.")


def test_the_tags_named_are_the_lab_registrys():
    from runtime.lessonimages import NAMES
    assert set(STAND_IN_TAGS) == set(NAMES) and "ubuntu" in STAND_IN_TAGS
    assert all(tags == ("latest",) for tags in STAND_IN_TAGS.values())


@pytest.mark.parametrize("output", [
    # the tag exists: the stand-in is missing from the registry, not the tag
    "Error response from daemon: manifest for nginx:latest not found: manifest unknown",
    "Error response from daemon: manifest for nginx not found: manifest unknown",
    # not a stand-in, or another registry's image
    "Error response from daemon: manifest for ada/hello:v2 not found: manifest unknown",
    "Error response from daemon: manifest for quay.io/ubuntu:22.04 not found: manifest unknown",
])
def test_other_missing_images_get_the_general_hint(output):
    hint = hint_for(output)
    assert hint is not None and "could not find that image in the registry" in hint
    assert "stand-in" not in hint


@pytest.mark.parametrize("ref, parsed", [
    ("ubuntu", ("ubuntu", "latest")),
    ("ubuntu:22.04", ("ubuntu", "22.04")),
    ("library/mysql:8", ("mysql", "8")),
    ("docker.io/library/nginx:1.25", ("nginx", "1.25")),
    ("ada/hello:v0.1", ("ada/hello", "v0.1")),
    ("alpine@sha256:0123abcd", ("alpine", None)),
    ("localhost:5000/ubuntu:22.04", None),
    ("quay.io/ubuntu", None),
])
def test_image_references_are_read_as_docker_reads_them(ref, parsed):
    assert parse_image_ref(ref) == parsed
