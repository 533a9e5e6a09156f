"""A new lesson in a real JupyterLab (Chromium, Playwright): Run All, then an
exercise done the way a student does it.

The committed notebooks/08_the_primitives.ipynb (stubs in its exercise
cells) is opened in JupyterLab; "Run All Cells" runs the lesson, whose
outputs appear, and stops at the first checker, which fails on the stub
with an AssertionError. The reference solution is then typed into the
exercise cell, and that cell and its checker are run with Shift+Enter: the
checker prints "exercise 1: passed". Screenshots go to tests/artifacts/.
"""
import os
import shutil
import time

import pytest

from _browser import (ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, accept_kernel_dialog,  # noqa: F401
                      jupyterlab, kernel_activity)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(170)]

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LESSON = "08_the_primitives.ipynb"


def _lesson():
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        "_notebooks_build", os.path.join(ROOT, "notebooks", "_build.py"))
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    cells = build.NOTEBOOKS[LESSON]
    index = {c.metadata["tags"][0]: i for i, c in enumerate(cells) if c.metadata.get("tags")}
    return build.LESSONS[LESSON], index


def test_a_new_lesson_runs_and_its_exercise_checks_itself_in_jupyterlab(jupyterlab, tmp_path):
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import sync_playwright
    base, token, root = jupyterlab
    shutil.copy(os.path.join(ROOT, "notebooks", LESSON), root / LESSON)
    lesson, index = _lesson()
    os.makedirs(ARTIFACTS, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=CHROMIUM, headless=True,
            args=CHROMIUM_ARGS, viewport={"width": 1280, "height": 1000})
        page = browser.pages[0] if browser.pages else browser.new_page()
        try:
            page.goto(f"{base}/lab/tree/{LESSON}?token={token}")
            cells = page.locator(".jp-Notebook .jp-Cell")
            cells.first.wait_for(timeout=60_000)
            page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle'], "
                         "#jp-main-statusbar :text('Idle')").first.wait_for(timeout=60_000)

            def output_of(tag):
                return cells.nth(index[tag]).locator(".jp-OutputArea")

            # Run All; again only if the kernel never took the first cell
            # (JupyterLab can show "Idle" before the session is wired).
            first_prompt = cells.nth(1).locator(".jp-InputArea-prompt")
            deadline = time.monotonic() + 90
            while (kernel_activity(page) or ("",))[0] != "idle":
                accept_kernel_dialog(page)   # the server has the notebook's kernel idle first
                if time.monotonic() > deadline:
                    raise AssertionError("the notebook's kernel was not idle within 90 s")
                page.wait_for_timeout(250)
            while time.monotonic() < deadline:
                accept_kernel_dialog(page)       # "Select Kernel" may come late
                if (first_prompt.text_content() or "").strip() not in ("[ ]:", "[ ]"):
                    break
                try:   # a dialog that opens between the check and the click takes it
                    page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click(timeout=5000)
                    page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click(
                        timeout=5000)
                except PlaywrightTimeout:
                    page.keyboard.press("Escape")   # close a half-open menu; try again
                    continue
                page.wait_for_timeout(5000)
            else:
                raise AssertionError("the kernel never took Run All in 90 s")
            # The lesson runs, and the first checker fails on the stub.
            output_of("check-1").get_by_text("AssertionError").first.wait_for(state="attached", timeout=90_000)
            assert "at most inside at once: 2" in output_of("semaphore").text_content()
            assert "'w1 goes'" in output_of("event").text_content()
            assert "AssertionError: 3 runner(s) ran before the signal" in \
                output_of("check-1").text_content()

            # The student's turn: the solution into the exercise cell, then run it and its checker.
            editor = cells.nth(index["exercise-1"]).locator(".cm-content")
            editor.click()
            page.keyboard.press("Control+a")
            page.keyboard.insert_text(lesson.EXERCISES[0].source("solution"))
            page.keyboard.press("Shift+Enter")        # runs the exercise, moves to the checker
            page.keyboard.press("Shift+Enter")        # runs the checker
            output_of("check-1").get_by_text("exercise 1: passed").wait_for(state="attached", timeout=30_000)
            assert "AssertionError" not in output_of("check-1").text_content()
            cells.nth(index["check-1"]).scroll_into_view_if_needed()
            page.screenshot(path=os.path.join(ARTIFACTS, "lesson-08-exercise-passed.png"))
        except Exception as failure:
            page.screenshot(path=os.path.join(ARTIFACTS, "lesson-08-failure.png"))
            # Run All stops at the first cell that raises: say where each cell got to.
            states = []
            for i in range(cells.count()):
                prompt = cells.nth(i).locator(".jp-InputArea-prompt").inner_text().strip()
                output = cells.nth(i).locator(".jp-OutputArea").all_inner_texts()
                states.append(f"cell {i} {prompt} {' '.join(output)[-300:]!r}")
            failure.add_note("the notebook when it failed:\n" + "\n".join(states))
            raise
        finally:
            browser.close()
