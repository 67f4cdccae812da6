"""Lessons are data: a directory per lesson, validated into frozen dataclasses.

    labs/content/<slug>/lesson.toml      title, summary, minutes, order, nodes, images
    labs/content/<slug>/steps/NN-<name>.md      what the learner reads
    labs/content/<slug>/steps/NN-<name>.check   /bin/sh run in node1: exit 0 = done,
                                                else its output is the reason shown
    labs/content/<slug>/steps/NN-<name>.solve   what a learner would type (sh)
    labs/content/<slug>/steps/NN-<name>.setup   optional, run before the step

Steps come from the steps/ directory in file-name order, unless lesson.toml
lists them as [[steps]] tables (`name = "NN-<name>"`, optional `title`).
Every problem raises LessonError naming the file and line.
"""
from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from runtime.model import NAME_RE

SLUG_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,49}$")
STEP_NAME_RE = re.compile(r"^(\d{2})-([a-z0-9][a-z0-9-]*)$")
HEADING_RE = re.compile(r"^#\s+(.+?)\s*#*\s*$")


class LessonError(Exception):
    """A lesson directory is broken; the message says file:line and what to fix."""

    def __init__(self, path, line: int, problem: str):
        self.path = Path(path)
        self.line = line
        self.problem = problem
        super().__init__(f"{self.path}:{line}: {problem}")


@dataclass(frozen=True)
class StepDef:
    number: int
    name: str
    title: str
    text: str  # Markdown, without the title heading
    check: str
    solve: str
    setup: str = ""
    path: str = ""  # the .md file


@dataclass(frozen=True)
class LessonDef:
    slug: str
    title: str
    summary: str
    minutes: int
    order: int
    nodes: tuple
    images: tuple
    steps: tuple
    path: str = ""


def _line_of(text: str, key: str, table: bool = False) -> int:
    """Line (1-based) where `key = ...` or `[key]` / `[[key]]` is written, else 1."""
    if table:
        pattern = re.compile(rf"^\s*\[\[?\s*{re.escape(key)}\s*\]\]?")
    else:
        pattern = re.compile(rf"^\s*{re.escape(key)}\s*=")
    for number, line in enumerate(text.splitlines(), start=1):
        if pattern.match(line):
            return number
    return 1


def _nth_table_line(text: str, key: str, index: int) -> int:
    pattern = re.compile(rf"^\s*\[\[\s*{re.escape(key)}\s*\]\]")
    seen = -1
    for number, line in enumerate(text.splitlines(), start=1):
        if pattern.match(line):
            seen += 1
            if seen == index:
                return number
    return _line_of(text, key, table=True)


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise LessonError(path, 1, f"not UTF-8 text ({exc.reason})") from None


def _field(meta: dict, text: str, toml_path: Path, key: str, kind, required=True, default=None):
    if key not in meta:
        if required:
            raise LessonError(toml_path, 1, f"missing required key {key!r}")
        return default
    value = meta[key]
    line = _line_of(text, key)
    if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise LessonError(toml_path, line, f"{key!r} must be a whole number, not {value!r}")
    if kind is str and not isinstance(value, str):
        raise LessonError(toml_path, line, f"{key!r} must be a string, not {value!r}")
    if kind is list:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise LessonError(toml_path, line, f"{key!r} must be a list of strings")
        return tuple(value)
    if kind is str and required and not value.strip():
        raise LessonError(toml_path, line, f"{key!r} must not be empty")
    return value


def _split_title(md_text: str, fallback: str) -> tuple:
    lines = md_text.splitlines()
    for index, line in enumerate(lines):
        if not line.strip():
            continue
        match = HEADING_RE.match(line)
        if match:
            return match.group(1), "\n".join(lines[index + 1:]).strip() + "\n"
        break
    return fallback, md_text


def _load_step(number: int, name: str, steps_dir: Path, title: str | None,
               ref_path: Path, ref_line: int) -> StepDef:
    md = steps_dir / f"{name}.md"
    if not md.is_file():
        raise LessonError(ref_path, ref_line, f"step {name!r} has no Markdown file {md}")
    check = steps_dir / f"{name}.check"
    if not check.is_file():
        raise LessonError(md, 1, f"step has no check script: create {check.name} next to it")
    solve = steps_dir / f"{name}.solve"
    if not solve.is_file():
        raise LessonError(md, 1, f"step has no solve script: create {solve.name} next to it")
    setup = steps_dir / f"{name}.setup"
    check_text = _read(check)
    if not check_text.strip():
        raise LessonError(check, 1, "check script is empty")
    fallback = STEP_NAME_RE.match(name).group(2).replace("-", " ").capitalize()
    heading, body = _split_title(_read(md), fallback)
    return StepDef(
        number=number,
        name=name,
        title=title or heading,
        text=body,
        check=check_text,
        solve=_read(solve),
        setup=_read(setup) if setup.is_file() else "",
        path=str(md),
    )


def load_lesson(directory) -> LessonDef:
    directory = Path(directory)
    slug = directory.name
    toml_path = directory / "lesson.toml"
    if not SLUG_RE.match(slug):
        raise LessonError(directory, 1, f"lesson directory name {slug!r} is not a valid slug "
                                        "(lower-case letters, digits and '-')")
    if not toml_path.is_file():
        raise LessonError(toml_path, 1, "lesson.toml is missing")
    text = _read(toml_path)
    try:
        meta = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        line = getattr(exc, "lineno", None)
        if line is None:
            found = re.search(r"line (\d+)", str(exc))
            line = int(found.group(1)) if found else 1
        raise LessonError(toml_path, line, f"invalid TOML: {getattr(exc, 'msg', exc)}") from None

    known = {"title", "summary", "minutes", "order", "nodes", "images", "steps"}
    for key in meta:
        if key not in known:
            raise LessonError(toml_path, _line_of(text, key, table=isinstance(meta[key], (dict, list))),
                              f"unknown key {key!r} (known: {', '.join(sorted(known))})")

    title = _field(meta, text, toml_path, "title", str)
    summary = _field(meta, text, toml_path, "summary", str)
    minutes = _field(meta, text, toml_path, "minutes", int)
    order = _field(meta, text, toml_path, "order", int)
    nodes = _field(meta, text, toml_path, "nodes", list, required=False, default=("node1",))
    images = _field(meta, text, toml_path, "images", list, required=False, default=())
    if not nodes:
        raise LessonError(toml_path, _line_of(text, "nodes"), "'nodes' must name at least one node")
    for node in nodes:
        if not NAME_RE.match(node):
            raise LessonError(toml_path, _line_of(text, "nodes"),
                              f"node name {node!r} must match {NAME_RE.pattern}")
    if len(set(nodes)) != len(nodes):
        raise LessonError(toml_path, _line_of(text, "nodes"), "node names must be unique")

    steps_dir = directory / "steps"
    steps = []
    if "steps" in meta:
        entries = meta["steps"]
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            raise LessonError(toml_path, _line_of(text, "steps", table=True),
                              "'steps' must be [[steps]] tables")
        for index, entry in enumerate(entries):
            line = _nth_table_line(text, "steps", index)
            name = entry.get("name")
            if not isinstance(name, str) or not STEP_NAME_RE.match(name):
                raise LessonError(toml_path, line,
                                  "each [[steps]] needs name = \"NN-<name>\" (e.g. \"01-hello\")")
            step_title = entry.get("title")
            if step_title is not None and not isinstance(step_title, str):
                raise LessonError(toml_path, line, "step 'title' must be a string")
            steps.append(_load_step(index + 1, name, steps_dir, step_title, toml_path, line))
    else:
        if not steps_dir.is_dir():
            raise LessonError(toml_path, 1, f"no steps: create {steps_dir}/01-<name>.md "
                                            "with .check and .solve next to it")
        names = sorted(p.stem for p in steps_dir.glob("*.md"))
        for index, name in enumerate(names):
            if not STEP_NAME_RE.match(name):
                raise LessonError(steps_dir / f"{name}.md", 1,
                                  "step files must be named NN-<name>.md (e.g. 01-hello.md)")
            steps.append(_load_step(index + 1, name, steps_dir, None, steps_dir / f"{name}.md", 1))
        # Scripts without a Markdown file are a mistake too (a typo in the name).
        for script in sorted(steps_dir.iterdir()):
            if script.suffix in (".check", ".solve", ".setup") and script.stem not in names:
                raise LessonError(script, 1, f"no step {script.stem}.md for this script")
    if not steps:
        raise LessonError(toml_path, 1, "lesson has no steps")

    return LessonDef(slug=slug, title=title, summary=summary, minutes=minutes, order=order,
                     nodes=nodes, images=images, steps=tuple(steps), path=str(directory))


def load_lessons(root) -> list:
    """Every lesson under `root` (a directory of lesson directories), in order."""
    root = Path(root)
    lessons = [load_lesson(d) for d in sorted(root.iterdir())
               if d.is_dir() and not d.name.startswith((".", "_"))]
    slugs = set()
    for lesson in lessons:
        if lesson.slug in slugs:
            raise LessonError(lesson.path, 1, f"duplicate lesson slug {lesson.slug!r}")
        slugs.add(lesson.slug)
    return sorted(lessons, key=lambda lesson: (lesson.order, lesson.slug))
