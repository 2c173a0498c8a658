"""Faces: found, followed across frames, cropped around, and the peak frame picked."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from media_factory import BACKGROUND_RGB, DrawnFace, MediaCatalogue, draw_face, session_catalogue

from emotion_llama.faces import (
    FULL_EVERY,
    FaceAnalysis,
    FaceBox,
    FaceTrack,
    HaarFaceDetector,
    choose_peak_frame,
    crop_face,
    find_main_face,
    follow_person,
    key_frames,
    link_tracks,
)
from emotion_llama.media import decode_clip
from emotion_llama.prepare import PrepareOptions, prepare_clip

# The frames prepare_clip tracks faces in: centres of 16 equal parts of the window.
TRACKED_POSITIONS = [(i + 0.5) / 16 for i in range(16)]


@pytest.fixture(scope="session")
def media(tmp_path_factory: pytest.TempPathFactory) -> MediaCatalogue:
    return session_catalogue(tmp_path_factory)


def analyse(path: Path) -> FaceAnalysis:
    decoded = decode_clip(path, TRACKED_POSITIONS)
    return find_main_face(decoded.frames, decoded.frame_times)


def test_drawn_face_is_found_where_it_was_drawn(media: MediaCatalogue):
    faces = analyse(media["face.mp4"])
    assert faces.coverage == 1.0 and faces.other_people == 0
    for box in faces.boxes:
        centre_x, centre_y = box.centre
        assert abs(centre_x - 160) <= 12 and abs(centre_y - 120) <= 20
        assert 60 <= box.side <= 160  # the face is 120 px wide, 156 px tall


def test_larger_face_is_the_main_person_and_the_other_is_counted(media: MediaCatalogue):
    prepared = prepare_clip(media["two_faces.mp4"])
    assert prepared.other_people == 1
    assert all(abs((x + w / 2) - 320 / 3) <= 15 for x, y, w, h in prepared.face_boxes)
    assert any("1 other face" in warning for warning in prepared.warnings)


def test_peak_frame_is_the_moment_of_strongest_expression(media: MediaCatalogue):
    # The drawn face opens its mouth and raises its brows from 1.6 s to 2.4 s of 4 s.
    prepared = prepare_clip(media["expressive_face.mp4"])
    assert prepared.face_found
    assert 1.6 <= prepared.global_frame_time < 2.4
    assert prepared.frame_times[prepared.peak_frame_index] == prepared.global_frame_time


def test_first_frame_choice_reproduces_the_reference_demo(media: MediaCatalogue):
    prepared = prepare_clip(media["expressive_face.mp4"], options=PrepareOptions(frame_choice="first"))
    assert prepared.global_frame_time == 0.0
    assert 1.6 <= prepared.frame_times[prepared.peak_frame_index] < 2.4, "the peak is still reported"


def test_face_crops_for_the_two_face_encoders(media: MediaCatalogue):
    prepared = prepare_clip(media["face.mp4"], options=PrepareOptions(crop_size=112))
    assert prepared.face_crops.shape == (8, 112, 112, 3)
    assert prepared.face_sequence.shape == (16, 112, 112, 3)
    centre = prepared.face_crops[:, 46:66, 46:66].reshape(-1, 3).mean(axis=0)
    assert np.abs(centre - BACKGROUND_RGB).sum() > 60, "the crop centre should be on the face"


# --- tracking ---------------------------------------------------------------------------


def box(x: float, y: float, side: float = 100) -> FaceBox:
    return FaceBox(x, y, side, side)


def test_detector_misses_are_filled_by_interpolation_and_holding():
    track = FaceTrack({1: box(0, 0), 3: box(100, 40)})
    times = [0.0, 1.0, 2.0, 3.0, 4.0]
    assert track.box_at(0, times) == box(0, 0)  # before the first detection: held
    assert track.box_at(2, times) == box(50, 20)  # between: halfway in time
    assert track.box_at(4, times) == box(100, 40)  # after the last: held


def test_interpolation_follows_time_not_frame_count():
    track = FaceTrack({0: box(0, 0), 2: box(100, 0)})
    assert track.box_at(1, [0.0, 0.25, 1.0]).x == pytest.approx(25.0)


def test_two_boxes_on_one_face_make_one_track():
    detections = [[box(100, 100)], [box(100, 100), box(120, 110, 60)], [box(104, 100)]]
    tracks = link_tracks(detections)
    assert len(tracks) == 1 and sorted(tracks[0].boxes) == [0, 1, 2]


def test_two_people_side_by_side_make_two_tracks():
    detections = [[box(0, 0), box(300, 0, 80)] for _ in range(4)]
    tracks = link_tracks(detections)
    assert sorted(len(t.boxes) for t in tracks) == [4, 4]


def test_a_single_false_detection_is_not_another_person():
    frames = [np.zeros((240, 320, 3), np.uint8)] * 8

    class ScriptedDetector:
        def detect(self, frame: np.ndarray) -> list[FaceBox]:
            self.calls = getattr(self, "calls", 0) + 1
            return [box(20, 20)] + ([box(200, 100, 40)] if self.calls == 3 else [])

    faces = find_main_face(frames, [i / 8 for i in range(8)], ScriptedDetector())
    assert faces.coverage == 1.0 and faces.other_people == 0


def test_a_weak_detection_seen_in_every_frame_does_not_outrank_a_clear_face():
    # A window or poster the cascade passes with a score under 0 in all 8 frames, and a real
    # face it scores high in 7 of them: the face is person 0, the texture comes after it.
    frames = [np.zeros((240, 320, 3), np.uint8)] * 8

    class ScriptedDetector:
        def detect(self, frame: np.ndarray) -> list[FaceBox]:
            self.calls = getattr(self, "calls", 0) + 1
            clear_face = [FaceBox(20, 20, 60, 60, strength=4.0)] if self.calls != 5 else []
            return [FaceBox(200, 100, 70, 70, strength=-0.3)] + clear_face

    faces = find_main_face(frames, [i / 8 for i in range(8)], ScriptedDetector())
    assert faces.people[0].frames_seen == 7 and faces.people[1].frames_seen == 8
    assert abs(faces.boxes[0].centre[0] - 50) < 1, "the crops follow the clear face"


def test_another_detector_plugs_in_through_the_protocol(media: MediaCatalogue):
    class FixedBoxDetector:
        def detect(self, frame: np.ndarray) -> list[FaceBox]:
            return [FaceBox(10, 20, 50, 50)]

    prepared = prepare_clip(media["no_face.mp4"], options=PrepareOptions(face_detector=FixedBoxDetector()))
    assert prepared.face_found and prepared.face_boxes == [(10, 20, 50, 50)] * 8


def test_a_face_seen_in_one_frame_only_counts_as_no_face_and_twice_as_a_face():
    # A covered or turned face the detector catches in one sampled frame would be cropped
    # (and read as a face) in all 16; one sighting is a glimpse, two are a face.
    class MarkedFrameDetector:
        def detect(self, frame: np.ndarray) -> list[FaceBox]:
            return [box(20, 20)] if frame.any() else []

    def frames_marked(marked: set[int], count: int = 16) -> list[np.ndarray]:
        return [np.full((240, 320, 3), 255 if i in marked else 0, np.uint8) for i in range(count)]

    times = [i / 16 for i in range(16)]
    glimpse = find_main_face(frames_marked({3}), times, MarkedFrameDetector())
    assert not glimpse.face_found and glimpse.boxes == [None] * 16 and glimpse.people == []
    assert glimpse.note == "no face seen in 2 or more of the 16 sampled frames: the face was left out"
    twice = find_main_face(frames_marked({3, 11}), times, MarkedFrameDetector())
    assert twice.face_found and sum(twice.detected) == 2 and len(twice.people) == 1
    single_frame = find_main_face(frames_marked({0}, count=1), [0.0], MarkedFrameDetector())
    assert single_frame.face_found, "with one frame sampled, one sighting is every frame"


def test_frames_without_faces_give_no_boxes():
    frames = [np.full((120, 160, 3), 128, np.uint8)] * 4
    faces = find_main_face(frames, [0.0, 0.1, 0.2, 0.3])
    assert not faces.face_found and faces.boxes == [None] * 4 and faces.coverage == 0.0


def test_haar_detector_gives_the_same_faces_from_two_threads():
    image = np.full((240, 320, 3), BACKGROUND_RGB, np.uint8)
    draw_face(image, DrawnFace(160, 120, 60))
    detector = HaarFaceDetector()
    alone = detector.detect(image)
    results: list[list[FaceBox]] = []
    workers = [threading.Thread(target=lambda: results.append(detector.detect(image))) for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert len(alone) == 1 and results == [alone, alone]


# --- crops and the peak ---------------------------------------------------------------


def test_crop_is_square_padded_around_the_face():
    frame = np.zeros((240, 320, 3), np.uint8)
    frame[100:140, 140:180] = 255  # a 40 px "face"
    crop = crop_face(frame, FaceBox(140, 100, 40, 40), size=60, padding=0.25)
    # 40 px grown by 25% on each side is 60 px: the face fills the middle 40 of 60.
    assert crop.shape == (60, 60, 3)
    assert crop[10:50, 10:50].min() == 255 and crop[:9].max() == 0 and crop[:, 51:].max() == 0


def test_crop_at_the_frame_border_is_padded_and_keeps_the_face_centred():
    frame = np.full((240, 320, 3), 200, np.uint8)
    crop = crop_face(frame, FaceBox(0, 0, 80, 80), size=120, padding=0.25)
    # The square reaches 20 px above and left of the frame: black there, picture elsewhere.
    assert crop.shape == (120, 120, 3)
    assert crop[:18, :18].max() == 0 and crop[25:, 25:].min() == 200


def test_no_face_crop_is_the_centre_square():
    frame = np.zeros((120, 200, 3), np.uint8)
    frame[:, 40:160] = 255  # the centre 120x120 square
    crop = crop_face(frame, None, size=60)
    assert crop.min() == 255


def test_peak_is_the_crop_most_unlike_the_others_not_the_brightest():
    rng = np.random.default_rng(0)
    base = rng.integers(60, 200, (64, 64, 3)).astype(np.uint8)
    crops = np.stack([base] * 8)
    crops[2] = np.clip(base.astype(int) + 40, 0, 255)  # only brighter: lighting, not expression
    crops[5] = base[::-1]  # a different picture
    assert choose_peak_frame(crops) == 5


def test_whole_frames_are_searched_only_on_key_frames_and_the_moving_face_is_still_followed(media: MediaCatalogue):
    # The drawn face drifts 40 px to the right over 4 s and changes expression.
    decoded = decode_clip(media["expressive_face.mp4"], TRACKED_POSITIONS)

    class CountingDetector:
        def __init__(self) -> None:
            self.haar, self.whole = HaarFaceDetector(), 0

        def detect(self, frame: np.ndarray) -> list[FaceBox]:
            self.whole += 1
            return self.haar.detect(frame)

        def detect_near(self, frame: np.ndarray, box: FaceBox) -> list[FaceBox]:
            return self.haar.detect_near(frame, box)

    counting = CountingDetector()
    tracked = find_main_face(decoded.frames, decoded.frame_times, counting)
    everywhere = follow_person(decoded.frames, decoded.frame_times, HaarFaceDetector(), full_every=1)
    assert counting.whole == len(key_frames(16, FULL_EVERY)) == 2  # the first and the last of 16
    assert tracked.coverage == everywhere.coverage == 1.0
    assert min(a.iou(b) for a, b in zip(tracked.boxes, everywhere.boxes)) > 0.7


def test_the_crop_size_comes_from_whole_frame_detections():
    """The search near a box may lock onto part of the face (smaller boxes, frame after
    frame); the crops keep the size the whole-frame detections saw."""
    whole = {0: FaceBox(100, 100, 120, 120), 15: FaceBox(110, 100, 124, 124)}
    near = {i: FaceBox(110, 110, 90, 90) for i in range(1, 15)}
    track = FaceTrack({**whole, **near}, whole=set(whole))
    assert track.median_side == 122
    assert FaceTrack(dict(near)).median_side == 90  # without whole-frame boxes, all of them count
