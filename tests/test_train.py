"""A few training steps on a handful of generated clips: every stage runs and learns."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from emotion_llama.training import StageSettings, TrainConfig, run

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng (Debian package) is not installed")


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory):
    from synthetic import generate_corpus

    folder = tmp_path_factory.mktemp("corpus")
    generate_corpus(folder, 20, seed=77, workers=2, progress=False, split="train")
    return folder


def test_every_stage_runs_and_the_losses_fall(small_corpus, tmp_path):
    config = TrainConfig(
        corpus=str(small_corpus),
        work=str(tmp_path / "work"),
        export=str(tmp_path / "export"),
        vocab_size=600,
        face_scale_factor=1.15,
        modality_dropout=0.3,
        follow_up_share=0.5,
        subtitle_dropout=0.2,
        missing_dropout=0.2,
        encoder_clue_weight={"audio": 4.0, "face": 1.0},
        encoders=StageSettings(epochs=2, lr=3e-3, batch_size=10),
        language=StageSettings(epochs=8, lr=5e-3, batch_size=5),
        coarse_tuning=StageSettings(epochs=8, lr=5e-3, batch_size=5),
        fine_tuning=StageSettings(epochs=8, lr=5e-3, batch_size=5),
    )
    report = run(config)
    # The loss on a fixed probe batch, dropout off, before and after each stage. The LLM
    # itself trains in language pretraining; afterwards only adapters and LoRA move.
    assert report["language_loss"]["probe_after"] < 0.8 * report["language_loss"]["probe_before"], report
    for stage in ("coarse_tuning_loss", "fine_tuning_loss"):
        assert report[stage]["probe_after"] < report[stage]["probe_before"], (stage, report[stage])
    assert set(report["encoder_accuracy"]) == {"global", "face", "temporal", "audio"}
    exported = tmp_path / "export"
    assert (exported / "model.safetensors").is_file() and (exported / "tokenizer.json").is_file()
    assert json.loads((exported / "training.json").read_text())["report"]["seconds"]["fine_tuning"] > 0

    # One cache holds the run's decoded clips and their features.
    cache = tmp_path / "work" / "cache"
    assert sorted(p.name for p in cache.iterdir()) == ["clips", "features"]
    assert len(list((cache / "clips").glob("*.npz"))) == len(list((cache / "features" / "meta").glob("*.json"))) > 0

    # Resumable: a second run finds every stage done and repeats none of them.
    stages = ("encoders", "language", "coarse_tuning", "fine_tuning")
    again = run(config)
    assert {k: again["seconds"][k] for k in stages} == {k: report["seconds"][k] for k in stages}

    # Only adapters and LoRA changed during instruction tuning: the LLM's own weights did not.
    from emotion_llama.checkpoints import from_pretrained

    before = from_pretrained(tmp_path / "work" / "stages" / "language")
    after = from_pretrained(exported)
    base_keys = [k for k in before.state_dict() if k.startswith("llama_model.") and ".lora_" not in k]
    assert any("mlp" in k for k in base_keys)
    assert all(torch.equal(before.state_dict()[k], after.state_dict()[k]) for k in base_keys)
    assert not torch.equal(before.llama_proj.weight, after.llama_proj.weight)


def test_follow_up_conversation_trains_label_then_reasoning():
    import random

    from emotion_llama.data.merr import Annotation
    from emotion_llama.training.fine_tuning import FINE_TUNING
    from emotion_llama.training.tuning import TuningSample, conversation

    ann = Annotation("clip", label="sad", subtitle="It is over.", fine_reasoning="The voice is low. Overall, sad.")
    sample = TuningSample("clip", None, ann.subtitle, ann)
    rng = random.Random(0)
    follow = conversation(sample, "reason", rng, FINE_TUNING, subtitle=ann.subtitle, follow_up=1.0)
    single = conversation(sample, "reason", rng, FINE_TUNING, subtitle=ann.subtitle, follow_up=0.0)
    assert [p.text for p in follow if p.kind == "answer"] == ["sad", "The voice is low. Overall, sad."]
    assert [p.text for p in single if p.kind == "answer"] == ["The voice is low. Overall, sad."]
    assert sum(p.kind == "bos" for p in follow) == 2 and sum(p.kind == "bos" for p in single) == 1


def test_reasoning_questions_without_subtitle_get_answers_that_quote_no_words():
    import random

    from emotion_llama.data.merr import Annotation
    from emotion_llama.training.coarse_tuning import COARSE_TUNING
    from emotion_llama.training.common import InputDropout
    from emotion_llama.training.fine_tuning import FINE_TUNING
    from emotion_llama.training.tuning import TuningSample, conversation, with_dropout

    bare = {"coarse_caption": "A low voice; no subtitle is given.",
            "fine_reasoning": "The voice is low. There is no subtitle. Overall, sad."}
    ann = Annotation("clip", label="sad", subtitle="It is over.", coarse_caption='Says: "It is over."',
                     fine_reasoning='The voice is low. She says "It is over." Overall, sad.',
                     meta={"without_subtitle": bare})
    sample = TuningSample("clip", None, ann.subtitle, ann)
    rng = random.Random(0)
    drops = [with_dropout(sample, "reason", rng, InputDropout(subtitle=0.5))[1] for _ in range(400)]
    assert 150 < drops.count(None) < 250 and set(drops) == {None, "It is over."}
    for stage, key in ((COARSE_TUNING, "coarse_caption"), (FINE_TUNING, "fine_reasoning")):
        answers = [p.text for p in conversation(sample, "reason", rng, stage, subtitle=None) if p.kind == "answer"]
        assert answers == [bare[key]]
        answers = [p.text for p in conversation(sample, "reason", rng, stage, subtitle=ann.subtitle) if p.kind == "answer"]
        assert answers == [getattr(ann, key)]
    # Data without such answers (real MERR) keeps the subtitle on every reasoning question.
    plain = TuningSample("clip", None, ann.subtitle, Annotation("clip", label="sad", subtitle="It is over."))
    assert {with_dropout(plain, "reason", rng, InputDropout(subtitle=0.9))[1] for _ in range(50)} == {"It is over."}


def test_label_questions_on_agreeing_clips_are_asked_as_if_the_voice_or_the_face_were_missing():
    """What a missing sound track or an unseen face looks like to the model (zeros from the
    encoders that read them), on clips whose words agree with the label, so the words and
    the remaining modality still give it; never on clips whose words mislead, nor on
    reasoning questions (their answers cite every modality)."""
    import random

    import torch

    from emotion_llama.data.merr import Annotation
    from emotion_llama.encoders import EncodedClip
    from emotion_llama.training.common import InputDropout
    from emotion_llama.training.tuning import TuningSample, with_dropout

    features = {m: torch.ones(4) for m in ("global", "face", "temporal", "audio")}
    encoded = EncodedClip(features, {m: True for m in features})

    def sample(words: str, missing: list[str]) -> TuningSample:
        ann = Annotation("clip", label="sad", subtitle="It is over.", missing=missing,
                         modalities={"face": "sad", "voice": "sad", "words": words})
        return TuningSample("clip", encoded, ann.subtitle, ann)

    def zeroed(s: TuningSample, task: str, share: float) -> list[tuple[str, ...]]:
        rng = random.Random(0)
        out = []
        for _ in range(400):
            clip, subtitle = with_dropout(s, task, rng, InputDropout(missing=share))
            assert subtitle == "It is over."
            out.append(tuple(m for m, f in clip.features.items() if not f.any()))
        return out

    left_out = zeroed(sample("sad", []), "emotion", 0.5)
    assert 70 < left_out.count(("audio",)) < 130 and 70 < left_out.count(("face", "temporal")) < 130
    assert left_out.count(()) + left_out.count(("audio",)) + left_out.count(("face", "temporal")) == 400
    assert set(zeroed(sample("happy", []), "emotion", 1.0)) == {()}  # the words mislead
    assert set(zeroed(sample("sad", ["audio"]), "emotion", 1.0)) == {()}  # already missing one
    assert set(zeroed(sample("sad", []), "reason", 1.0)) == {()}


def test_encoder_pretraining_gives_the_same_weights_twice(small_corpus, tmp_path):
    """HuBERT's SpecAugment masks come from NumPy's global generator: whatever state that is
    in, retraining must give the same speech encoder (and so the same shipped model)."""
    import numpy as np

    from emotion_llama.config import preset
    from emotion_llama.data.merr import load_annotations
    from emotion_llama.pipeline import random_tiny_model
    from emotion_llama.training.cache import RunCache
    from emotion_llama.training.decoding import decode_clips
    from emotion_llama.training.encoder_pretraining import pretrain_encoders

    annotations = load_annotations(small_corpus)
    cache = RunCache(tmp_path / "cache")
    decode_clips(annotations, small_corpus, cache, preset("tiny"), workers=2, face_scale_factor=1.15)
    settings = StageSettings(epochs=1, lr=3e-3, batch_size=8)
    weights = []
    for unrelated_seed in (1, 2):
        np.random.seed(unrelated_seed)
        model = random_tiny_model(seed=0)
        pretrain_encoders(model, annotations, cache, settings, seed=0,
                          epochs={"audio": 1, "face": 0.1, "temporal": 0.1, "global": 0.1})
        weights.append({k: v.clone() for k, v in model.encoders.audio.state_dict().items()})
    untrained = random_tiny_model(seed=0).encoders.audio.state_dict()
    assert any(not torch.equal(weights[0][k], untrained[k]) for k in untrained)  # it did train
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_the_face_encoder_trains_on_two_random_crops_of_a_clip_and_is_measured_on_all(small_corpus, tmp_path,
                                                                                      monkeypatch):
    """``face_train_frames``: each training step sees that many of a clip's crops (drawn at
    random, in time order); the held-out accuracy, like inference, averages all of them."""
    import random

    import numpy as np

    from emotion_llama.config import preset
    from emotion_llama.data.merr import load_annotations
    from emotion_llama.encoders import FaceEncoder
    from emotion_llama.pipeline import random_tiny_model
    from emotion_llama.training.cache import RunCache
    from emotion_llama.training.decoding import decode_clips
    from emotion_llama.training.encoder_pretraining import _some_frames, pretrain_encoders

    crops = np.arange(8)[:, None, None, None] * np.ones((8, 4, 4, 3), dtype=np.uint8)
    drawn = [_some_frames(crops, 2, random.Random(seed))[:, 0, 0, 0].tolist() for seed in range(20)]
    assert all(len(d) == 2 and d[0] < d[1] for d in drawn) and len({tuple(d) for d in drawn}) > 5
    assert len(_some_frames(crops[:2], 4, random.Random(0))) == 2

    annotations = load_annotations(small_corpus)
    for held_out in annotations[::3]:
        held_out.split = "val"
    cache = RunCache(tmp_path / "cache")
    decode_clips(annotations, small_corpus, cache, preset("tiny"), workers=2, face_scale_factor=1.15)
    rows = {True: set(), False: set()}
    real = FaceEncoder.frame_features

    def spy(self, pixels):
        rows[self.training].add(pixels.shape[0])
        return real(self, pixels)

    monkeypatch.setattr(FaceEncoder, "frame_features", spy)
    pretrain_encoders(random_tiny_model(seed=0), annotations, cache, StageSettings(epochs=1, lr=3e-3, batch_size=4),
                      seed=0, epochs={"audio": 0.1, "face": 1, "temporal": 0.1, "global": 0.1}, face_frames=2)
    assert rows[True] == {8}, "4 clips a step, 2 crops each"
    assert all(n % 8 == 0 for n in rows[False]) and max(rows[False]) > 8, "all 8 crops of each held-out clip"


def test_configs_with_the_stage_keys_of_before_the_paper_names_still_load(tmp_path):
    old = {"corpus": "corpus", "work": "work", "stage1": {"epochs": 2}, "stage2": {"epochs": 3}, "label_share_stage2": 0.4}
    (tmp_path / "old.json").write_text(json.dumps(old))
    config = TrainConfig.load(tmp_path / "old.json")
    assert (config.coarse_tuning.epochs, config.fine_tuning.epochs, config.fine_label_share) == (2, 3, 0.4)
    assert config.work == str(tmp_path / "work")
    root = Path(__file__).parent.parent
    shipped = TrainConfig.load(root / "configs" / "tiny.json")
    # configs/tiny.json is the recipe that made the shipped weights (their training.json)
    made_with = json.loads((root / "emotion_llama" / "weights" / "tiny" / "training.json").read_text())["config"]
    assert (shipped.coarse_tuning.epochs, shipped.fine_tuning.epochs, shipped.fine_label_share) == (
        made_with["coarse_tuning"]["epochs"], made_with["fine_tuning"]["epochs"], made_with["fine_label_share"])
    assert shipped.encoder_epochs == made_with["encoder_epochs"] and shipped.language.epochs == made_with["language"]["epochs"]
    assert shipped.face_train_frames == made_with.get("face_train_frames")
    assert shipped.missing_dropout == made_with.get("missing_dropout", 0.0)


def test_nothing_outside_training_imports_it_but_the_train_command():
    """Inference never loads training code: only the training commands of the CLI (``train``,
    ``feature-stats``) import it, inside their functions."""
    import ast

    package = Path(__file__).parent.parent / "emotion_llama"
    found = set()
    for path in package.rglob("*.py"):
        if "training" in path.relative_to(package).parts:
            continue
        for statement in ast.parse(path.read_text()).body:
            owner = statement.name if isinstance(statement, ast.FunctionDef) else "<module>"
            for node in ast.walk(statement):
                if isinstance(node, ast.ImportFrom):
                    names = [node.module or "", *(f"{node.module or ''}.{a.name}" for a in node.names)]
                elif isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                else:
                    continue
                if any("training" in name.split(".") for name in names):
                    found.add((path.name, owner))
    assert found == {("cli.py", "cmd_train"), ("cli.py", "cmd_feature_stats")}, found


def test_two_length_groups_give_the_loss_and_gradients_of_the_batch_padded_whole(tiny_model, prepared_clip):
    """Short label questions run apart from long reasoning answers (less padding), and the
    step is still the mean over the whole batch's answer tokens."""
    import random

    from emotion_llama.data.merr import Annotation
    from emotion_llama.training.common import length_groups
    from emotion_llama.training.fine_tuning import FINE_TUNING
    from emotion_llama.training.tuning import TuningSample, conversation, instruction_loss, trainable_parameters

    assert length_groups([10, 10, 10, 50, 50]) == [(0, 3), (3, 5)]
    assert length_groups([40, 41, 42]) == [(0, 3)]  # no cut saves a padded position
    encoded, rng = tiny_model.encode(prepared_clip), random.Random(0)
    batch = []
    for i, words in enumerate(["It is over.", "No.", "I can't believe this happened to us again today."] * 2):
        ann = Annotation("clip", label="sad", subtitle=words, fine_reasoning="The voice is low and slow. " * (1 + 4 * i))
        batch.append(conversation(TuningSample("clip", encoded, words, ann), ("emotion", "reason")[i % 2], rng,
                                  FINE_TUNING, subtitle=words))
    params = trainable_parameters(tiny_model)
    results = []
    for by_length in (False, True):
        for p in params:
            p.grad = None
        loss = instruction_loss(tiny_model, batch, [tiny_model.project(encoded) for _ in batch], by_length=by_length)
        loss.backward()
        results.append((loss.item(), torch.cat([p.grad.flatten() for p in params])))
    for p in params:
        p.requires_grad_(False)
    (whole, grad_whole), (split, grad_split) = results
    assert split == pytest.approx(whole, rel=1e-5) and whole > 0
    assert torch.allclose(grad_split, grad_whole, atol=1e-6 * grad_whole.abs().max().item() + 1e-9)
