"""Choosing whose face is analysed, and saying how often that face was seen."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from media_factory import BACKGROUND_RGB, MediaCatalogue, session_catalogue

from emotion_llama.cache import ClipCache
from emotion_llama.cli import main
from emotion_llama.errors import NoSuchPersonError
from emotion_llama.faces import THUMBNAIL_SIDE, follow_person
from emotion_llama.media import decode_clip
from emotion_llama.pipeline import AnalysisOptions, Engine
from emotion_llama.prepare import PrepareOptions, prepare_clip

TWO_PEOPLE = Path(__file__).resolve().parents[1] / "examples" / "two_people.mp4"
WIDTH = 320  # two_people.mp4 is 320x240: a large face at x = 107, a smaller one at x = 256
QUICK = PrepareOptions(n_local_frames=4, n_temporal_frames=8)


@pytest.fixture(scope="session")
def media(tmp_path_factory: pytest.TempPathFactory) -> MediaCatalogue:
    return session_catalogue(tmp_path_factory)


def centre_x(box: tuple[int, int, int, int]) -> float:
    return box[0] + box[2] / 2


def test_both_people_are_offered_with_thumbnails_most_persistent_first():
    prepared = prepare_clip(TWO_PEOPLE, options=QUICK)
    assert [person.index for person in prepared.people] == [0, 1]
    left, right = prepared.people
    assert centre_x(left.box) < WIDTH / 2 < centre_x(right.box)
    assert left.frames_seen >= right.frames_seen and left.frames_sampled == 8
    for person in prepared.people:
        assert person.thumbnail.shape == (THUMBNAIL_SIDE, THUMBNAIL_SIDE, 3) and person.thumbnail.dtype == np.uint8
        middle = person.thumbnail[40:56, 40:56].reshape(-1, 3).mean(axis=0)
        assert np.abs(middle - BACKGROUND_RGB).sum() > 60, "the thumbnail should show the face"
        assert person.share == person.frames_seen / 8 and person.share >= 0.5


def test_choosing_person_one_crops_the_other_face():
    first = prepare_clip(TWO_PEOPLE, options=QUICK)
    second = prepare_clip(TWO_PEOPLE, options=PrepareOptions(n_local_frames=4, n_temporal_frames=8, person=1))
    assert first.person == 0 and second.person == 1
    assert all(centre_x(box) < WIDTH / 2 for box in first.face_boxes)
    assert all(abs(centre_x(box) - centre_x(second.people[1].box)) < 15 for box in second.face_boxes)
    assert not np.array_equal(first.face_crops, second.face_crops)
    assert "person 1" in second.audio_note and "share" in second.audio_note
    assert first.audio_note, "two people on screen: the shared sound is stated even for the default person"


def test_a_person_past_those_found_is_a_clear_error():
    with pytest.raises(NoSuchPersonError, match="no person 2 in this clip: 2 people were found, numbered 0 to 1"):
        prepare_clip(TWO_PEOPLE, options=PrepareOptions(n_local_frames=4, n_temporal_frames=8, person=2))
    with pytest.raises(NoSuchPersonError, match="from 0"):
        AnalysisOptions(person=-1)


def test_without_faces_only_the_default_person_exists():
    frames = [np.full((120, 160, 3), 128, np.uint8)] * 4
    assert follow_person(frames, [0.0, 0.1, 0.2, 0.3]).people == []
    with pytest.raises(NoSuchPersonError, match="no face was found"):
        follow_person(frames, [0.0, 0.1, 0.2, 0.3], person=1)


def test_the_cache_keeps_each_persons_crops_apart(tiny_model):
    engine = Engine(tiny_model, {"weights": "tiny (random)"}, cache=ClipCache(options=QUICK))
    default, default_encoded = engine.prepare(TWO_PEOPLE)
    other, other_encoded = engine.prepare(TWO_PEOPLE, options=AnalysisOptions(person=1))
    again, again_encoded = engine.prepare(TWO_PEOPLE, options=AnalysisOptions(person=0))
    assert engine.cache.decodes == 2 and engine.cache.encodes == 2
    assert centre_x(default.face_boxes[0]) < WIDTH / 2 < centre_x(other.face_boxes[0])
    assert np.array_equal(again.face_crops, default.face_crops)
    for face_feature in ("face", "temporal"):
        assert torch.equal(again_encoded.features[face_feature], default_encoded.features[face_feature])
        assert not torch.equal(other_encoded.features[face_feature], default_encoded.features[face_feature])


def test_face_coverage_is_in_the_json_as_a_number_and_a_sentence(media: MediaCatalogue, tiny_model):
    clip = media["face.mp4"]
    engine = Engine(tiny_model, {"weights": "tiny (random)"}, cache=ClipCache(options=QUICK))
    report = engine.analyze(clip, options=AnalysisOptions(explain=False)).to_json()
    # The drawn face is still and frontal: the detector sees it in all 8 sampled frames.
    assert report["face_coverage"] == 1.0
    assert report["face_note"] == "face seen in 8 of 8 sampled frames"
    assert [person["index"] for person in report["people"]] == [0] and report["audio_note"] is None


def test_coverage_counts_only_frames_where_the_face_was_seen(media: MediaCatalogue):
    # The face leaves the picture for the last part of the clip: those frames are not "seen".
    decoded = decode_clip(media["face.mp4"], [(i + 0.5) / 8 for i in range(8)])
    frames = [frame if i < 6 else np.full_like(frame, 128) for i, frame in enumerate(decoded.frames)]
    faces = follow_person(frames, decoded.frame_times)
    assert faces.coverage == 6 / 8 and faces.note == "face seen in 6 of 8 sampled frames"


def test_cli_passes_the_person_through(tiny_weights, capsys):
    code = main(["analyze", str(TWO_PEOPLE), "--person", "5", "--weights", str(tiny_weights), "--json"])
    assert code != 0
    assert "no person 5" in capsys.readouterr().err
