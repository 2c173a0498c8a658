"""A few training steps on a handful of generated clips: every stage runs and learns."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from emotion_llama.train import StageSettings, TrainConfig, run

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng (Debian package) is not installed")


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory):
    from emotion_llama.data.synth import generate_corpus

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
        encoders=StageSettings(epochs=2, lr=3e-3, batch_size=10),
        language=StageSettings(epochs=8, lr=5e-3, batch_size=5),
        stage1=StageSettings(epochs=8, lr=5e-3, batch_size=5),
        stage2=StageSettings(epochs=8, lr=5e-3, batch_size=5),
    )
    report = run(config)
    # The loss on a fixed probe batch, dropout off, before and after each stage. The LLM
    # itself trains in the language stage; afterwards only adapters and LoRA move.
    assert report["language_loss"]["probe_after"] < 0.8 * report["language_loss"]["probe_before"], report
    for stage in ("stage1_loss", "stage2_loss"):
        assert report[stage]["probe_after"] < report[stage]["probe_before"], (stage, report[stage])
    assert set(report["encoder_accuracy"]) == {"global", "face", "temporal", "audio"}
    exported = tmp_path / "export"
    assert (exported / "model.safetensors").is_file() and (exported / "tokenizer.json").is_file()
    assert json.loads((exported / "training.json").read_text())["report"]["seconds"]["stage2"] > 0

    # Resumable: a second run finds every stage done and repeats none of them.
    stages = ("encoders", "language", "stage1", "stage2")
    again = run(config)
    assert {k: again["seconds"][k] for k in stages} == {k: report["seconds"][k] for k in stages}

    # Only adapters and LoRA changed during instruction tuning: the LLM's own weights did not.
    from emotion_llama.checkpoints import from_pretrained

    before = from_pretrained(tmp_path / "work" / "stages" / "1_language")
    after = from_pretrained(exported)
    base_keys = [k for k in before.state_dict() if k.startswith("llama_model.") and ".lora_" not in k]
    assert any("mlp" in k for k in base_keys)
    assert all(torch.equal(before.state_dict()[k], after.state_dict()[k]) for k in base_keys)
    assert not torch.equal(before.llama_proj.weight, after.llama_proj.weight)
