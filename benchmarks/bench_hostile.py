"""What one hostile request costs: peak memory and time of a whole ``analyze``.

Run from the repository root: ``python benchmarks/bench_hostile.py``.

Each case runs ``python -m emotion_llama analyze FILE --json`` (the default, shipped
tiny model) in a fresh process and prints its peak RSS, its wall time and how it
ended: a JSON result, or exactly one readable error line with exit status 2 (no
traceback). The inputs are tiny files whose headers, or long texts, ask for a large
cost; a normal clip is measured in the same run as the baseline. Targets per case:
peak RSS <= 1.2 GB and <= 20 s.

Peak RSS is the child's own high-water mark from ``os.wait4``; the clips are made in
a separate process first so that this parent stays small (a new process starts from
its parent's high-water mark).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TARGET_RSS_MB = 1200
TARGET_SECONDS = 20.0
# Everyday words, so the long texts tokenise like speech and not like one repeated token.
SPEECH = (
    "well I really did not expect that to happen today and honestly it made me feel quite "
    "surprised but also a little worried about what comes next for all of us"
)
WORDS = SPEECH.split()


def words(count: int, start: int = 0) -> str:
    return " ".join(WORDS[(start + i) % len(WORDS)] for i in range(count))


@dataclass(frozen=True)
class Case:
    name: str
    clip: str
    flags: tuple[str, ...] = ()


CASES = [
    Case("baseline: a normal 3 s clip", "normal.mp4"),
    Case("audio track starting at 1e7 s", "audio_at_1e7s.mkv"),
    Case("8192x8192 frames (198 KB file)", "frames_8192x8192.mp4"),
    Case("2,500-word --subtitle", "normal.mp4", ("--subtitle", words(2500))),
    Case("32 labels x 60 words", "normal.mp4", ("--labels", ",".join(words(60, start) for start in range(32)))),
    Case("2,500-word --question", "normal.mp4", ("--task", "free", "--question", words(2500))),
]


@dataclass
class Outcome:
    peak_mb: float
    seconds: float
    ending: str  # "json", "error (exit 2)" or what went wrong
    detail: str


def make_clips(folder: Path) -> None:
    """Runs in its own process (see the module docstring)."""
    sys.path.insert(0, str(REPO / "tests"))
    import media_factory as factory

    recipes = {
        "normal.mp4": lambda path: factory.make_face_clip(path, factory.one_face()),
        "audio_at_1e7s.mkv": lambda path: factory.make_late_audio_clip(path, 1e7),
        "frames_8192x8192.mp4": factory.make_huge_frame_clip,
    }
    for name, make in recipes.items():
        if not (folder / name).exists():
            make(folder / name)


def run_case(case: Case, folder: Path) -> Outcome:
    command = [sys.executable, "-m", "emotion_llama", "analyze", str(folder / case.clip), "--json", *case.flags]
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        child = subprocess.Popen(command, cwd=REPO, stdout=out, stderr=err)
        _, status, usage = os.wait4(child.pid, 0)
        seconds = time.perf_counter() - started
        child.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    ending, detail = judge(child.returncode, stdout, stderr)
    return Outcome(usage.ru_maxrss / 1024, seconds, ending, detail)


def judge(status: int, stdout: str, stderr: str) -> tuple[str, str]:
    """How the run ended, and the label or the error line it gave."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    if status == 0:
        try:
            result = json.loads(stdout)
        except json.JSONDecodeError:
            return "exit 0 without JSON", stdout[-200:]
        present = ",".join(name for name, on in result.get("modalities_present", {}).items() if on)
        return "json", f"label {result.get('label')!r}; present: {present}; warnings: {result.get('warnings')}"
    if status == 2 and len(lines) == 1 and "Traceback" not in stderr:
        return "error (exit 2)", lines[0]
    return f"BAD exit {status}, {len(lines)} stderr lines", (lines[-1] if lines else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=Path, help="folder for the generated clips (default: a temporary one)")
    parser.add_argument("--make-clips", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.make_clips:
        make_clips(args.make_clips)
        return
    with tempfile.TemporaryDirectory() as scratch:
        folder = args.clips or Path(scratch)
        folder.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, __file__, "--make-clips", str(folder)], check=True)
        print(f"{'case':34} {'peak RSS':>9} {'time':>7}  {'target':6}  ending")
        for case in CASES:
            outcome = run_case(case, folder)
            met = outcome.peak_mb <= TARGET_RSS_MB and outcome.seconds <= TARGET_SECONDS
            ok = met and (outcome.ending in ("json", "error (exit 2)"))
            print(
                f"{case.name:34} {outcome.peak_mb:7.0f} MB {outcome.seconds:6.1f} s  {'met' if ok else 'MISSED':6}  "
                f"{outcome.ending}: {outcome.detail[:400]}",
                flush=True,
            )


if __name__ == "__main__":
    main()
