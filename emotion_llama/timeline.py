"""An emotion timeline of a whole video: a label, its probabilities and where the model
looked, for every segment from start to end.

The video is read once, in order, with memory that does not grow with its length: the
sound track first (16 kHz mono, 10 minutes ~ 38 MB), which is cut into segments
(``segments.py``: speech turns or subtitle cues, fixed windows where nobody speaks), then
one forward pass over the picture that keeps only the sampled frames of the segment at
hand. Each finished segment is scored (label probabilities and the attention of the top
label's answer; nothing is generated, so a long video stays cheap) and dropped.

Costs are bounded before work as for single clips (``media.py``: file size, streams, frame
pixels, decoder threads), and two settings of ``limits.py`` bound a timeline: the seconds
it covers (``max_timeline_seconds``, read from the start; no header makes it read more)
and the seconds it may take (``timeline_seconds``; it stops there and keeps the segments
done, with a warning). A segment's reasoning is written on demand:
``engine.analyze(segment_clip(path, segment), options=AnalysisOptions(task="reason"))``.

``timeline_iter`` yields ``Event("stage", text)`` as stages start, one
``Event("plan", "<number of segments>")`` once the video is cut, each ``Segment`` when
scored, and the ``Timeline`` last.
"""

from __future__ import annotations

import csv
import io
import math
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from emotion_llama import limits
from emotion_llama import media as _media
from emotion_llama.analysis import AnalysisOptions, Event
from emotion_llama.clip import SAMPLE_RATE, PreparedClip, Subtitle
from emotion_llama.errors import ClipTooShortError, LimitError, NoSuchPersonError, TextTooLongError
from emotion_llama.explain import explain_answer
from emotion_llama.pipeline import Engine, answer_prompt
from emotion_llama.prepare import PrepareOptions, follow_faces, sample_positions
from emotion_llama.prompts import answer_pieces
from emotion_llama.segments import (
    DEFAULT_SEGMENTATION,
    Cue,
    SegmentationSettings,
    Span,
    cover,
    read_cues,
    speech_turns,
    text_between,
)
from emotion_llama.vocab import DEFAULT_FRAME, MERR_LABELS, frame_for


class TimelineBudgetError(LimitError):
    """A timeline took longer than ``timeline_seconds`` allows."""


@dataclass(frozen=True)
class TimelineOptions:
    """What a timeline scores and how much of the video it may read.

    ``max_seconds`` and ``budget_s`` default to ``limits.py``'s ``max_timeline_seconds`` and
    ``timeline_seconds``, read when the options are made.
    """

    labels: tuple[str, ...] = MERR_LABELS
    frame_choice: str = DEFAULT_FRAME
    leave_out: tuple[str, ...] = ()
    demo_parity: bool = False
    explain: bool = True  # per-modality attention of each segment's label (one more pass)
    subtitles: bool = True  # read a timed .srt / .vtt beside the video
    max_seconds: float = field(default_factory=lambda: float(limits.get("max_timeline_seconds")))
    budget_s: float = field(default_factory=lambda: float(limits.get("timeline_seconds")))
    segmentation: SegmentationSettings = DEFAULT_SEGMENTATION
    prepare: PrepareOptions = field(default_factory=PrepareOptions)

    def analysis_options(self) -> AnalysisOptions:
        """The label question's options (this validates the labels and modalities)."""
        return AnalysisOptions(task="emotion", labels=self.labels, leave_out=self.leave_out,
                               demo_parity=self.demo_parity, frame_choice=self.frame_choice)


@dataclass
class Segment:
    """One scored stretch of the video (seconds from its start)."""

    index: int
    start: float
    end: float
    speech: bool  # made from a speech turn or subtitle cue (else a fixed window)
    label: str
    probabilities: dict[str, float]
    modality_attention: dict[str, float]
    subtitle: str | None
    subtitle_source: str
    modalities_present: dict[str, bool]
    peak_frame_time: float | None
    face_found: bool
    face_coverage: float
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index, "start": round(self.start, 3), "end": round(self.end, 3), "speech": self.speech,
            "label": self.label, "probabilities": self.probabilities, "modality_attention": self.modality_attention,
            "subtitle": {"text": self.subtitle, "source": self.subtitle_source},
            "modalities_present": self.modalities_present,
            "peak_frame_time": None if self.peak_frame_time is None else round(self.peak_frame_time, 3),
            "face_found": self.face_found, "face_coverage": round(self.face_coverage, 3), "warnings": self.warnings,
        }


@dataclass
class Timeline:
    segments: list[Segment]
    duration: float  # seconds covered (the video's start, up to the cap)
    video_duration: float  # seconds the video declares
    labels: tuple[str, ...]
    segmentation: str  # "subtitles", "voice activity" or "fixed windows"
    subtitle_file: str | None
    warnings: list[str]
    engine: dict[str, str]
    timings: dict[str, float]

    def label_seconds(self) -> dict[str, float]:
        """Seconds of the video each label is the top one in."""
        seconds = dict.fromkeys(self.labels, 0.0)
        for segment in self.segments:
            seconds[segment.label] = seconds.get(segment.label, 0.0) + segment.end - segment.start
        return {label: round(value, 3) for label, value in seconds.items()}

    def to_json(self) -> dict[str, Any]:
        return {
            "segments": [segment.to_json() for segment in self.segments],
            "duration": round(self.duration, 3), "video_duration": round(self.video_duration, 3),
            "labels": list(self.labels), "label_seconds": self.label_seconds(), "segmentation": self.segmentation,
            "subtitle_file": self.subtitle_file, "warnings": self.warnings, "engine": self.engine,
            "timings": {name: round(value, 3) for name, value in self.timings.items()},
        }

    def to_csv(self) -> str:
        """One row per segment: times, label, each label's probability, each modality's share."""
        modalities = sorted({m for segment in self.segments for m in segment.modality_attention})
        header = ["index", "start", "end", "speech", "label", "confidence", *(f"p_{x}" for x in self.labels),
                  *(f"attention_{m.replace(' ', '_')}" for m in modalities), "peak_frame_time", "face_coverage",
                  "subtitle", "subtitle_source"]
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(header)
        for s in self.segments:
            writer.writerow([s.index, f"{s.start:.3f}", f"{s.end:.3f}", int(s.speech), s.label,
                             f"{s.probabilities[s.label]:.4f}", *(f"{s.probabilities.get(x, 0):.4f}" for x in self.labels),
                             *(f"{s.modality_attention.get(m, 0):.4f}" for m in modalities),
                             "" if s.peak_frame_time is None else f"{s.peak_frame_time:.3f}", f"{s.face_coverage:.3f}",
                             s.subtitle or "", s.subtitle_source])
        return out.getvalue()


# --- reading the video once ------------------------------------------------------------------


class _Budget(_media._Deadline):
    """The decoder's deadline, spent by decoding and scoring together."""

    def check(self) -> None:
        if time.monotonic() > self.expires:
            raise TimelineBudgetError(
                f"The timeline of '{self.path.name}' took more than {self.budget_s:g} s "
                f"({limits.SETTINGS['timeline_seconds'].env}); cut the video shorter, or raise that limit."
            )


@dataclass
class _Video:
    """A video opened for a timeline: its window, its sound, and a frame sampler that only moves forward."""

    path: Path
    declared: float
    window: tuple[float, float]
    audio: np.ndarray | None
    warnings: list[str]
    sampler: _media._FrameSampler
    budget: _Budget
    cues: list[Cue]
    subtitle_file: str | None

    def inputs(self, span: Span, options: TimelineOptions) -> tuple[PreparedClip, float]:
        """The encoders' inputs of one segment, its frames decoded now (after the previous
        segment's), and the share of its sampled frames the face was found in."""
        started = time.perf_counter()
        positions = sample_positions(options.prepare)
        times = [span.start + p * span.length for p in positions]
        frames, frame_times = self.sampler.sample(times)
        first, last = round(span.start * SAMPLE_RATE), round(span.end * SAMPLE_RATE)
        audio = self.audio[first:last] if self.audio is not None and self.audio[first:last].size else None
        decoded = _media.DecodedClip(frames, frame_times, audio, self.declared, (span.start, span.end),
                                     self.sampler.rotation, self.sampler.video.codec_context.name)
        clip = _faces_of(decoded, options.prepare, {"decode": time.perf_counter() - started}, span)
        text = text_between(self.cues, span.start, span.end)
        subtitle = Subtitle(text, f"sidecar:{self.subtitle_file}") if text else Subtitle(None, "none")
        return clip.prepared(frame_for(options.frame_choice, options.demo_parity), subtitle), clip.face_coverage


def _faces_of(decoded: _media.DecodedClip, prepare: PrepareOptions, timings: dict[str, float], span: Span):
    """The chosen person's face in this segment; where they are not seen, the face seen most,
    with a warning (people come and go over a long video)."""
    try:
        return follow_faces(decoded, prepare, timings)
    except NoSuchPersonError:
        clip = follow_faces(decoded, replace(prepare, person=None), timings)
        clip.warnings.append(f"Person {prepare.person + 1} is not seen in {span.start:.1f}-{span.end:.1f} s; "
                             "this segment reads the face seen most in it.")
        return clip


@contextmanager
def open_video(path: str | os.PathLike[str], options: TimelineOptions, until: float | None = None) -> Iterator[_Video]:
    """Check ``path`` from its header, read its sound up to the cap (or ``until``), and hold a
    forward-only frame sampler over it."""
    path = Path(path)
    cap = min(options.max_seconds, until) if until is not None else options.max_seconds
    lims = _media.MediaLimits(max_seconds=cap, max_frame_side=options.prepare.max_frame_side,
                              time_budget_s=options.budget_s)
    _media._check_file(path, lims)
    budget = _Budget(path, options.budget_s)
    with _media._open(path, lims) as container:
        _media._check_stream_count(path, container, lims)
        video = _media._video_stream(path, container, lims)
        origin = _media._container_start(container)
        index = _media._KeyframeIndex.scan(container, video, origin, lims, budget)
        declared = _media._duration(container, video, index, origin, cap)
    # A header may claim more than the picture holds: when the scan saw the end, that end counts.
    end = min(declared, cap, index.end_time if index.reached_end and index.end_time > 0 else math.inf)
    if end < lims.min_seconds:
        raise ClipTooShortError(f"'{path.name}' is only {end:.2f} s long; a timeline needs at least "
                                f"{lims.min_seconds:g} s of video.")
    warnings = _window_warnings(path, declared, end, cap, until)
    audio, note = _media._read_audio(path, origin, (0.0, end), lims, budget)
    warnings += [note] if note else []
    cues, subtitle_file = read_cues(path) if options.subtitles else ([], None)
    with _media._open(path, lims) as container:
        sampler = _media._FrameSampler(path, container, _media._video_stream(path, container, lims), origin, index,
                                       lims, budget)
        yield _Video(path, declared, (0.0, end), audio, warnings, sampler, budget, cues, subtitle_file)
        warnings.extend(sampler.warnings((0.0, end)))  # the same list the caller holds


def _window_warnings(path: Path, declared: float, end: float, cap: float, until: float | None) -> list[str]:
    if until is None and declared > cap:
        setting = limits.SETTINGS["max_timeline_seconds"].env
        return [(f"'{path.name}' is {_media._seconds_in_words(declared)} long; the timeline covers only its first "
                f"{cap:g} s ({setting}); cut the video into parts to see the rest.")]
    if end < min(declared, cap) - 0.5:
        return [(f"The picture stops at {end:.1f} s although '{path.name}' says it lasts {declared:.1f} s; "
                "the timeline ends there.")]
    return []


def segment_spans(video: _Video, settings: SegmentationSettings) -> tuple[list[Span], str]:
    """The segments of the video, and what made them."""
    duration = video.window[1]
    if video.cues:
        return cover(duration, [(c.start, c.end) for c in video.cues], settings), "subtitles"
    turns = speech_turns(video.audio, settings)
    return cover(duration, turns, settings), "voice activity" if turns else "fixed windows"


# --- scoring one segment ----------------------------------------------------------------------


def score_segment(engine: Engine, prepared: PreparedClip, face_coverage: float, span: Span, index: int,
                  options: TimelineOptions, timings: dict[str, float]) -> Segment:
    """Label probabilities and the per-modality attention of the top label's answer."""
    analysis = options.analysis_options()
    started = time.perf_counter()
    prepared, encoded = engine.prepare(prepared, options=analysis)
    warnings = []
    try:
        words = engine.words_of(prepared, analysis)
    except TextTooLongError as error:  # one long cue must not sink the whole timeline
        words, warnings = None, [f"The subtitle of {span.start:.1f}-{span.end:.1f} s was left out: {error}"]
    projected = engine.model.project(encoded)
    _add(timings, "encode", time.perf_counter() - started)
    started = time.perf_counter()
    probabilities = engine.label_probabilities(projected, words, options.labels, options.demo_parity)
    label = max(probabilities, key=probabilities.get)
    _add(timings, "labels", time.perf_counter() - started)
    attention: dict[str, float] = {}
    if options.explain:
        started = time.perf_counter()
        prompt = answer_prompt(analysis, label, words)
        attention = explain_answer(engine.model, engine.model.assemble(prompt + answer_pieces(label), projected))\
            .modality_shares
        _add(timings, "attention", time.perf_counter() - started)
    peak = prepared.frame_times[prepared.peak_frame_index] if prepared.peak_frame_index is not None else None
    return Segment(index=index, start=span.start, end=span.end, speech=span.speech, label=label,
                   probabilities=probabilities, modality_attention=attention, subtitle=words,
                   subtitle_source=prepared.subtitle.source if words else "none",
                   modalities_present={**encoded.present, "subtitle": bool(words)}, peak_frame_time=peak,
                   face_found=prepared.face_found, face_coverage=face_coverage,
                   warnings=warnings + prepared.warnings)


def _add(timings: dict[str, float], name: str, seconds: float) -> None:
    timings[name] = timings.get(name, 0.0) + seconds


# --- the whole video --------------------------------------------------------------------------


SegmentInputs = tuple[PreparedClip, float, Span, int]  # a segment's inputs, face coverage, span and index


def score_segments(engine: Engine, batch: list[SegmentInputs], options: TimelineOptions,
                   timings: dict[str, float] | None = None) -> Iterator[Segment]:
    """Each segment of ``batch`` scored, in order: the model's share of a timeline (what a
    borrowed GPU runs on ZeroGPU, ``ui/gpu.py``)."""
    timings = {} if timings is None else timings
    for prepared, coverage, span, index in batch:
        yield score_segment(engine, prepared, coverage, span, index, options, timings)


def timeline_iter(engine: Engine, path: str | os.PathLike[str], options: TimelineOptions | None = None,
                  scorer=None, batch_size: int = 1) -> Iterator[Event | Segment | Timeline]:
    """Progress events and each scored segment as it is done, then the ``Timeline``.
    ``scorer(batch, options)`` scores ``batch_size`` decoded segments at a time (default:
    ``score_segments`` in this process); decoding stays here, in order."""
    options = options or TimelineOptions()
    options.analysis_options()  # bad labels or modalities fail before the video is read
    timings: dict[str, float] = {}
    scorer = scorer or (lambda batch, options: score_segments(engine, batch, options, timings))
    started = time.perf_counter()
    yield Event("stage", "reading the sound track")
    with open_video(path, options) as video:
        spans, how = segment_spans(video, options.segmentation)
        timings["sound_and_segmentation"] = time.perf_counter() - started
        yield Event("plan", str(len(spans)))
        segments: list[Segment] = []
        try:
            yield from _scored(video, spans, options, scorer, batch_size, segments, timings)
        except TimelineBudgetError as error:
            if not segments:
                raise
            video.warnings.append(f"{error} Only the first {len(segments)} of {len(spans)} segments were scored.")
    timings["total"] = time.perf_counter() - started
    warnings = [*video.warnings, *([engine.info["warning"]] if engine.info.get("warning") else [])]
    yield Timeline(segments, video.window[1], video.declared, tuple(options.labels), how, video.subtitle_file,
                   warnings, dict(engine.info), timings)


def _scored(video: _Video, spans: list[Span], options: TimelineOptions, scorer, batch_size: int,
            segments: list[Segment], timings: dict[str, float]) -> Iterator[Segment]:
    """Decode the segments in order and score them ``batch_size`` at a time, yielding each."""
    batch: list[SegmentInputs] = []
    for index, span in enumerate(spans):
        video.budget.check()
        prepared, coverage = video.inputs(span, options)
        _add(timings, "decode_and_faces", sum(prepared.timings.get(k, 0.0) for k in ("decode", "faces")))
        batch.append((prepared, coverage, span, index))
        if len(batch) == batch_size or index == len(spans) - 1:
            for segment in scorer(batch, options):
                segments.append(segment)
                yield segment
            batch = []


def build_timeline(engine: Engine, path: str | os.PathLike[str], options: TimelineOptions | None = None) -> Timeline:
    """``timeline_iter`` run to its end."""
    result = None
    for result in timeline_iter(engine, path, options):
        pass
    assert isinstance(result, Timeline)
    return result


def segment_clip(path: str | os.PathLike[str], segment: Segment | Span | tuple[float, float],
                 options: TimelineOptions | None = None) -> PreparedClip:
    """The encoders' inputs of one segment, decoded again (for its reasoning, on demand):
    ``engine.analyze(segment_clip(path, segment), options=AnalysisOptions(task="reason"))``."""
    options = options or TimelineOptions()
    start, end = segment if isinstance(segment, tuple) else (segment.start, segment.end)
    with open_video(path, options, until=end) as video:
        span = Span(max(0.0, start), min(end, video.window[1]), True)
        if span.length <= 0:
            raise ClipTooShortError(f"'{Path(path).name}' has no picture between {start:.1f} and {end:.1f} s.")
        prepared, _ = video.inputs(span, options)
    prepared.warnings[:0] = video.warnings
    return prepared
