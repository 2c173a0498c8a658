"""Decoding clips (prepare): every training clip decoded once, in several processes, into
the run's cache, so no later stage opens a video again."""

from __future__ import annotations

import functools
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..config import EmotionLlamaConfig
from ..data.merr import Annotation
from ..errors import EmotionLlamaError
from .cache import RunCache


@dataclass(frozen=True)
class DecodeJob:
    video: str
    subtitle: str | None
    name: str
    sizes: tuple[int, int, int]  # input sizes of the global, face and face-sequence encoders
    face_scale_factor: float
    face_min_fraction: float
    cache: RunCache


@functools.cache
def _detector(scale_factor: float, min_fraction: float):
    """One face detector per worker process: loading OpenCV's cascade took a tenth of a clip's time."""
    from ..faces import HaarFaceDetector

    return HaarFaceDetector(scale_factor=scale_factor, min_face_fraction=min_fraction)


def _decode_one(job: DecodeJob) -> str | None:
    """Decode one clip into the cache (in a worker process); returns a failure line or None."""
    from ..encoders import resize_images
    from ..prepare import PrepareOptions, prepare_clip

    detector = _detector(job.face_scale_factor, job.face_min_fraction)
    try:
        clip = prepare_clip(job.video, subtitle=job.subtitle, options=PrepareOptions(face_detector=detector))
    except EmotionLlamaError as error:
        return f"{Path(job.video).name}\t{error}"
    # Stored at the encoders' input sizes, resized exactly as their preprocessing does,
    # so the cache is small and the encoders see what they see at inference.
    # No crops where no face was found, as the encoders leave those out (``encode``).
    global_size, face_size, temporal_size = job.sizes
    empty = np.zeros((0, 1, 1, 3), np.uint8)
    found = clip.face_found
    job.cache.write_clip(job.name, {
        "global_frame": resize_images(clip.global_frame, global_size)[0],
        "face_crops": resize_images(clip.face_crops, face_size) if found and len(clip.face_crops) else empty,
        "face_sequence": resize_images(clip.face_sequence, temporal_size) if found and len(clip.face_sequence) else empty,
        "audio": clip.audio if clip.audio is not None else np.zeros(0, np.float32),
        "frame_time": clip.global_frame_time,
    })
    return None


def decode_clips(annotations: list[Annotation], corpus_root: Path, cache: RunCache, config: EmotionLlamaConfig,
                 workers: int, face_scale_factor: float = 1.05, face_min_fraction: float = 0.1) -> None:
    """Decode every clip not yet in ``cache`` (resumable, ``workers`` processes)."""
    sizes = (config.global_vision["image_size"], config.face["image_size"], config.temporal["image_size"])
    jobs = []
    for ann in annotations:
        video = ann.video_path(corpus_root)
        if not cache.has_clip(ann.name) and video is not None:
            jobs.append(DecodeJob(str(video), ann.subtitle or None, ann.name, sizes, face_scale_factor,
                                  face_min_fraction, cache))
    if not jobs:
        return
    failures = []
    # spawn, not fork: a process forked while another thread holds a lock (the app's janitor in
    # malloc_trim, a logging or tqdm lock) can hang for ever
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        for failure in tqdm(pool.map(_decode_one, jobs, chunksize=4), total=len(jobs), desc="decode clips", unit="clip"):
            if failure:
                failures.append(failure)
    if failures:
        cache.log_failures(failures)
