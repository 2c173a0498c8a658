"""The shipped tiny model: its scores on a fixed generated test set, and its example clips.

A regression in the media pipeline, the encoders, the prompt layout or the weights shows
up here as a drop in weighted F1 (the model card has the full 500-clip figures; these
thresholds sit below what the shipped weights measure on this small set, see
``docs/model_card.md``).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from emotion_llama.pipeline import TINY_WEIGHTS
from emotion_llama.vocab import MER2023_LABELS, MERR_LABELS

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = json.loads((ROOT / "examples" / "examples.json").read_text())

# A fixed test set: 45 clips (five per label) from a seed no training run uses.
TEST_SEED, TEST_CLIPS, REASONING_CLIPS = 7070, 45, 18
# The v4 weights measured weighted F1 0.933, clue recall 0.863 and label agreement 1.0
# (18 of 18, every first draft) on this set; the thresholds hold for v5 too.
MIN_WEIGHTED_F1 = 0.85
MIN_CLUE_RECALL = 0.80
# The reasoning, asked after the label answer as the app asks it, argues for that label.
MIN_LABEL_AGREEMENT = 0.85
# Clips whose answers are checked for mixed pronouns (a seed of their own).
PRONOUN_SEED, PRONOUN_CLIPS = 7171, 100

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng (Debian package) is not installed")


@pytest.fixture(scope="module")
def engine():
    from emotion_llama.pipeline import load_engine

    assert (TINY_WEIGHTS / "model.safetensors").is_file(), "the trained tiny weights are not in the package"
    engine = load_engine(str(TINY_WEIGHTS), device="cpu")
    assert engine.info["weights"] == "tiny" and "warning" not in engine.info
    return engine


def test_the_shipped_weights_are_small_enough_for_a_space_without_lfs():
    total = sum(f.stat().st_size for f in TINY_WEIGHTS.iterdir())
    assert total < 10 * 1024 * 1024, f"{total / 2**20:.1f} MiB"


@needs_espeak
def test_scores_on_a_fixed_test_set_stay_above_the_thresholds(engine, tmp_path):
    from emotion_llama.data.merr import load_annotations
    from emotion_llama.evaluate import evaluate, hard_cases
    from synthetic import generate_corpus

    generate_corpus(tmp_path / "test", TEST_CLIPS, seed=TEST_SEED, workers=2, progress=False, split="test")
    annotations = load_annotations(tmp_path / "test")
    labels = evaluate(engine, annotations, tmp_path / "test", tmp_path / "features", reasoning=False)
    scores = labels["variants"]["all"]
    assert scores["n"] == TEST_CLIPS and not labels["skipped"]
    for case, names in hard_cases(annotations).items():  # each hard case scored apart, on its own clips
        assert names and scores[f"{case}_n"] == len(names), (case, scores)
    assert scores["weighted_f1"] >= MIN_WEIGHTED_F1, scores
    reasoning = evaluate(engine, annotations[:REASONING_CLIPS], tmp_path / "test", tmp_path / "features")["reasoning"]
    assert reasoning["clue_recall"] >= MIN_CLUE_RECALL, reasoning
    assert reasoning["label_agreement"] >= MIN_LABEL_AGREEMENT, reasoning


@needs_espeak
def test_the_reasoning_calls_the_person_one_way_on_100_generated_clips(engine, tmp_path):
    """No reasoning, and no description of the face or the voice, refers to the person with
    two different pronouns ("her face ... his speech")."""
    from emotion_llama.analysis import AnalysisOptions
    from emotion_llama.data.merr import load_annotations
    from synthetic import generate_corpus
    from tests.pronouns import pronoun_sets

    generate_corpus(tmp_path, PRONOUN_CLIPS, seed=PRONOUN_SEED, workers=2, progress=False, split="test")
    mixed = []
    for i, ann in enumerate(load_annotations(tmp_path)):
        task = ("reason", "visual", "audio")[i % 3]
        options = AnalysisOptions(task=task, explain=False, reasoning_redrafts=0)
        answer = engine.analyze(ann.video_path(tmp_path), ann.subtitle, options).answer
        if len(pronoun_sets(answer)) > 1:
            mixed.append((ann.name, task, answer))
    assert not mixed, mixed


LABELLED = [e for e in EXAMPLES if e.get("label")]
# The candidate lists a visitor can choose: the nine MERR labels, the six of MER2023, and a
# list of their own (order and case of their typing kept).
LABEL_SETS = {"merr": MERR_LABELS, "mer2023": MER2023_LABELS, "custom": ("Doubt", "happy", "fear", "angry")}


@pytest.mark.parametrize("with_subtitle", [True, False], ids=["with-subtitle", "bare-file"])
@pytest.mark.parametrize("example", LABELLED, ids=lambda e: e["clip"])
def test_each_example_clip_gets_its_true_label(engine, example, with_subtitle):
    """The page loads an example with its subtitle; a visitor who downloads the file and
    uploads it gets it without one."""
    subtitle = example["subtitle"] if with_subtitle else None
    analysis = engine.analyze(ROOT / "examples" / example["clip"], subtitle)
    assert analysis.label == example["label"], analysis.probabilities


@pytest.mark.parametrize("label_set", LABEL_SETS)
@pytest.mark.parametrize("example", LABELLED, ids=lambda e: e["clip"])
def test_the_emotion_question_in_chat_answers_one_label_of_the_chosen_set(engine, example, label_set):
    """``[emotion]`` in chat answers one label of the set, the one the analysis ranks first."""
    from emotion_llama.analysis import AnalysisOptions

    options = AnalysisOptions(labels=LABEL_SETS[label_set], explain=False)
    clip = ROOT / "examples" / example["clip"]
    session = engine.chat(clip, example["subtitle"], options)
    *_, answer = session.ask("", task="emotion")
    probabilities = engine.analyze(clip, example["subtitle"], options).probabilities
    assert answer in options.labels and answer == max(probabilities, key=probabilities.get), (answer, probabilities)
    if label_set == "merr":
        assert answer == example["label"]
