"""Whole analyses on real and generated clips, alone and at the same time."""

from __future__ import annotations

import json
import threading

import pytest
from media_factory import media  # noqa: F401 - fixture

from emotion_llama.config import GenerationSettings
from emotion_llama.pipeline import AnalysisOptions, Engine

OPTIONS = AnalysisOptions(task="reason", generation=GenerationSettings(do_sample=True, max_new_tokens=8, seed=3))


def engine_for(model) -> Engine:
    return Engine(model, {"weights": "tiny (random)", "device": "cpu", "dtype": "float32"})


def comparable(analysis) -> dict:
    result = analysis.to_json()
    result.pop("timings")
    return result


def test_two_analyses_in_threads_equal_one_after_the_other(tiny_model, media):
    clips = [media["face.mp4"], media["two_faces.mp4"]]
    sequential = [comparable(engine_for(tiny_model).analyze(clip, options=OPTIONS)) for clip in clips]
    concurrent: list = [None, None]
    shared = engine_for(tiny_model)  # one engine, as the app shares it, with an empty cache

    def work(index: int) -> None:
        concurrent[index] = comparable(shared.analyze(clips[index], options=OPTIONS))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert concurrent == sequential
    assert sequential[0] != sequential[1]


def test_second_analysis_of_the_same_clip_is_not_encoded_again(tiny_model, media, monkeypatch):
    engine = engine_for(tiny_model)
    calls = []
    original = tiny_model.encode
    monkeypatch.setattr(tiny_model, "encode", lambda *a, **k: calls.append(1) or original(*a, **k))
    first = engine.analyze(media["face.mp4"], options=OPTIONS)
    second = engine.analyze(media["face.mp4"], options=OPTIONS)
    assert len(calls) == 1
    assert comparable(first) == comparable(second)


def test_every_shared_clip_gives_a_full_result(tiny_model, shared_clips):
    subtitles = json.loads((shared_clips[0].parent / "subtitles.json").read_text())
    engine = engine_for(tiny_model)
    faces = 0
    for clip in shared_clips:
        analysis = engine.analyze(clip, subtitle=subtitles.get(clip.name), options=OPTIONS)
        result = analysis.to_json()
        assert result["label"] in result["probabilities"]
        assert abs(sum(result["probabilities"].values()) - 1) < 1e-5
        assert 0.0 <= result["frame_time"] <= 8.0
        assert analysis.peak_frame_index is not None
        assert result["modalities_present"]["audio"] is True
        assert abs(sum(result["modality_attention"].values()) - 1) < 1e-6
        expected_source = "user" if subtitles.get(clip.name) else "none"
        assert result["subtitle"]["source"] == expected_source
        faces += result["modalities_present"]["face"]
    assert faces >= 5
