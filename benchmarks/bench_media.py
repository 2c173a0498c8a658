"""Time the media stage stage by stage, compare it with the reference demo, measure memory.

Run from the repository root: ``python benchmarks/bench_media.py [--repeats 3]``.

1. Per-stage medians of ``prepare_clip`` over the real clips in ``../shared/clips``
   (each clip's median over the repeats, then the median over the clips).
   Then the four encoders (``encode_*``), with the default engine's weights.
2. The reference demo's way on the same clips: the first frame through
   ``cv2.VideoCapture``, the audio written to a wav file by moviepy and read back, the
   speech encoder loaded from disk again (as that demo does per request) and run.
3. Peak memory of a whole ``analyze`` on a 10-minute 1080p clip (made here with the
   bundled ffmpeg, about 20 s), sampled every 5 ms in a fresh process.

Stages after the media stage (the encoders) are added to ``STAGES``: each reads what
the earlier ones left in a per-clip dict and returns its own timings in seconds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import wave
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import psutil

REPO = Path(__file__).resolve().parents[1]
SHARED_CLIPS = REPO.parent / "shared" / "clips"
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

Stage = Callable[[Path, dict[str, Any]], dict[str, float]]


def media_stage(clip: Path, state: dict[str, Any]) -> dict[str, float]:
    from emotion_llama.prepare import prepare_clip

    state["prepared"] = prepared = prepare_clip(clip)
    return dict(prepared.timings)


_ENGINE: list[Any] = []


def engine():
    """The default engine (shipped tiny weights, or random tiny ones), loaded once."""
    if not _ENGINE:
        from emotion_llama.pipeline import load_engine

        _ENGINE.append(load_engine(device="cpu"))
    return _ENGINE[0]


def encoder_stage(clip: Path, state: dict[str, Any]) -> dict[str, float]:
    timings: dict[str, float] = {}
    engine().model.encode(state["prepared"], timings=timings)
    return timings


STAGES: list[Stage] = [media_stage, encoder_stage]


def reference_demo_media(clip: Path, hubert_dir: Path) -> dict[str, float]:
    """What the reference demo does per request: first frame, audio via a wav file,
    the speech encoder loaded from disk again, then run."""
    import cv2
    import torch
    from moviepy import VideoFileClip
    from transformers import HubertModel

    started = time.perf_counter()
    capture = cv2.VideoCapture(str(clip))
    ok, _ = capture.read()
    capture.release()
    if not ok:
        raise RuntimeError(f"OpenCV could not read a frame of {clip}")
    frame_done = time.perf_counter()
    with VideoFileClip(str(clip)) as video, tempfile.TemporaryDirectory() as folder:
        wav_path = Path(folder) / "audio.wav"
        video.audio.write_audiofile(
            str(wav_path), fps=16000, codec="pcm_s16le", ffmpeg_params=["-ac", "1"], logger=None
        )
        with wave.open(str(wav_path)) as wav:
            samples = np.frombuffer(wav.readframes(wav.getnframes()), np.int16).astype(np.float32) / 32768
    audio_done = time.perf_counter()
    hubert = HubertModel.from_pretrained(hubert_dir).eval()
    with torch.no_grad():
        wave_in = torch.from_numpy((samples - samples.mean()) / (samples.std() + 1e-7))[None]
        hubert(input_values=wave_in).last_hidden_state.mean(dim=1)
    done = time.perf_counter()
    return {"first_frame": frame_done - started, "audio_via_wav": audio_done - frame_done,
            "reload_and_encode_audio": done - audio_done, "total": done - started}


def median_table(per_clip: dict[str, list[dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Each clip's per-key median over repeats, and a "median" row over the clips."""
    table = {
        name: {key: statistics.median(run[key] for run in runs) for key in runs[0]} for name, runs in per_clip.items()
    }
    keys = next(iter(table.values())).keys()
    table["median"] = {key: statistics.median(row[key] for row in table.values()) for key in keys}
    return table


def print_table(title: str, table: dict[str, dict[str, float]]) -> None:
    keys = list(next(iter(table.values())))
    print(f"\n{title} (seconds)")
    print(f"{'clip':26s}" + "".join(f"{key:>14s}" for key in keys))
    for name, row in table.items():
        print(f"{name:26s}" + "".join(f"{row[key]:14.3f}" for key in keys))


def time_stages(clips: list[Path], repeats: int) -> dict[str, dict[str, float]]:
    per_clip: dict[str, list[dict[str, float]]] = {}
    for clip in clips:
        for _ in range(repeats):
            state: dict[str, Any] = {}
            timings: dict[str, float] = {}
            for stage in STAGES:
                timings.update(stage(clip, state))
            timings["total"] = sum(timings.values())
            per_clip.setdefault(clip.name, []).append(timings)
    return median_table(per_clip)


def time_reference(clips: list[Path], repeats: int) -> dict[str, dict[str, float]]:
    with tempfile.TemporaryDirectory() as folder:
        hubert_dir = Path(folder) / "hubert"
        engine().model.encoders.audio.hubert.save_pretrained(hubert_dir)
        return median_table({clip.name: [reference_demo_media(clip, hubert_dir) for _ in range(repeats)]
                             for clip in clips})


def peak_memory_of_prepare(clip: Path) -> dict[str, float]:
    """Peak resident memory of ``prepare_clip`` on ``clip``, measured in a fresh process."""
    child = subprocess.run(
        [sys.executable, __file__, "--memory-child", str(clip)],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    )
    return json.loads(child.stdout.strip().splitlines()[-1])


def memory_child(clip: Path) -> None:
    # Sampled, not ru_maxrss: a child forked from a large parent inherits its high-water mark.
    from emotion_llama.pipeline import AnalysisOptions
    from emotion_llama.vocab import GenerationSettings

    engine()
    process = psutil.Process()
    before = peak = process.memory_info().rss
    done = threading.Event()

    def watch() -> None:
        nonlocal peak
        while not done.wait(0.005):
            peak = max(peak, process.memory_info().rss)

    watcher = threading.Thread(target=watch)
    watcher.start()
    started = time.perf_counter()
    analysis = engine().analyze(clip, options=AnalysisOptions(generation=GenerationSettings(do_sample=False)))
    seconds = time.perf_counter() - started
    done.set()
    watcher.join()
    peak = max(peak, process.memory_info().rss)
    print(
        json.dumps(
            {
                "peak_mib": round(peak / 2**20, 1),
                "before_mib": round(before / 2**20, 1),
                "seconds": round(seconds, 2),
                "warnings": analysis.warnings,
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--clips", type=Path, default=SHARED_CLIPS)
    parser.add_argument("--skip-memory", action="store_true", help="skip the 10-minute 1080p clip")
    parser.add_argument("--memory-child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        memory_child(args.memory_child)
        return

    clips = sorted(args.clips.glob("*.mp4"))
    if not clips:
        sys.exit(f"no clips in {args.clips}")
    ours = time_stages(clips, args.repeats)
    reference = time_reference(clips, args.repeats)
    print_table("prepare_clip, per stage", ours)
    print_table("reference demo (first frame + audio through a wav file)", reference)
    media_and_audio = ours["median"]["decode"] + ours["median"]["encode_audio"]
    reference_media_and_audio = reference["median"]["audio_via_wav"] + reference["median"]["reload_and_encode_audio"]
    print(
        f"\nmedian ratio, ours / reference: decode + audio encoder {media_and_audio / reference_media_and_audio:.2f}, "
        f"whole stage {ours['median']['total'] / reference['median']['total']:.2f} "
        "(ours also tracks faces and runs all four encoders)"
    )

    if not args.skip_memory:
        from media_factory import make_long_clip

        with tempfile.TemporaryDirectory() as folder:
            long_clip = make_long_clip(Path(folder) / "ten_minutes_1080p.mp4", size=(1920, 1080), fps=5.0)
            size_mb = long_clip.stat().st_size / 2**20
            memory = peak_memory_of_prepare(long_clip)
        print(
            f"\n10-minute 1080p clip ({size_mb:.0f} MiB): peak RSS {memory['peak_mib']:.0f} MiB during "
            f"a whole analysis ({memory['before_mib']:.0f} MiB before it, model loaded), {memory['seconds']:.1f} s"
        )
        print("warnings:", *memory["warnings"], sep="\n  ")


if __name__ == "__main__":
    main()
