"""Lesson authors get valid lessons loaded, and broken ones named by file and line."""
from pathlib import Path

import pytest

from labs.lessons import LessonError, load_lesson, load_lessons

CONTENT = Path(__file__).resolve().parents[2] / "labs" / "content"

GOOD_TOML = '''title = "Tiny"
summary = "A tiny lesson."
minutes = 3
order = 5
nodes = ["node1"]
images = ["alpine"]
'''


def make_lesson(root: Path, slug="tiny", toml=GOOD_TOML, steps=None) -> Path:
    lesson = root / slug
    (lesson / "steps").mkdir(parents=True)
    (lesson / "lesson.toml").write_text(toml)
    if steps is None:
        steps = {"01-hello.md": "# Say hello\n\nType `echo hi`.\n",
                 "01-hello.check": "grep -q hi /tmp/x\n",
                 "01-hello.solve": "echo hi > /tmp/x\n"}
    for name, text in steps.items():
        (lesson / "steps" / name).write_text(text)
    return lesson


def test_first_containers_loads_with_its_two_steps():
    lesson = load_lesson(CONTENT / "first-containers")
    assert lesson.slug == "first-containers"
    assert lesson.title == "Run your first containers"
    assert lesson.nodes == ("node1",)
    assert lesson.images == ("alpine",)
    assert [s.number for s in lesson.steps] == [1, 2]
    first, second = lesson.steps
    assert first.title == "Run a container"
    assert "docker container run alpine hostname" in first.text
    assert not first.text.startswith("#")  # the heading became the title
    assert "Exited (0)" in first.check
    assert first.solve.strip().endswith("docker container run alpine hostname")
    assert "bash_history" in second.check


def test_every_lesson_in_content_loads():
    slugs = [lesson.slug for lesson in load_lessons(CONTENT)]
    assert "first-containers" in slugs


def test_happy_path_from_temp_dir(tmp_path):
    lesson = load_lesson(make_lesson(tmp_path))
    assert (lesson.title, lesson.minutes, lesson.order) == ("Tiny", 3, 5)
    (step,) = lesson.steps
    assert (step.number, step.name, step.title, step.setup) == (1, "01-hello", "Say hello", "")
    assert step.check == "grep -q hi /tmp/x\n"


def test_steps_listed_in_toml_keep_their_order_and_titles(tmp_path):
    toml = GOOD_TOML + '\n[[steps]]\nname = "02-b"\n\n[[steps]]\nname = "01-a"\ntitle = "First"\n'
    steps = {}
    for name in ("01-a", "02-b"):
        steps.update({f"{name}.md": f"# {name}\n", f"{name}.check": "true\n", f"{name}.solve": ":\n"})
    lesson = load_lesson(make_lesson(tmp_path, toml=toml, steps=steps))
    assert [(s.number, s.name, s.title) for s in lesson.steps] == [(1, "02-b", "02-b"), (2, "01-a", "First")]


def test_bad_toml_names_the_file_and_line(tmp_path):
    toml = GOOD_TOML.replace('minutes = 3', 'minutes = = 3')
    directory = make_lesson(tmp_path, toml=toml)
    with pytest.raises(LessonError) as caught:
        load_lesson(directory)
    assert caught.value.path == directory / "lesson.toml"
    assert caught.value.line == 3
    assert str(caught.value).startswith(f"{directory / 'lesson.toml'}:3: invalid TOML")


def test_wrong_type_points_at_the_key_line(tmp_path):
    directory = make_lesson(tmp_path, toml=GOOD_TOML.replace("order = 5", 'order = "five"'))
    with pytest.raises(LessonError) as caught:
        load_lesson(directory)
    assert caught.value.line == 4
    assert "'order' must be a whole number" in str(caught.value)


def test_missing_key_names_the_file(tmp_path):
    directory = make_lesson(tmp_path, toml=GOOD_TOML.replace('title = "Tiny"\n', ""))
    with pytest.raises(LessonError) as caught:
        load_lesson(directory)
    assert caught.value.path == directory / "lesson.toml"
    assert "missing required key 'title'" in str(caught.value)


def test_step_without_check_names_the_markdown_file(tmp_path):
    directory = make_lesson(tmp_path, steps={"01-hello.md": "# Hi\n", "01-hello.solve": "true\n"})
    with pytest.raises(LessonError) as caught:
        load_lesson(directory)
    assert caught.value.path == directory / "steps" / "01-hello.md"
    assert "01-hello.check" in str(caught.value)


def test_script_without_markdown_is_reported(tmp_path):
    steps = {"01-hello.md": "# Hi\n", "01-hello.check": "true\n", "01-hello.solve": "true\n",
             "01-helo.check": "true\n"}
    directory = make_lesson(tmp_path, steps=steps)
    with pytest.raises(LessonError) as caught:
        load_lesson(directory)
    assert caught.value.path == directory / "steps" / "01-helo.check"


def test_invalid_node_name_points_at_nodes_line(tmp_path):
    directory = make_lesson(tmp_path, toml=GOOD_TOML.replace('["node1"]', '["Node_1"]'))
    with pytest.raises(LessonError) as caught:
        load_lesson(directory)
    assert caught.value.line == 5
