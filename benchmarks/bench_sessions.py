"""Memory of many chat sessions, and what is left after their time-to-live.

Opens N conversations (default 50), each about a different generated 640x480 clip, through
the page's chat handler with the shipped tiny model, as N visitors would; prints the
server's RSS after warm-up, after all N, and after their time-to-live has passed and the
janitor has swept (the conversations and the decoded clips).

    python benchmarks/bench_sessions.py [--sessions 50] [--ttl 20]
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]


def make_clips(folder: Path, count: int) -> list[Path]:
    from media_factory import DrawnFace, make_face_clip

    def face(index: int):
        return lambda t: [DrawnFace(320 + index % 7 * 9, 240 - index % 5 * 7, 90 + index % 4 * 5, (index % 10) / 10)]

    return [make_face_clip(folder / f"visitor{i}.mp4", face(i), seconds=3.0, fps=10, size=(640, 480))
            for i in range(count)]


def rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


def open_conversation(demo, clip: Path, ticket=None):
    from emotion_llama.ui import handlers

    replies = list(handlers.chat(demo, "", "emotion", ticket, str(clip), "", "merr", "", 0.0, 4, "peak", [], False))
    return replies[-1][2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=50)
    parser.add_argument("--ttl", type=float, default=20.0, help="seconds (the app's default is 900)")
    args = parser.parse_args()

    from emotion_llama.cache import ClipCache
    from emotion_llama.pipeline import Engine, load_engine
    from emotion_llama.ui.handlers import Demo
    from emotion_llama.ui.sessions import ConversationStore, Janitor
    from emotion_llama.ui.uploads import UploadStore

    with tempfile.TemporaryDirectory() as folder:
        clips = make_clips(Path(folder), args.sessions + 1)
        shipped = load_engine()
        engine = Engine(shipped.model, shipped.info, cache=ClipCache(ttl=args.ttl))
        demo = Demo(engine, UploadStore(Path(folder) / "uploads"), ConversationStore(ttl=args.ttl))
        open_conversation(demo, clips[-1])  # warm-up: the model's own first-call allocations
        demo.conversations.sweep()
        gc.collect()
        start = rss_mb()
        peak = start
        for clip in clips[:-1]:
            open_conversation(demo, clip)
            peak = max(peak, rss_mb())
        after = rss_mb()
        held = {"conversations": len(demo.conversations), "decoded clips": len(engine.cache)}
        janitor = Janitor([demo.conversations.sweep, engine.cache.sweep], every=args.ttl / 4).start()
        time.sleep(args.ttl * 1.5)
        janitor.stop()
        gc.collect()
        final = rss_mb()
    report = {
        "sessions": args.sessions, "rss_start_mb": round(start), "rss_after_sessions_mb": round(after),
        "rss_peak_mb": round(peak), "growth_mb": round(peak - start), "held_after_sessions": held,
        "rss_after_ttl_mb": round(final), "left_after_ttl_mb": round(final - start),
        "held_after_ttl": {"conversations": len(demo.conversations), "decoded clips": len(engine.cache)},
    }
    print(json.dumps(report, indent=2))
    print(f"growth {report['growth_mb']} MB (target <= 400), after TTL {report['left_after_ttl_mb']} MB above the "
          "start (target <= 100)")


if __name__ == "__main__":
    main()
