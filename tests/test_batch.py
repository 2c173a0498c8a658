"""analyze FOLDER --out: one line per clip, failures logged, resumable, the same lines under two processes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from media_factory import media  # noqa: F401 - fixture

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.mp4"))
FAST = ("--no-explain", "--max-new-tokens", "4")  # the label is scored, not written: a short answer will do
BROKEN = ["more/truncated.mp4", "text_renamed.mp4"]


@pytest.fixture(scope="module")
def clip_folder(media, tmp_path_factory) -> Path:
    """Ten good clips (the examples and a generated face, some in a subfolder) and two broken ones."""
    folder = tmp_path_factory.mktemp("clips")
    (folder / "more").mkdir()
    for index, example in enumerate(EXAMPLES):
        shutil.copy(example, folder / ("more" if index % 3 == 0 else "") / example.name)
    shutil.copy(media["face.mp4"], folder / "face.mp4")
    shutil.copy(media["truncated.mp4"], folder / BROKEN[0])
    shutil.copy(media["text_renamed.mp4"], folder / BROKEN[1])
    assert len(EXAMPLES) + 1 == 10
    return folder


def good_clips(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.mp4")
                  if p.relative_to(folder).as_posix() not in BROKEN)


def read_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture()
def analysed(monkeypatch) -> list[str]:
    """The clips the engine analyses in this process, in order."""
    import torch

    from emotion_llama.pipeline import Engine

    calls: list[str] = []
    original = Engine.analyze

    def counting(self, clip, *args, **kwargs):
        calls.append(Path(clip).name)
        return original(self, clip, *args, **kwargs)

    monkeypatch.setattr(Engine, "analyze", counting)
    threads = torch.get_num_threads()
    yield calls
    torch.set_num_threads(threads)  # the command fixes it for its process: give the other tests theirs back


def analyze(folder: Path, out: Path, *extra: str) -> int:
    from emotion_llama import cli

    return cli.main(["analyze", str(folder), "--out", str(out), *FAST, *extra])


def test_a_folder_gives_a_line_per_clip_logs_failures_and_resumes(clip_folder, tmp_path, analysed, capsys):
    out = tmp_path / "results.jsonl"
    assert analyze(clip_folder, out) == 0
    lines, failures = read_lines(out), read_lines(tmp_path / "results.failures.jsonl")
    assert sorted(line["clip"] for line in lines) == good_clips(clip_folder)
    for line in lines:
        assert set(line["probabilities"]) == set(line["settings"]["labels"])
        assert line["label"] == max(line["probabilities"], key=line["probabilities"].get)
        assert sum(line["probabilities"].values()) == pytest.approx(1.0, abs=1e-6)
    assert sorted(f["clip"] for f in failures) == BROKEN
    assert all(len(f["error"]) > 20 and f["error_type"].endswith("Error") for f in failures)  # a readable reason
    assert len(analysed) == 12 and "10 analysed, 0 already done, 2 failed" in capsys.readouterr().out

    # A second run does nothing: no clip analysed, no byte changed.
    analysed.clear()
    before = out.read_bytes()
    assert analyze(clip_folder, out) == 0
    assert analysed == [] and out.read_bytes() == before
    assert "nothing to do: 10 clips already done, 2 failed before" in capsys.readouterr().out

    # A clip changed since is analysed again, and keeps one line.
    changed = clip_folder / "face.mp4"
    os.utime(changed, ns=(changed.stat().st_atime_ns, changed.stat().st_mtime_ns + 10**9))
    assert analyze(clip_folder, out) == 0
    lines = read_lines(out)
    assert analysed == ["face.mp4"] and sorted(line["clip"] for line in lines) == good_clips(clip_folder)
    assert next(x for x in lines if x["clip"] == "face.mp4")["file"]["mtime_ns"] == changed.stat().st_mtime_ns


def test_other_settings_are_refused_not_mixed(clip_folder, tmp_path, capsys):
    out = tmp_path / "results.jsonl"
    out.write_text(json.dumps({"clip": "face.mp4", "label": "sad", "settings": {"task": "reason"}}) + "\n")
    assert analyze(clip_folder, out) == 2
    assert "other settings" in capsys.readouterr().err and len(read_lines(out)) == 1


def test_two_processes_give_the_lines_of_one(clip_folder, tmp_path):
    def run(out: Path, launcher: list[str], world: int) -> list[dict]:
        done = subprocess.run([*launcher, "emotion_llama", "analyze", str(clip_folder), "--out", str(out), *FAST],
                              capture_output=True, text=True, timeout=400, check=False, cwd=ROOT)
        assert done.returncode == 0, done.stderr[-3000:]
        assert all(f"[{rank}/{world}]" in done.stdout for rank in range(world)), done.stdout  # every process reports
        return sorted(read_lines(out), key=lambda line: line["clip"])

    one = run(tmp_path / "one.jsonl", [sys.executable, "-m"], 1)
    two = run(tmp_path / "two.jsonl", [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "-m"], 2)
    assert [line["clip"] for line in two] == good_clips(clip_folder)
    assert [(x["label"], x["probabilities"]) for x in two] == [(x["label"], x["probabilities"]) for x in one]
    failures = read_lines(tmp_path / "two.failures.jsonl")
    assert sorted(f["clip"] for f in failures) == BROKEN


def test_a_folder_of_videos_gives_a_timeline_line_each_and_resumes(clip_folder, tmp_path):
    import torch

    from emotion_llama import cli

    threads = torch.get_num_threads()
    out = tmp_path / "timelines.jsonl"
    try:
        assert cli.main(["timeline", str(clip_folder), "--out", str(out), "--no-progress"]) == 0
        lines, failures = read_lines(out), read_lines(tmp_path / "timelines.failures.jsonl")
        assert sorted(line["clip"] for line in lines) == good_clips(clip_folder)
        assert sorted(failure["clip"] for failure in failures) == BROKEN
        assert all(line["segments"] and line["segments"][0]["start"] == 0 for line in lines)
        before = out.read_bytes()
        assert cli.main(["timeline", str(clip_folder), "--out", str(out), "--no-progress"]) == 0
        assert out.read_bytes() == before  # nothing redone
    finally:
        torch.set_num_threads(threads)
