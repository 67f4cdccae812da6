"""Held-out cases: learner spellings and near-misses kept out of the lessons.

tests/integration/heldout/<lesson>.toml holds [[variants]] and [[cheats]] tables
as the lessons' own (`why`, `type` in the typed-script syntax) plus `step = N`.
Being kept out of the lessons, they test the checks on spellings their authors
did not write them for. Two tests type them:

- test_lessons.py, in the same run of verify_lessons that proves the lesson's
  own cases (typed into the node's terminal, judged by the step's check);
- test_heldout.py, for one lesson, the learner's whole way: the site's terminal
  websocket, the page's Check, the verdict pushed back (the path is the same
  for every lesson, and that run costs a lesson's worth of solves).
"""
from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass
from pathlib import Path

from labs.courses.lessons import TypedCase

HELDOUT = Path(__file__).resolve().parents[1] / "integration" / "heldout"
# The lesson whose held-out cases go through the site (test_heldout.py).
THROUGH_THE_SITE = "custom-app"


@dataclass(frozen=True)
class Case:
    step: int
    variant: bool
    why: str
    script: str

    def name(self) -> str:
        return f"step {self.step} {'variant' if self.variant else 'cheat'}: {self.why}"


def cases(path: Path) -> list:
    data = tomllib.loads(path.read_text())
    found = [Case(int(t["step"]), kind == "variants", t["why"], t["type"])
             for kind in ("variants", "cheats") for t in data.get(kind, [])]
    return sorted(found, key=lambda c: c.step)


def files() -> list:
    return sorted(HELDOUT.glob("*.toml"))


def with_heldout(lesson):
    """The lesson with its held-out cases added to its steps' own (why: "held out: ...")."""
    path = HELDOUT / f"{lesson.slug}.toml"
    if not path.exists():
        return lesson
    extra = cases(path)

    def typed(step, variant):
        return tuple(TypedCase(why="held out: " + c.why, script=c.script)
                     for c in extra if c.step == step.number and c.variant == variant)
    steps = tuple(dataclasses.replace(s, variants=s.variants + typed(s, True),
                                      cheats=s.cheats + typed(s, False)) for s in lesson.steps)
    return dataclasses.replace(lesson, steps=steps)
