"""Cut a whole video into the segments of an emotion timeline: speech turns, or fixed windows.

Voice activity is found from the energy of the 16 kHz mono track (numpy only): the energy
of 20 ms frames in dB against an adaptive threshold (a low percentile of the energy around
each moment, plus a margin, never below an absolute silence level), active runs joined
across short pauses (the hangover) and runs too short to be speech dropped. A timed
subtitle file beside the video (``.srt`` / ``.vtt`` with the video's name) is better
evidence of who speaks when than energy: when it has cues, the cues are the speech turns.

``cover`` turns speech turns into segments that cover the whole video, each 2 to 8 s
(``SegmentationSettings``): short pauses are shared by the turns on both sides, long ones
become fixed windows (about 4 s), segments too short are merged with a neighbour and those
too long are split evenly. The subtitle of a segment is the text of the cues that overlap it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from emotion_llama.asr import subtitle_file_text
from emotion_llama.clip import SAMPLE_RATE

TIMED_SIDECAR_SUFFIXES = (".srt", ".vtt")
MAX_SIDECAR_BYTES = 2 * 2**20  # a 10-minute film's subtitles are tens of kB
_TIME = r"(?:(\d+):)?(\d{1,2}):(\d{2})(?:[,.](\d{1,3}))?"
_CUE_TIMES = re.compile(rf"^\s*{_TIME}\s*-->\s*{_TIME}")


@dataclass(frozen=True)
class SegmentationSettings:
    """How voice activity is found and how long segments may be (seconds, dB)."""

    frame_s: float = 0.02
    margin_db: float = 10.0  # speech is this much louder than the noise floor around it
    floor_window_s: float = 20.0  # the floor is measured over this much sound around each moment
    floor_percentile: float = 5.0
    silence_db: float = -55.0  # nothing quieter than this (dB full scale) is speech
    hangover_s: float = 0.3  # pauses shorter than this do not end a turn
    min_speech_s: float = 0.25  # louder runs shorter than this are clicks, not speech
    min_segment_s: float = 2.0
    max_segment_s: float = 8.0
    window_s: float = 4.0  # length of the fixed windows where nobody speaks

    def __post_init__(self) -> None:
        if not 0 < 2 * self.min_segment_s <= self.max_segment_s:
            raise ValueError("max_segment_s must be at least twice min_segment_s (and both above 0)")
        if not self.min_segment_s <= self.window_s <= self.max_segment_s:
            raise ValueError("window_s must lie between min_segment_s and max_segment_s")


DEFAULT_SEGMENTATION = SegmentationSettings()


@dataclass(frozen=True)
class Span:
    """A stretch of the video in seconds; ``speech`` when a speech turn (or cue) made it."""

    start: float
    end: float
    speech: bool

    @property
    def length(self) -> float:
        return self.end - self.start


@dataclass(frozen=True)
class Cue:
    """One timed subtitle: what is said from ``start`` to ``end`` (seconds)."""

    start: float
    end: float
    text: str


# --- voice activity ------------------------------------------------------------------------


def frame_energy_db(audio: np.ndarray, frame_samples: int) -> np.ndarray:
    """Mean power of each whole frame of ``audio``, in dB full scale."""
    count = audio.size // frame_samples
    frames = audio[: count * frame_samples].reshape(count, frame_samples).astype(np.float64)
    return 10 * np.log10(np.mean(frames**2, axis=1) + 1e-12)


def adaptive_threshold(energy_db: np.ndarray, settings: SegmentationSettings) -> np.ndarray:
    """Per frame: the local noise floor plus the margin, never below the silence level.

    The floor is the higher of a low percentile of the sound just before and of the sound
    just after each moment: where the room gets louder, the part after counts at once,
    and where it gets quieter, the part before stops counting as soon as a few quiet
    frames enter it. It is measured on a coarse grid (every half second) and
    interpolated, so a 10-minute track costs a few thousand percentiles, not one per frame.
    """
    if energy_db.size == 0:
        return energy_db
    half = max(1, round(settings.floor_window_s / 2 / settings.frame_s))
    step = max(1, round(0.5 / settings.frame_s))
    grid = np.arange(0, energy_db.size, step)
    floor = [
        max(np.percentile(energy_db[max(0, i - half) : i + 1], settings.floor_percentile),
            np.percentile(energy_db[i : i + half], settings.floor_percentile))
        for i in grid
    ]
    local_floor = np.interp(np.arange(energy_db.size), grid, floor)
    return np.maximum(local_floor + settings.margin_db, settings.silence_db)


def speech_turns(
    audio: np.ndarray | None, settings: SegmentationSettings = DEFAULT_SEGMENTATION
) -> list[tuple[float, float]]:
    """(start, end) seconds of each stretch of ``audio`` (16 kHz mono) where someone speaks."""
    if audio is None or audio.size == 0:
        return []
    frame_samples = round(settings.frame_s * SAMPLE_RATE)
    energy = frame_energy_db(audio, frame_samples)
    active = energy > adaptive_threshold(energy, settings)
    runs = _runs(active)
    hangover = round(settings.hangover_s / settings.frame_s)
    joined: list[list[int]] = []
    for start, end in runs:
        if joined and start - joined[-1][1] <= hangover:
            joined[-1][1] = end
        else:
            joined.append([start, end])
    shortest = round(settings.min_speech_s / settings.frame_s)
    return [(s * settings.frame_s, e * settings.frame_s) for s, e in joined if e - s >= shortest]


def _runs(active: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) frame indices of each run of True."""
    edges = np.diff(np.concatenate([[0], active.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist()))


# --- from speech turns to segments ------------------------------------------------------------


def cover(
    duration: float, turns: list[tuple[float, float]], settings: SegmentationSettings = DEFAULT_SEGMENTATION
) -> list[Span]:
    """Segments covering [0, ``duration``] without gaps: the speech turns, merged and split to
    ``min_segment_s``..``max_segment_s``, and fixed windows where nobody speaks."""
    if duration <= 0:
        return []
    spans = _merge_short(_with_pauses(duration, _clean(turns, duration), settings), settings.min_segment_s)
    return [part for span in spans for part in _split(span, math.ceil(span.length / settings.max_segment_s - 1e-9))]


def _clean(turns: list[tuple[float, float]], duration: float) -> list[tuple[float, float]]:
    """Turns inside the video, in order, overlapping ones joined."""
    cleaned: list[list[float]] = []
    for start, end in sorted((max(0.0, s), min(duration, e)) for s, e in turns):
        if end <= start:
            continue
        if cleaned and start < cleaned[-1][1]:  # touching turns (back-to-back cues) stay apart
            cleaned[-1][1] = max(cleaned[-1][1], end)
        else:
            cleaned.append([start, end])
    return [(s, e) for s, e in cleaned]


def _with_pauses(duration: float, turns: list[tuple[float, float]], settings: SegmentationSettings) -> list[Span]:
    """The turns, with each pause around them shared by its neighbours when short and cut
    into fixed windows when long."""
    if not turns:
        return _windows(0.0, duration, settings)
    spans: list[Span] = []
    cursor = 0.0
    for start, end in [*turns, (duration, duration)]:  # the last pair marks the pause at the end
        at_end = start >= duration
        if start - cursor >= settings.min_segment_s:
            spans.extend(_windows(cursor, start, settings))
        elif spans:  # a short pause: the turn before takes half of it, or all of it at the end
            start = start if at_end else (cursor + start) / 2
            spans[-1] = replace(spans[-1], end=start)
        else:  # a short pause before the first turn belongs to that turn
            start = 0.0
        if not at_end:
            spans.append(Span(start, end, True))
            cursor = end
    return spans


def _windows(start: float, end: float, settings: SegmentationSettings) -> list[Span]:
    """Fixed windows of about ``window_s`` covering a stretch where nobody speaks."""
    return _split(Span(start, end, False), round((end - start) / settings.window_s))


def _merge_short(spans: list[Span], shortest: float) -> list[Span]:
    """Merge each span shorter than ``shortest`` into its shorter neighbour, shortest first."""
    spans = list(spans)
    while len(spans) > 1:
        i = min(range(len(spans)), key=lambda k: spans[k].length)
        if spans[i].length >= shortest:
            break
        neighbours = [j for j in (i - 1, i + 1) if 0 <= j < len(spans)]
        j = min(neighbours, key=lambda k: spans[k].length)
        a, b = spans[min(i, j)], spans[max(i, j)]
        spans[min(i, j) : max(i, j) + 1] = [Span(a.start, b.end, a.speech or b.speech)]
    return spans


def _split(span: Span, parts: int) -> list[Span]:
    parts = max(parts, 1)
    step = span.length / parts
    edges = [span.start + k * step for k in range(parts)] + [span.end]
    return [Span(edges[k], edges[k + 1], span.speech) for k in range(parts)]


# --- timed subtitles ---------------------------------------------------------------------------


def parse_cues(content: str) -> list[Cue]:
    """The timed cues of an SRT or WebVTT file, in order of start; markup and numbers dropped."""
    cues = []
    content = content.replace("\r\n", "\n").replace("\r", "\n")
    for block in re.split(r"\n\s*\n", content.strip()):
        lines = block.split("\n")
        for i, line in enumerate(lines):
            match = _CUE_TIMES.match(line)
            if match:
                start, end = _seconds(match.groups()[:4]), _seconds(match.groups()[4:])
                text = subtitle_file_text("\n".join(lines[i + 1 :]))
                if text and end > start:
                    cues.append(Cue(start, end, text))
                break
    return sorted(cues, key=lambda cue: cue.start)


def _seconds(parts: tuple[str | None, ...]) -> float:
    hours, minutes, seconds, fraction = parts
    millis = int((fraction or "0").ljust(3, "0"))
    return int(hours or 0) * 3600 + int(minutes) * 60 + int(seconds) + millis / 1000


def read_cues(video: Path) -> tuple[list[Cue], str | None]:
    """The cues of the ``.srt`` or ``.vtt`` file with the video's name, and that file's name
    (no cues and None when there is none, or it has no timed cue)."""
    for suffix in TIMED_SIDECAR_SUFFIXES:
        sidecar = Path(video).with_suffix(suffix)
        if sidecar.is_file():
            with sidecar.open("rb") as handle:
                content = handle.read(MAX_SIDECAR_BYTES).decode("utf-8-sig", errors="replace")
            cues = parse_cues(content)
            if cues:
                return cues, sidecar.name
    return [], None


def text_between(cues: list[Cue], start: float, end: float) -> str | None:
    """What the cues overlapping [start, end] say, joined in order (None when none does).

    A cue counts when it overlaps by at least a tenth of a second (or half of itself, for a
    shorter cue), so a cue that merely touches a boundary belongs to one side only.
    """
    overlapping = [
        cue.text for cue in cues if min(cue.end, end) - max(cue.start, start) >= min(0.1, (cue.end - cue.start) / 2)
    ]
    return " ".join(overlapping) or None
