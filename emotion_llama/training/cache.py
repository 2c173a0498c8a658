"""A training run's intermediate data, in one place: its decoded clips and their features.

Layout of ``WORK/cache``:

- ``clips/{name}.npz``: a clip decoded once, its images already at the encoders' input
  sizes (arrays ``global_frame``, ``face_crops``, ``face_sequence``, ``audio``,
  ``frame_time``); ``clips/failed.log`` lists the clips that could not be decoded
- ``features/``: the frozen encoders' features in the reference layout (``FeatureStore``)

An entry is written once and then reused, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..clip import PreparedClip, Subtitle
from ..data.merr import Annotation
from ..features import FeatureStore


class RunCache:
    """The decoded clips and the encoded features of one training run."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.clips = self.root / "clips"
        self.features = FeatureStore(self.root / "features")

    def clip_path(self, name: str) -> Path:
        return self.clips / f"{name}.npz"

    def has_clip(self, name: str) -> bool:
        return self.clip_path(name).exists()

    def write_clip(self, name: str, arrays: dict[str, np.ndarray]) -> None:
        self.clips.mkdir(parents=True, exist_ok=True)
        np.savez(self.clip_path(name), **arrays)

    def log_failures(self, failures: list[str]) -> None:
        """Record the clips that could not be decoded (one ``name<TAB>error`` a line)."""
        self.clips.mkdir(parents=True, exist_ok=True)
        (self.clips / "failed.log").write_text("\n".join(failures) + "\n")

    def clip_array(self, name: str, key: str) -> np.ndarray:
        """One array of a decoded clip: an encoder's worker loads only what it reads."""
        return np.load(self.clip_path(name))[key]

    def read_clip(self, ann: Annotation) -> PreparedClip:
        """A decoded clip as the encoders take it, with the annotation's subtitle."""
        data = np.load(self.clip_path(ann.name))
        audio = data["audio"]
        return PreparedClip(
            global_frame=data["global_frame"],
            global_frame_time=float(data["frame_time"]),
            face_crops=data["face_crops"],
            face_sequence=data["face_sequence"],
            audio=audio if audio.size else None,
            subtitle=Subtitle(ann.subtitle, "annotation" if ann.subtitle else "none"),
        )
