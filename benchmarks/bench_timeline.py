"""Time an emotion timeline and show that its memory does not grow with the video's length.

Run from the repository root:
``python benchmarks/bench_timeline.py [--long-fps 10] [--skip-long] [--torch-threads N]``.

Two 1080p clips are made here with the bundled ffmpeg (test pattern, and a sound track of
speech-like bursts with pauses, so that voice activity cuts real turns): 60 s at 25 fps,
and 10 minutes (at ``--long-fps``). Each timeline runs in a fresh process with the default
engine (the shipped tiny model) on the CPU, which prints its wall time, its segments and
its peak resident memory (``ru_maxrss``; this parent imports no torch, so the child's
high-water mark is its own). Targets: the 60-s timeline in 20 s or less on a 2-core
machine, and the 10-minute one's peak at most 300 MB above the 60-s one's.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import wave
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))
RATE = 16_000
UPLOAD_MB = 4096  # the clips are over the app's upload limit; the timeline's own limits are what is measured


def speech_like_wav(path: Path, seconds: float, seed: int = 0) -> Path:
    """Quiet noise with voiced bursts of 0.5-6 s separated by 0.2-4 s pauses."""
    rng = np.random.default_rng(seed)
    audio = 0.003 * rng.standard_normal(round(seconds * RATE))
    at = float(rng.uniform(0, 2))
    while at < seconds:
        length = float(rng.uniform(0.5, 6))
        t = np.arange(round(min(length, seconds - at) * RATE)) / RATE
        pitch = rng.uniform(100, 250)
        audio[round(at * RATE) : round(at * RATE) + t.size] += (
            0.2 * np.sin(2 * np.pi * pitch * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t))
        )
        at += length + float(rng.uniform(0.2, 4))
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(RATE)
        out.writeframes((np.clip(audio, -1, 1) * 32767).astype(np.int16).tobytes())
    return path


def make_clip(path: Path, seconds: float, fps: float) -> Path:
    from media_factory import H264, run_ffmpeg

    sound = speech_like_wav(path.with_suffix(".wav"), seconds)
    run_ffmpeg(
        "-f", "lavfi", "-i", f"testsrc2=size=1920x1080:rate={fps}:duration={seconds}", "-i", str(sound),
        *H264, "-crf", "40", "-g", str(round(fps * 2)), "-c:a", "aac", "-b:a", "48k", "-shortest", str(path),
    )  # fmt: skip
    sound.unlink()
    return path


def child(clip: Path, torch_threads: int | None) -> None:
    """One timeline in this process; prints a JSON line of figures."""
    import resource

    import psutil
    import torch

    from emotion_llama.pipeline import load_engine
    from emotion_llama.timeline import build_timeline

    if torch_threads:
        torch.set_num_threads(torch_threads)
    engine = load_engine(device="cpu")
    loaded_mib = psutil.Process().memory_info().rss / 2**20
    started = time.perf_counter()
    timeline = build_timeline(engine, clip)
    seconds = time.perf_counter() - started
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux
    print(json.dumps({
        "seconds": seconds, "segments": len(timeline.segments), "duration": timeline.duration,
        "segmentation": timeline.segmentation, "loaded_mib": loaded_mib, "peak_mib": peak_mib,
        "timings": timeline.timings, "warnings": timeline.warnings,
    }))  # fmt: skip


def run_child(clip: Path, torch_threads: int | None) -> dict:
    env = {**os.environ, "EMOTION_LLAMA_MAX_UPLOAD_MB": str(UPLOAD_MB), "PYTHONWARNINGS": "ignore"}
    threads = ["--torch-threads", str(torch_threads)] if torch_threads else []
    out = subprocess.run([sys.executable, __file__, "--child", str(clip), *threads], cwd=REPO, env=env, capture_output=True,
                         text=True, check=False, timeout=1800)
    if out.returncode:
        sys.exit(f"the timeline of {clip.name} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def report(name: str, clip: Path, figures: dict) -> None:
    timings = ", ".join(f"{k} {v:.1f} s" for k, v in figures["timings"].items())
    print(f"{name} ({clip.stat().st_size / 2**20:.0f} MiB file): {figures['seconds']:.1f} s for "
          f"{figures['segments']} segments over {figures['duration']:.0f} s ({figures['segmentation']}); "
          f"RSS {figures['loaded_mib']:.0f} MiB with the engine loaded, peak {figures['peak_mib']:.0f} MiB")
    print(f"    {timings}")
    for warning in figures["warnings"]:
        print(f"    warning: {warning}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--long-fps", type=float, default=10.0, help="frame rate of the 10-minute clip (default 10)")
    parser.add_argument("--skip-long", action="store_true", help="only the 60-s clip")
    parser.add_argument("--torch-threads", type=int, help="torch.set_num_threads in the timeline's process "
                        "(default: torch's own choice; 1 helps on a machine whose cores are busy)")
    args = parser.parse_args()
    if args.child:
        child(args.child, args.torch_threads)
        return
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        short = make_clip(Path(folder) / "one_minute_1080p.mp4", 60.0, 25.0)
        print(f"made the 60-s 1080p 25 fps clip in {time.perf_counter() - started:.0f} s")
        short_figures = run_child(short, args.torch_threads)
        report("60-s 1080p clip", short, short_figures)
        print(f"target: <= 20 s -> {'met' if short_figures['seconds'] <= 20 else 'MISSED'}")
        if args.skip_long:
            return
        started = time.perf_counter()
        long = make_clip(Path(folder) / "ten_minutes_1080p.mp4", 600.0, args.long_fps)
        print(f"made the 10-minute 1080p {args.long_fps:g} fps clip in {time.perf_counter() - started:.0f} s")
        long_figures = run_child(long, args.torch_threads)
        report("10-minute 1080p clip", long, long_figures)
        extra = long_figures["peak_mib"] - short_figures["peak_mib"]
        print(f"peak RSS, 10 minutes minus 60 s: {extra:+.0f} MiB (target <= 300 MB: "
              f"{'met' if extra * 2**20 <= 300e6 else 'MISSED'})")


if __name__ == "__main__":
    main()
