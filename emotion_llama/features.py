"""Encoded clips on disk: the reference feature layout, batch extraction, and reuse.

Layout of a feature folder (one ``.npy`` per clip and encoder):

- ``mae_340_UTT/{name}.npy``: face (MAE) feature, utterance level, shape (width,)
- ``maeV_399_UTT/{name}.npy``: face-sequence (VideoMAE) feature, shape (width,)
- ``HL-UTT/{name}.npy``: speech (HuBERT last layer) feature, shape (width,)
- ``global_tokens/{name}.npy``: EVA tokens after ``ln_vision``, shape (1 + patches, width)
- ``meta/{name}.json``: which modalities were present, the subtitle, warnings

The first three are the folder names and shapes the reference training code reads
(``first_face.py``), so features extracted here can train the reference and vice versa.
A missing modality is written as zeros, and ``meta`` says so.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .clip import PreparedClip
from .encoders import EncodedClip
from .errors import EmotionLlamaError
from .vocab import FEATURE_MODALITIES, MODALITY

# Feature modality -> its folder, in the order the files are written.
FEATURE_DIRS = {m: MODALITY[m].reference_folder for m in (*FEATURE_MODALITIES, "global")}
META_DIR = "meta"
VIDEO_SUFFIXES = (".mp4", ".mov", ".webm", ".mkv", ".avi", ".m4v")


@dataclass
class StoredClip:
    """A clip's features and facts as read back from a feature folder."""

    name: str
    encoded: EncodedClip
    subtitle: str | None
    subtitle_source: str
    warnings: list[str]


class FeatureStore:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    def _path(self, kind: str, name: str) -> Path:
        return self.root / kind / f"{name}.{'json' if kind == META_DIR else 'npy'}"

    def has(self, name: str) -> bool:
        """Complete when the meta file exists: it is written last."""
        return self._path(META_DIR, name).is_file()

    def names(self) -> list[str]:
        folder = self.root / META_DIR
        return sorted(p.stem for p in folder.glob("*.json")) if folder.is_dir() else []

    def failed_names(self) -> set[str]:
        """File names listed in this folder's ``failed*.log`` files by earlier runs."""
        names: set[str] = set()
        for log in self.root.glob("failed*.log"):
            names.update(line.split("\t", 1)[0] for line in log.read_text(encoding="utf-8").splitlines() if line)
        return names

    def write(self, name: str, encoded: EncodedClip, prepared: PreparedClip) -> None:
        for modality, kind in FEATURE_DIRS.items():
            _atomic_save(self._path(kind, name), encoded.features[modality].detach().float().cpu().numpy())
        meta = {
            "present": encoded.present,
            "filled": encoded.filled,
            "subtitle": prepared.subtitle.text,
            "subtitle_source": prepared.subtitle.source,
            "frame_time": prepared.global_frame_time,
            "duration": prepared.duration,
            "warnings": prepared.warnings,
        }
        _atomic_write_text(self._path(META_DIR, name), json.dumps(meta, ensure_ascii=False))

    def read(self, name: str) -> StoredClip:
        meta = json.loads(self._path(META_DIR, name).read_text())
        features = {m: torch.from_numpy(np.load(self._path(kind, name))) for m, kind in FEATURE_DIRS.items()}
        encoded = EncodedClip(features=features, present=meta["present"], filled=meta.get("filled", {}))
        return StoredClip(name, encoded, meta.get("subtitle"), meta.get("subtitle_source", "none"), meta.get("warnings", []))


def _atomic_save(path: Path, array: np.ndarray) -> None:
    # Written under a temporary name and renamed: an interrupted run never leaves a torn file.
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npy")
    np.save(tmp, array)
    os.replace(tmp, path)


def _atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def list_videos(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise EmotionLlamaError(f"{folder} is not a folder of videos")
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file())


def process_share(items: list, rank: int, world: int) -> list:
    """This process's share of the work: every ``world``-th item from ``rank``."""
    return items[rank::world]


def launcher_rank() -> tuple[int, int]:
    """Rank and world size set by ``torchrun`` or ``accelerate launch`` (1 process otherwise)."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
