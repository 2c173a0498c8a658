"""The page's Timeline tab and ``/timeline``, through their handlers: the chart, segments
that open into an analysis, the report, and the video kept only for its time-to-live."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from emotion_llama.cache import ClipCache
from emotion_llama.pipeline import load_engine
from emotion_llama.ui import handlers, timelines
from emotion_llama.ui.sessions import ConversationStore
from emotion_llama.ui.uploads import UploadStore

ROOT = Path(__file__).resolve().parents[1]
CLIP = ROOT / "examples" / "angry.mp4"
NO_PROGRESS = {"progress": lambda *a, **k: None}


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def shipped():
    return load_engine()


@pytest.fixture
def page(shipped, tmp_path):
    """A demo with the shipped model, an upload of ``CLIP`` and a clock for the holds."""
    clock = Clock()
    shipped.cache = ClipCache()
    demo = handlers.Demo(shipped, UploadStore(tmp_path / "uploads", clock=clock),
                         ConversationStore(ttl=600, clock=clock))
    upload = tmp_path / "uploads" / "0a1b" / CLIP.name
    upload.parent.mkdir(parents=True)
    shutil.copy(CLIP, upload)
    return demo, upload, clock


def build(demo, upload) -> tuple:
    views = list(timelines.build(demo, str(upload), "merr", None, "peak", [], False, None, **NO_PROGRESS))
    return timelines.TimelineView(*views[-1])


def test_a_timeline_shows_its_chart_and_segments_and_each_segment_opens(page):
    demo, upload, _ = page
    view = build(demo, upload)
    segments = view.state["timeline"]["segments"]
    assert segments and segments[0]["start"] == 0 and abs(segments[-1]["end"] - view.state["timeline"]["duration"]) < 0.05
    assert view.chart.count("<polyline") == 9  # one line per MERR label
    assert view.chart.count("<rect") >= len(segments)  # the band: one stretch per segment
    assert [value for _, value in view.segment["choices"]] == list(range(len(segments)))
    assert view.report.startswith('<a href="data:text/html;base64,')
    assert upload.exists(), "the video is kept while its segments may be opened"
    overlay, label, _answer = list(timelines.open_segment(demo, view.state, 0, "emotion", 0.0, 8, **NO_PROGRESS))[-1]
    assert overlay.startswith('<img src="data:image/jpeg;base64,')
    assert max(label, key=label.get) == segments[0]["label"]  # the segment's label, scored again
    reasoning = list(timelines.open_segment(demo, view.state, 0, "reason", 0.0, 24, **NO_PROGRESS))[-1][2]
    assert len(reasoning.split()) >= 3


def test_the_video_is_deleted_when_its_time_is_up_and_a_late_visitor_is_told(page):
    demo, upload, clock = page
    view = build(demo, upload)
    clock.now = 599
    list(timelines.open_segment(demo, view.state, 0, "emotion", 0.0, 4, **NO_PROGRESS))  # renews the hold
    clock.now = 1100
    assert demo.store.sweep() == 0 and upload.exists()
    clock.now = 1200
    assert demo.store.sweep() == 1 and not upload.exists()
    with pytest.raises(Exception, match="no longer kept.*10 minutes.*upload it again"):
        list(timelines.open_segment(demo, view.state, 0, "emotion", 0.0, 4, **NO_PROGRESS))


def test_at_most_max_held_videos_are_kept(tmp_path):
    store = UploadStore(tmp_path, max_held=2)
    files = []
    for name in "abc":
        path = tmp_path / name / "clip.mp4"
        path.parent.mkdir()
        path.write_bytes(name.encode() * 100)
        store.hold(str(path), 600)
        files.append(path)
    assert [f.exists() for f in files] == [False, True, True]  # the oldest hold was let go


def test_the_api_returns_the_documented_json_and_keeps_nothing(page):
    demo, upload, _ = page
    result = timelines.timeline_api(demo, str(upload), "merr")
    assert {"segments", "duration", "labels", "label_seconds", "segmentation", "warnings"} <= set(result)
    assert {"start", "end", "label", "probabilities", "modality_attention", "subtitle"} <= set(result["segments"][0])
    assert not upload.exists(), "/timeline keeps no copy of the video"


@pytest.mark.parametrize(("index", "message"), [(None, "pick one"), (99, "pick one"), (-1, "pick one")])
def test_a_bad_segment_is_refused(page, index, message):
    demo, upload, _ = page
    view = build(demo, upload)
    with pytest.raises(Exception, match=message):
        list(timelines.open_segment(demo, view.state, index, "emotion", 0.0, 4, **NO_PROGRESS))
    with pytest.raises(Exception, match="build the timeline first"):
        list(timelines.open_segment(demo, None, 0, "emotion", 0.0, 4, **NO_PROGRESS))


def test_a_person_missing_from_a_segment_falls_back_with_a_warning(shipped):
    from emotion_llama.prepare import PrepareOptions
    from emotion_llama.timeline import TimelineOptions, build_timeline

    timeline = build_timeline(shipped, CLIP, TimelineOptions(prepare=PrepareOptions(person=1)))
    assert timeline.segments and all(any("Person 2 is not seen" in w for w in s.warnings) for s in timeline.segments)
