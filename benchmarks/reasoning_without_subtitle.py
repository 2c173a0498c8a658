"""Does the reasoning make up words when the clip has no subtitle?

In the app a clip often comes without a subtitle (none typed, no Whisper checkpoint).
This asks the label and then the reasoning, as the app does, with no subtitle in the
prompt, for the first N clips of an evaluated test set, and counts the drafts that quote
words anyway (any double quote: the corpus's reasoning quotes the subtitle). It also
reports the share of the true face and voice clues the reasoning names, and how often its
first draft argues for the label answer. Run from the repository root after
``evaluate`` has cached the test set's features, e.g.::

    python benchmarks/reasoning_without_subtitle.py --data runs/testset \\
        --features runs/testset/features/tiny-HASH --clips 60 [--weights DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from emotion_llama.data.merr import clue_vocabulary, find_clues
from emotion_llama.evaluate import load_split
from emotion_llama.features import FeatureStore
from emotion_llama.pipeline import load_engine
from emotion_llama.prompts import reason_after_label
from emotion_llama.vocab import (
    MERR_LABELS,  # after the path is set
    REASON_SETTINGS,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="test set folder (annotations)")
    parser.add_argument("--features", required=True, type=Path, help="its feature cache for these weights")
    parser.add_argument("--clips", type=int, default=60)
    parser.add_argument("--weights", default=None, help="weights folder (default: the engine's default)")
    args = parser.parse_args()

    engine = load_engine(args.weights)
    model = engine.model
    store = FeatureStore(args.features)
    annotations, _ = load_split(args.data, None)
    annotations = [a for a in annotations if store.has(a.name) and a.clues][: args.clips]
    if not annotations:
        sys.exit(f"no clip of {args.data} has features in {args.features}")
    quoted = agreed = 0
    recall = []
    with torch.no_grad():
        for ann in annotations:
            projected = model.project(store.read(ann.name).encoded)
            probabilities = engine.label_probabilities(projected, None, MERR_LABELS, demo_parity=False)
            label = max(probabilities, key=probabilities.get)
            prompt = reason_after_label(label, subtitle=None, labels=MERR_LABELS)
            text, check = engine.writer.reasoning_quietly(model.assemble(prompt, projected), label, MERR_LABELS,
                                                          REASON_SETTINGS, 0)
            quoted += '"' in text
            agreed += check.agrees
            true = set(ann.clues.get("face", [])) | set(ann.clues.get("voice", []))
            found = find_clues(text, clue_vocabulary())
            if true:
                recall.append(len(true & (set(found["face"]) | set(found["voice"]))) / len(true))
    print(json.dumps({
        "clips": len(annotations),
        "quote_words": quoted,
        "first_draft_agrees": agreed,
        "face_voice_clue_recall": round(sum(recall) / max(len(recall), 1), 4),
    }))


if __name__ == "__main__":
    main()
