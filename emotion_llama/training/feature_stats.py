"""Statistics of a model's training clips, for the inference side's out-of-domain warning.

``python -m emotion_llama feature-stats CORPUS [--weights FOLDER]`` reads the corpus's
clips through the inference path (``Engine.prepare``, so the frame, the face crops and
the audio are exactly what the app gets), describes each by the views of
``familiarity.py`` and writes ``FOLDER/feature_stats.safetensors``. Every
``held_out_every``-th clip is held out: each view's mean and covariance (Ledoit-Wolf
shrinkage toward a multiple of the identity) are fit on the others, and its threshold is
the ``quantile`` of the held-out clips' distances, so the threshold is not measured on
the clips the statistics describe.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from sklearn.covariance import ledoit_wolf
from tqdm import tqdm

from ..errors import EmotionLlamaError
from ..familiarity import DEFAULT_HELD_OUT_EVERY, DEFAULT_QUANTILE, VIEWS, FeatureStats, ViewStats, clip_views
from ..features import list_videos


def view_sizes(config) -> dict[str, int]:
    """Picture sizes of the views: those of the encoders that read them."""
    return {"frame": config.global_vision["image_size"], "face": config.face["image_size"]}


def clips_views(engine, videos: list[Path], sizes: dict[str, int]) -> dict[str, list[np.ndarray | None]]:
    """Each clip's vector per view (None where the clip lacks it); unreadable clips are left out."""
    views: dict[str, list[np.ndarray | None]] = {v: [] for v in VIEWS}
    for video in tqdm(videos, desc="read clips", unit="clip"):
        try:
            prepared, encoded = engine.prepare(video)
        except EmotionLlamaError:
            continue
        found = clip_views(prepared, encoded.present, sizes)
        for view in VIEWS:
            views[view].append(found.get(view))
    return views


def whitening_of(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Mean, whitening matrix (inverse square root of the shrunk covariance) and the shrinkage."""
    mean = vectors.mean(axis=0)
    covariance, shrinkage = ledoit_wolf(vectors - mean, assume_centered=True)
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)
    return mean, eigenvectors / np.sqrt(np.maximum(eigenvalues, 1e-12)), float(shrinkage)


def fit_view(fit: np.ndarray, held_out: np.ndarray, quantile: float) -> tuple[ViewStats, float]:
    """A view's stats from the ``fit`` vectors, its threshold from the ``held_out`` ones."""
    mean, whitening, shrinkage = whitening_of(fit)
    unthresholded = ViewStats(mean, whitening, np.zeros(0), 0.0)
    # Rounded as the file stores them, so the stored distances give back the stored threshold.
    distances = np.sort(np.array([unthresholded.distance(v) for v in held_out], dtype=np.float32))
    threshold = float(np.quantile(distances.astype(np.float64), quantile))
    return ViewStats(mean, whitening, distances, threshold), shrinkage


def fit_stats(views: dict[str, list[np.ndarray | None]], quantile: float, held_out_every: int,
              meta: dict) -> tuple[FeatureStats, dict]:
    """Stats of every view with enough clips; clip ``i`` is held out when ``i % held_out_every == 0``."""
    stats, report = {}, {}
    for view, vectors in views.items():
        fit = [v for i, v in enumerate(vectors) if v is not None and i % held_out_every]
        held_out = [v for i, v in enumerate(vectors) if v is not None and not i % held_out_every]
        if len(fit) < 20 or len(held_out) < 10:
            report[view] = f"skipped: {len(fit)} clips to fit and {len(held_out)} held out are too few"
            continue
        stats[view], shrinkage = fit_view(np.stack(fit), np.stack(held_out), quantile)
        report[view] = {"fit_clips": len(fit), "held_out_clips": len(held_out), "dims": int(fit[0].size),
                        "shrinkage": round(shrinkage, 4), "threshold": round(stats[view].threshold, 4),
                        "held_out_median": round(float(np.median(stats[view].held_out)), 4)}
    if not stats:
        raise EmotionLlamaError("too few readable clips to measure their statistics; give a few hundred")
    return FeatureStats(stats, quantile, {**meta, "views": report}), report


def run_feature_stats(corpus: str | Path, weights: str | Path, *, quantile: float = DEFAULT_QUANTILE,
                      held_out_every: int = DEFAULT_HELD_OUT_EVERY, limit: int | None = None,
                      model_name: str = "Emotion-LLaMA-Tiny", corpus_name: str = "synthetic clips") -> dict:
    """Read ``corpus``'s videos (the first ``limit``, in name order) as the model in ``weights``
    gets them and write the stats beside it."""
    from ..pipeline import load_engine

    start = time.perf_counter()
    engine = load_engine(str(weights), device="cpu")
    videos = list_videos(corpus)[:limit]
    sizes = view_sizes(engine.model.config)
    views = clips_views(engine, videos, sizes)
    meta = {"encoders": engine.encoders_key, "sizes": sizes, "model": model_name, "corpus": corpus_name,
            "clips": len(videos), "held_out_every": held_out_every}
    stats, report = fit_stats(views, quantile, held_out_every, meta)
    path = stats.save(weights)
    return {"written": str(path), "clips": len(videos), "quantile": quantile, "views": report,
            "seconds": round(time.perf_counter() - start, 1)}
