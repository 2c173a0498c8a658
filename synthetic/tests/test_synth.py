"""The synthetic corpus: determinism, decodable clips, detectable faces, annotations.

Generation needs espeak-ng (Debian package ``espeak-ng``); those tests skip without it.
The annotation-format tests need nothing but the standard library.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from emotion_llama.data.merr import Annotation, clue_vocabulary, find_clues, load_annotations, write_annotations
from emotion_llama.vocab import MERR_LABELS

N = 20  # one full block of cases (12 congruent, 3 neutral words, 3 conflict, 1 no audio, 1 no face)
SEED = 11

needs_espeak = pytest.mark.skipif(
    shutil.which("espeak-ng") is None,
    reason="espeak-ng is not installed (apt-get install espeak-ng); the synthetic corpus needs it for speech",
)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    from synthetic import generate_corpus

    out = tmp_path_factory.mktemp("synth2")
    summary = generate_corpus(out, N, SEED, workers=2, progress=False)
    return out, summary


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _first_frame(path: Path) -> np.ndarray:
    import av

    with av.open(str(path)) as c:
        for frame in c.decode(video=0):
            return frame.to_ndarray(format="rgb24")
    raise AssertionError(f"no frame in {path}")


# ----------------------------------------------------------------------------- generation


@needs_espeak
def test_same_seed_same_corpus_for_any_worker_count(corpus, tmp_path):
    from synthetic import generate_corpus

    out2, summary2 = corpus
    out1 = tmp_path / "one"
    summary1 = generate_corpus(out1, N, SEED, workers=1, progress=False)
    assert summary1.workers == 1 and summary2.workers == 2
    assert (out1 / "annotations.json").read_bytes() == (out2 / "annotations.json").read_bytes()
    for name in ("label.csv", "subtitle.csv", "MERR_fine_grained.json", "MERR_coarse_grained.json", "train.txt"):
        assert (out1 / name).read_bytes() == (out2 / name).read_bytes(), name
    anns = load_annotations(out1)
    assert np.array_equal(_first_frame(out1 / anns[0].video), _first_frame(out2 / anns[0].video))
    for a in anns:
        assert _md5(out1 / a.video) == _md5(out2 / a.video), a.name


@needs_espeak
def test_different_seed_differs(corpus, tmp_path):
    from synthetic import generate_corpus

    out, _ = corpus
    generate_corpus(tmp_path, 2, SEED + 1, workers=1, progress=False)
    mine, other = load_annotations(out)[:2], load_annotations(tmp_path)
    assert [a.name for a in other] != [a.name for a in mine]
    assert [a.subtitle for a in other] != [a.subtitle for a in mine]
    assert not np.array_equal(_first_frame(tmp_path / other[0].video), _first_frame(out / mine[0].video))


@needs_espeak
def test_an_ffmpeg_run_that_hangs_is_killed_and_the_clip_encoded_again(tmp_path, monkeypatch):
    # ffmpeg's threaded pipeline once deadlocked on one clip of 3,000 and synth waited forever.
    from synthetic import corpus as synth_corpus

    real = synth_corpus._ffmpeg()
    hung_once = tmp_path / "hung-once"
    hanging = tmp_path / "ffmpeg-that-hangs-once"
    hanging.write_text(f'#!/bin/sh\nif [ ! -e "{hung_once}" ]; then touch "{hung_once}"; exec sleep 60; fi\n'
                       f'exec "{real}" "$@"\n')
    hanging.chmod(0o755)
    monkeypatch.setattr(synth_corpus, "_ffmpeg", lambda: str(hanging))
    monkeypatch.setattr(synth_corpus, "ENCODE_TIMEOUT_S", 2)
    frames = np.full((5, 64, 64, 3), 200, np.uint8)
    synth_corpus.encode_clip(tmp_path / "clip.mp4", frames, 10, None, 0.4)
    assert hung_once.exists(), "the first run hung"
    import av

    with av.open(str(tmp_path / "clip.mp4")) as container:
        assert sum(1 for _ in container.decode(video=0)) == 10


def test_labels_cases_and_splits(corpus):
    out, summary = corpus
    anns = load_annotations(out)
    assert len(anns) == N
    assert {a.label for a in anns} == set(MERR_LABELS)
    assert summary.case_counts == {"congruent": 12, "neutral_words": 3, "conflict": 3, "no_audio": 1, "no_face": 1}
    assert sum(summary.label_counts.values()) == N
    assert set(summary.split_counts) <= {"train", "val", "test"} and sum(summary.split_counts.values()) == N
    assert json.loads((out / "corpus.json").read_text())["n"] == N
    for a in anns:
        assert a.split in ("train", "val", "test")
        assert a.coarse_caption and a.fine_reasoning and a.subtitle
        assert set(a.modalities) == {"face", "voice", "words"}
        if "face" in a.missing:
            assert a.modalities["face"] is None
        else:
            assert a.modalities["face"] == a.label
        if "audio" in a.missing:
            assert a.modalities["voice"] is None
        else:
            assert a.modalities["voice"] == a.label
        # a clip with a missing modality keeps words that agree, so the label stays recoverable
        if a.missing:
            assert a.modalities["words"] in (a.label, "neutral") and not a.conflict


@needs_espeak
def test_clips_decode_with_video_and_16k_audio(corpus):
    import av

    out, _summary = corpus
    anns = load_annotations(out)
    modes = {a.meta["audio_mode"] for a in anns}
    assert "present" in modes
    for a in anns:
        path = out / a.video
        assert path.stat().st_size < 200_000, "clips should stay small"
        with av.open(str(path)) as c:
            v = c.streams.video[0]
            assert v.codec_context.name == "h264"
            frames = [f for f in c.decode(video=0)]
            assert len(frames) == a.meta["n_frames"]
            assert 2.0 <= a.meta["duration"] <= 4.0
            assert (frames[0].width, frames[0].height) == (256, 256)
            assert abs(float(v.average_rate) - 25.0) < 0.01
        with av.open(str(path)) as c:
            mode = a.meta["audio_mode"]
            if mode == "absent":
                assert len(c.streams.audio) == 0, a.name
                continue
            assert len(c.streams.audio) == 1, a.name
            st = c.streams.audio[0]
            assert st.codec_context.name == "aac"
            resampler = av.AudioResampler(format="flt", layout="mono", rate=16000)
            chunks = []
            for frame in c.decode(audio=0):
                for r in resampler.resample(frame):
                    chunks.append(r.to_ndarray().ravel())
            for r in resampler.resample(None):
                chunks.append(r.to_ndarray().ravel())
            audio = np.concatenate(chunks)
            assert abs(len(audio) / 16000 - a.meta["duration"]) < 0.2
            rms = float(np.sqrt(np.mean(audio**2)))
            if mode == "silent":
                assert rms < 1e-3, a.name
            else:
                assert rms > 3e-3, a.name


@needs_espeak
def test_haar_cascade_finds_the_face(corpus):
    import av
    import cv2

    out, _ = corpus
    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    hits = total = 0
    hidden_hits = hidden_total = 0
    for a in load_annotations(out):
        x, y, w, h = a.meta["face_box"]
        with av.open(str(out / a.video)) as c:
            frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)][::4]
        for f in frames:
            boxes = cascade.detectMultiScale(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY), scaleFactor=1.1, minNeighbors=5)
            on_face = any(
                abs((bx + bw / 2) - (x + w / 2)) < w / 2 and abs((by + bh / 2) - (y + h / 2)) < h / 2
                for bx, by, bw, bh in boxes
            )
            if a.meta["face_visibility"] == "visible":
                hits += on_face
                total += 1
            else:
                hidden_hits += len(boxes) > 0
                hidden_total += 1
    assert total > 0 and hits / total >= 0.90, f"Haar found the face in {hits}/{total} sampled frames"
    assert hidden_total > 0 and hidden_hits / hidden_total <= 0.3, (
        "a turned-away or covered face should not be detected"
    )


def _bank_regex(templates) -> re.Pattern:
    alts = []
    for t in templates:
        parts = re.split(r"\{\w+\}", t)
        alts.append(".+?".join(re.escape(p) for p in parts))
    return re.compile("^(?:" + "|".join(alts) + ")$", re.IGNORECASE)


@needs_espeak
def test_conflict_words_disagree_with_the_label(corpus):
    from synthetic import text as synth_text

    out, _ = corpus
    conflicts = [a for a in load_annotations(out) if a.conflict]
    assert len(conflicts) == 3
    for a in conflicts:
        assert a.modalities["words"] != a.label
        assert a.modalities["face"] == a.label and a.modalities["voice"] == a.label
        # the subtitle really is from another emotion's bank (or the ironic one), not the label's
        assert not _bank_regex(synth_text.BANKS[a.label]).match(a.subtitle), a.subtitle
        if a.meta["words_kind"] == "ironic":
            assert _bank_regex(synth_text.IRONIC).match(a.subtitle)
        else:
            assert _bank_regex(synth_text.BANKS[a.modalities["words"]]).match(a.subtitle)
        assert "disagree" in a.fine_reasoning  # the reasoning names the conflict


@needs_espeak
def test_reasoning_mentions_true_clues_and_label(corpus):
    out, _ = corpus
    vocab = clue_vocabulary()
    for a in load_annotations(out):
        for modality, clues in a.clues.items():
            assert set(clues) <= set(vocab[modality]), (modality, clues)
        found = find_clues(a.fine_reasoning)
        for modality in ("face", "voice", "words"):
            assert set(a.clues[modality]) <= set(found[modality]), (
                a.name,
                modality,
                a.clues[modality],
                found[modality],
            )
        assert a.fine_reasoning.rstrip(".").endswith(a.label)
        assert a.subtitle in a.fine_reasoning and a.subtitle in a.coarse_caption
        # Written for the clip shown without its subtitle: same face and voice clues and
        # label, no quoted words, and it says there is no subtitle.
        bare = a.meta["without_subtitle"]
        for text in bare.values():
            assert a.subtitle not in text and '"' not in text and "subtitle" in text
        found = find_clues(bare["fine_reasoning"])
        assert set(a.clues["face"]) <= set(found["face"]) and set(a.clues["voice"]) <= set(found["voice"])
        assert bare["fine_reasoning"].rstrip(".").endswith(a.label)


@needs_espeak
def test_captions_and_reasoning_call_the_person_one_way_on_100_clips(tmp_path):
    """The drawn face has no gender and the voice's is drawn on its own: the texts say "the
    person" and "their", never a gendered pronoun that the face may contradict."""
    from synthetic import generate_corpus
    from tests.pronouns import pronoun_sets

    generate_corpus(tmp_path, 100, seed=SEED + 1, workers=2, progress=False)
    annotations = load_annotations(tmp_path)
    assert len(annotations) == 100
    for a in annotations:
        bare = a.meta["without_subtitle"]
        for text in (a.coarse_caption, a.fine_reasoning, bare["coarse_caption"], bare["fine_reasoning"]):
            assert pronoun_sets(text) <= {"neutral"}, (a.name, text)


@needs_espeak
def test_annotation_files_load_back_in_every_format(corpus):
    out, _ = corpus
    full = load_annotations(out)
    by_name = {a.name: a for a in full}
    assert all((out / a.video).is_file() for a in full)
    for source in (out / "annotations.json", out / "label.csv", out / "MERR_fine_grained.json"):
        anns = load_annotations(source)
        assert [a.name for a in anns] == [a.name for a in full], source
        for a in anns:
            assert a.label == by_name[a.name].label
            assert a.subtitle == by_name[a.name].subtitle
            assert a.video == by_name[a.name].video
    fine = load_annotations(out / "MERR_fine_grained.json")
    assert [a.fine_reasoning for a in fine] == [a.fine_reasoning for a in full]
    train = load_annotations(out / "train.txt")
    assert {a.name for a in train} == {a.name for a in full if a.split == "train"}
    assert all(a.meta["n_frames"] == by_name[a.name].meta["n_frames"] for a in train)
    assert {a.name for a in load_annotations(out, split="test")} == {a.name for a in full if a.split == "test"}


@needs_espeak
def test_cli_entry_point(tmp_path, capsys):
    from emotion_llama.cli import build_parser, main

    args = build_parser().parse_args(["synth", "--out", str(tmp_path), "--n", "3", "--seed", "4", "--split", "test"])
    assert (args.n, args.seed, args.split, args.workers) == (3, 4, "test", None)
    assert main(["synth", "--out", str(tmp_path / "c"), "--n", "2", "--seed", "4", "--workers", "1", "--no-progress"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["n"] == 2 and printed["clips_per_minute"] > 0
    assert len(load_annotations(tmp_path / "c")) == 2
    assert main(["synth", "--out", str(tmp_path / "d"), "--n", "0"]) == 2
    assert capsys.readouterr().err == "error: --n must be at least 1\n"


# ----------------------------------------------------------------------------- no espeak needed


def test_plan_is_balanced_and_deterministic():
    from synthetic.corpus import CASE_BLOCK, plan_corpus

    a = plan_corpus(180, 3)
    assert a == plan_corpus(180, 3)
    assert a != plan_corpus(180, 4)
    labels = [t.label for t in a]
    assert all(labels.count(e) == 20 for e in MERR_LABELS)
    cases = [t.case for t in a]
    for c in set(CASE_BLOCK):
        assert cases.count(c) == CASE_BLOCK.count(c) * 9
    splits = [t.split for t in a]
    assert (splits.count("train"), splits.count("val"), splits.count("test")) == (144, 18, 18)
    assert {t.split for t in plan_corpus(10, 3, split="test")} == {"test"}
    assert plan_corpus(50, 3)[:20] == a[:20]


def test_sentence_banks_are_large_and_fit_templates():
    from synthetic import text as synth_text

    assert synth_text.count_distinct_sentences() >= 3000
    rng = np.random.default_rng(0)
    seen = {synth_text.pick_sentence(rng, synth_text.BANKS["happy"], 12) for _ in range(200)}
    assert len(seen) > 100
    assert synth_text.pick_sentence(rng, synth_text.BANKS["sad"], 5).count(" ") <= 4


def test_clue_vocabulary_and_find_clues():
    vocab = clue_vocabulary()
    assert set(vocab) == {"face", "voice", "words"}
    assert "brow lowerer" in vocab["face"] and "trembling voice" in vocab["voice"] and "ironic remark" in vocab["words"]
    text = "She shows a one-sided brow lowerer and a lip corner puller; she speaks with a Loud Voice. An ironic remark."
    found = find_clues(text)
    assert found["face"] == ["one-sided brow lowerer", "lip corner puller"]
    assert found["voice"] == ["loud voice"]
    assert found["words"] == ["ironic remark"]


def test_write_and_load_roundtrip_without_media(tmp_path):
    anns = [
        Annotation(
            name=f"s{i}",
            label=lab,
            subtitle=f"line {i}, with a comma",
            coarse_caption="c",
            fine_reasoning="f",
            clues={"face": ["brow lowerer"]},
            conflict=i == 1,
            missing=["audio"] if i == 2 else [],
            modalities={"face": lab, "voice": None if i == 2 else lab, "words": "neutral"},
            split="train" if i else "test",
            meta={"n_frames": 50 + i},
        )
        for i, lab in enumerate(["happy", "angry", "doubt"])
    ]
    written = write_annotations(anns, tmp_path)
    assert {"json", "merr_coarse", "merr_fine", "label_csv", "subtitle_csv", "list_train", "list_test"} <= set(written)
    back = load_annotations(tmp_path)
    assert [a.to_dict() for a in back] == [a.to_dict() for a in anns]
    (tmp_path / "annotations.json").unlink()
    merr_back = load_annotations(tmp_path)  # MERR JSON + label.csv + subtitle.csv
    assert [(a.name, a.label, a.subtitle, a.fine_reasoning, a.coarse_caption) for a in merr_back] == [
        (a.name, a.label, a.subtitle, "f", "c") for a in anns
    ]
    csv_back = load_annotations(tmp_path / "label.csv")
    assert [(a.label, a.subtitle) for a in csv_back] == [(a.label, a.subtitle) for a in anns]
    assert [a.meta["n_frames"] for a in load_annotations(tmp_path / "train.txt")] == [51, 52]


def test_load_public_merr_and_mer2023_shapes(tmp_path):
    # the public MERR fine-grained file carries no label: the list file supplies it
    (tmp_path / "MERR_fine_grained.json").write_text(
        json.dumps({"sample_00000047": {"smp_reason_caption": "He smiles.", "text": "Hi."}})
    )
    (tmp_path / "MERR_train.txt").write_text("sample_00000047 45 Happiness\n")
    (tmp_path / "transcription_en_all.csv").write_text("name,sentence\nsample_00000047,Hello there.\n")
    (a,) = load_annotations(tmp_path)
    assert (a.name, a.label, a.fine_reasoning) == ("sample_00000047", "happy", "He smiles.")
    assert a.subtitle == "Hi."  # the file's own text wins over the transcription table
    d = tmp_path / "mer"
    d.mkdir()
    (d / "train-label.csv").write_text("name,discrete,valence\nx1,worried,-1.2\nx2,neutral,0\n")
    (d / "transcription-engchi.csv").write_text("name,chinese,english\nx1,你好,Hello\n")
    (d / "video").mkdir()
    (d / "video" / "x2.avi").write_bytes(b"")
    anns = load_annotations(d)
    assert [(a.name, a.label, a.subtitle) for a in anns] == [("x1", "worried", "Hello"), ("x2", "neutral", None)]
    assert anns[0].meta["valence"] == "-1.2" and anns[1].video == "video/x2.avi"


def test_bad_annotation_sources_raise_clear_errors(tmp_path):
    from emotion_llama.errors import EmotionLlamaError

    with pytest.raises(EmotionLlamaError, match="not found"):
        load_annotations(tmp_path / "missing")
    with pytest.raises(EmotionLlamaError, match="no annotations found"):
        load_annotations(tmp_path)
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2")
    with pytest.raises(EmotionLlamaError, match="cannot read"):
        load_annotations(bad)


def test_the_corpus_labels_are_the_instructions_in_its_order():
    from emotion_llama.prompts import EMOTION_INSTRUCTION

    assert EMOTION_INSTRUCTION.endswith(": " + ", ".join(MERR_LABELS) + ".")
