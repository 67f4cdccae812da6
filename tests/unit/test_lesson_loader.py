"""Lesson authors get valid lessons loaded, and broken ones named by file and line."""
from pathlib import Path

import pytest

from labs.courses.lessons import FileDef, LessonError, QuizDef, load_lesson, load_lessons

CONTENT = Path(__file__).resolve().parents[2] / "labs" / "courses" / "content"

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


def test_first_containers_loads_with_its_steps():
    lesson = load_lesson(CONTENT / "first-containers")
    assert lesson.slug == "first-containers"
    assert lesson.title == "Run your first containers"
    assert lesson.nodes == ("node1",)
    assert lesson.images == ("alpine", "ubuntu", "mysql")
    assert [s.number for s in lesson.steps] == list(range(1, 9))
    first, second = lesson.steps[:2]
    assert first.title == "Run a container"
    assert "docker container run alpine hostname" in first.text
    assert not first.text.startswith("#")  # the heading became the title
    assert "Exited \\(0\\)" in first.check
    assert first.solve.strip().endswith("docker container run alpine hostname")
    assert "lab-ran" in second.check


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


# ---- nodes, files, per-step node and quiz -----------------------------------

QUIZ_TOML = '''[quiz]
question = "Which one?"
choices = ["this", "that"]
answer = 1
explain = "That one."
'''

QUIZ_STEPS = {"01-hello.md": "# Hi\n", "01-hello.check": "true\n", "01-hello.solve": "true\n",
              "02-think.md": "# Think\n\nRead this.\n", "02-think.toml": QUIZ_TOML}


def raises_at(directory_or_lesson, path, line):
    with pytest.raises(LessonError) as caught:
        load_lesson(directory_or_lesson)
    assert caught.value.path == path, str(caught.value)
    assert caught.value.line == line, str(caught.value)
    assert str(caught.value).startswith(f"{path}:{line}: ")
    return str(caught.value)


def test_a_quiz_step_has_its_question_and_no_scripts(tmp_path):
    lesson = load_lesson(make_lesson(tmp_path, steps=QUIZ_STEPS))
    hello, think = lesson.steps
    assert (hello.node, hello.quiz) == ("node1", None)
    assert think.quiz == QuizDef(question="Which one?", choices=("this", "that"), answer=1,
                                 explain="That one.")
    assert (think.check, think.solve, think.setup) == ("", "", "")
    assert think.quiz.is_right(1) and not think.quiz.is_right(0) and not think.quiz.is_right(True)


def test_step_node_names_a_lesson_node(tmp_path):
    toml = GOOD_TOML.replace('["node1"]', '["node1", "node2"]')
    steps = {"01-join.md": "# Join\n", "01-join.check": "true\n", "01-join.solve": "true\n",
             "01-join.toml": 'node = "node2"\n'}
    lesson = load_lesson(make_lesson(tmp_path, toml=toml, steps=steps))
    assert lesson.nodes == ("node1", "node2")
    assert lesson.steps[0].node == "node2"


def test_step_node_not_in_the_lesson_names_its_line(tmp_path):
    steps = {"01-join.md": "# Join\n", "01-join.check": "true\n", "01-join.solve": "true\n",
             "01-join.toml": '# which terminal\nnode = "node2"\n'}
    directory = make_lesson(tmp_path, steps=steps)
    message = raises_at(directory, directory / "steps" / "01-join.toml", 2)
    assert "one of the lesson's nodes" in message


def test_quiz_step_with_a_check_script_is_refused(tmp_path):
    directory = make_lesson(tmp_path, steps={**QUIZ_STEPS, "02-think.check": "true\n"})
    message = raises_at(directory, directory / "steps" / "02-think.check", 1)
    assert "quiz step" in message


def test_quiz_answer_out_of_range_names_its_line(tmp_path):
    steps = {**QUIZ_STEPS, "02-think.toml": QUIZ_TOML.replace("answer = 1", "answer = 2")}
    directory = make_lesson(tmp_path, steps=steps)
    message = raises_at(directory, directory / "steps" / "02-think.toml", 4)
    assert "0 to 1" in message


def test_quiz_with_one_choice_names_its_line(tmp_path):
    steps = {**QUIZ_STEPS, "02-think.toml": QUIZ_TOML.replace('["this", "that"]', '["this"]')}
    directory = make_lesson(tmp_path, steps=steps)
    raises_at(directory, directory / "steps" / "02-think.toml", 3)


def test_quiz_without_question_names_the_table(tmp_path):
    steps = {**QUIZ_STEPS, "02-think.toml": 'node = "node1"\n' + QUIZ_TOML.replace(
        'question = "Which one?"\n', "")}
    directory = make_lesson(tmp_path, steps=steps)
    message = raises_at(directory, directory / "steps" / "02-think.toml", 2)
    assert "'question'" in message


def test_broken_step_toml_names_its_line(tmp_path):
    steps = {**QUIZ_STEPS, "02-think.toml": "[quiz]\nquestion = \n"}
    directory = make_lesson(tmp_path, steps=steps)
    message = raises_at(directory, directory / "steps" / "02-think.toml", 2)
    assert "invalid TOML" in message


def test_step_toml_without_markdown_is_reported(tmp_path):
    directory = make_lesson(tmp_path, steps={**QUIZ_STEPS, "03-lost.toml": 'node = "node1"\n'})
    raises_at(directory, directory / "steps" / "03-lost.toml", 1)


FILES_TOML = GOOD_TOML.replace('["node1"]', '["node1", "node2"]') + '''
[[files]]
path = "/root/app/index.html"
source = "files/index.html"

[[files]]
node = "node2"
path = "/root/app/run.sh"
source = "files/run.sh"
mode = "0755"
'''


def make_files_lesson(tmp_path, toml=FILES_TOML):
    directory = make_lesson(tmp_path, toml=toml)
    (directory / "files").mkdir()
    (directory / "files" / "index.html").write_bytes(b"<h1>hi</h1>\n")
    (directory / "files" / "run.sh").write_bytes(b"#!/bin/sh\n\x00binary too\n")
    return directory


def test_files_are_loaded_with_node_path_source_and_mode(tmp_path):
    directory = make_files_lesson(tmp_path)
    lesson = load_lesson(directory)
    assert lesson.files == (
        FileDef(node="node1", path="/root/app/index.html",
                source=str((directory / "files" / "index.html").resolve()), mode=0o644),
        FileDef(node="node2", path="/root/app/run.sh",
                source=str((directory / "files" / "run.sh").resolve()), mode=0o755),
    )
    assert lesson.files_for("node1") == (("/root/app/index.html", b"<h1>hi</h1>\n", 0o644),)
    assert lesson.files_for("node2")[0][1] == b"#!/bin/sh\n\x00binary too\n"
    # The source joins onto the lesson directory the same either way.
    assert Path(lesson.path) / lesson.files[0].source == Path(lesson.files[0].source)


@pytest.mark.parametrize("change, line, words", [
    (('source = "files/run.sh"', 'source = "files/missing.sh"'), 15, "does not exist"),
    (('path = "/root/app/index.html"', 'path = "root/app/index.html"'), 9, "absolute"),
    (('path = "/root/app/index.html"', 'path = "/root/../etc/passwd"'), 9, "'..'"),
    (('node = "node2"', 'node = "node3"'), 13, "one of the lesson's nodes"),
    (('mode = "0755"', 'mode = 755'), 16, "octal"),
    (('source = "files/index.html"', 'source = "../outside.html"'), 10, "outside"),
])
def test_broken_files_name_the_table_line(tmp_path, change, line, words):
    (tmp_path / "outside.html").write_text("x")
    directory = make_files_lesson(tmp_path, toml=FILES_TOML.replace(*change))
    message = raises_at(directory, directory / "lesson.toml", line)
    assert words in message


def test_more_than_five_nodes_is_refused(tmp_path):
    six = ", ".join(f'"node{i}"' for i in range(1, 7))
    directory = make_lesson(tmp_path, toml=GOOD_TOML.replace('["node1"]', f"[{six}]"))
    message = raises_at(directory, directory / "lesson.toml", 5)
    assert "1 to 5" in message


def test_no_nodes_is_refused(tmp_path):
    directory = make_lesson(tmp_path, toml=GOOD_TOML.replace('["node1"]', "[]"))
    raises_at(directory, directory / "lesson.toml", 5)


def test_a_bad_image_name_names_the_images_line(tmp_path):
    directory = make_lesson(tmp_path, toml=GOOD_TOML.replace('["alpine"]', '["Alpine Linux"]'))
    raises_at(directory, directory / "lesson.toml", 6)


def test_every_lesson_uses_only_lab_images_and_its_own_nodes():
    from runtime.lessonimages import NAMES
    for lesson in load_lessons(CONTENT):
        for image in lesson.images:
            assert image.split(":")[0] in NAMES, (lesson.slug, image)
        assert {step.node for step in lesson.steps} <= set(lesson.nodes)


# ---- variants and cheats ------------------------------------------------------------

CASES_TOML = '''[[variants]]
why = "the short form"
type = "echo hi>/tmp/x"

[[variants]]
why = "in two goes, Ctrl-C between"
type = """
cat
<ctrl-c>
<wait 1>
echo hi > /tmp/x
"""

[[cheats]]
why = "writes the wrong word"
type = "echo ho > /tmp/x"
'''


def _steps_with(toml: str, undo: bool = True) -> dict:
    steps = {"01-hello.md": "# Say hello\n", "01-hello.check": "grep -q hi /tmp/x\n",
             "01-hello.solve": "echo hi > /tmp/x\n", "01-hello.toml": toml}
    if undo:
        steps["01-hello.undo"] = "rm -f /tmp/x\n"
    return steps


def test_variants_and_cheats_load_with_their_undo(tmp_path):
    from labs.courses import typist
    (step,) = load_lesson(make_lesson(tmp_path, steps=_steps_with(CASES_TOML))).steps
    assert [v.why for v in step.variants] == ["the short form", "in two goes, Ctrl-C between"]
    assert [c.why for c in step.cheats] == ["writes the wrong word"]
    assert step.undo == "rm -f /tmp/x\n"
    actions = typist.parse(step.variants[1].script)
    assert [(a.kind, a.text, a.keys, a.seconds) for a in actions] == [
        ("line", "cat", b"", 0.0), ("keys", "", b"\x03", 0.0), ("wait", "", b"", 1.0),
        ("line", "echo hi > /tmp/x", b"", 0.0)]


def test_variants_without_an_undo_script_are_refused(tmp_path):
    with pytest.raises(LessonError) as caught:
        load_lesson(make_lesson(tmp_path, steps=_steps_with(CASES_TOML, undo=False)))
    assert caught.value.line == 1 and "01-hello.undo" in caught.value.problem


@pytest.mark.parametrize("toml, line, words", [
    ('[[variants]]\nwhy = "x"\ntype = """\necho hi\n<ctrl-q>\n"""\n', 5, "<ctrl-q> is not a key"),
    ('[[cheats]]\nwhy = "x"\ntype = """\n<wait 500>\n"""\n', 4, "<wait N> takes seconds"),
    ('[[cheats]]\nwhy = "x"\ntype = "<ctrl-c>"\n', 3, "nothing to type"),
    ('[[variants]]\ntype = "echo hi"\n', 1, "needs why"),
    ('[[variants]]\nwhy = "a"\ntype = "echo"\n[[variants]]\nwhy = "b"\nkeys = "x"\n', 6,
     "unknown key 'keys'"),
    ('variants = "echo hi"\n', 1, "must be [[variants]] tables"),
])
def test_broken_variants_and_cheats_name_their_line(tmp_path, toml, line, words):
    with pytest.raises(LessonError) as caught:
        load_lesson(make_lesson(tmp_path, steps=_steps_with(toml)))
    assert caught.value.line == line, caught.value
    assert words in caught.value.problem


def test_verify_names_a_step_by_number_or_name():
    from labs.courses import verify
    lesson = load_lesson(CONTENT / "first-containers")
    assert verify.select_step(lesson, "2") == 2
    assert verify.select_step(lesson, "02-list-containers") == 2
    assert verify.select_step(lesson, "list-containers") == 2
    with pytest.raises(ValueError, match="no step 'nine'"):
        verify.select_step(lesson, "nine")
