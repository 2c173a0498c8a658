"""How often the out-of-domain warning fires: on real clips (it should, every time) and on
the synthetic test set (it should not, in more than 5 % of clips).

Run from the repository root, after ``python -m emotion_llama synth --n 500 --seed 2000
--split test --out runs/testset``::

    python benchmarks/out_of_domain.py --real PATH/TO/REAL/CLIPS --testset runs/testset [--limit 300]

Each real clip is analysed in full (label only, no attention), as the app would, and the
warning is looked for in the result; each synthetic clip is read and checked (the check
needs the decoded clip, not the language model).

``--encoder-features CORPUS`` also measures the same distance (Ledoit-Wolf, held-out
quantile) on the encoders' own features instead of the input views — the global frame's
CLS token beside its patches' mean, and the face, face-sequence and audio vectors — fit
on the clips in CORPUS (the one ``feature-stats`` read), and prints how many real and
synthetic clips that would flag. It is what showed that the tiny encoders cannot tell
real clips from synthetic ones (see ``emotion_llama/familiarity.py``).
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from emotion_llama.analysis import AnalysisOptions  # after the path is set
from emotion_llama.features import list_videos
from emotion_llama.pipeline import load_engine
from emotion_llama.vocab import ENCODED_MODALITIES, GREEDY

LABEL_ONLY = AnalysisOptions(task="emotion", explain=False, generation=replace(GREEDY, max_new_tokens=8))


def encoder_summaries(encoded) -> dict[str, np.ndarray]:
    """One vector per encoded modality the clip has."""
    out = {}
    for modality in ENCODED_MODALITIES:
        if encoded.present.get(modality):
            features = encoded.features[modality].float().cpu().numpy()
            out[modality] = np.concatenate([features[0], features[1:].mean(0)]) if modality == "global" else features
    return out


def scores_text(scores: dict[str, float]) -> str:
    return " ".join(f"{name}={score:.2f}" for name, score in scores.items())


def real_clips(engine, folder: Path) -> tuple[int, list[dict]]:
    """Clips whose result carries the warning, and each clip's encoder summaries; each printed."""
    warned, summaries = 0, []
    for video in list_videos(folder):
        analysis = engine.analyze(video, options=LABEL_ONLY)
        check = analysis.out_of_domain
        carries = check is not None and check.warning in analysis.warnings
        warned += carries
        summaries.append(encoder_summaries(engine.prepare(video)[1]))
        print(f"  {video.name:26s} {analysis.label:9s} {analysis.probabilities[analysis.label]:4.0%}  "
              f"warning={'yes' if carries else 'NO '}  {scores_text(check.scores) if check else 'no stats'}")
    return warned, summaries


def synthetic_clips(engine, testset: Path, limit: int | None) -> tuple[int, list[dict]]:
    """Flagged clips and each clip's encoder summaries; flagged ones printed with their generator case."""
    annotations = json.loads((testset / "annotations.json").read_text())
    flagged, by_view, by_case, summaries = 0, collections.Counter(), collections.Counter(), []
    for video in list_videos(testset / "videos")[:limit]:
        prepared, encoded = engine.prepare(video)
        check = engine.familiarity.check(prepared, encoded)
        summaries.append(encoder_summaries(encoded))
        if check.out_of_domain:
            flagged += 1
            by_view.update(check.beyond)
            case = annotations.get(video.stem, {}).get("meta", {}).get("case", "?")
            by_case[case] += 1
            print(f"  flagged {video.stem} ({case}): {scores_text(check.scores)}")
    print(f"  flagged by view: {dict(by_view)}; by generator case: {dict(by_case)}")
    return flagged, summaries


def encoder_feature_flags(engine, corpus: Path, quantile: float, groups: dict[str, list[dict]]) -> None:
    """Fit the distance on the corpus's encoder features and print the share of each group it flags."""
    from emotion_llama.familiarity import DEFAULT_HELD_OUT_EVERY
    from emotion_llama.training.feature_stats import fit_stats

    corpus_summaries = [encoder_summaries(engine.prepare(video)[1]) for video in list_videos(corpus)]
    vectors = {m: [s.get(m) for s in corpus_summaries] for m in ENCODED_MODALITIES}
    stats, _ = fit_stats(vectors, quantile, DEFAULT_HELD_OUT_EVERY, {})
    for name, summaries in groups.items():
        beyond = [[m for m, v in s.items() if stats.stats[m].distance(v) > stats.stats[m].threshold] for s in summaries]
        per_modality = collections.Counter(m for b in beyond for m in b)
        print(f"ENCODER FEATURES, {name}: {sum(map(bool, beyond))}/{len(beyond)} flagged; by modality {dict(per_modality)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--real", type=Path, help="a folder of real clips (every one should be flagged)")
    parser.add_argument("--testset", type=Path, help="the synthetic test set (seed 2000)")
    parser.add_argument("--limit", type=int, help="only the first N synthetic test clips")
    parser.add_argument("--weights", help="weights folder (default: the shipped tiny model)")
    parser.add_argument("--encoder-features", type=Path, metavar="CORPUS",
                        help="also measure the distance on the encoders' features, fit on this corpus")
    args = parser.parse_args()
    engine = load_engine(args.weights, device="cpu")
    if engine.familiarity is None:
        sys.exit("these weights have no feature_stats.safetensors: run python -m emotion_llama feature-stats first")
    thresholds = {v: round(s.threshold, 3) for v, s in engine.familiarity.stats.items()}
    print(f"thresholds (quantile {engine.familiarity.quantile} of held-out training clips): {thresholds}")
    groups = {}
    for name, folder, run in (("REAL", args.real, real_clips),
                              ("SYNTHETIC", args.testset, lambda e, f: synthetic_clips(e, f, args.limit))):
        if folder:
            start = time.perf_counter()
            print(f"{name.lower()} clips ({folder.name}):")
            count, groups[name] = run(engine, folder)
            print(f"{name}: {count}/{len(groups[name])} {'carry the warning' if name == 'REAL' else 'flagged'} "
                  f"= {count / max(len(groups[name]), 1):.1%} ({time.perf_counter() - start:.0f} s)")
    if args.encoder_features:
        encoder_feature_flags(engine, args.encoder_features, engine.familiarity.quantile, groups)


if __name__ == "__main__":
    main()
