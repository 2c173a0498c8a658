"""The shareable report: one self-contained HTML file and its JSON, for an analysis or a timeline."""

from __future__ import annotations

import hashlib
import json
import os
import re
from datetime import datetime, timezone
from pathlib import Path

import pytest

from emotion_llama import __version__
from emotion_llama.analysis import AnalysisOptions
from emotion_llama.vocab import GenerationSettings

ROOT = Path(__file__).resolve().parents[1]
TINY_WEIGHTS_FILE = ROOT / "emotion_llama" / "weights" / "tiny" / "model.safetensors"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run"]
HOSTILE = "<script>alert(1)</script>"
OPTIONS = AnalysisOptions(task="reason", generation=GenerationSettings(do_sample=False, max_new_tokens=16))


@pytest.fixture(scope="module")
def engine():
    from emotion_llama.pipeline import load_engine

    return load_engine(device="cpu")


@pytest.fixture(scope="module")
def report(engine, tmp_path_factory):
    """A real analysis of an example clip, with a hostile subtitle, written as a report."""
    from emotion_llama.report import write_report

    analysis = engine.analyze(ROOT / "examples" / "angry.mp4", subtitle=f"Enough {HOSTILE} I've had it!",
                              options=OPTIONS)
    html_path, json_path = write_report(tmp_path_factory.mktemp("report") / "angry.html", analysis, OPTIONS,
                                        clip="angry.mp4")
    return analysis, html_path, json_path


def test_report_shows_the_label_chart_heatmap_and_reasoning(report):
    analysis, html_path, json_path = report
    page = html_path.read_text(encoding="utf-8")
    assert html_path.name == "angry.html" and json_path.name == "angry.json"
    assert f"<b>{analysis.label}</b>" in page
    # The bar chart: one bar per label, the best one drawn darker.
    chart = page[page.index("<svg"): page.index("</svg>")]
    assert all(f">{label}</text>" in chart for label in analysis.probabilities)
    assert chart.count('fill="#2f5d8a"') == 1
    assert page.count('src="data:image/jpeg;base64,') == 2  # the frame and its heatmap
    assert analysis.answer and analysis.answer.split()[0] in page
    assert analysis.task == "reason" and "Reasoning (task: reason)" in page


def test_report_json_carries_the_analysis_and_its_provenance(report):
    analysis, _, json_path = report
    record = json.loads(json_path.read_text(encoding="utf-8"))
    assert record["analysis"]["label"] == analysis.label
    assert record["analysis"]["probabilities"] == pytest.approx(analysis.probabilities)
    facts = record["provenance"]
    assert facts["weights_sha256"] == hashlib.sha256(TINY_WEIGHTS_FILE.read_bytes()).hexdigest()
    assert facts["model"] == "tiny" and facts["code"]["version"] == __version__
    assert facts["labels"] == list(OPTIONS.labels)
    assert facts["settings"]["task"] == "reason" and facts["settings"]["generation"]["max_new_tokens"] == 16
    assert facts["settings"]["limits"]["max_seconds"] > 0
    created = datetime.fromisoformat(facts["created"])
    assert created.utcoffset().total_seconds() == 0
    assert abs((datetime.now(timezone.utc) - created).total_seconds()) < 600
    assert facts["weights_sha256"] in html_text(report)


def html_text(report) -> str:
    return report[1].read_text(encoding="utf-8")


def test_a_hostile_subtitle_is_shown_escaped(report):
    page = html_text(report)
    assert "<script" not in page.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "https://" not in page and "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")


def test_timeline_report_draws_a_line_per_label_and_a_band_per_segment(engine, tmp_path):
    from emotion_llama.report import write_report

    labels = ["calm", f"<b>{HOSTILE}</b>", "sad"]
    probabilities = [(0.7, 0.2, 0.1), (0.2, 0.6, 0.2), (0.1, 0.3, 0.6), (0.5, 0.4, 0.1)]
    segments = [{"start": 2.5 * i, "end": 2.5 * (i + 1), "label": labels[max(range(3), key=p.__getitem__)],
                 "probabilities": dict(zip(labels, p, strict=True)), "modality_attention": {}, "subtitle": HOSTILE}
                for i, p in enumerate(probabilities)]
    timeline = {"segments": segments, "labels": labels, "duration": 10.0, "warnings": [HOSTILE]}
    html_path, json_path = write_report(tmp_path / "timeline", timeline, engine=engine.info, clip="talk.mp4")
    page = html_path.read_text(encoding="utf-8")
    assert "<script" not in page.lower() and "&lt;script&gt;" in page
    chart = page[page.index("<svg"): page.index("</svg>")]
    assert chart.count("<polyline") == len(labels)
    assert len(re.findall(r'<rect [^>]*fill="#', chart)) == len(segments)
    assert page.count("<tr><td>") == len(segments)
    record = json.loads(json_path.read_text(encoding="utf-8"))
    assert record["kind"] == "timeline" and record["timeline"]["segments"][1]["label"] == labels[1]
    assert record["provenance"]["weights_sha256"] == engine.info["weights_sha256"]


def test_the_random_model_says_so_instead_of_a_hash(monkeypatch, tmp_path):
    from emotion_llama import pipeline

    monkeypatch.setattr(pipeline, "TINY_WEIGHTS", tmp_path / "absent")
    monkeypatch.delenv("EMOTION_LLAMA_WEIGHTS", raising=False)
    assert pipeline.load_engine(device="cpu").info["weights_sha256"] == "random"


def test_cli_writes_the_report_beside_its_json(tmp_path, capsys):
    from emotion_llama import cli

    assert cli.main(["analyze", str(ROOT / "examples" / "sad.mp4"), "--no-explain", "--max-new-tokens", "4",
                     "--report", str(tmp_path / "sad")]) == 0
    record = json.loads((tmp_path / "sad.json").read_text(encoding="utf-8"))
    assert record["clip"] == "sad.mp4" and record["provenance"]["settings"]["explain"] is False
    page = (tmp_path / "sad.html").read_text(encoding="utf-8")
    assert f"<b>{record['analysis']['label']}</b>" in page and "data:image/jpeg" in page
    assert "sad.html" in capsys.readouterr().err


@pytest.mark.skipif(not CHROMIUM.is_file(), reason="Debian chromium is not installed at /usr/bin/chromium "
                                                    "(apt-get install -y chromium)")
def test_the_report_opens_from_disk_and_loads_nothing_else(report, tmp_path):
    playwright_api = pytest.importorskip("playwright.sync_api")
    _, html_path, _ = report
    url = html_path.as_uri()
    screenshots = Path(os.environ.get("EMOTION_LLAMA_SCREENSHOTS") or tmp_path)
    screenshots.mkdir(parents=True, exist_ok=True)
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1100, "height": 900})
        requested: list[str] = []
        page.on("request", lambda request: requested.append(request.url))
        dialogs: list[str] = []
        page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
        page.goto(url)
        page.wait_for_load_state("load")
        shown = page.eval_on_selector_all("img", "images => images.map(i => i.complete && i.naturalWidth > 0)")
        page.screenshot(path=str(screenshots / "report.png"), full_page=True)
        browser.close()
    assert [u for u in requested if u != url and not u.startswith("data:")] == []
    assert shown == [True, True]  # both pictures decoded from their data: URLs
    assert dialogs == []  # the hostile subtitle's script never ran
