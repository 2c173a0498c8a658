"""Subtitles: typed text, then a sidecar file, then Whisper when present, else a clear note."""

from __future__ import annotations

import shutil
import threading
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch
import whisper
from media_factory import MediaCatalogue, session_catalogue

from emotion_llama import asr
from emotion_llama.asr import WHISPER_DIR_ENV, WhisperSettings, find_subtitle, subtitle_file_text
from emotion_llama.clip import SAMPLE_RATE
from emotion_llama.prepare import PrepareOptions, prepare_clip

TONE = (0.1 * np.sin(2 * np.pi * 220 * np.arange(2 * SAMPLE_RATE) / SAMPLE_RATE)).astype(np.float32)

SRT = """1
00:00:00,000 --> 00:00:01,500
<i>Oh no,</i> my phone

2
00:00:01,500 --> 00:00:03,000
and wallet are all in my bag.
"""

VTT = """WEBVTT
Kind: captions

NOTE a comment the
viewer never sees

intro
00:00.000 --> 00:01.500 align:start
<v Speaker>I'm not going in</v> <00:00:01.000><c.loud>anymore,</c>

00:01.500 --> 00:03.000
scared &amp; tired.
"""


@pytest.fixture(scope="session")
def media(tmp_path_factory: pytest.TempPathFactory) -> MediaCatalogue:
    return session_catalogue(tmp_path_factory)


@pytest.fixture(scope="session")
def tiny_whisper_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding a random Whisper saved as ``base.pt``: real code path, junk words."""
    dims = whisper.model.ModelDimensions(
        n_mels=80,
        n_audio_ctx=1500,
        n_audio_state=16,
        n_audio_head=2,
        n_audio_layer=1,
        n_vocab=51865,
        n_text_ctx=16,
        n_text_state=16,
        n_text_head=2,
        n_text_layer=1,
    )
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("whisper")
    model = whisper.model.Whisper(dims)
    torch.save({"dims": asdict(dims), "model_state_dict": model.state_dict()}, folder / "base.pt")
    return folder


@pytest.fixture()
def whisper_here(tiny_whisper_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh copy per test, so the once-per-process model cache starts empty for it."""
    folder = tmp_path / "whisper"
    folder.mkdir()
    shutil.copy(tiny_whisper_dir / "base.pt", folder / "base.pt")
    monkeypatch.setenv(WHISPER_DIR_ENV, str(folder))
    return folder


@pytest.fixture()
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the subtitle stage tried to download something")

    monkeypatch.setattr("urllib.request.urlopen", refuse)


# --- the order of sources ----------------------------------------------------------------


def test_typed_text_comes_first(tmp_path: Path):
    (tmp_path / "clip.srt").write_text(SRT)
    subtitle = find_subtitle(tmp_path / "clip.mp4", TONE, typed="  I like the way\n you are now. ")
    assert (subtitle.text, subtitle.source) == ("I like the way you are now.", "user")


def test_blank_typed_text_falls_through_to_the_sidecar(tmp_path: Path):
    (tmp_path / "clip.srt").write_text(SRT)
    subtitle = find_subtitle(tmp_path / "clip.mp4", TONE, typed="   ")
    assert subtitle.source == "sidecar:clip.srt"


@pytest.mark.parametrize(
    ("suffix", "content", "expected"),
    [
        (".srt", SRT, "Oh no, my phone and wallet are all in my bag."),
        (".vtt", VTT, "I'm not going in anymore, scared & tired."),
        (".txt", "\ufeffWhy are you looking\nat me like this?\n", "Why are you looking at me like this?"),
    ],
)
def test_sidecar_beside_the_clip_is_read_as_plain_text(
    tmp_path: Path, suffix: str, content: str, expected: str, whisper_here: Path
):
    (tmp_path / f"clip{suffix}").write_text(content, encoding="utf-8")
    subtitle = find_subtitle(tmp_path / "clip.mp4", TONE)
    assert subtitle.text == expected
    assert subtitle.source == f"sidecar:clip{suffix}"


def test_sidecar_of_another_clip_is_ignored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(WHISPER_DIR_ENV, str(tmp_path / "empty"))
    (tmp_path / "other.srt").write_text(SRT)
    assert find_subtitle(tmp_path / "clip.mp4", TONE).source == "none"


def test_subtitle_text_drops_cue_numbers_times_and_tags():
    assert subtitle_file_text("3\n00:01:02,500 --> 00:01:04,000\n{\\an8}<b>Hello</b>\n") == "Hello"


def test_without_whisper_weights_the_note_says_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_network: None
):
    monkeypatch.setenv(WHISPER_DIR_ENV, str(tmp_path))
    subtitle = find_subtitle(tmp_path / "clip.mp4", TONE)
    assert subtitle.text is None and subtitle.source == "none"
    assert "'base'" in subtitle.note and WHISPER_DIR_ENV in subtitle.note
    # The note reaches visitors of the page: it names no folder of the server.
    assert str(tmp_path) not in subtitle.note and "/" not in subtitle.note


def test_without_sound_whisper_is_not_tried(whisper_here: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(asr, "transcribe", lambda *a, **k: pytest.fail("transcribed silence"))
    subtitle = find_subtitle(None, None)
    assert subtitle.source == "none" and "no sound" in subtitle.note


# --- Whisper ------------------------------------------------------------------------------


def test_whisper_runs_when_its_checkpoint_is_present(whisper_here: Path, no_network: None):
    subtitle = find_subtitle(None, TONE)
    assert subtitle.source == "whisper:base"
    assert subtitle.language in whisper.tokenizer.LANGUAGES
    assert subtitle.text or subtitle.note  # random weights: junk words or none, but an answer


def test_whisper_is_loaded_once_for_many_clips_and_threads(whisper_here: Path, monkeypatch: pytest.MonkeyPatch):
    loads: list[str] = []
    real_load = whisper.load_model

    def counting_load(name: str, *args: object, **kwargs: object):
        loads.append(name)
        return real_load(name, *args, **kwargs)

    monkeypatch.setattr(whisper, "load_model", counting_load)
    results = []
    workers = [threading.Thread(target=lambda: results.append(find_subtitle(None, TONE))) for _ in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    results.append(find_subtitle(None, TONE))
    assert loads == [str(whisper_here / "base.pt")]
    assert [r.source for r in results] == ["whisper:base"] * 4
    assert len({r.text for r in results}) == 1, "same audio, same model: same words"


@pytest.mark.parametrize(("heard", "task"), [("zh", "translate"), ("en", "transcribe")])
def test_speech_not_in_english_is_translated(
    whisper_here: Path, monkeypatch: pytest.MonkeyPatch, heard: str, task: str
):
    monkeypatch.setattr(whisper.model.Whisper, "detect_language", lambda self, mel: (None, {heard: 0.9, "fr": 0.1}))
    asked: dict[str, object] = {}
    real_transcribe = whisper.transcribe

    def recording_transcribe(model, audio, **options):
        asked.update(options)
        return real_transcribe(model, audio, **options)

    monkeypatch.setattr(whisper, "transcribe", recording_transcribe)
    subtitle = find_subtitle(None, TONE)
    assert (asked["task"], asked["language"], subtitle.language) == (task, heard, heard)
    if subtitle.text is not None:
        assert (subtitle.note == "Translated from 'zh' to English by Whisper.") == (heard == "zh")


def test_model_can_be_named_by_path(tiny_whisper_dir: Path, no_network: None):
    settings = WhisperSettings(model=str(tiny_whisper_dir / "base.pt"))
    assert settings.checkpoint() == tiny_whisper_dir / "base.pt"
    assert find_subtitle(None, TONE, whisper_settings=settings).source == "whisper:base"


def test_damaged_checkpoint_gives_a_note_not_a_crash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    (tmp_path / "base.pt").write_bytes(b"not a checkpoint")
    monkeypatch.setenv(WHISPER_DIR_ENV, str(tmp_path))
    subtitle = find_subtitle(None, TONE)
    assert subtitle.text is None and "could not be loaded" in subtitle.note
    assert str(tmp_path) not in subtitle.note


# --- through prepare_clip ---------------------------------------------------------------------


def test_prepared_clip_records_where_its_subtitle_came_from(
    media: MediaCatalogue, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv(WHISPER_DIR_ENV, str(tmp_path / "no-whisper"))
    clip = tmp_path / "interview.mp4"
    shutil.copy(media["face.mp4"], clip)
    options = PrepareOptions(n_local_frames=2, n_temporal_frames=2)
    assert prepare_clip(clip, options=options).subtitle.source == "none"
    (tmp_path / "interview.vtt").write_text(VTT)
    assert prepare_clip(clip, options=options).subtitle.source == "sidecar:interview.vtt"
    typed = prepare_clip(clip, subtitle="Impossible!", options=options).subtitle
    assert (typed.text, typed.source) == ("Impossible!", "user")
