"""An instructor's classroom page with a class of 40 stays readable.

Forty learners are put in a classroom of two lessons (made in the database,
as the site would: users, memberships, step progress at different points);
the instructor's page shows all forty rows, a chart per lesson across the page
width whose step labels read "N. title", the hand of a learner who raised it
as an image, and no part of the page wider than the window. With
LAB_SCREENSHOT_DIR set, the page is saved as class-of-40.png.
"""
from __future__ import annotations

from playwright.sync_api import expect

from tests.browser.accounts import sign_up
from tests.browser.shots import save_screenshot

SEED = """
import random
from django.contrib.auth import get_user_model
from django.utils import timezone
from labs.classrooms.models import Classroom, Membership
from labs.courses.models import Lesson, LessonActivity, StepProgress
room = Classroom.objects.get(name="Forty")
lessons = room.ordered_lessons()
rng = random.Random(40)
for i in range(40):
    user = get_user_model().objects.create_user(f"learner{i:02d}", password="x-long-pass-phrase")
    Membership.objects.create(classroom=room, user=user,
                              hand_raised=timezone.now() if i == 7 else None)
    done = rng.randint(0, 12)
    for lesson in lessons:
        LessonActivity.objects.create(user=user, lesson=lesson)
        for step in lesson.steps.all()[:done]:
            StepProgress.record(user, step, StepProgress.DONE, "")
        done = max(0, done - 8)
print("seeded")
"""


def test_a_class_of_forty_reads_well(browser, live_site):
    url = live_site.url
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    try:
        sign_up(page, url, "forty")
        assert live_site.manage("instructor", "forty").returncode == 0
        page.goto(url + "/classrooms/")
        page.fill("#id_name", "Forty")
        assert page.locator("input[name=lessons]:checked").count() == 0  # none ticked for her
        page.get_by_label("Run your first containers").check()
        page.get_by_label("Package and run a custom app").check()
        page.click("#new-classroom button[type=submit]")
        seeded = live_site.manage("shell", "-c", SEED)
        assert "seeded" in seeded.stdout, seeded.stderr
        page.reload()

        # The live grid's own copy has come (it draws the charts again): then measure.
        expect(page.locator("#live-state")).to_have_text("live")
        expect(page.locator("#grid tbody tr")).to_have_count(40)
        charts = page.locator("#charts figure.lesson-chart")
        expect(charts).to_have_count(2)
        labels = charts.first.locator(".chart-label")
        expect(labels.first).to_contain_text("1. Run a container")  # and its <title>, the same
        width = page.evaluate("document.querySelector('#charts').getBoundingClientRect().width")
        for i in range(2):
            box = charts.nth(i).bounding_box()
            assert box["width"] >= width - 2, (box, width)  # full width, one under the other
        hand = page.locator("#grid tr", has_text="learner07").locator("button.hand img")
        expect(hand).to_be_visible()
        assert page.evaluate("document.scrollingElement.scrollWidth <= window.innerWidth")
        save_screenshot(page, "class-of-40.png", full_page=True)
    finally:
        context.close()
