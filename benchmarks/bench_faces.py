"""The face stage, old way against new: time per sampled frame, coverage, and where the crops go.

Run from the repository root: ``python benchmarks/bench_faces.py [--repeats 3]``.

For each real clip in ``../shared/clips`` the 16 frames ``prepare_clip`` tracks faces
in are decoded once; then, on one core (``cv2.setNumThreads(1)``,
``torch.set_num_threads(1)``), the face stage runs both ways, alternately, ``--repeats``
times each (the fastest run counts, as the machine may be busy):

- old: the Haar detector on every whole frame (``follow_person(..., full_every=1)``);
- new: the default ``follow_person``: whole frames only on the key frames, a search
  near each face's box in the frames between, a whole frame again where the face is lost.

Printed per clip: milliseconds per sampled frame, face coverage (share of the frames
where the followed face was seen), the people found, whole-frame detections and
searches near a box made by the new way, and the IoU of the new crop boxes with the old
ones (mean and worst frame). Then the medians over the clips. Targets: new <= 15 ms
per sampled frame (median), coverage >= 80 % on every clip.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_CLIPS = REPO.parent / "shared" / "clips"
sys.path.insert(0, str(REPO))

from emotion_llama.faces import FaceAnalysis, FaceBox, HaarFaceDetector, follow_person
from emotion_llama.media import decode_clip
from emotion_llama.prepare import _evenly_spaced

TARGET_MS = 15.0
TARGET_COVERAGE = 0.8


class CountingDetector:
    """The Haar detector, counting its whole-frame detections and searches near a box."""

    def __init__(self, detector: HaarFaceDetector) -> None:
        self.detector = detector
        self.full = self.near = 0

    def detect(self, frame: np.ndarray) -> list[FaceBox]:
        self.full += 1
        return self.detector.detect(frame)

    def detect_near(self, frame: np.ndarray, box: FaceBox) -> list[FaceBox]:
        self.near += 1
        return self.detector.detect_near(frame, box)


def timed(frames, times, detector, full_every: int | None) -> tuple[float, FaceAnalysis]:
    started = time.perf_counter()
    faces = follow_person(frames, times, detector, **({} if full_every is None else {"full_every": full_every}))
    return time.perf_counter() - started, faces


def overlap(old: FaceAnalysis, new: FaceAnalysis) -> tuple[float, float]:
    """Mean and worst IoU of the crop boxes, frame by frame (1.0 where neither has a face)."""
    ious = [a.iou(b) if a and b else float(a is None and b is None) for a, b in zip(old.boxes, new.boxes)]
    return float(np.mean(ious)), min(ious)


def bench_clip(clip: Path, detector: HaarFaceDetector, repeats: int) -> dict[str, float]:
    decoded = decode_clip(clip, _evenly_spaced(16))
    frames, times = decoded.frames, decoded.frame_times
    old_seconds, new_seconds = [], []
    for _ in range(repeats):  # alternate, so both ways see the same load
        seconds, old = timed(frames, times, detector, 1)
        old_seconds.append(seconds)
        counting = CountingDetector(detector)
        seconds, new = timed(frames, times, counting, None)
        new_seconds.append(seconds)
    mean_iou, worst_iou = overlap(old, new)
    row = {
        "old_ms": 1000 * min(old_seconds) / len(frames), "new_ms": 1000 * min(new_seconds) / len(frames),
        "old_coverage": old.coverage, "new_coverage": new.coverage, "mean_iou": mean_iou, "worst_iou": worst_iou,
    }
    print(f"{clip.name:24s} {frames[0].shape[1]}x{frames[0].shape[0]}  "
          f"ms/frame {row['old_ms']:5.1f} -> {row['new_ms']:5.1f}  "
          f"coverage {old.coverage:4.0%} -> {new.coverage:4.0%}  people {len(old.people)} -> {len(new.people)}  "
          f"whole frames {counting.full:2d} + near {counting.near:2d}  "
          f"IoU mean {mean_iou:.2f} worst {worst_iou:.2f}", flush=True)
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    clips = sorted(SHARED_CLIPS.glob("*.mp4"))
    if not clips:
        print(f"no clips in {SHARED_CLIPS.relative_to(REPO.parent)}; nothing to measure")
        return 1
    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    detector = HaarFaceDetector()
    rows = [bench_clip(clip, detector, args.repeats) for clip in clips]

    def median(key: str) -> float:
        return statistics.median(row[key] for row in rows)

    print(f"\nmedian over {len(rows)} clips: ms/frame {median('old_ms'):.1f} -> {median('new_ms'):.1f} "
          f"({median('old_ms') / median('new_ms'):.1f}x faster), coverage {median('old_coverage'):.0%} -> "
          f"{median('new_coverage'):.0%}, IoU mean {median('mean_iou'):.2f}")
    lowest = min(row["new_coverage"] for row in rows)
    print(f"targets: new <= {TARGET_MS:g} ms/frame: {'met' if median('new_ms') <= TARGET_MS else 'NOT met'}; "
          f"coverage >= {TARGET_COVERAGE:.0%} on every clip (lowest {lowest:.0%}): "
          f"{'met' if lowest >= TARGET_COVERAGE else 'NOT met'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
