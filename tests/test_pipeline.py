"""Whole analyses on real and generated clips, alone and at the same time."""

from __future__ import annotations

import json
import threading
from dataclasses import replace

from media_factory import media  # noqa: F401 - fixture

from emotion_llama.cache import ClipCache
from emotion_llama.model import generate_ids
from emotion_llama.pipeline import AnalysisOptions, Engine, answer_prompt
from emotion_llama.vocab import GenerationSettings

OPTIONS = AnalysisOptions(task="reason", generation=GenerationSettings(do_sample=True, max_new_tokens=8, seed=3))


def engine_for(model) -> Engine:
    """An engine with a cache of its own, so each test starts from nothing decoded."""
    return Engine(model, {"weights": "tiny (random)", "device": "cpu", "dtype": "float32"}, cache=ClipCache())


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


# -- the reasoning shown next to the label argues for that label -------------------------
SAD = "The voice is low and slow, so the person feels sad."
HAPPY = "The corners of the mouth are pulled up, so the person feels happy."
NEITHER = "The face is hard to read."


def scripted(engine: Engine, monkeypatch, first: str, redrafts: list[str] | None = None) -> list[tuple]:
    """Make ``engine`` score "happy" highest, write ``first`` as the first draft and
    ``redrafts`` as the batch of redrafts; returns each generation asked for, as
    (settings, how many drafts)."""
    asked: list[tuple] = []
    probabilities = {"happy": 0.55, "sad": 0.35, "neutral": 0.1}
    monkeypatch.setattr(engine, "label_probabilities", lambda *args: dict(probabilities))

    def stream(sequence, settings):
        asked.append((settings, 1))
        yield first

    def batch(sequence, settings, count):
        asked.append((settings, count))
        return list(redrafts or [])[:count]

    monkeypatch.setattr(engine.writer, "stream", stream)
    monkeypatch.setattr(engine.writer, "redrafts", batch)
    return asked


def reason_options(redrafts: int) -> AnalysisOptions:
    return AnalysisOptions(task="reason", labels=("happy", "sad", "neutral"), explain=False,
                           reasoning_redrafts=redrafts, generation=GenerationSettings(do_sample=False, seed=5))


def test_a_reasoning_for_another_label_is_redrafted_in_one_batch(tiny_model, prepared_clip, monkeypatch):
    engine = engine_for(tiny_model)
    asked = scripted(engine, monkeypatch, SAD, ["It is sad, or neutral.", HAPPY, SAD])
    analysis = engine.analyze(prepared_clip, options=reason_options(3))
    assert analysis.label == "happy"
    assert analysis.answer == HAPPY
    assert analysis.to_json()["reasoning_check"] == {
        "label": "happy", "argued": "happy", "agrees": True, "drafts": 3, "first_agreed": False}
    assert not any("reasoning argues" in w for w in analysis.warnings)
    # Two generations at most: the first draft with the user's settings, then 3 sampled at once.
    assert [count for _, count in asked] == [1, 3]
    assert not asked[0][0].do_sample and asked[1][0].do_sample


def test_when_no_draft_agrees_the_first_is_shown_with_a_warning(tiny_model, prepared_clip, monkeypatch):
    engine = engine_for(tiny_model)
    asked = scripted(engine, monkeypatch, SAD, [NEITHER, "Neutral, I think."])  # a redraft naming no label is skipped too
    analysis = engine.analyze(prepared_clip, options=reason_options(2))
    assert [count for _, count in asked] == [1, 2]
    assert analysis.answer == SAD
    check = analysis.reasoning_check
    assert (check.argued, check.agrees, check.drafts) == ("sad", False, 3)
    assert any("argues for sad, not for the top label happy" in w for w in analysis.warnings)


def test_without_redrafts_the_first_reasoning_is_kept(tiny_model, prepared_clip, monkeypatch):
    engine = engine_for(tiny_model)
    asked = scripted(engine, monkeypatch, SAD, [HAPPY])
    analysis = engine.analyze(prepared_clip, options=reason_options(0))
    assert len(asked) == 1 and analysis.answer == SAD
    assert analysis.reasoning_check.drafts == 1


def test_other_tasks_are_answered_once_without_a_check(tiny_model, prepared_clip, monkeypatch):
    engine = engine_for(tiny_model)
    asked = scripted(engine, monkeypatch, SAD, [HAPPY])
    options = AnalysisOptions(task="emotion", labels=("happy", "sad", "neutral"), explain=False, reasoning_redrafts=3)
    analysis = engine.analyze(prepared_clip, options=options)
    assert len(asked) == 1 and analysis.reasoning_check is None


def test_a_reasoning_that_names_no_label_is_not_redrafted(tiny_model, prepared_clip, monkeypatch):
    engine = engine_for(tiny_model)
    asked = scripted(engine, monkeypatch, NEITHER, [HAPPY])  # e.g. cut short by the token limit
    analysis = engine.analyze(prepared_clip, options=reason_options(3))
    assert len(asked) == 1 and analysis.answer == NEITHER
    assert (analysis.reasoning_check.argued, analysis.reasoning_check.agrees) == (None, False)
    assert not any("reasoning argues" in w for w in analysis.warnings)


def test_redrafts_are_sampled_as_one_reproducible_batch(tiny_model, prepared_clip):
    engine = engine_for(tiny_model)
    _, encoded = engine.prepare(prepared_clip)
    sequence = tiny_model.assemble(answer_prompt(reason_options(3), "happy", None), tiny_model.project(encoded))
    greedy = GenerationSettings(do_sample=False, max_new_tokens=12, min_new_tokens=12)
    assert generate_ids(tiny_model, sequence, greedy)[0] == tiny_model.generate(sequence, greedy)
    sampled = replace(greedy, do_sample=True, temperature=1.5, seed=3)
    batch = generate_ids(tiny_model, sequence, sampled, count=3)
    assert len(batch) == 3 and all(len(ids) == 12 for ids in batch)
    assert len({tuple(ids) for ids in batch}) > 1  # the drafts differ from each other
    assert generate_ids(tiny_model, sequence, sampled, count=3) == batch  # the same seed, the same drafts
    assert engine.writer.redrafts(sequence, sampled, 2) == engine.writer.redrafts(sequence, sampled, 2)


def test_without_whisper_the_result_says_why_there_is_no_subtitle(tiny_model, media, tmp_path, monkeypatch):
    from emotion_llama.asr import WHISPER_DIR_ENV
    from emotion_llama.ui import subtitle_markdown

    monkeypatch.setenv(WHISPER_DIR_ENV, str(tmp_path / "no-whisper"))
    analysis = engine_for(tiny_model).analyze(media["face.mp4"], options=AnalysisOptions(explain=False))
    subtitle = analysis.to_json()["subtitle"]
    assert subtitle["text"] is None and subtitle["source"] == "none"
    assert WHISPER_DIR_ENV in subtitle["note"] and "no-whisper" not in subtitle["note"]  # no server path shown
    panel = subtitle_markdown(None, "none", note=analysis.subtitle_note)
    assert panel.startswith("**Subtitle:** none. None was typed") and WHISPER_DIR_ENV in panel
