"""The emotion timeline: a whole video cut into segments, each with its own label.

The main case joins three example clips of different emotions, with a subtitle file timing
what each person says: the timeline must find the three parts and the label of each.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np
import pytest
from media_factory import make_test_pattern_clip, media, run_ffmpeg  # noqa: F401 - fixture

from emotion_llama.analysis import AnalysisOptions, Event
from emotion_llama.clip import SAMPLE_RATE
from emotion_llama.segments import SegmentationSettings, Span, cover, parse_cues, speech_turns, text_between
from emotion_llama.timeline import (
    Segment,
    Timeline,
    TimelineBudgetError,
    TimelineOptions,
    build_timeline,
    segment_clip,
    timeline_iter,
)

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
# Three clips the shipped tiny model labels right on their own, of three different labels.
JOINED = ("sad.mp4", "angry.mp4", "surprise.mp4")


@pytest.fixture(scope="module")
def engine():
    from emotion_llama.pipeline import load_engine

    return load_engine(device="cpu")


@pytest.fixture(scope="module")
def joined(tmp_path_factory) -> tuple[Path, list[float], list[str], list[str]]:
    """The three clips one after the other, and an .srt beside them timing each one's words:
    (video, the join times, the true labels, the subtitles)."""
    examples = {entry["clip"]: entry for entry in json.loads((EXAMPLES / "examples.json").read_text())}
    folder = tmp_path_factory.mktemp("joined")
    video = folder / "three_people.mp4"
    inputs = [arg for name in JOINED for arg in ("-i", str(EXAMPLES / name))]
    streams = "".join(f"[{i}:v][{i}:a]" for i in range(len(JOINED)))
    run_ffmpeg(*inputs, "-filter_complex", f"{streams}concat=n={len(JOINED)}:v=1:a=1[v][a]", "-map", "[v]",
               "-map", "[a]", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac",
               str(video))
    ends = np.cumsum([_video_seconds(EXAMPLES / name) for name in JOINED]).tolist()
    starts = [0.0, *ends[:-1]]
    words = [examples[name]["subtitle"] for name in JOINED]
    cues = [f"{i + 1}\n{_srt_time(s)} --> {_srt_time(e)}\n{w}\n" for i, (s, e, w) in enumerate(zip(starts, ends, words))]
    video.with_suffix(".srt").write_text("\n".join(cues))
    return video, ends[:-1], [examples[name]["label"] for name in JOINED], words


def _video_seconds(path: Path) -> float:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return float(stream.duration * stream.time_base)


def _srt_time(seconds: float) -> str:
    millis = round(seconds * 1000)
    return f"{millis // 3_600_000:02d}:{millis // 60_000 % 60:02d}:{millis // 1000 % 60:02d},{millis % 1000:03d}"


@pytest.fixture(scope="module")
def joined_timeline(engine, joined) -> tuple[Timeline, list]:
    """The timeline of the joined video, and everything ``timeline_iter`` yielded on the way."""
    items = list(timeline_iter(engine, joined[0]))
    return items[-1], items


def test_three_joined_clips_give_three_segments_with_their_labels_in_order(joined, joined_timeline):
    _video, joins, labels, words = joined
    timeline, _ = joined_timeline
    assert [segment.label for segment in timeline.segments] == labels
    boundaries = [segment.start for segment in timeline.segments[1:]]
    assert np.allclose(boundaries, joins, atol=0.5), (boundaries, joins)
    assert [segment.subtitle for segment in timeline.segments] == words
    assert timeline.segmentation == "subtitles" and timeline.subtitle_file == "three_people.srt"
    assert timeline.segments[0].start == 0 and timeline.segments[-1].end == pytest.approx(timeline.duration)
    assert timeline.duration == pytest.approx(sum(_video_seconds(EXAMPLES / name) for name in JOINED), abs=0.05)


def test_each_segment_records_what_the_page_shows(joined_timeline):
    timeline, _ = joined_timeline
    document = json.loads(json.dumps(timeline.to_json()))
    assert {"segments", "duration", "labels", "warnings", "label_seconds"} <= set(document)
    for segment in document["segments"]:
        assert sum(segment["probabilities"].values()) == pytest.approx(1, abs=1e-6)
        assert set(segment["probabilities"]) == set(document["labels"])
        assert sum(segment["modality_attention"].values()) == pytest.approx(1, abs=1e-4)
        assert segment["modalities_present"] == {"global": True, "face": True, "temporal": True, "audio": True,
                                                 "subtitle": True}
        assert segment["start"] <= segment["peak_frame_time"] <= segment["end"]
        assert segment["face_coverage"] > 0.5 and segment["subtitle"]["source"] == "sidecar:three_people.srt"
    assert sum(document["label_seconds"].values()) == pytest.approx(document["duration"], abs=1e-3)


def test_progress_comes_before_each_segment_and_the_timeline_last(joined_timeline):
    timeline, items = joined_timeline
    plans = [item for item in items if isinstance(item, Event) and item.kind == "plan"]
    assert [int(plan.value) for plan in plans] == [len(timeline.segments)]
    assert [item for item in items if isinstance(item, Segment)] == timeline.segments
    assert items.index(plans[0]) < items.index(timeline.segments[0])


def test_the_csv_has_one_row_per_segment(engine, joined, tmp_path):
    out = tmp_path / "timeline.csv"
    result = subprocess.run([sys.executable, "-m", "emotion_llama", "timeline", str(joined[0]), "--csv", "--out",
                             str(out), "--no-progress"], capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert [row["label"] for row in rows] == joined[2]
    assert [float(row["start"]) for row in rows[1:]] == pytest.approx(joined[1], abs=0.5)
    assert all(float(row[f"p_{row['label']}"]) == float(row["confidence"]) for row in rows)


def test_a_segment_is_decoded_again_for_its_reasoning(engine, joined, joined_timeline):
    second = joined_timeline[0].segments[1]
    prepared = segment_clip(joined[0], second)
    assert prepared.analysed_window == pytest.approx((second.start, second.end))
    assert prepared.subtitle.text == joined[3][1]
    assert prepared.audio.size == pytest.approx((second.end - second.start) * SAMPLE_RATE, abs=2)
    analysis = engine.analyze(prepared, options=AnalysisOptions(task="reason"))
    assert analysis.label == second.label and analysis.answer


@pytest.mark.parametrize("sound", ["none", "steady tone"])
def test_a_video_without_speech_is_covered_by_fixed_windows(engine, tmp_path, sound):
    video = make_test_pattern_clip(tmp_path / "pattern.mp4", seconds=10.0, audio=sound != "none")
    timeline = build_timeline(engine, video)
    spans = [(segment.start, segment.end) for segment in timeline.segments]
    assert timeline.segmentation == "fixed windows" and not any(s.speech for s in timeline.segments)
    assert spans[0][0] == 0 and spans[-1][1] == pytest.approx(10.0, abs=0.05)
    assert all(a[1] == b[0] for a, b in itertools.pairwise(spans))
    assert all(2.0 <= end - start <= 8.0 for start, end in spans)
    assert all(segment.modalities_present["audio"] == (sound != "none") for segment in timeline.segments)


def test_the_duration_cap_holds(engine, media, monkeypatch):
    monkeypatch.setenv("EMOTION_LLAMA_MAX_TIMELINE_SECONDS", "12")
    timeline = build_timeline(engine, media["long_10min.mp4"])
    assert timeline.duration == 12 and timeline.segments[-1].end == pytest.approx(12)
    assert timeline.video_duration == pytest.approx(600, abs=1)
    assert any("EMOTION_LLAMA_MAX_TIMELINE_SECONDS" in warning for warning in timeline.warnings)


def test_a_timeline_over_its_time_budget_keeps_the_segments_done(engine, tmp_path, monkeypatch):
    import emotion_llama.timeline as timeline_module

    real_score = timeline_module.score_segment

    def slow_score(*args, **kwargs):
        time.sleep(3.0)
        return real_score(*args, **kwargs)

    monkeypatch.setattr(timeline_module, "score_segment", slow_score)
    video = make_test_pattern_clip(tmp_path / "pattern.mp4", seconds=20.0, audio=False)
    timeline = build_timeline(engine, video, TimelineOptions(budget_s=6.0))
    assert 1 <= len(timeline.segments) < 5 and timeline.segments[-1].end < timeline.duration
    assert any("EMOTION_LLAMA_TIMELINE_SECONDS" in w and "Only the first" in w for w in timeline.warnings)
    with pytest.raises(TimelineBudgetError, match="EMOTION_LLAMA_TIMELINE_SECONDS"):  # nothing done: an error
        build_timeline(engine, video, TimelineOptions(budget_s=1e-6))


def test_a_header_that_claims_more_than_the_picture_holds_ends_the_timeline_at_the_picture(engine, media):
    path = media["truncated_faststart.mp4"]  # says 4 s, holds about half of that
    timeline = build_timeline(engine, path)
    assert timeline.video_duration == pytest.approx(4.0, abs=0.1)
    assert timeline.duration < 3.0 and timeline.segments[-1].end == pytest.approx(timeline.duration)
    assert any("picture stops" in warning for warning in timeline.warnings)


# --- segmentation on its own ------------------------------------------------------------------


def _speech_like(seconds: float, turns: list[tuple[float, float]], seed: int = 0) -> np.ndarray:
    """Quiet noise with a voiced, syllable-modulated tone during ``turns``."""
    rng = np.random.default_rng(seed)
    audio = 0.003 * rng.standard_normal(round(seconds * SAMPLE_RATE))
    for start, end in turns:
        t = np.arange(round((end - start) * SAMPLE_RATE)) / SAMPLE_RATE
        first = round(start * SAMPLE_RATE)
        audio[first : first + t.size] += 0.2 * np.sin(2 * np.pi * 180 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t))
    return audio.astype(np.float32)


def test_voice_activity_finds_the_turns_and_bridges_short_pauses():
    audio = _speech_like(30.0, [(2.0, 4.5), (4.7, 6.0), (12.0, 19.0), (25.0, 27.0)])
    turns = speech_turns(audio)
    assert np.allclose(turns, [(2.0, 6.0), (12.0, 19.0), (25.0, 27.0)], atol=0.1), turns


def test_voice_activity_follows_a_noise_floor_that_changes():
    audio = _speech_like(40.0, [(5.0, 8.0), (30.0, 33.0)])
    audio[20 * SAMPLE_RATE :] *= 4  # a louder room from 20 s on: its noise must not count as speech
    assert np.allclose(speech_turns(audio), [(5.0, 8.0), (30.0, 33.0)], atol=0.1)


@pytest.mark.parametrize("seed", range(20))
def test_segments_cover_the_video_and_last_two_to_eight_seconds(seed):
    rng = np.random.default_rng(seed)
    duration = float(rng.uniform(2.5, 120))
    edges = np.sort(rng.uniform(0, duration, 2 * int(rng.integers(0, 12))))
    turns = list(zip(edges[::2].tolist(), edges[1::2].tolist()))
    spans = cover(duration, turns)
    assert spans[0].start == 0 and spans[-1].end == pytest.approx(duration)
    assert all(a.end == pytest.approx(b.start) for a, b in itertools.pairwise(spans))
    assert all(2.0 - 1e-9 <= span.length <= 8.0 + 1e-9 for span in spans), [span.length for span in spans]
    for start, end in turns:  # every segment where someone speaks is marked as speech
        assert all(s.speech for s in spans if min(s.end, end) - max(s.start, start) > 1e-6)


def test_a_video_shorter_than_a_segment_is_one_segment_and_settings_are_checked():
    assert cover(1.2, []) == [Span(0.0, 1.2, False)]
    with pytest.raises(ValueError, match="twice"):
        SegmentationSettings(min_segment_s=5.0, max_segment_s=8.0)


def test_srt_and_webvtt_cues_are_read_with_their_times():
    srt = "1\r\n00:01:02,500 --> 00:01:04,000\r\n<i>I just</i> want\r\nto cry.\r\n\r\n2\r\n01:00:00,000 --> 01:00:01,25\r\nNo.\r\n"
    vtt = "WEBVTT\n\nNOTE a comment\n\nintro\n00:02.000 --> 00:03.500 align:start\n<v Ann>Oh &amp; wow!</v>\n"
    assert [(c.start, c.end, c.text) for c in parse_cues(srt)] == [(62.5, 64.0, "I just want to cry."),
                                                                   (3600.0, 3601.25, "No.")]
    assert [(c.start, c.end, c.text) for c in parse_cues(vtt)] == [(2.0, 3.5, "Oh & wow!")]


def test_a_segment_has_the_words_of_the_cues_that_overlap_it():
    cues = parse_cues("1\n00:00:00,000 --> 00:00:03,000\nOne.\n\n2\n00:00:03,000 --> 00:00:06,000\nTwo.\n")
    assert text_between(cues, 0.0, 3.0) == "One."  # touching the next cue is not overlapping it
    assert text_between(cues, 2.0, 4.0) == "One. Two."
    assert text_between(cues, 6.5, 9.0) is None
