"""Accounts for the browser tests: a learner signs up as anyone would."""
from playwright.sync_api import expect

PASSWORD = "a-long-pass-phrase-42"


def sign_up(page, url: str, name: str) -> None:
    """Sign up as `name` in the page and land on the dashboard with its lessons."""
    page.goto(url + "/accounts/signup/")
    page.fill("input[name=username]", name)
    page.fill("input[name=password1]", PASSWORD)
    page.fill("input[name=password2]", PASSWORD)
    page.click("main button[type=submit]")  # not the header's Log out of a guest
    expect(page.locator("#dashboard")).to_be_visible()
    expect(page.get_by_text("Run your first containers")).to_be_visible()
