"""The CLI contract: one JSON object per clip, one readable line per bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from media_factory import media  # noqa: F401 - fixture

KEYS = {"label", "probabilities", "answer", "modality_attention", "modalities_present", "subtitle", "warnings", "timings"}


def run_cli(*args: str, timeout: int = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "emotion_llama", *args], capture_output=True, text=True, timeout=timeout,
                          check=False)


def test_analyze_prints_one_full_json_object(media, tiny_weights):
    out = run_cli("analyze", str(media["face.mp4"]), "--weights", str(tiny_weights), "--subtitle", "I am fine.",
                  "--labels", "happy,sad,neutral", "--max-new-tokens", "6", "--json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert KEYS <= set(result)
    assert list(result["probabilities"]) == ["happy", "sad", "neutral"]
    assert abs(sum(result["probabilities"].values()) - 1) < 1e-5
    assert result["label"] == max(result["probabilities"], key=result["probabilities"].get)
    assert result["subtitle"] == {"text": "I am fine.", "source": "user", "note": None}
    assert result["modalities_present"]["face"] is True and result["modalities_present"]["audio"] is True


@pytest.mark.parametrize("name", ["text_renamed.mp4", "zero_bytes.mp4", "image.png", "missing.mp4"])
def test_bad_input_is_one_readable_line(media, tiny_weights, name):
    path = media.folder / name if name == "missing.mp4" else media[name]
    out = run_cli("analyze", str(path), "--weights", str(tiny_weights), "--json")
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert "Traceback" not in out.stderr and out.stdout == ""


def test_bad_label_list_is_one_readable_line(media, tiny_weights):
    out = run_cli("analyze", str(media["face.mp4"]), "--weights", str(tiny_weights), "--labels", "happy")
    assert out.returncode == 2 and out.stderr.strip() == "error: give at least two emotion labels, separated by commas"
