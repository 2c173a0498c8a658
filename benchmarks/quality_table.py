"""Quality with a margin: trained weights scored on fresh synthetic sets, all clips.

Run from the repository root (espeak-ng needed to make the sets), e.g. for the shipped
weights and a second retrain::

    python benchmarks/quality_table.py --weights emotion_llama/weights/tiny runs/export-seed1 \\
        --seeds 2000 4000 5000 --n 300

Each seed's set is made once with ``synth --n N --seed SEED`` (into ``runs/fresh-SEED``) and
every clip of it is scored (as ``evaluate --split ''`` does, labels only). Printed: one row
per weights and seed with weighted F1, conflict, missing-audio and missing-face accuracy,
whether the row meets the bars, and the spread (largest minus smallest) of each figure
across the weights on the same set.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from emotion_llama.evaluate import evaluate, feature_folder  # after the path is set
from emotion_llama.pipeline import load_engine

# The bars of issue 17: every set, every retrain.
BARS = {"weighted_f1": 0.93, "conflict_accuracy": 0.85, "missing_audio_accuracy": 0.90,
        "missing_face_accuracy": 0.90}


def fresh_set(seed: int, n: int) -> Path:
    """The set of ``n`` clips made with ``seed`` (made on first use)."""
    from synthetic import generate_corpus

    folder = ROOT / "runs" / f"fresh-{seed}"
    if not (folder / "annotations.json").is_file():
        generate_corpus(folder, n, seed=seed, progress=False)
    return folder


def scores(engine, folder: Path) -> dict[str, float]:
    from emotion_llama.data.merr import load_annotations

    report = evaluate(engine, load_annotations(folder), folder, feature_folder(engine, folder), reasoning=False)
    metrics = report["variants"]["all"]
    return {key: metrics[key] for key in BARS} | {"n": metrics["n"]}


def table(rows: list[tuple[str, int, dict]]) -> str:
    lines = ["| weights | seed | n | " + " | ".join(BARS) + " | meets the bars |", "|---" * (len(BARS) + 4) + "|"]
    for weights, seed, m in rows:
        ok = all(m[key] >= bar for key, bar in BARS.items())
        lines.append(f"| {weights} | {seed} | {m['n']} | " + " | ".join(f"{m[k]:.3f}" for k in BARS)
                     + f" | {'yes' if ok else 'no'} |")
    return "\n".join(lines)


def spread(rows: list[tuple[str, int, dict]]) -> str:
    lines = ["| seed | " + " | ".join(f"spread of {k}" for k in BARS) + " |", "|---" * (len(BARS) + 1) + "|"]
    for seed in sorted({s for _, s, _ in rows}):
        same = [m for _, s, m in rows if s == seed]
        lines.append(f"| {seed} | " + " | ".join(f"{max(m[k] for m in same) - min(m[k] for m in same):.3f}"
                                                 for k in BARS) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--weights", nargs="+", required=True, help="weights folders")
    parser.add_argument("--seeds", nargs="+", type=int, default=[2000, 4000, 5000])
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args()
    sets = {seed: fresh_set(seed, args.n) for seed in args.seeds}
    rows = []
    for weights in args.weights:  # each model loaded once, scored on every set
        engine = load_engine(weights, device="cpu")
        rows += [(Path(weights).name, seed, scores(engine, folder)) for seed, folder in sets.items()]
    rows.sort(key=lambda row: row[1])
    print(table(rows), "", spread(rows), sep="\n")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
