"""Shared fixtures: a tiny random Emotion-LLaMA and clips made from arrays or files."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

SHARED_CLIPS = Path(__file__).resolve().parents[2] / "shared" / "clips"


@pytest.fixture(scope="session")
def tiny_model():
    from emotion_llama.pipeline import random_tiny_model

    return random_tiny_model(seed=0)


@pytest.fixture()
def prepared_clip():
    """A PreparedClip built from random arrays: exercises every encoder without media."""
    from emotion_llama.clip import PreparedClip, Subtitle

    rng = np.random.default_rng(0)
    return PreparedClip(
        global_frame=rng.integers(0, 255, (120, 160, 3), dtype=np.uint8),
        global_frame_time=0.5,
        face_crops=rng.integers(0, 255, (4, 224, 224, 3), dtype=np.uint8),
        face_sequence=rng.integers(0, 255, (16, 224, 224, 3), dtype=np.uint8),
        audio=rng.standard_normal(16000).astype(np.float32),
        subtitle=Subtitle("Oh no, my phone and wallet are all in my bag.", "user"),
        duration=1.0,
    )


@pytest.fixture(scope="session")
def shared_clips() -> list[Path]:
    if not SHARED_CLIPS.is_dir():
        pytest.skip("../shared/clips is absent (it is not part of the repository)")
    return sorted(SHARED_CLIPS.glob("*.mp4"))


@pytest.fixture(scope="session")
def tiny_weights(tiny_model, tmp_path_factory) -> Path:
    """The random tiny model saved in our format, for commands that take --weights."""
    from emotion_llama.checkpoints import save_pretrained

    return save_pretrained(tiny_model, tmp_path_factory.mktemp("weights") / "tiny")


@pytest.fixture(scope="module")
def gradio_temp(tmp_path_factory) -> Path:
    """A fresh ``GRADIO_TEMP_DIR`` for the module's server, so a test can list every file it keeps."""
    folder = tmp_path_factory.mktemp("gradio_temp")
    old = os.environ.get("GRADIO_TEMP_DIR")
    os.environ["GRADIO_TEMP_DIR"] = str(folder)
    yield folder
    if old is None:
        os.environ.pop("GRADIO_TEMP_DIR", None)
    else:
        os.environ["GRADIO_TEMP_DIR"] = old
