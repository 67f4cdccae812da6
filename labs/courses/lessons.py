"""Lessons are data: a directory per lesson, validated into frozen dataclasses.

    labs/courses/content/<slug>/lesson.toml      title, summary, minutes, order, nodes, images,
                                         [[files]] to place in a node
    labs/courses/content/<slug>/files/...        what [[files]] tables name (binary is fine)
    labs/courses/content/<slug>/steps/NN-<name>.md      what the learner reads
    labs/courses/content/<slug>/steps/NN-<name>.toml    optional: node = "node2", [quiz]
    labs/courses/content/<slug>/steps/NN-<name>.check   /bin/sh run as root in the step's node:
                                                exit 0 = done, else its output is the
                                                reason shown to the learner
    labs/courses/content/<slug>/steps/NN-<name>.solve   what a learner would type (sh)
    labs/courses/content/<slug>/steps/NN-<name>.setup   optional, run before the step

lesson.toml:

    nodes = ["node1", "node2"]      1 to 5 node names (default ["node1"]); a
                                    reading-only lesson still names one node
    images = ["ubuntu"]             lesson images it uses
    [[files]]                       placed in the node before it starts
    node = "node1"                  default "node1"; one of `nodes`
    path = "/root/app/index.html"   absolute, no ".."
    source = "files/index.html"     relative to the lesson directory; must exist
    mode = "0755"                   optional, octal string (default 0644)

A step's NN-<name>.toml may say which node the step is about (its terminal,
where its check and solve run; default "node1") and may make it a quiz step:

    node = "node2"
    [quiz]
    question = "Which ...?"
    choices = ["a", "b", "c"]       at least two
    answer = 1                      0-based index of the right choice
    explain = "Because ..."

A quiz step has no .check or .solve (the answer is checked on the server);
every other step must have both.

Solve and setup scripts run in the step's node like a learner's commands.
The only facts they cannot find there themselves come from other nodes, so
whoever runs them (verify_lessons) exports, for every node N of the lesson
(upper-cased, '-' as '_'): LAB_N_ADDRESS (its address on the session network)
and, when N is a swarm manager, LAB_N_WORKER_TOKEN (`docker swarm join-token -q
worker` there). See labs/verify.py.

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

from . import typist

SLUG_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,49}$")
STEP_NAME_RE = re.compile(r"^(\d{2})-([a-z0-9][a-z0-9-]*)$")
HEADING_RE = re.compile(r"^#\s+(.+?)\s*#*\s*$")
IMAGE_RE = re.compile(r"^[a-z0-9]+(?:[._/-][a-z0-9]+)*(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?$")


class LessonError(Exception):
    """A lesson directory is broken; the message says file:line and what to fix."""

    def __init__(self, path, line: int, problem: str):
        self.path = Path(path)
        self.line = line
        self.problem = problem
        super().__init__(f"{self.path}:{line}: {problem}")


MAX_NODES = 5
DEFAULT_MODE = 0o644


@dataclass(frozen=True)
class QuizDef:
    question: str
    choices: tuple  # of str, at least two
    answer: int  # 0-based index into choices
    explain: str = ""

    def is_right(self, choice) -> bool:
        return isinstance(choice, int) and not isinstance(choice, bool) and choice == self.answer


@dataclass(frozen=True)
class FileDef:
    node: str
    path: str  # absolute path inside the node
    source: str  # absolute path of the file in the lesson directory
    mode: int = DEFAULT_MODE

    def content(self) -> bytes:
        return Path(self.source).read_bytes()


@dataclass(frozen=True)
class TypedCase:
    """A variant (another way to do the step: the check must pass) or a cheat (a
    near-miss that skips the step's point: the check must keep failing), as
    typed into the node's terminal (see typist.py for the script's form)."""
    why: str
    script: str
    line: int = 1  # where its table starts in the step's .toml


@dataclass(frozen=True)
class StepDef:
    number: int
    name: str
    title: str
    text: str  # Markdown, without the title heading
    check: str  # "" for a quiz step
    solve: str  # "" for a quiz step
    setup: str = ""
    path: str = ""  # the .md file
    node: str = "node1"  # where the step's terminal is and its check runs
    quiz: QuizDef | None = None
    variants: tuple = ()  # of TypedCase
    cheats: tuple = ()  # of TypedCase
    undo: str = ""  # sh: back to the state before the step (for variants and cheats)


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
    files: tuple = ()  # of FileDef

    def files_for(self, node: str) -> tuple:
        """(path, bytes, mode) tuples for runtime.NodeSpec(files=...) of `node`."""
        return tuple((f.path, f.content(), f.mode) for f in self.files if f.node == node)


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


def _key_line_in_table(text: str, table: str, index: int, key: str) -> int:
    """Line of `key = ...` inside the index-th [[table]], else the table's own line."""
    start = _nth_table_line(text, table, index)
    pattern = re.compile(rf"^\s*{re.escape(key)}\s*=")
    lines = text.splitlines()
    for number in range(start + 1, len(lines) + 1):
        line = lines[number - 1]
        if line.lstrip().startswith("["):
            break
        if pattern.match(line):
            return number
    return start


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


def _parse_toml(path: Path) -> tuple:
    text = _read(path)
    try:
        return text, tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        line = getattr(exc, "lineno", None)
        if line is None:
            found = re.search(r"line (\d+)", str(exc))
            line = int(found.group(1)) if found else 1
        raise LessonError(path, line, f"invalid TOML: {getattr(exc, 'msg', exc)}") from None


def _load_quiz(quiz, text: str, path: Path) -> QuizDef:
    table_line = _line_of(text, "quiz", table=True)
    if not isinstance(quiz, dict):
        raise LessonError(path, _line_of(text, "quiz"), "'quiz' must be a [quiz] table")
    known = {"question", "choices", "answer", "explain"}
    for key in quiz:
        if key not in known:
            raise LessonError(path, _line_of(text, key),
                              f"unknown quiz key {key!r} (known: {', '.join(sorted(known))})")
    for key in ("question", "choices", "answer"):
        if key not in quiz:
            raise LessonError(path, table_line, f"[quiz] is missing required key {key!r}")
    question, choices, answer = quiz["question"], quiz["choices"], quiz["answer"]
    explain = quiz.get("explain", "")
    if not isinstance(question, str) or not question.strip():
        raise LessonError(path, _line_of(text, "question"), "'question' must be a non-empty string")
    if (not isinstance(choices, list) or len(choices) < 2
            or not all(isinstance(c, str) and c.strip() for c in choices)):
        raise LessonError(path, _line_of(text, "choices"),
                          "'choices' must be a list of at least two non-empty strings")
    if len(set(choices)) != len(choices):
        raise LessonError(path, _line_of(text, "choices"), "'choices' must not repeat")
    if isinstance(answer, bool) or not isinstance(answer, int) or not 0 <= answer < len(choices):
        raise LessonError(path, _line_of(text, "answer"),
                          f"'answer' must be the 0-based index of the right choice "
                          f"(0 to {len(choices) - 1}), not {answer!r}")
    if not isinstance(explain, str):
        raise LessonError(path, _line_of(text, "explain"), "'explain' must be a string")
    return QuizDef(question=question, choices=tuple(choices), answer=answer, explain=explain)


def _load_step_meta(path: Path, nodes: tuple) -> tuple:
    """(node, quiz, variants, cheats) from a step's optional NN-<name>.toml."""
    if not path.is_file():
        return "node1", None, (), ()
    text, meta = _parse_toml(path)
    known = {"node", "quiz", "variants", "cheats"}
    for key in meta:
        if key not in known:
            raise LessonError(path, _line_of(text, key, table=isinstance(meta[key], dict)),
                              f"unknown key {key!r} (known: {', '.join(sorted(known))})")
    node = meta.get("node", "node1")
    if not isinstance(node, str) or node not in nodes:
        raise LessonError(path, _line_of(text, "node"),
                          f"'node' must be one of the lesson's nodes ({', '.join(nodes)}), "
                          f"not {node!r}")
    quiz = _load_quiz(meta["quiz"], text, path) if "quiz" in meta else None
    variants = _load_cases(meta, "variants", text, path)
    cheats = _load_cases(meta, "cheats", text, path)
    return node, quiz, variants, cheats


def _load_cases(meta: dict, key: str, text: str, path: Path) -> tuple:
    """[[variants]] or [[cheats]] tables: why = "...", type = \"\"\"what is typed\"\"\"."""
    tables = meta.get(key, [])
    if not isinstance(tables, list) or not all(isinstance(c, dict) for c in tables):
        raise LessonError(path, _line_of(text, key), f"'{key}' must be [[{key}]] tables")
    cases = []
    for index, table in enumerate(tables):
        line = _nth_table_line(text, key, index)
        for name in table:
            if name not in ("why", "type"):
                raise LessonError(path, _key_line_in_table(text, key, index, name),
                                  f"unknown key {name!r} in [[{key}]] (known: type, why)")
        why, script = table.get("why"), table.get("type")
        if not isinstance(why, str) or not why.strip():
            raise LessonError(path, line, f"[[{key}]] needs why = \"...\" (what this case shows)")
        if not isinstance(script, str) or not script.strip():
            raise LessonError(path, line, f"[[{key}]] needs type = \"...\" (what is typed)")
        try:
            typist.parse(script)
        except ValueError as exc:
            offset, problem = exc.args
            start = _key_line_in_table(text, key, index, "type")
            # a type = \"\"\" string starts on the line after the key
            first = start + 1 if text.splitlines()[start - 1].rstrip().endswith('"""') else start
            raise LessonError(path, first + offset - 1, problem) from None
        cases.append(TypedCase(why=why.strip(), script=script, line=line))
    return tuple(cases)


def _load_step(number: int, name: str, steps_dir: Path, title: str | None,
               ref_path: Path, ref_line: int, nodes: tuple = ("node1",)) -> StepDef:
    md = steps_dir / f"{name}.md"
    if not md.is_file():
        raise LessonError(ref_path, ref_line, f"step {name!r} has no Markdown file {md}")
    meta_path = steps_dir / f"{name}.toml"
    node, quiz, variants, cheats = _load_step_meta(meta_path, nodes)
    if node not in nodes:
        raise LessonError(meta_path if meta_path.is_file() else md, 1,
                          f"the step runs on node1, which the lesson does not have: "
                          f"say node = \"...\" in {meta_path.name}")
    check = steps_dir / f"{name}.check"
    solve = steps_dir / f"{name}.solve"
    setup = steps_dir / f"{name}.setup"
    undo = steps_dir / f"{name}.undo"
    if quiz is not None:
        if variants or cheats:
            raise LessonError(meta_path, 1, "a quiz step has no variants or cheats "
                                            "(they are typed into a node)")
        for script in (check, solve, setup, undo):
            if script.is_file():
                raise LessonError(script, 1, f"{md.name} is a quiz step (its {meta_path.name} "
                                             "has [quiz]): it has no check, solve or setup "
                                             "script; remove this file")
        check_text = solve_text = setup_text = ""
    else:
        if not check.is_file():
            raise LessonError(md, 1, f"step has no check script: create {check.name} next to it")
        if not solve.is_file():
            raise LessonError(md, 1, f"step has no solve script: create {solve.name} next to it")
        check_text = _read(check)
        if not check_text.strip():
            raise LessonError(check, 1, "check script is empty")
        solve_text = _read(solve)
        setup_text = _read(setup) if setup.is_file() else ""
        if (variants or cheats) and not undo.is_file():
            raise LessonError(meta_path, (variants or cheats)[0].line,
                              f"a step with variants or cheats needs {undo.name}: a script "
                              "that takes the node back to where it was before the step")
    fallback = STEP_NAME_RE.match(name).group(2).replace("-", " ").capitalize()
    heading, body = _split_title(_read(md), fallback)
    return StepDef(
        number=number,
        name=name,
        title=title or heading,
        text=body,
        check=check_text,
        solve=solve_text,
        setup=setup_text,
        path=str(md),
        node=node,
        quiz=quiz,
        variants=variants,
        cheats=cheats,
        undo=_read(undo) if undo.is_file() and quiz is None else "",
    )


def _mode_of(value, toml_path: Path, line: int) -> int:
    if value is None:
        return DEFAULT_MODE
    if not isinstance(value, str) or not re.fullmatch(r"0?[0-7]{3,4}", value):
        raise LessonError(toml_path, line, f"'mode' must be an octal string such as \"0644\", "
                                           f"not {value!r}")
    return int(value, 8)


def _load_files(meta: dict, text: str, toml_path: Path, directory: Path, nodes: tuple) -> tuple:
    entries = meta.get("files", [])
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise LessonError(toml_path, _line_of(text, "files", table=True),
                          "'files' must be [[files]] tables")
    files, seen = [], set()
    root = directory.resolve()
    for index, entry in enumerate(entries):

        def at(key, index=index):
            return _key_line_in_table(text, "files", index, key)
        for key in entry:
            if key not in ("node", "path", "source", "mode"):
                raise LessonError(toml_path, at(key), f"unknown key {key!r} in [[files]] "
                                                   "(known: mode, node, path, source)")
        node = entry.get("node", "node1")
        if not isinstance(node, str) or node not in nodes:
            raise LessonError(toml_path, at("node"), f"[[files]] node must be one of the lesson's nodes "
                                               f"({', '.join(nodes)}), not {node!r}")
        path = entry.get("path")
        if (not isinstance(path, str) or not path.startswith("/") or path.endswith("/")
                or ".." in Path(path).parts):
            raise LessonError(toml_path, at("path"), "[[files]] needs path = an absolute file path "
                                               f"in the node without '..', not {path!r}")
        if (node, path) in seen:
            raise LessonError(toml_path, at("path"), f"{path} is placed in {node} twice")
        seen.add((node, path))
        source = entry.get("source")
        if not isinstance(source, str) or not source or source.startswith("/"):
            raise LessonError(toml_path, at("source"), "[[files]] needs source = a path relative to the "
                                               f"lesson directory, not {source!r}")
        source_path = (directory / source).resolve()
        if root not in source_path.parents:
            raise LessonError(toml_path, at("source"), f"source {source!r} is outside the lesson directory")
        if not source_path.is_file():
            raise LessonError(toml_path, at("source"), f"source {source!r} does not exist "
                                               f"(looked for {source_path})")
        files.append(FileDef(node=node, path=path, source=str(source_path),
                             mode=_mode_of(entry.get("mode"), toml_path, at("mode"))))
    return tuple(files)


def load_lesson(directory) -> LessonDef:
    directory = Path(directory)
    slug = directory.name
    toml_path = directory / "lesson.toml"
    if not SLUG_RE.match(slug):
        raise LessonError(directory, 1, f"lesson directory name {slug!r} is not a valid slug "
                                        "(lower-case letters, digits and '-')")
    if not toml_path.is_file():
        raise LessonError(toml_path, 1, "lesson.toml is missing")
    text, meta = _parse_toml(toml_path)

    known = {"title", "summary", "minutes", "order", "nodes", "images", "steps", "files"}
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
    if not nodes or len(nodes) > MAX_NODES:
        raise LessonError(toml_path, _line_of(text, "nodes"),
                          f"'nodes' must name 1 to {MAX_NODES} nodes, not {len(nodes)}")
    for node in nodes:
        if not NAME_RE.match(node):
            raise LessonError(toml_path, _line_of(text, "nodes"),
                              f"node name {node!r} must match {NAME_RE.pattern}")
    if len(set(nodes)) != len(nodes):
        raise LessonError(toml_path, _line_of(text, "nodes"), "node names must be unique")
    for image in images:
        if not IMAGE_RE.match(image):
            raise LessonError(toml_path, _line_of(text, "images"),
                              f"{image!r} is not an image name (like \"ubuntu\" or \"mysql:latest\")")
    files = _load_files(meta, text, toml_path, directory, nodes)

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
            steps.append(_load_step(index + 1, name, steps_dir, step_title, toml_path, line, nodes))
    else:
        if not steps_dir.is_dir():
            raise LessonError(toml_path, 1, f"no steps: create {steps_dir}/01-<name>.md "
                                            "with .check and .solve next to it")
        names = sorted(p.stem for p in steps_dir.glob("*.md"))
        for index, name in enumerate(names):
            if not STEP_NAME_RE.match(name):
                raise LessonError(steps_dir / f"{name}.md", 1,
                                  "step files must be named NN-<name>.md (e.g. 01-hello.md)")
            steps.append(_load_step(index + 1, name, steps_dir, None, steps_dir / f"{name}.md", 1,
                                    nodes))
        # Scripts without a Markdown file are a mistake too (a typo in the name).
        for script in sorted(steps_dir.iterdir()):
            if script.suffix in (".check", ".solve", ".setup", ".toml") and script.stem not in names:
                raise LessonError(script, 1, f"no step {script.stem}.md for this script")
    if not steps:
        raise LessonError(toml_path, 1, "lesson has no steps")

    return LessonDef(slug=slug, title=title, summary=summary, minutes=minutes, order=order,
                     nodes=nodes, images=images, steps=tuple(steps), path=str(directory),
                     files=files)


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
