"""The page in a real browser: upload a clip, analyse it, chat about it.

Headless Debian Chromium driven by Playwright's sync API (never a downloaded browser).
Screenshots go to ``$EMOTION_LLAMA_SCREENSHOTS`` (default: the test's tmp folder).
"""

from __future__ import annotations

import json
import os
import re
import socket
import sys
from pathlib import Path

import pytest

from emotion_llama.vocab import MER2023_LABELS, MERR_LABELS

CHROMIUM = Path("/usr/bin/chromium")
ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "happy.mp4"
SECOND_EXAMPLE = json.loads((ROOT / "examples" / "examples.json").read_text())[1]
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run",
                 # A synthetic camera and microphone, allowed without a prompt, for the webcam test.
                 "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]
TIMEOUT_MS = 120_000

pytestmark = pytest.mark.skipif(not CHROMIUM.is_file(), reason="Debian chromium is not installed at /usr/bin/chromium "
                                                              "(apt-get install -y chromium)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def url(gradio_temp):
    sys.path.insert(0, str(ROOT))
    import app
    from emotion_llama.pipeline import load_engine

    demo = app.build_demo(load_engine())
    _, local_url, _ = app.launch(demo, prevent_thread_lock=True, server_port=free_port(), quiet=True)
    yield local_url
    demo.close()


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory) -> Path:
    folder = Path(os.environ.get("EMOTION_LLAMA_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def page(url):
    playwright_api = pytest.importorskip("playwright.sync_api")
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        context = browser.new_context(viewport={"width": 1400, "height": 1000}, permissions=["camera", "microphone"])
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(url)
        page.wait_for_selector("#analyze-button")
        yield page
        browser.close()


@pytest.fixture(autouse=True)
def screenshot_on_failure(request, page, screenshots):
    failed_before = request.session.testsfailed
    yield
    if request.session.testsfailed > failed_before:
        page.screenshot(path=str(screenshots / f"failed-{request.node.name}.png"), full_page=True)


def wait_for_result(page, selector: str) -> None:
    """Wait for ``selector`` or an error toast; an error fails the test with its message."""
    page.wait_for_selector(f"{selector}, .toast-body")
    assert page.locator(".toast-body").all_inner_texts() == []


def set_max_new_tokens(page, tokens: int) -> None:
    page.get_by_text("Advanced").click()
    box = page.locator("#max-new-tokens input[type=number]")
    box.fill(str(tokens))
    box.press("Enter")


def test_upload_analyze_and_chat(page, screenshots):
    banner = page.locator("#engine-banner").inner_text()
    assert "tiny" in banner.lower() or "official" in banner.lower()

    page.locator("#video-input input[type=file]").set_input_files(str(EXAMPLE))
    page.wait_for_selector("#video-input video")
    page.get_by_label("MER2023: 6 labels").check()
    set_max_new_tokens(page, 12)
    page.locator("#analyze-button").click()

    label = page.locator("#probabilities [data-testid=label-output-value]")
    wait_for_result(page, "#probabilities [data-testid=label-output-value]")
    page.wait_for_selector("#attention svg .mark-rect path")
    page.wait_for_selector("#faces img")
    assert label.inner_text().strip() in MER2023_LABELS
    rows = page.locator("#probabilities dt").all_inner_texts()
    assert sorted(rows) == sorted(MER2023_LABELS)
    percents = [int(text.rstrip("%")) for text in page.locator("#probabilities dd").all_inner_texts()]
    assert abs(sum(percents) - 100) <= len(percents)  # each rounded to a whole percent
    assert page.locator("#attention svg .mark-rect path").count() >= 4  # frame, face, face seq., audio ...
    assert page.locator(".toast-body").count() == 0, "no error was shown"
    page.screenshot(path=str(screenshots / "analysis.png"), full_page=True)

    page.get_by_role("tab", name="Chat").click()
    page.locator("#ask-emotion").click()
    wait_for_result(page, "#chatbot [data-testid=bot]")
    page.locator("#chat-message textarea").fill("Why do you think so?")
    page.locator("#chat-message textarea").press("Enter")  # queued behind the first reply if it still streams
    page.wait_for_function("document.querySelectorAll('#chatbot [data-testid=bot]').length >= 2")
    users = page.locator("#chatbot [data-testid=user]").all_inner_texts()
    assert users[0].startswith("[emotion]") and "Why do you think so?" in users[1]
    page.screenshot(path=str(screenshots / "chat.png"), full_page=True)

    page.locator("#chat-reset").click()
    page.wait_for_function("document.querySelectorAll('#chatbot [data-testid=bot]').length == 0")


def test_an_example_fills_the_form_and_analyses(page, screenshots):
    page.get_by_role("tab", name="Analysis").click()
    for attempt in range(2):  # the second click reuses Gradio's cached copy of the example clip
        page.get_by_test_id("dataset-cell-1-1").click()
        page.wait_for_function("document.querySelector('#subtitle textarea').value === "
                               + json.dumps(SECOND_EXAMPLE["subtitle"]))
        page.wait_for_selector("#video-input video")
        # The label of the run before is marked, so only this run's label (a new element) counts.
        page.evaluate("document.querySelectorAll('#probabilities [data-testid=label-output-value]')"
                      ".forEach(node => node.dataset.stale = '1')")
        page.locator("#analyze-button").click()
        wait_for_result(page, "#probabilities [data-testid=label-output-value]:not([data-stale])")
        # The shipped model gets every example right (tests/test_shipped_model.py).
        assert page.locator("#probabilities [data-testid=label-output-value]").inner_text().strip() == \
            SECOND_EXAMPLE["label"]
        assert page.locator(".toast-body").count() == 0
        assert "typed by you" in page.locator("#subtitle-used").inner_text()
    page.screenshot(path=str(screenshots / "example.png"), full_page=True)


def test_a_text_file_shows_a_plain_error(page, tmp_path, screenshots):
    page.get_by_role("tab", name="Analysis").click()
    fake = tmp_path / "notes.mp4"
    fake.write_text("not a video at all\n")
    page.locator("#video-input button[aria-label='Clear']").first.click()
    page.locator("#video-input input[type=file]").set_input_files(str(fake))
    page.locator("#analyze-button").click()
    toast = page.locator(".toast-body", has_text="not a video")
    toast.wait_for()
    assert "notes.mp4" in toast.inner_text() and "Traceback" not in page.content()
    assert page.locator("#probabilities [data-testid=label-output-value]").count() == 0, "no stale result"
    page.screenshot(path=str(screenshots / "error.png"), full_page=False)
    for close in page.locator(".toast-close").all():
        close.click()
    page.wait_for_selector(".toast-body", state="detached")


def record_from_webcam(page, seconds: float) -> bool:
    """Record from Chromium's fake camera; True when the browser can play the recording back."""
    for close in page.locator(".toast-close").all():
        close.click()
    page.locator("#video-input button[aria-label='Clear']").first.click()
    page.locator("#video-input button[aria-label='Capture from camera']").click()
    page.get_by_text("Click to Access Webcam").click()
    page.locator("#video-input button[aria-label='start recording']").click()
    page.wait_for_timeout(seconds * 1000)
    page.locator("#video-input button.capture-button").first.click()
    page.wait_for_selector("#video-input video[src*='.webm']")
    playable = "document.querySelector(\"#video-input video[src*='.webm']\").readyState >= 1"
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.wait_for_function(playable, timeout=15_000)
    except PlaywrightTimeout:
        return False
    return page.locator(".toast-body", has_text="not playable").count() == 0


def test_a_webcam_recording_is_analysed(page, screenshots):
    page.get_by_role("tab", name="Analysis").click()
    # Under load, headless Chromium's fake camera now and then writes a recording it cannot play itself.
    assert any(record_from_webcam(page, 2.5) for _ in range(3)), "the browser made no playable recording"
    page.locator("#analyze-button").click()
    wait_for_result(page, "#probabilities [data-testid=label-output-value]")
    assert "Inputs used" in page.locator("#notes").inner_text()
    page.screenshot(path=str(screenshots / "webcam.png"), full_page=True)


def test_nothing_of_a_visitor_is_left_on_the_server(page, gradio_temp, tmp_path, screenshots):
    """After a visitor's analysis and chat turn (and the webcam recordings above, some of them
    discarded), the server's temporary folder holds no copy of their clips (the one they
    replaced unused included) and no picture made from one."""
    import hashlib

    from media_factory import expressive_face, make_face_clip

    first = make_face_clip(tmp_path / "first_choice.mp4", expressive_face(0.2, 1.0), seconds=1.5, fps=10)
    clip = make_face_clip(tmp_path / "visitor.mp4", expressive_face(0.5, 1.5), seconds=2.0, fps=10)
    page.reload()  # a new visitor, with the upload source selected again
    page.wait_for_selector("#analyze-button")
    page.locator("#video-input input[type=file]").set_input_files(str(first))
    # Uploaded: the player plays the server's copy. (Cleared before that, the page never tells
    # the server of the file, and only the unused-upload sweep deletes it.)
    page.wait_for_selector("#video-input video[src*='first_choice.mp4']")
    page.locator("#video-input button[aria-label='Clear']").first.click()  # changed their mind
    page.locator("#video-input input[type=file]").set_input_files(str(clip))
    page.wait_for_selector("#video-input video")
    page.locator("#analyze-button").click()
    wait_for_result(page, "#overlay img")
    assert page.locator("#overlay img").get_attribute("src").startswith("data:image/jpeg;base64,")
    assert page.locator("#faces img").get_attribute("src").startswith("data:image/jpeg;base64,")
    page.get_by_role("tab", name="Chat").click()
    page.locator("#ask-emotion").click()
    wait_for_result(page, "#chatbot [data-testid=bot]")
    page.screenshot(path=str(screenshots / "visitor.png"), full_page=True)

    digests = {hashlib.sha256(path.read_bytes()).hexdigest() for path in (first, clip)}
    left = [path for path in gradio_temp.rglob("*") if path.is_file()]
    assert [p for p in left if hashlib.sha256(p.read_bytes()).hexdigest() in digests] == []
    assert [p for p in left if p.suffix.lower() in {".webm", ".png", ".jpg", ".jpeg", ".webp"}] == []


def test_the_second_person_is_picked_and_the_report_downloads(page, screenshots):
    """``examples/two_people.mp4``: both people are offered after a first analysis; picking the
    second and analysing again reads their face; the report downloads from inside the page."""
    page.reload()  # a new visitor
    page.wait_for_selector("#analyze-button")
    page.locator("#video-input input[type=file]").set_input_files(str(ROOT / "examples" / "two_people.mp4"))
    page.wait_for_selector("#video-input video")
    page.get_by_label("Recognise the emotion").check()
    page.locator("#analyze-button").click()
    wait_for_result(page, "#person input[type=radio]")
    options = page.locator("#person label").all_inner_texts()
    assert [text.split(" (")[0] for text in options] == ["Person 1", "Person 2"]
    assert page.locator("#people img").count() == 2
    first_faces = page.locator("#faces img").get_attribute("src")
    page.locator("#person label").nth(1).click()
    page.locator("#analyze-button").click()
    page.wait_for_function("(old) => { const img = document.querySelector('#faces img');"
                           " return img && img.getAttribute('src') !== old; }", arg=first_faces)
    assert page.locator("#person input[type=radio]").nth(1).is_checked()
    link = page.locator("#report-link")
    assert link.get_attribute("href").startswith("data:text/html;base64,")
    with page.expect_download() as download:
        link.click()
    saved = Path(download.value.path()).read_text(encoding="utf-8")
    assert "<svg" in saved and "data:image/jpeg;base64," in saved
    page.screenshot(path=str(screenshots / "two-people.png"), full_page=True)


def test_the_timeline_tab_charts_the_video_and_opens_a_segment(page, screenshots):
    page.reload()  # a new visitor
    page.wait_for_selector("#analyze-button")
    page.locator("#video-input input[type=file]").set_input_files(str(ROOT / "examples" / "ironic_angry.mp4"))
    page.wait_for_selector("#video-input video")
    page.get_by_role("tab", name="Timeline").click()
    page.locator("#timeline-button").click()
    page.wait_for_function("document.querySelectorAll('#timeline-chart svg polyline').length > 0"
                           " || document.querySelector('.toast-body') !== null")
    assert page.locator(".toast-body").all_inner_texts() == []
    assert page.locator("#timeline-chart svg polyline").count() == 9  # one line per MERR label
    assert re.match(r"\d+ segments? over", page.locator("#timeline-summary").inner_text())
    page.locator("#segment-show").click()
    wait_for_result(page, "#segment-overlay img")
    assert page.locator("#segment-label [data-testid=label-output-value]").inner_text().strip() in MERR_LABELS
    assert page.locator("#timeline-report a").get_attribute("href").startswith("data:text/html;base64,")
    page.screenshot(path=str(screenshots / "timeline.png"), full_page=True)
