"""No serious or critical accessibility problems on the pages people use most.

axe-core (vendored from npm, tests/browser/vendor/axe-core) runs in the real
page, the way browser extensions for accessibility audits run it: the home
page, a lesson page with its lab running, the learner's dashboard and the
instructor's classroom page with a learner in it. Colour contrast (WCAG AA)
is among its rules.
"""
from __future__ import annotations

from pathlib import Path

from playwright.sync_api import expect

from tests.browser.accounts import sign_up

AXE = Path(__file__).parent / "vendor" / "axe-core" / "axe.min.js"
RUN = """async () => {
  const result = await axe.run(document, {resultTypes: ["violations"]});
  return result.violations
    .filter((v) => v.impact === "serious" || v.impact === "critical")
    .map((v) => ({id: v.id, impact: v.impact, help: v.help,
                  where: v.nodes.slice(0, 4).map((n) => n.target.join(" ") + " | " +
                                                (n.failureSummary || "").replace(/\\s+/g, " ").slice(0, 160))}));
}"""


def serious(page) -> list:
    page.add_script_tag(content=AXE.read_text())
    return page.evaluate(RUN)


def test_main_pages_have_no_serious_accessibility_violations(browser, live_site):
    url = live_site.url
    contexts = [browser.new_context(viewport={"width": 1400, "height": 900}) for _ in range(2)]
    teacher, learner = (c.new_page() for c in contexts)
    found = {}
    try:
        teacher.goto(url + "/")
        found["home"] = serious(teacher)

        sign_up(teacher, url, "axel")
        assert live_site.manage("instructor", "axel").returncode == 0
        teacher.goto(url + "/classrooms/")
        teacher.fill("#id_name", "Accessible class")
        teacher.get_by_label("Run your first containers").check()
        teacher.click("#new-classroom button[type=submit]")
        code = teacher.locator("#join-code").inner_text()

        sign_up(learner, url, "ally")
        # Logged in: the link shows the class, Join joins and starts the lab (the class is on).
        learner.goto(url + f"/join/{code}/")
        learner.click("#join-button")
        expect(learner).to_have_url(url + "/lessons/first-containers/")
        expect(learner.locator("#lab")).to_have_attribute("data-state", "ready", timeout=90_000)
        learner.locator('.step[data-step="1"] .cmd-run').first.click()
        expect(learner.locator('.step[data-step="1"]')).to_have_attribute("data-state", "done",
                                                                         timeout=60_000)
        found["lesson"] = serious(learner)
        learner.goto(url + "/dashboard/")
        found["dashboard"] = serious(learner)

        teacher.reload()
        expect(teacher.locator("#grid tbody tr", has_text="ally")).to_be_visible()
        found["classroom"] = serious(teacher)
    finally:
        for context in contexts:
            context.close()
    report = "\n".join(f"{page}: {v['impact']} {v['id']}: {v['help']}\n    " + "\n    ".join(v["where"])
                       for page, problems in found.items() for v in problems)
    assert set(found) == {"home", "lesson", "dashboard", "classroom"}
    assert not any(found.values()), report
