"""How long a visitor waits on the page: the emotion task and the reasoning, on real clips.

Run from the repository root: ``python benchmarks/bench_page.py [--clips ../shared/clips] [--repeats 2]``.

Each clip is analysed as the page's Analyze does it (``handlers.analyze_api``: a clip new
to the server, so decoding, faces and encoding are included; the model warm), with the
clip's subtitle typed, for the emotion task and for the reasoning (a follow-up to the
label, greedy, 200 tokens at most, redrafts on). Printed per clip: the fastest of
``--repeats`` runs of each, the reasoning's drafts and stage times; then the medians.
Targets (issue 14): reasoning <= 3 s, emotion <= 1.2 s on this 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from emotion_llama.cache import ClipCache
from emotion_llama.pipeline import load_engine
from emotion_llama.ui import handlers
from emotion_llama.ui.uploads import UploadStore


def one(demo: handlers.Demo, clip: Path, subtitle: str | None, task: str, uploads: Path) -> tuple[float, dict]:
    """One analysis of a fresh upload of ``clip`` (a new cache: nothing decoded before)."""
    demo.engine.cache = ClipCache(4)
    upload = uploads / "0a1b" / clip.name
    upload.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(clip, upload)
    start = time.perf_counter()
    result = handlers.analyze_api(demo, str(upload), subtitle, task, None, "merr", None, 0.0, 200)
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", default=str(REPO.parent / "shared" / "clips"))
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    folder = Path(args.clips)
    subtitles = json.loads((folder / "subtitles.json").read_text()) if (folder / "subtitles.json").is_file() else {}
    engine = load_engine()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        demo = handlers.Demo(engine, UploadStore(Path(tmp)))
        for clip in sorted(folder.glob("*.mp4")):
            subtitle = subtitles.get(clip.name)
            one(demo, clip, subtitle, "emotion", Path(tmp))  # warm-up
            times = {task: [one(demo, clip, subtitle, task, Path(tmp)) for _ in range(args.repeats)]
                     for task in ("emotion", "reason")}
            best = {task: min(runs, key=lambda run: run[0]) for task, runs in times.items()}
            reason = best["reason"][1]
            row = {"clip": clip.name, "emotion_s": round(best["emotion"][0], 2), "reason_s": round(best["reason"][0], 2),
                   "drafts": (reason.get("reasoning_check") or {}).get("drafts"),
                   "stages": {k: round(v, 2) for k, v in reason["timings"].items()
                              if k in ("decode", "faces", "label_probabilities", "generate", "attention")}}
            rows.append(row)
            print(json.dumps(row), flush=True)
    print(json.dumps({"median_emotion_s": statistics.median(r["emotion_s"] for r in rows),
                      "median_reason_s": statistics.median(r["reason_s"] for r in rows),
                      "max_emotion_s": max(r["emotion_s"] for r in rows),
                      "max_reason_s": max(r["reason_s"] for r in rows)}))


if __name__ == "__main__":
    main()
