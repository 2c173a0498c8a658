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

import numpy as np

from emotion_llama.asr import DEFAULT_WHISPER_MODEL, WhisperSettings, find_subtitle
from emotion_llama.clip import Person, PreparedClip, Subtitle, check_person
from emotion_llama.faces import (
    NO_FACE_WARNING,
    FaceAnalysis,
    FaceDetector,
    choose_peak_frame,
    crop_face,
    default_face_detector,
    follow_person,
)
from emotion_llama.media import DecodedClip as MediaClip
from emotion_llama.media import MediaLimits, decode_clip
from emotion_llama.vocab import DEFAULT_FRAME, FRAME_CHOICES

LOW_FACE_COVERAGE = 0.5


@dataclass(frozen=True)
class PrepareOptions:
    """How a clip is sampled and cropped.

    ``frame_choice`` picks the frame for the global encoder: "peak" (strongest
    expression), "middle" of the analysed window, or "first" (as the reference demo).
    ``person`` picks whose face is cropped: an index into the people found, the most
    persistent first (None or 0: the one seen most often).
    ``max_seconds`` and ``max_bytes`` default to the settings of ``limits.py``
    (``EMOTION_LLAMA_MAX_SECONDS``, ``EMOTION_LLAMA_MAX_UPLOAD_MB``), read when the options are made.
    """

    max_seconds: float = field(default_factory=lambda: MediaLimits().max_seconds)
    max_bytes: int = field(default_factory=lambda: MediaLimits().max_bytes)
    n_local_frames: int = 8
    n_temporal_frames: int = 16
    crop_size: int = 224
    crop_padding: float = 0.25
    frame_choice: str = DEFAULT_FRAME
    max_frame_side: int = 720
    whisper_model: str = DEFAULT_WHISPER_MODEL
    whisper_dir: Path | None = None
    face_detector: FaceDetector | None = field(default=None, compare=False)
    person: int | None = None

    def __post_init__(self) -> None:
        check_person(self.person)
        if self.frame_choice not in FRAME_CHOICES:
            raise ValueError(f"frame_choice must be one of {tuple(FRAME_CHOICES)}, not {self.frame_choice!r}")
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
    decoded = decode_for_encoders(path, options)
    started = time.perf_counter()
    words = subtitle_of(path, decoded, subtitle, options)
    prepared = decoded.prepared(options.frame_choice, words)
    prepared.timings["asr"] = time.perf_counter() - started
    return prepared


@dataclass
class DecodedClip:
    """A clip decoded once: what every frame choice and subtitle is made from.

    ``candidates`` holds the global frame of each frame choice as (time, frame), so
    choosing another frame or typing another subtitle never decodes the file again.
    """

    candidates: dict[str, tuple[float, np.ndarray]]
    face_crops: np.ndarray
    face_sequence: np.ndarray
    audio: np.ndarray | None
    duration: float
    analysed_window: tuple[float, float]
    frame_times: list[float]
    peak_frame_index: int
    face_found: bool
    face_boxes: list[tuple[int, int, int, int] | None]
    other_people: int
    warnings: list[str]
    timings: dict[str, float]
    face_coverage: float = 0.0  # faces.FaceAnalysis.coverage over the sampled frames
    face_note: str = ""  # the same in words: "face seen in 15 of 16 sampled frames"
    people: list[Person] = field(default_factory=list)  # everyone seen, most persistent first
    person: int = 0  # the index in ``people`` of the face cropped
    audio_note: str | None = None  # the sound is shared by everyone on screen

    def prepared(self, frame_choice: str, subtitle: Subtitle) -> PreparedClip:
        """The encoders' inputs with the global frame of ``frame_choice`` (a key of ``candidates``)."""
        time_, frame = self.candidates[frame_choice]
        return PreparedClip(
            global_frame=frame, global_frame_time=time_, face_crops=self.face_crops,
            face_sequence=self.face_sequence, audio=self.audio, subtitle=subtitle, duration=self.duration,
            analysed_window=self.analysed_window, frame_times=list(self.frame_times),
            peak_frame_index=self.peak_frame_index, face_found=self.face_found, face_boxes=list(self.face_boxes),
            other_people=self.other_people, warnings=list(self.warnings), timings=dict(self.timings),
            face_coverage=self.face_coverage, face_note=self.face_note, people=list(self.people), person=self.person,
            audio_note=self.audio_note,
        )


def decode_for_encoders(path: str | os.PathLike[str], options: PrepareOptions) -> DecodedClip:
    """Decode the frames and the sound, follow the main face and crop it."""
    started = time.perf_counter()
    decoded = decode_clip(path, sample_positions(options), options.media_limits())
    return follow_faces(decoded, options, {"decode": time.perf_counter() - started})


def sample_positions(options: PrepareOptions) -> list[float]:
    """Where frames are decoded, as fractions of the analysed window: the local frames, the
    temporal ones, then the first and the middle frame (``follow_faces`` reads them in this order)."""
    temporal_positions = _evenly_spaced(options.n_temporal_frames)
    local_positions = _evenly_spaced(options.n_local_frames, within=temporal_positions)
    return [*local_positions, *temporal_positions, 0.0, 0.5]


def follow_faces(decoded: MediaClip, options: PrepareOptions, timings: dict[str, float] | None = None) -> DecodedClip:
    """The encoders' inputs from frames decoded at ``sample_positions(options)`` (a whole clip,
    or any window of one): follow the main face, crop it, find the peak frame."""
    timings = dict(timings or {})
    n_local, n_temporal = options.n_local_frames, options.n_temporal_frames
    local_times = decoded.frame_times[:n_local]
    temporal_times = decoded.frame_times[n_local : n_local + n_temporal]
    first_frame_time, middle_frame_time = decoded.frame_times[-2:]
    frame_at = dict(zip(decoded.frame_times, decoded.frames))

    started = time.perf_counter()
    tracked_times = sorted(set(local_times) | set(temporal_times))
    faces = follow_person([frame_at[t] for t in tracked_times], tracked_times,
                          options.face_detector or default_face_detector(), person=options.person)
    box_at = dict(zip(tracked_times, faces.boxes))
    within_track_at = dict(zip(tracked_times, faces.within_track))

    def crops(times: list[float]) -> np.ndarray:
        return np.stack([crop_face(frame_at[t], box_at[t], options.crop_size, options.crop_padding) for t in times])

    face_crops = crops(local_times)
    peak_index = choose_peak_frame(face_crops, [within_track_at[t] for t in local_times])
    chosen = {"peak": local_times[peak_index], "middle": middle_frame_time, "first": first_frame_time}
    timings["faces"] = time.perf_counter() - started
    return DecodedClip(
        candidates={choice: (t, frame_at[t]) for choice, t in chosen.items()},
        face_crops=face_crops,
        face_sequence=crops(temporal_times),
        audio=decoded.audio,
        duration=decoded.duration,
        analysed_window=decoded.window,
        frame_times=list(local_times),
        peak_frame_index=peak_index,
        face_found=faces.face_found,
        face_boxes=[box.as_ints() if (box := box_at[t]) is not None else None for t in local_times],
        other_people=faces.other_people,
        warnings=decoded.warnings + _face_warnings(faces),
        timings=timings,
        face_coverage=faces.coverage,
        face_note=faces.note,
        people=faces.people,
        person=faces.person,
        audio_note=shared_audio_note(faces),
    )


def subtitle_of(
    path: str | os.PathLike[str] | None, decoded: DecodedClip, typed: str | None, options: PrepareOptions
) -> Subtitle:
    """The typed words, else a subtitle file beside the clip, else Whisper on its sound."""
    settings = WhisperSettings(options.whisper_model, options.whisper_dir)
    return find_subtitle(path, decoded.audio, typed=typed, whisper_settings=settings)


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


def shared_audio_note(faces: FaceAnalysis) -> str | None:
    """Said whenever more than one person is on screen: the sound cannot be split between them."""
    if len(faces.people) < 2 and not faces.person:
        return None
    return (f"{len(faces.people)} people appear in the clip and they share its sound: the voice analysed "
            f"with person {faces.person}'s face may be someone else's.")


def _face_warnings(faces: FaceAnalysis) -> list[str]:
    warnings = []
    if not faces.face_found:
        warnings.append(NO_FACE_WARNING)
    elif faces.coverage < LOW_FACE_COVERAGE:
        warnings.append(
            f"The face was found in only {faces.coverage:.0%} of the sampled frames; where it was "
            "missed its position was estimated, so some face crops may be off."
        )
    if faces.other_people:
        followed = "the person seen most often" if faces.person == 0 else f"person {faces.person}, as chosen"
        warnings.append(
            f"{faces.other_people} other face(s) appear in the clip; the analysis follows {followed}, "
            "and the sound is shared by everyone in it."
        )
    return warnings
