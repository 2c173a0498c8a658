"""The out-of-domain warning: real clips are flagged, the shipped synthetic examples are not,
the thresholds come from held-out training clips, and weights without statistics give no signal."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from emotion_llama.analysis import AnalysisOptions
from emotion_llama.familiarity import STATS_FILE, VIEWS, FeatureStats
from emotion_llama.pipeline import TINY_WEIGHTS, load_engine
from emotion_llama.vocab import GREEDY

ROOT = Path(__file__).resolve().parents[1]
# The eight examples made by the corpus generator (two_people.mp4 is a test-factory clip).
SYNTHETIC_EXAMPLES = [e["clip"] for e in json.loads((ROOT / "examples" / "examples.json").read_text())
                      if e.get("source", "").startswith("synth")]
LABEL_ONLY = AnalysisOptions(task="emotion", explain=False, generation=replace(GREEDY, max_new_tokens=4))


@pytest.fixture(scope="module")
def engine():
    return load_engine(str(TINY_WEIGHTS), device="cpu")


def test_shipped_stats_load_with_thresholds_measured_on_held_out_clips(engine):
    stats = engine.familiarity
    assert stats is not None, f"{STATS_FILE} is missing beside the tiny weights (python -m emotion_llama feature-stats)"
    assert set(stats.stats) == set(VIEWS)
    assert stats.quantile >= 0.95
    for view, item in stats.stats.items():
        assert len(item.held_out) >= 100, view
        assert item.threshold == pytest.approx(float(np.quantile(item.held_out.astype(np.float64), stats.quantile)),
                                               rel=1e-6), view
        # Whitened by the training clips' own spread, a typical held-out clip lies about 1 from their mean.
        assert 0.5 < float(np.median(item.held_out)) < 1.5 < item.threshold, view


def test_stats_measured_for_other_encoders_are_not_used(engine):
    assert FeatureStats.load(TINY_WEIGHTS, engine.encoders_key) is not None
    assert FeatureStats.load(TINY_WEIGHTS, "another-encoder") is None


def test_fit_takes_the_threshold_from_held_out_clips_and_measures_in_their_units(tmp_path):
    from emotion_llama.training.feature_stats import fit_stats

    rng = np.random.default_rng(0)
    mixing = rng.standard_normal((16, 16))  # correlated features, as real descriptors are
    vectors = list(rng.standard_normal((600, 16)) @ mixing)
    stats, report = fit_stats({"voice": vectors}, quantile=0.95, held_out_every=3, meta={"encoders": "e"})
    assert report["voice"]["held_out_clips"] == 200 and report["voice"]["fit_clips"] == 400
    loaded = FeatureStats.load(stats.save(tmp_path).parent, "e").stats["voice"]
    assert loaded.threshold == pytest.approx(np.quantile(loaded.held_out.astype(np.float64), 0.95))
    fresh = rng.standard_normal((300, 16)) @ mixing  # new clips from the same distribution
    assert np.mean([loaded.distance(v) > loaded.threshold for v in fresh]) <= 0.12
    assert loaded.distance(fresh[0] + 20 * fresh.std(axis=0)) > loaded.threshold
    # A shift along the direction the training clips vary least is flagged though it is
    # shorter than a typical clip's distance from their mean: the distance is in their units.
    _, singular, directions = np.linalg.svd(mixing)
    shift = 40 * singular[-1] * directions[-1]
    assert np.linalg.norm(shift) < np.median(np.linalg.norm(fresh - fresh.mean(axis=0), axis=1))
    assert loaded.distance(fresh[0] + shift) > loaded.threshold


def test_the_warning_names_what_lies_outside(engine):
    assert engine.familiarity.warning(["frame", "voice"]) == (
        "This clip is unlike the synthetic clips Emotion-LLaMA-Tiny was trained on (its whole frame and voice lie far "
        "outside theirs), so its label and reasoning here mean nothing.")


@pytest.mark.parametrize("name", SYNTHETIC_EXAMPLES)
def test_synthetic_example_clips_are_not_flagged(engine, name):
    assert len(SYNTHETIC_EXAMPLES) == 8
    check = engine.familiarity.check(*engine.prepare(ROOT / "examples" / name))
    assert check.distances and not check.out_of_domain, check.to_json()


def test_every_real_clip_is_flagged(engine, shared_clips):
    assert shared_clips
    for clip in shared_clips:
        check = engine.familiarity.check(*engine.prepare(clip))
        assert check.out_of_domain, (clip.name, check.to_json())


def test_a_real_clips_result_carries_the_warning(engine, shared_clips):
    analysis = engine.analyze(shared_clips[0], options=LABEL_ONLY)
    result = analysis.to_json()
    assert result["out_of_domain"]["flagged"] is True
    assert any(score > 1 for score in result["out_of_domain"]["scores"].values())
    assert any("unlike the synthetic clips Emotion-LLaMA-Tiny was trained on" in w and "mean nothing" in w
               for w in result["warnings"])


def test_a_left_out_modality_is_not_judged(engine, shared_clips):
    options = AnalysisOptions(leave_out=("global", "audio"))
    check = engine.familiarity.check(*engine.prepare(shared_clips[0], options=options))
    assert set(check.distances) == {"face"}


def test_weights_without_stats_give_no_signal(engine, tmp_path):
    # A test-factory clip (two drawn faces, a 220 Hz tone for a voice): unlike the corpus, so flagged with the stats.
    clip = ROOT / "examples" / "two_people.mp4"
    assert engine.analyze(clip, options=LABEL_ONLY).to_json()["out_of_domain"]["flagged"] is True
    folder = tmp_path / "tiny"
    shutil.copytree(TINY_WEIGHTS, folder, ignore=shutil.ignore_patterns(STATS_FILE))
    bare = load_engine(str(folder), device="cpu")
    assert bare.familiarity is None
    analysis = bare.analyze(clip, options=LABEL_ONLY)
    assert analysis.to_json()["out_of_domain"] is None
    assert not any("unlike the" in w for w in analysis.warnings)


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng (Debian package) is not installed")
def test_the_command_measures_a_corpus_beside_the_weights(engine, tmp_path, capsys):
    from emotion_llama.cli import main
    from synthetic import generate_corpus

    generate_corpus(tmp_path / "corpus", 30, seed=1000, workers=1, progress=False, split="train")
    weights = tmp_path / "tiny"
    shutil.copytree(TINY_WEIGHTS, weights, ignore=shutil.ignore_patterns(STATS_FILE))
    assert main(["feature-stats", str(tmp_path / "corpus"), "--weights", str(weights)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["views"]["frame"]["fit_clips"], report["views"]["frame"]["held_out_clips"]) == (20, 10)
    stats = load_engine(str(weights), device="cpu").familiarity
    assert stats is not None and stats.meta["clips"] == 30
    # The first 30 training clips are the first 30 of the shipped statistics' 480: the same frames.
    assert np.allclose(stats.stats["frame"].mean, engine.familiarity.stats["frame"].mean, atol=0.05)
