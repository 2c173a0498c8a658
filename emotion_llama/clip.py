"""What the media stage hands to the encoders: one clip, prepared.

The media, face and subtitle stages fill a ``PreparedClip``; the encoders read it and
know nothing of files. Pixel arrays are RGB ``uint8``; audio is 16 kHz mono ``float32``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from emotion_llama.errors import NoSuchPersonError

SAMPLE_RATE = 16_000


@dataclass
class Subtitle:
    """What the person says, and where that text came from."""

    text: str | None
    source: str  # "user", "sidecar:<name>", "whisper:<model>", "none"
    language: str | None = None
    note: str | None = None


def check_person(person: int | None) -> None:
    """A person index is None or 0 and up; which ones exist is known only once the faces are found."""
    if person is not None and (isinstance(person, bool) or not isinstance(person, int) or person < 0):
        raise NoSuchPersonError(f"person must be a number from 0 (the face seen most often) up, not {person!r}.")


@dataclass
class Person:
    """One face followed through the clip, offered for choosing whom to analyse.

    ``index`` 0 is the face seen most often (the default); ``box`` (x, y, width, height)
    is where the thumbnail was cut, in the sampled frame ``frame_index``.
    """

    index: int
    frames_seen: int
    frames_sampled: int
    box: tuple[int, int, int, int]
    frame_index: int
    thumbnail: np.ndarray = field(repr=False, compare=False)  # (96, 96, 3) uint8 RGB

    @property
    def share(self) -> float:
        return self.frames_seen / self.frames_sampled if self.frames_sampled else 0.0

    def to_json(self) -> dict[str, object]:
        return {"index": self.index, "frames_seen": self.frames_seen, "frames_sampled": self.frames_sampled,
                "share": round(self.share, 3), "box": list(self.box)}


@dataclass
class PreparedClip:
    """One clip turned into the raw inputs of the four encoders.

    ``face_crops`` feeds the local (MAE) encoder, one crop per sampled frame;
    ``face_sequence`` feeds the temporal (VideoMAE) encoder, 16 crops spread over the
    analysed window. Either may be empty when no face is usable; ``audio`` is None when
    the clip has no audio track. ``face_found`` False: no face was detected, the crops
    show the centre of the frame (for the pictures) and the face encoders leave them out.
    """

    global_frame: np.ndarray  # (H, W, 3) uint8, the frame chosen for the global encoder
    global_frame_time: float  # seconds from the start of the clip
    face_crops: np.ndarray  # (N, S, S, 3) uint8, N may be 0
    face_sequence: np.ndarray  # (T, S, S, 3) uint8, T may be 0
    audio: np.ndarray | None  # (samples,) float32 at SAMPLE_RATE, or None
    subtitle: Subtitle = field(default_factory=lambda: Subtitle(None, "none"))
    duration: float = 0.0  # seconds of the whole clip
    analysed_window: tuple[float, float] = (0.0, 0.0)
    frame_times: list[float] = field(default_factory=list)  # times of face_crops
    peak_frame_index: int | None = None  # index into face_crops of the peak frame
    face_found: bool = True
    face_boxes: list[tuple[int, int, int, int] | None] = field(default_factory=list)
    other_people: int = 0
    warnings: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    # Share of the sampled frames where the face was seen (found by the detector, not only
    # estimated between sightings), the same in words, everyone seen, whose face was cropped.
    face_coverage: float = 0.0
    face_note: str = ""
    people: list[Person] = field(default_factory=list)
    person: int = 0
    audio_note: str | None = None  # set when the sound is shared by more than one person

    @property
    def has_audio(self) -> bool:
        return self.audio is not None and self.audio.size > 0

