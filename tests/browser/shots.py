"""Screenshots of pages worth a look (the two-node lesson, the instructor grid).

Only when asked for: LAB_SCREENSHOT_DIR=<dir> saves them there (overwriting
the last ones), so a plain test run leaves no files behind. A failed page is
always shot (tests/browser/conftest.py).
"""
from __future__ import annotations

import os


def save_screenshot(page, name: str, full_page: bool = False) -> None:
    folder = os.environ.get("LAB_SCREENSHOT_DIR")
    if not folder:
        return
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, name)
    page.screenshot(path=path, full_page=full_page)
    print(f"screenshot: {path}")
