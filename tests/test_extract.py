"""Batch extraction: resumable, logs broken clips, same files under one or two processes."""

from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
from media_factory import media  # noqa: F401 - fixture

from emotion_llama.features import FEATURE_DIRS, FeatureStore


def extract(*args: str, launcher: list[str] | None = None) -> subprocess.CompletedProcess:
    command = launcher or [sys.executable, "-m"]
    return subprocess.run([*command, "emotion_llama", "extract", *args], capture_output=True, text=True, timeout=300,
                          check=False)


def test_extract_folder_resumes_logs_and_splits(media, tiny_weights, tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    for name in ("face.mp4", "face_no_audio.mp4", "two_faces.mp4", "text_renamed.mp4", "zero_bytes.mp4"):
        shutil.copy(media[name], videos / name)

    one = tmp_path / "one"
    first = extract(str(videos), "--out", str(one), "--weights", str(tiny_weights))
    assert first.returncode == 0, first.stderr
    assert "3 extracted, 0 already there, 2 failed" in first.stdout
    store = FeatureStore(one)
    assert store.names() == ["face", "face_no_audio", "two_faces"]
    failed = (one / "failed.log").read_text().splitlines()
    assert sorted(line.split("\t")[0] for line in failed) == ["text_renamed.mp4", "zero_bytes.mp4"]
    assert all(len(line.split("\t")[1]) > 20 for line in failed)  # a reason a person can read
    face = np.load(one / "mae_340_UTT" / "face.npy")
    assert face.shape == (64,) and np.abs(face).sum() > 0
    assert np.load(one / "global_tokens" / "face.npy").shape == (257, 64)
    stored = store.read("face_no_audio")
    assert stored.encoded.present["audio"] is False and float(np.abs(np.load(one / "HL-UTT" / "face_no_audio.npy")).sum()) == 0

    again = extract(str(videos), "--out", str(one), "--weights", str(tiny_weights))
    assert again.returncode == 0 and "nothing to do" in again.stdout

    two = tmp_path / "two"
    split = extract(str(videos), "--out", str(two), "--weights", str(tiny_weights),
                    launcher=[sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "-m"])
    assert split.returncode == 0, split.stderr
    assert "[0/2]" in split.stdout and "[1/2]" in split.stdout
    for kind in FEATURE_DIRS.values():
        for name in store.names():
            assert (one / kind / f"{name}.npy").read_bytes() == (two / kind / f"{name}.npy").read_bytes(), (kind, name)
