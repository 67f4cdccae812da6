"""An operator runs sync_lessons as often as they like; the database follows the files."""
import io
import shutil
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from labs.courses.models import Lesson, Step

CONTENT = Path(__file__).resolve().parent / "lessons"  # a frozen two-step copy


def sync(directory) -> str:
    out = io.StringIO()
    call_command("sync_lessons", "--dir", str(directory), stdout=out)
    return out.getvalue()


@pytest.mark.django_db
def test_sync_is_idempotent(tmp_path):
    shutil.copytree(CONTENT / "first-containers", tmp_path / "first-containers")
    first = sync(tmp_path)
    assert "first-containers: updated (2 steps)" in first
    ids = list(Step.objects.values_list("pk", flat=True).order_by("pk"))
    second = sync(tmp_path)
    assert "first-containers: unchanged (2 steps)" in second
    assert Lesson.objects.count() == 1
    assert list(Step.objects.values_list("pk", flat=True).order_by("pk")) == ids
    step = Step.objects.get(lesson__slug="first-containers", number=1)
    assert '<pre><code class="language-sh">docker container run alpine hostname\n</code></pre>' in step.body_html


@pytest.mark.django_db
def test_edited_step_is_updated_in_place_and_removed_step_deleted(tmp_path):
    lesson_dir = tmp_path / "first-containers"
    shutil.copytree(CONTENT / "first-containers", lesson_dir)
    sync(tmp_path)
    step1 = Step.objects.get(number=1)
    (lesson_dir / "steps" / "01-run-hostname.check").write_text("exit 0\n")
    for suffix in (".md", ".check", ".solve"):
        (lesson_dir / "steps" / f"02-list-containers{suffix}").unlink()
    assert "updated (1 steps)" in sync(tmp_path)
    assert list(Step.objects.values_list("pk", "check_script")) == [(step1.pk, "exit 0\n")]


@pytest.mark.django_db
def test_broken_lesson_fails_with_file_and_line(tmp_path):
    lesson_dir = tmp_path / "first-containers"
    shutil.copytree(CONTENT / "first-containers", lesson_dir)
    (lesson_dir / "lesson.toml").write_text('title = "x\n')
    with pytest.raises(CommandError, match=r"lesson\.toml:1: invalid TOML"):
        sync(tmp_path)
    assert Lesson.objects.count() == 0
