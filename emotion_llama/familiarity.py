"""Whether a clip looks and sounds like the clips the model was trained on.

Three views of the inputs the encoders read, each a short vector: the **frame** and the
**face** crops (at the sizes their encoders read them) by their texture and colour — the
share of 4x4-pixel blocks at each level of contrast, colour saturation and variety — and
the **voice** by its spectrum (how the energy of its louder frames spreads over 20 bands
from 100 Hz to 8 kHz, and how much each band moves). A weights folder may hold
``feature_stats.safetensors``, written on the training side by ``python -m emotion_llama
feature-stats`` from the model's training clips: for each view their mean and a whitening
matrix (the inverse square root of their covariance, shrunk toward a multiple of the
identity), and a threshold, a high quantile of the distances of held-out training clips
that the mean and covariance were not fit on (stored too, so the threshold can be checked).
A clip's distance in a view is the root mean square of its whitened deviation from the
mean (a Mahalanobis distance over the square root of the dimensions); the clip is out
of domain when any view it has lies beyond its threshold.

Why the inputs and not the encoders' features: the tiny model's encoders, trained only
to name emotions on drawn faces, put real clips inside the cloud of synthetic clips'
features (docs/model_card.md has the figures), so a distance there cannot see them.

No stats file (the official weights), or one measured for other encoders, means no
signal. Inference imports this module only; it never reads the corpus or training code.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image
from safetensors import safe_open
from safetensors.numpy import load_file, save_file

if TYPE_CHECKING:  # light to import: the CLI reads the defaults below before torch loads
    from .clip import PreparedClip
    from .encoders import EncodedClip

STATS_FILE = "feature_stats.safetensors"
FORMAT = "emotion-llama input views 1"
# How ``python -m emotion_llama feature-stats`` measures thresholds unless told otherwise.
DEFAULT_QUANTILE = 0.99
DEFAULT_HELD_OUT_EVERY = 3

# View -> the encoded modality it looks at (not judged when that one is missing or left
# out), and what the warning calls it.
VIEWS = {"frame": ("global", "whole frame"), "face": ("face", "face"), "voice": ("audio", "voice")}
BLOCK_CONTRAST_EDGES = np.array([0.5, 1, 2, 4, 8, 16, 32])  # grey levels: std within a 4x4 block
VOICE_BANDS, VOICE_LOW_HZ, SAMPLE_RATE = 20, 100.0, 16_000


def texture_and_colour(images: np.ndarray, size: int) -> np.ndarray:
    """(N, H, W, 3) uint8 pictures at ``size`` x ``size`` (bicubic, as the encoders resize)
    -> shares of 4x4 blocks per contrast level, mean and spread of saturation, and the
    entropy of the 512 coarse colours; averaged over the pictures."""
    rows = []
    for image in images.reshape(-1, *images.shape[-3:]):
        rgb = np.asarray(Image.fromarray(np.ascontiguousarray(image)).resize((size, size), Image.BICUBIC), np.float64)
        grey = rgb @ np.array([0.299, 0.587, 0.114])
        cut = size // 4 * 4
        contrast = grey[:cut, :cut].reshape(cut // 4, 4, cut // 4, 4).std(axis=(1, 3)).ravel()
        levels = np.bincount(np.searchsorted(BLOCK_CONTRAST_EDGES, contrast), minlength=len(BLOCK_CONTRAST_EDGES) + 1)
        brightest, darkest = rgb.max(axis=-1), rgb.min(axis=-1)
        saturation = (brightest - darkest) / np.maximum(brightest, 1.0)
        coarse = (rgb // 32).astype(int).reshape(-1, 3) @ np.array([64, 8, 1])
        shares = np.bincount(coarse, minlength=512) / len(coarse)
        shares = shares[shares > 0]
        rows.append(np.concatenate([levels / contrast.size, [saturation.mean(), saturation.std(),
                                                             -(shares * np.log(shares)).sum()]]))
    return np.mean(rows, axis=0)


def voice_spectrum(audio: np.ndarray) -> np.ndarray | None:
    """16 kHz audio -> the mean and spread over its louder half of 25 ms frames of each
    band's log energy relative to the frame's (loudness does not count); None when the
    track is silent or shorter than a frame."""
    wave = np.asarray(audio, np.float64)
    if wave.size < 400 or not np.abs(wave).max() > 0:
        return None
    frames = np.lib.stride_tricks.sliding_window_view(wave, 400)[::160] * np.hanning(400)
    power = np.abs(np.fft.rfft(frames, 512, axis=1)) ** 2
    edges = np.geomspace(VOICE_LOW_HZ, SAMPLE_RATE / 2, VOICE_BANDS + 1)
    band = np.searchsorted(edges, np.fft.rfftfreq(512, 1 / SAMPLE_RATE)) - 1
    energy = np.log(np.stack([power[:, band == i].sum(axis=1) for i in range(VOICE_BANDS)], axis=1) + 1e-10)
    level = energy.mean(axis=1)
    shape = (energy - level[:, None])[level >= np.median(level)]
    return np.concatenate([shape.mean(axis=0), shape.std(axis=0)])


def clip_views(clip: PreparedClip, present: dict[str, bool], sizes: dict[str, int]) -> dict[str, np.ndarray]:
    """The views of a clip, for the modalities it has (``present``, as ``EncodedClip.present``)."""
    readers = {
        "frame": lambda: texture_and_colour(clip.global_frame, sizes["frame"]),
        "face": lambda: texture_and_colour(clip.face_crops, sizes["face"]) if len(clip.face_crops) else None,
        "voice": lambda: voice_spectrum(clip.audio) if clip.audio is not None else None,
    }
    return {view: vector for view, (modality, _) in VIEWS.items()
            if present.get(modality) and (vector := readers[view]()) is not None}


@dataclass(frozen=True)
class ViewStats:
    """One view's training statistics and the threshold measured on held-out clips."""

    mean: np.ndarray  # (dims,)
    whitening: np.ndarray  # (dims, dims): deviation @ whitening has unit covariance on training clips
    held_out: np.ndarray  # distances of the held-out training clips
    threshold: float

    def distance(self, vector: np.ndarray) -> float:
        whitened = (vector - self.mean) @ self.whitening
        return float(np.sqrt(np.mean(whitened**2)))


@dataclass(frozen=True)
class DomainCheck:
    """How far one clip lies from the training clips, per view it has."""

    distances: dict[str, float]
    thresholds: dict[str, float]
    quantile: float
    warning: str | None  # set when the clip is out of domain

    @property
    def beyond(self) -> list[str]:
        """Views whose distance passes their threshold."""
        return [v for v, d in self.distances.items() if d > self.thresholds[v]]

    @property
    def out_of_domain(self) -> bool:
        return bool(self.beyond)

    @property
    def scores(self) -> dict[str, float]:
        """Distance over threshold: above 1 is farther than all but ``1 - quantile`` of held-out training clips."""
        return {v: d / self.thresholds[v] for v, d in self.distances.items()}

    def to_json(self) -> dict[str, Any]:
        return {"flagged": self.out_of_domain, "scores": {v: round(s, 3) for v, s in self.scores.items()},
                "beyond": self.beyond, "quantile": self.quantile}


class FeatureStats:
    """The training clips' statistics for each view, with their thresholds."""

    def __init__(self, stats: dict[str, ViewStats], quantile: float, meta: dict[str, Any]):
        self.stats = stats
        self.quantile = quantile
        # encoders (fingerprint), sizes (picture sizes per view), model and corpus names, how it was made
        self.meta = meta

    @classmethod
    def load(cls, folder: str | Path, encoders: str | None = None) -> FeatureStats | None:
        """The stats in ``folder``; None when there are none, or when ``encoders`` (a
        fingerprint) says they were measured for another model than this one."""
        path = Path(folder) / STATS_FILE
        if not path.is_file():
            return None
        with safe_open(str(path), framework="numpy") as handle:
            meta = json.loads((handle.metadata() or {}).get("stats", "{}"))
        if meta.get("format") != FORMAT or (encoders and meta.get("encoders") != encoders):
            return None
        tensors = load_file(str(path))
        stats = {v: ViewStats(tensors[f"{v}.mean"], tensors[f"{v}.whitening"], tensors[f"{v}.held_out"],
                              float(meta["thresholds"][v]))
                 for v in VIEWS if f"{v}.mean" in tensors}
        return cls(stats, float(meta["quantile"]), meta)

    def save(self, folder: str | Path) -> Path:
        path = Path(folder) / STATS_FILE
        tensors = {}
        for view, item in self.stats.items():
            tensors |= {f"{view}.mean": item.mean, f"{view}.whitening": item.whitening, f"{view}.held_out": item.held_out}
        meta = {**self.meta, "format": FORMAT, "quantile": self.quantile,
                "thresholds": {v: item.threshold for v, item in self.stats.items()}}
        save_file({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in tensors.items()}, str(path),
                  metadata={"stats": json.dumps(meta)})
        return path

    def check(self, clip: PreparedClip, encoded: EncodedClip) -> DomainCheck:
        """Distances of the views the clip has (a left-out or missing modality is not judged)."""
        views = clip_views(clip, encoded.present, self.meta["sizes"])
        distances = {v: self.stats[v].distance(vector) for v, vector in views.items() if v in self.stats}
        thresholds = {v: self.stats[v].threshold for v in distances}
        beyond = [v for v in distances if distances[v] > thresholds[v]]
        return DomainCheck(distances, thresholds, self.quantile, self.warning(beyond) if beyond else None)

    def warning(self, beyond: list[str]) -> str:
        names = [VIEWS[v][1] for v in beyond]
        parts = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
        model, corpus = self.meta.get("model", "this model"), self.meta.get("corpus", "clips")
        return (f"This clip is unlike the {corpus} {model} was trained on (its {parts} "
                f"{'lies' if len(names) == 1 else 'lie'} far outside theirs), so its label and reasoning here "
                f"mean nothing.")
