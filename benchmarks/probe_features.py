"""How much of the label do the frozen encoders' features carry? A linear read-out.

Run from the repository root after training and evaluating, e.g.::

    python benchmarks/probe_features.py --train-data runs/corpus --train-features runs/tiny/cache/features \\
        --test-data runs/testset --test-features runs/testset/features/tiny-HASH

A logistic regression is fitted on the training clips' pooled features (face, face
sequence, speech, mean of the global frame's tokens) and scored on the test clips, per
generator case (congruent, neutral words, conflict, missing audio, missing face). It is
fitted twice: on the features alone, and with the emotion the words express added as a
one-hot input, read from the annotation (an oracle for what the subtitle says).

If the full model scores about what the probe with words scores, the fusion in the LLM
is not what holds it back: better encoders are.
"""

from __future__ import annotations

import argparse
import collections
import sys
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from emotion_llama.data.merr import Annotation, load_annotations
from emotion_llama.vocab import MERR_LABELS  # after the path is set

# Folder names of the reference feature layout that ``FeatureStore`` writes.
POOLED = ("mae_340_UTT", "maeV_399_UTT", "HL-UTT")
GLOBAL_TOKENS = "global_tokens"
WORD_CLASSES = {label: i for i, label in enumerate(MERR_LABELS)}  # one more column: no emotion in the words


def clip_vector(features: Path, name: str, annotation: Annotation, with_words: bool) -> np.ndarray:
    parts = [np.load(features / folder / f"{name}.npy").reshape(-1) for folder in POOLED]
    tokens = np.load(features / GLOBAL_TOKENS / f"{name}.npy")
    parts.append(tokens.reshape(-1, tokens.shape[-1]).mean(axis=0))
    if with_words:
        words = np.zeros(len(WORD_CLASSES) + 1)
        words[WORD_CLASSES.get(annotation.modalities.get("words") or "", len(WORD_CLASSES))] = 1.0
        parts.append(words)
    return np.concatenate(parts)


def dataset(data: str, features: Path, splits: set[str], with_words: bool):
    annotations = [a for a in load_annotations(data) if (a.split or "train") in splits
                   and (features / POOLED[-1] / f"{a.name}.npy").exists() and a.label in WORD_CLASSES]
    x = np.stack([clip_vector(features, a.name, a, with_words) for a in annotations])
    return annotations, x, [a.label for a in annotations]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train-data", required=True)
    parser.add_argument("--train-features", required=True, type=Path)
    parser.add_argument("--test-data", required=True)
    parser.add_argument("--test-features", required=True, type=Path)
    args = parser.parse_args()
    for with_words in (False, True):
        _, x_train, y_train = dataset(args.train_data, args.train_features, {"train", "val"}, with_words)
        test, x_test, y_test = dataset(args.test_data, args.test_features, {"test"}, with_words)
        scaler = StandardScaler().fit(x_train)
        probe = LogisticRegression(max_iter=3000, C=0.5).fit(scaler.transform(x_train), y_train)
        hits = probe.predict(scaler.transform(x_test)) == np.array(y_test)
        by_case = collections.defaultdict(list)
        for annotation, hit in zip(test, hits):
            by_case[annotation.meta.get("case", "all")].append(hit)
        cases = ", ".join(f"{case} {np.mean(v):.3f} ({len(v)})" for case, v in sorted(by_case.items()))
        print(f"{'features + words' if with_words else 'features only':17s} accuracy {hits.mean():.3f} "
              f"over {len(hits)} clips; {cases}")


if __name__ == "__main__":
    main()
