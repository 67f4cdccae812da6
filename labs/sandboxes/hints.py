"""Hints for Docker errors a learner is likely to meet.

`hint_for(output)` looks at what a failed command printed and returns one
sentence that says what went wrong and what to do, or None when the output
matches nothing we know. Pure and table-driven so the table is the test.

A hint in the table is a format string (filled with the match's groups) or a
function of (match, text) that returns the hint, or None to let later rows try.

Lessons pull from the lab registry, which holds stand-ins for a few Docker Hub
images (runtime/lessonimages.py), each under one tag. A pull of a tag it does
not have (ubuntu:22.04) gets a hint naming the tags it has.
"""
from __future__ import annotations

import re

from runtime.lessonimages import NAMES as STAND_IN_NAMES

# Repository -> the tags the lab registry has for it. The lab builds each
# stand-in once and pushes it as library/<name>:latest (lessonimages.image_ref).
STAND_IN_TAGS = {name: ("latest",) for name in STAND_IN_NAMES}
DOCKER_HUB_HOSTS = ("docker.io", "index.docker.io", "registry-1.docker.io")

# Terminal output carries colours, cursor moves and the like.
# (CSI, OSC, a character set chosen with ESC ( or ESC ), keypad modes ESC = and
# ESC >, and the other two-byte escapes.)
_ANSI_RE = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[()][A-Z0-9]|[=>]|[@-Z\\-_])")

NOT_IN_REGISTRY = ("Docker could not find that image in the registry. Check the image name and "
                   "tag for typos (docker image ls shows the images you have).")

# (pattern, hint). The first match wins, so specific patterns come before
# general ones ("pull access denied" before "permission denied").
HINTS: tuple = (
    (re.compile(r"port is already allocated|address already in use", re.I),
     "That host port is already taken, most likely by another container. Publish a different "
     "host port (-p 8081:80) or remove the container that holds it "
     "(docker container ls, then docker container rm --force <name>)."),
    (re.compile(r"Conflict\. The container name \"?/?([\w.-]+)\"? is already in use", re.I),
     "A container called {1} already exists (maybe stopped). Remove it with "
     "docker container rm --force {1}, or pick another --name."),
    (re.compile(r"is already in use by container|name .{0,80}is already in use", re.I),
     "That name is already used by another container. Remove the old one "
     "(docker container rm --force <name>) or pick another --name."),
    (re.compile(r"pull access denied|manifest unknown|manifest for \S+ not found"
                r"|repository does not exist", re.I),
     lambda match, text: _missing_tag_hint(text) or NOT_IN_REGISTRY),
    (re.compile(r"No such image", re.I),
     "There is no image with that name on this machine. Check the spelling "
     "(docker image ls lists them), or build or pull it first."),
    (re.compile(r"No such container", re.I),
     "There is no container with that name or ID. List them with docker container ls --all "
     "and copy the name or ID from there."),
    (re.compile(r"is not running", re.I),
     "That container is not running. Start it first (docker container start <name>), or "
     "see why it stopped with docker container logs <name>."),
    (re.compile(r"Cannot connect to the Docker daemon", re.I),
     "The Docker engine on this machine is not answering. Wait a few seconds and try again; "
     "if it keeps failing, stop and start your lab machine."),
    (re.compile(r"invalid reference format", re.I),
     "Docker could not read that image name. Image names are lower case, with no spaces; "
     "a tag follows a colon (nginx:1.25). Check for a stray character or an unfilled <placeholder>."),
    (re.compile(r"No such network|network \S+ not found", re.I),
     "There is no network with that name. List them with docker network ls."),
    (re.compile(r"This node is not a swarm manager|not part of a swarm", re.I),
     "This command needs a swarm. Run docker swarm init on the manager node first, "
     "and run service and node commands there."),
    (re.compile(r"This node is already part of a swarm", re.I),
     "This node is already in a swarm. Use docker node ls on the manager to see it, or leave "
     "with docker swarm leave --force first."),
    (re.compile(r"unknown shorthand flag|unknown flag", re.I),
     "Docker does not know one of those options. Check its spelling; "
     "docker <command> --help lists the options."),
    (re.compile(r"permission denied", re.I),
     "Permission denied: the file or socket is not accessible to this user, or a file is not "
     "executable. Check the path and its permissions (ls -l)."),
    (re.compile(r"docker: command not found|docker: not found", re.I),
     "This shell cannot find docker. Type the command in the lab terminal of the right node."),
    # Printed before every pull, also successful ones: only a hint when nothing else matched.
    (re.compile(r"Unable to find image '([^']+)' locally", re.I),
     lambda match, text: _missing_tag_hint(text) or
     f"Docker did not have {match.group(1)} and could not fetch it. Check the image name and tag."),
)

MAX_SCAN = 8000


def clean_output(text: str) -> str:
    """Terminal output without escape sequences and carriage returns."""
    return _ANSI_RE.sub("", text).replace("\r", "")


def hint_for(output_text: str) -> str | None:
    """A hint for the first known Docker error in `output_text`, else None."""
    if not output_text:
        return None
    text = clean_output(output_text[-MAX_SCAN:])
    for pattern, hint in HINTS:
        match = pattern.search(text)
        if not match:
            continue
        if callable(hint):
            found = hint(match, text)
            if found is None:
                continue
            return found
        groups = (match.group(0),) + match.groups()
        return hint.format(*groups) if match.groups() else hint
    return None


# Where a failed pull names the image it wanted: Docker's own messages first,
# then the command as the terminal echoed it, then a Dockerfile's FROM step.
_IMAGE_REF_RES = (
    re.compile(r"manifest for (\S+?) not found", re.I),
    re.compile(r"Unable to find image '([^']+)' locally", re.I),
    re.compile(r"\bdocker\s+(?:image\s+)?pull\s+(?:-\S+\s+)*([^\s-]\S*)"),
    re.compile(r"^Step \d+/\d+ : FROM\s+(?:--platform=\S+\s+)?(\S+)", re.M | re.I),
)


def parse_image_ref(ref: str) -> tuple | None:
    """(repository, tag) of a Docker Hub image reference, with library/ dropped:
    "ubuntu:22.04" -> ("ubuntu", "22.04"), "docker.io/library/nginx" -> ("nginx",
    "latest"). The tag is None for a digest (name@sha256:...). None for another
    registry's image."""
    name, _, digest = ref.strip().partition("@")
    parts = name.split("/")
    if len(parts) > 1 and ("." in parts[0] or ":" in parts[0] or parts[0] == "localhost"):
        if parts[0].lower() not in DOCKER_HUB_HOSTS:
            return None
        parts = parts[1:]
    repository, tag = "/".join(parts), "latest"
    if ":" in parts[-1]:
        last, _, tag = parts[-1].partition(":")
        repository = "/".join(parts[:-1] + [last])
    repository = repository.removeprefix("library/")
    if not repository:
        return None
    return repository, (None if digest else tag)


def _missing_tag_hint(text: str) -> str | None:
    """The hint for a stand-in's tag the lab registry does not have, or None."""
    for ref_re in _IMAGE_REF_RES:
        match = ref_re.search(text)
        if not match:
            continue
        parsed = parse_image_ref(match.group(1))
        if parsed is None:
            return None
        repository, tag = parsed
        tags = STAND_IN_TAGS.get(repository)
        if not tags or tag in tags:
            return None
        have = " or ".join(f"{repository}:{t}" for t in tags)
        wanted = f"{repository}@{match.group(1).partition('@')[2]}" if tag is None \
            else f"{repository}:{tag}"
        plain = f", or just {repository}" if "latest" in tags else ""
        return (f"The lab registry has no {wanted}. It has a stand-in for the Docker Hub image "
                f"{repository}, under the tag{'s' if len(tags) > 1 else ''} {', '.join(tags)} "
                f"only: use {have}{plain}.")
    return None
