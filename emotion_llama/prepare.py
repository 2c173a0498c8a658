"""From any clip on disk to a ``PreparedClip``: decode, follow the face, find the words.

``prepare_clip`` keeps no state between calls (the shared face detector and Whisper
model are guarded inside their modules), so calls in several threads give exactly
what they give one after the other.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from emotion_llama.asr import DEFAULT_WHISPER_MODEL, WhisperSettings, find_subtitle
from emotion_llama.clip import PreparedClip
from emotion_llama.faces import (
    NO_FACE_WARNING,
    FaceDetector,
    choose_peak_frame,
    crop_face,
    default_face_detector,
    find_main_face,
)
from emotion_llama.media import MediaLimits, decode_clip

FrameChoice = Literal["peak", "middle", "first"]
FRAME_CHOICES: tuple[FrameChoice, ...] = ("peak", "middle", "first")
LOW_FACE_COVERAGE = 0.5


@dataclass(frozen=True)
class PrepareOptions:
    """How a clip is sampled and cropped.

    ``frame_choice`` picks the frame for the global encoder: "peak" (strongest
    expression), "middle" of the analysed window, or "first" (as the reference demo).
    """

    max_seconds: float = 30.0
    max_bytes: int = 200 * 1024 * 1024
    n_local_frames: int = 8
    n_temporal_frames: int = 16
    crop_size: int = 224
    crop_padding: float = 0.25
    frame_choice: FrameChoice = "peak"
    max_frame_side: int = 720
    whisper_model: str = DEFAULT_WHISPER_MODEL
    whisper_dir: Path | None = None
    face_detector: FaceDetector | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.frame_choice not in FRAME_CHOICES:
            raise ValueError(f"frame_choice must be one of {FRAME_CHOICES}, not {self.frame_choice!r}")
        if self.n_local_frames < 1 or self.n_temporal_frames < 1:
            raise ValueError("n_local_frames and n_temporal_frames must be at least 1")

    def media_limits(self) -> MediaLimits:
        return MediaLimits(max_bytes=self.max_bytes, max_seconds=self.max_seconds, max_frame_side=self.max_frame_side)


def prepare_clip(
    path: str | os.PathLike[str], *, subtitle: str | None = None, options: PrepareOptions | None = None
) -> PreparedClip:
    """Decode ``path`` and turn it into the inputs of the four encoders.

    Raises a ``MediaError`` subclass, with a message for the user, when the file
    cannot be used; anything merely odd (no sound, no face, too long) becomes a warning.
    """
    options = options or PrepareOptions()
    timings: dict[str, float] = {}

    started = time.perf_counter()
    temporal_positions = _evenly_spaced(options.n_temporal_frames)
    local_positions = _evenly_spaced(options.n_local_frames, within=temporal_positions)
    positions = [*local_positions, *temporal_positions, 0.0, 0.5]
    decoded = decode_clip(path, positions, options.media_limits())
    n_local, n_temporal = len(local_positions), len(temporal_positions)
    local_times = decoded.frame_times[:n_local]
    temporal_times = decoded.frame_times[n_local : n_local + n_temporal]
    first_frame_time, middle_frame_time = decoded.frame_times[-2:]
    frame_at = dict(zip(decoded.frame_times, decoded.frames))
    timings["decode"] = time.perf_counter() - started

    started = time.perf_counter()
    tracked_times = sorted(set(local_times) | set(temporal_times))
    faces = find_main_face(
        [frame_at[t] for t in tracked_times], tracked_times, options.face_detector or default_face_detector()
    )
    box_at = dict(zip(tracked_times, faces.boxes))
    within_track_at = dict(zip(tracked_times, faces.within_track))

    def crops(times: list[float]) -> np.ndarray:
        return np.stack([crop_face(frame_at[t], box_at[t], options.crop_size, options.crop_padding) for t in times])

    face_crops, face_sequence = crops(local_times), crops(temporal_times)
    peak_index = choose_peak_frame(face_crops, [within_track_at[t] for t in local_times])
    global_frame_time = {
        "peak": local_times[peak_index],
        "middle": middle_frame_time,
        "first": first_frame_time,
    }[options.frame_choice]
    timings["faces"] = time.perf_counter() - started

    started = time.perf_counter()
    words = find_subtitle(
        path,
        decoded.audio,
        typed=subtitle,
        whisper_settings=WhisperSettings(options.whisper_model, options.whisper_dir),
    )
    timings["asr"] = time.perf_counter() - started

    return PreparedClip(
        global_frame=frame_at[global_frame_time],
        global_frame_time=global_frame_time,
        face_crops=face_crops,
        face_sequence=face_sequence,
        audio=decoded.audio,
        subtitle=words,
        duration=decoded.duration,
        analysed_window=decoded.window,
        frame_times=list(local_times),
        peak_frame_index=peak_index,
        face_found=faces.face_found,
        face_boxes=[box.as_ints() if (box := box_at[t]) is not None else None for t in local_times],
        other_people=faces.other_people,
        warnings=decoded.warnings + _face_warnings(faces.face_found, faces.coverage, faces.other_people),
        timings=timings,
    )


def _evenly_spaced(count: int, within: list[float] | None = None) -> list[float]:
    """Centres of ``count`` equal parts of the window, as fractions of it.

    With ``within`` at least as dense, each centre moves to its nearest position there:
    the local frames are then a subset of the temporal ones, and faces are searched in
    16 frames instead of 24 (the move is under half the temporal spacing).
    """
    centres = [(i + 0.5) / count for i in range(count)]
    if within is None or len(within) < count:
        return centres
    return [min(within, key=lambda position: abs(position - centre)) for centre in centres]


def _face_warnings(found: bool, coverage: float, other_people: int) -> list[str]:
    warnings = []
    if not found:
        warnings.append(NO_FACE_WARNING)
    elif coverage < LOW_FACE_COVERAGE:
        warnings.append(
            f"The face was found in only {coverage:.0%} of the sampled frames; where it was "
            "missed its position was estimated, so some face crops may be off."
        )
    if other_people:
        warnings.append(
            f"{other_people} other face(s) appear in the clip; the analysis follows the person seen most often."
        )
    return warnings
