"""The page's Timeline tab and the ``/timeline`` endpoint.

A timeline scores every segment of the whole video (``timeline.py``): the server decodes
the segments in order and the model scores them in batches (``GpuWork.score``). The page
keeps the timeline's JSON in its ``gr.State`` and the video on disk for the conversations'
time-to-live (``UploadStore.hold``), because opening a segment decodes that stretch again
and analyses it (label, where the model looked, and on request the reasoning).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import astuple, dataclass, fields, replace
from typing import Any

import gradio as gr

from ..analysis import Analysis, Event
from ..errors import PromptError, SessionExpiredError
from ..prepare import PrepareOptions
from ..report import render_timeline_report
from ..timeline import Segment, Timeline, TimelineOptions, segment_clip, timeline_iter
from ..vocab import DEFAULT_LABEL_SET
from . import render
from .forms import generation_from_form, options_from_form
from .gpu import TIMELINE_BATCH
from .handlers import NO_CLIP, Demo, request

GONE = ("this timeline's video is no longer kept (videos are deleted {minutes:g} minutes after the last "
        "request about them): upload it again and build the timeline again")


@dataclass
class TimelineView:
    """The timeline outputs of the page, in order."""

    chart: Any = ""
    summary: Any = ""
    segment: Any = None
    report: Any = ""
    state: Any = None

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def of(cls, timeline: Timeline, video: str, options: dict) -> tuple:
        data = timeline.to_json()
        choices = [(render.segment_name(s), s.index) for s in timeline.segments]
        return astuple(cls(
            chart=render.timeline_panel(data),
            summary=render.timeline_summary(data),
            segment=gr.update(choices=choices, value=choices[0][1] if choices else None, visible=bool(choices)),
            report=render.report_link(render_timeline_report(data, engine=timeline.engine),
                                      "emotion-llama-timeline.html"),
            state={"video": video, "timeline": data, "options": options},
        ))


def timeline_options(label_set, custom_labels, frame_choice, leave_out, demo_parity, person) -> dict:
    """The form's settings of a timeline, as plain data (kept in the page's state)."""
    analysis = options_from_form("emotion", None, label_set, custom_labels, None, None, frame_choice, leave_out,
                                 demo_parity, person)
    return {"labels": list(analysis.labels), "frame_choice": analysis.frame_choice,
            "leave_out": list(analysis.leave_out), "demo_parity": analysis.demo_parity, "person": analysis.person}


def options_of(settings: dict) -> TimelineOptions:
    return TimelineOptions(labels=tuple(settings["labels"]), frame_choice=settings["frame_choice"],
                           leave_out=tuple(settings["leave_out"]), demo_parity=settings["demo_parity"],
                           prepare=PrepareOptions(person=settings["person"]))


def timeline_events(demo: Demo, video: str | None, settings: dict) -> Iterator[Event | Segment | Timeline]:
    if not video:
        raise PromptError(NO_CLIP)
    yield from timeline_iter(demo.engine, video, options_of(settings), scorer=demo.work.score,
                             batch_size=TIMELINE_BATCH)


def build(demo: Demo, video, label_set, custom_labels, frame_choice, leave_out, demo_parity, person=None,
          progress=gr.Progress()):  # noqa: B008 - Gradio's idiom
    """The page's Build: progress per segment, then the chart, the segments and the report."""
    yield astuple(TimelineView())
    with request(demo, video):
        settings = timeline_options(label_set, custom_labels, frame_choice, leave_out, demo_parity, person)
        progress(0.0, desc="reading the sound track")
        total, result = 1, None
        for item in timeline_events(demo, video, settings):
            if isinstance(item, Segment):
                progress((item.index + 1) / total, desc=f"segment {item.index + 1} of {total}: {item.label}")
            elif isinstance(item, Timeline):
                result = item
            elif item.kind == "plan":
                total = max(1, int(item.value))
        demo.store.hold(video, demo.conversations.ttl)  # its segments are decoded again when opened
        yield TimelineView.of(result, video, settings)


def timeline_api(demo: Demo, video, label_set=DEFAULT_LABEL_SET, custom_labels=None, person=None) -> dict:
    """``/timeline``: the JSON of ``python -m emotion_llama timeline VIDEO --json``."""
    with request(demo, video):
        settings = timeline_options(label_set, custom_labels, None, None, False, person)
        result = None
        for result in timeline_events(demo, video, settings):
            pass
        return result.to_json()


def open_segment(demo: Demo, state, index, task, temperature, max_new_tokens,
                 progress=gr.Progress()):  # noqa: B008 - Gradio's idiom
    """A segment of the timeline analysed: its label, where the model looked, its answer."""
    yield "", None, ""
    with request(demo, None):
        video, segment = _segment_of(demo, state, index)
        timeline = options_of(state["options"])
        progress(0.1, desc=f"decoding {segment['start']:.1f}-{segment['end']:.1f} s again")
        prepared = segment_clip(video, (segment["start"], segment["end"]), timeline)
        options = replace(timeline.analysis_options(), task=task,
                          generation=generation_from_form(temperature, max_new_tokens))
        for item in demo.work.analysis(prepared, options):
            if isinstance(item, Analysis):
                yield (render.inline_image(item.overlay(), "where the answer looked in the segment's frame"),
                       render.probability_label(item.probabilities), item.answer)
            elif item.kind == "text":
                yield gr.skip(), gr.skip(), item.value
            else:
                progress(0.5, desc=item.value)


def _segment_of(demo: Demo, state, index) -> tuple[str, dict]:
    """The held video and the chosen segment of the visitor's timeline."""
    if not state or "timeline" not in state:
        raise PromptError("build the timeline first, then pick a segment")
    segments = state["timeline"]["segments"]
    if not isinstance(index, int) or not 0 <= index < len(segments):
        raise PromptError("pick one of the timeline's segments")
    video = state["video"]
    if not demo.store.held(video) or not os.path.exists(video):
        raise SessionExpiredError(GONE.format(minutes=demo.conversations.ttl / 60))
    demo.store.hold(video, demo.conversations.ttl)
    return video, segments[index]
