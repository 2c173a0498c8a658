"""One cache for every way in: the page, the API, the CLI and ``evaluate`` decode a clip once."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from emotion_llama.cache import ClipCache

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "happy.mp4"


@pytest.fixture
def cache(monkeypatch) -> ClipCache:
    """A fresh process-wide cache, so every engine made in the test shares it."""
    import emotion_llama.pipeline

    fresh = ClipCache()
    monkeypatch.setattr(emotion_llama.pipeline, "SHARED", fresh)
    return fresh


def page_analyze(demo, clip: Path, subtitle: str) -> dict:
    from emotion_llama.ui import handlers

    outputs = list(handlers.analyze(demo, str(clip), subtitle, "emotion", "", "merr", "", 0.0, 4, "peak", [],
                                    False, progress=lambda *a, **k: None))
    return outputs[-1][-1]  # the JSON output of the last update


def test_page_reanalysis_api_cli_and_evaluate_decode_a_clip_once(cache, tmp_path, capsys):
    from emotion_llama import cli
    from emotion_llama.pipeline import load_engine
    from emotion_llama.ui import handlers
    from emotion_llama.ui.uploads import UploadStore

    clip = tmp_path / "data" / "clip.mp4"
    clip.parent.mkdir()
    shutil.copy(EXAMPLE, clip)
    demo = handlers.Demo(load_engine(), UploadStore(tmp_path / "uploads"))
    first = page_analyze(demo, clip, "What a lovely day.")
    again = page_analyze(demo, clip, "I am so tired of this.")  # a newly typed subtitle: no new decode
    assert (first["subtitle"]["text"], again["subtitle"]["text"]) == ("What a lovely day.", "I am so tired of this.")
    api = handlers.analyze_api(demo, str(clip), "What a lovely day.", max_new_tokens=4)
    assert api["probabilities"] == first["probabilities"]

    assert cli.main(["analyze", str(clip), "--json", "--max-new-tokens", "4", "--subtitle", "What a lovely day."]) == 0
    assert json.loads(capsys.readouterr().out)["probabilities"] == first["probabilities"]
    (clip.parent / "annotations.json").write_text(json.dumps({"clip": {"name": "clip", "label": "happy",
                                                                       "video": "clip.mp4", "split": "test"}}))
    assert cli.main(["evaluate", "--data", str(clip.parent), "--no-reasoning", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["variants"]["all"]["n"] == 1
    assert (cache.decodes, cache.encodes) == (1, 1)


def test_another_frame_choice_encodes_again_without_decoding(cache, tiny_model):
    from emotion_llama.pipeline import AnalysisOptions, Engine

    engine = Engine(tiny_model, {"weights": "tiny (random)"})
    prepared = {f: engine.prepare(EXAMPLE, None, AnalysisOptions(frame_choice=f))[0] for f in ("peak", "first")}
    assert (cache.decodes, cache.encodes) == (1, 2)
    assert prepared["first"].global_frame_time < prepared["peak"].global_frame_time
    left_out = engine.prepare(EXAMPLE, None, AnalysisOptions(leave_out=("audio",), demo_parity=True))[1]
    assert (cache.decodes, cache.encodes) == (1, 2)  # leaving modalities out reuses the encoding
    assert left_out.present == {"global": True, "face": False, "temporal": False, "audio": False}


def test_a_deleted_upload_is_served_from_memory_and_a_changed_file_is_decoded_anew(cache, tmp_path):
    clip = tmp_path / "clip.mp4"
    shutil.copy(EXAMPLE, clip)
    key = cache.key(clip)
    cache.decoded(key, clip)
    clip.unlink()
    assert cache.key(clip) == key and cache.decoded(key, clip) is not None and cache.decodes == 1
    shutil.copy(ROOT / "examples" / "sad.mp4", clip)
    assert cache.key(clip) != key
