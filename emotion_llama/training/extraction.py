"""Feature extraction: the frozen encoders read every decoded clip once and their
features go into the run's cache, in the reference feature layout, for both tuning stages."""

from __future__ import annotations

from tqdm import tqdm

from ..data.merr import Annotation
from ..model import EmotionLlama
from .cache import RunCache


def extract_features(model: EmotionLlama, annotations: list[Annotation], cache: RunCache) -> None:
    """Encode every clip whose features are not in ``cache`` yet (resumable)."""
    for ann in tqdm([a for a in annotations if not cache.features.has(a.name)], desc="extract features", unit="clip"):
        clip = cache.read_clip(ann)
        cache.features.write(ann.name, model.encode(clip), clip)
