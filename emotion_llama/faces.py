"""Find the person's face in the sampled frames, follow it, crop it, pick the peak.

Detection sits behind the small ``FaceDetector`` protocol; OpenCV 4's Haar frontal
cascade is the default because its model ships inside the opencv wheel, so a stronger
detector can replace it once its weights exist. Detections are linked across frames
into ``FaceTrack``s; the people are the persistent tracks, the one seen most often and
most clearly first (see ``FaceTrack.rank``), and person 0 is the one analysed unless
another is chosen.

Detecting faces in every sampled frame is the slow part (~45 ms a 720p frame), so
``track_faces`` runs the full detector only on a few key frames and, in the frames
between, searches a small region around each track's box from the neighbouring frame
(~1 ms): a track lost there gets one full detection of its own.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from emotion_llama.clip import Person
from emotion_llama.errors import NoSuchPersonError, WeightsUnavailableError

NO_FACE_WARNING = "no face found: the face encoders were left out (the pictures show the centre of the frame)"
FULL_EVERY = 15  # a full detection on the first sampled frame, every 15th and the last
HOLD = 2  # a track missed in a frame is still searched for near its box this many frames on
THUMBNAIL_SIDE = 96
# A face seen in one sampled frame only is a glimpse (a turned or covered face, or a false
# detection): its crops would be read as a face in every frame, so it counts as no face.
MIN_SIGHTINGS = 2


@dataclass(frozen=True)
class FaceBox:
    """An axis-aligned face box in pixels of the frame it was found in.

    ``strength`` is how sure the detector was that this is a face (higher: surer; 1.0
    from a detector that does not say), so a false detection that is seen as often as a
    real face still weighs less than it; it takes no part in comparing boxes.
    """

    x: float
    y: float
    width: float
    height: float
    strength: float = field(default=1.0, compare=False)

    @property
    def centre(self) -> tuple[float, float]:
        return self.x + self.width / 2, self.y + self.height / 2

    @property
    def side(self) -> float:
        return max(self.width, self.height)

    @property
    def area(self) -> float:
        return self.width * self.height

    def iou(self, other: FaceBox) -> float:
        overlap_w = min(self.x + self.width, other.x + other.width) - max(self.x, other.x)
        overlap_h = min(self.y + self.height, other.y + other.height) - max(self.y, other.y)
        overlap = max(0.0, overlap_w) * max(0.0, overlap_h)
        return overlap / (self.area + other.area - overlap) if overlap else 0.0

    def centre_distance(self, other: FaceBox) -> float:
        (ax, ay), (bx, by) = self.centre, other.centre
        return float(np.hypot(ax - bx, ay - by))

    def scaled(self, factor: float) -> FaceBox:
        return FaceBox(self.x * factor, self.y * factor, self.width * factor, self.height * factor, self.strength)

    def shifted(self, dx: float, dy: float) -> FaceBox:
        return FaceBox(self.x + dx, self.y + dy, self.width, self.height, self.strength)

    def square(self, side: float) -> FaceBox:
        """A ``side``-wide square on the same centre."""
        cx, cy = self.centre
        return FaceBox(cx - side / 2, cy - side / 2, side, side)

    def towards(self, other: FaceBox, weight: float) -> FaceBox:
        """The box ``weight`` of the way from this one to ``other`` (0: this, 1: other)."""
        return FaceBox(*(a + weight * (b - a) for a, b in zip(self.as_tuple(), other.as_tuple())))

    def as_tuple(self) -> tuple[float, float, float, float]:
        return self.x, self.y, self.width, self.height

    def as_ints(self) -> tuple[int, int, int, int]:
        return tuple(round(v) for v in self.as_tuple())  # type: ignore[return-value]


class FaceDetector(Protocol):
    """Anything that finds faces in an RGB ``uint8`` frame; must be safe to share across threads.

    A detector that also has ``detect_near(frame, box)`` (faces of about ``box``'s size
    close to it, see ``HaarFaceDetector.detect_near``) is searched mostly near the faces
    already followed; one without it runs ``detect`` on every frame.
    """

    def detect(self, frame: np.ndarray) -> list[FaceBox]: ...


class HaarFaceDetector:
    """OpenCV's Haar frontal-face cascade, run on a downscaled, equalised grey frame.

    The defaults (360 px, pyramid step 1.05, 3 neighbours) found the main face in at
    least 14 of the 16 sampled frames of each of the six real test clips. ``detect_near``
    (the search around a face already found) sees the face ``near_face_side`` pixels
    wide, as large as a 720p face at 360 px, within a factor ``near_size_change`` of its
    last size and in a square ``near_reach`` times its side. Each box's ``strength`` is
    the cascade's score at its last stage (OpenCV's level weight): windows, posters and
    other face-like texture pass the cascade with low scores, real faces mostly with high.
    """

    def __init__(
        self,
        cascade_file: str = "haarcascade_frontalface_default.xml",
        detection_side: int = 360,
        scale_factor: float = 1.05,
        min_neighbors: int = 3,
        min_face_fraction: float = 0.1,
        near_face_side: int = 56,
        near_size_change: float = 1.2,
        near_reach: float = 2.0,
    ) -> None:
        self.cascade_path = Path(cv2.data.haarcascades) / cascade_file
        if not self.cascade_path.is_file():
            raise WeightsUnavailableError(
                f"OpenCV's face model {self.cascade_path} is missing; install "
                "opencv-python-headless 4.x, whose wheel ships the Haar cascades."
            )
        self.detection_side = detection_side
        self.scale_factor = scale_factor
        self.min_neighbors = min_neighbors
        self.min_face_fraction = min_face_fraction
        self.near_face_side = near_face_side
        self.near_size_change = near_size_change
        self.near_reach = near_reach
        self._per_thread = threading.local()  # a CascadeClassifier must not be shared by threads

    def detect(self, frame: np.ndarray) -> list[FaceBox]:
        scale = min(1.0, self.detection_side / max(frame.shape[:2]))
        grey = _equalised_grey(frame, scale)
        min_side = max(20, int(self.min_face_fraction * min(grey.shape)))
        return [box.scaled(1 / scale) for box in self._run(grey, min_side)]

    def detect_near(self, frame: np.ndarray, box: FaceBox) -> list[FaceBox]:
        """Faces of ``box``'s side, within a factor ``near_size_change``, in the square
        ``near_reach`` times its side around its centre.

        The region is scaled so that such a face is ``near_face_side`` pixels wide: a few
        pyramid levels of a small picture instead of every size over the whole frame.
        """
        height, width = frame.shape[:2]
        region = box.square(box.side * self.near_reach)
        x0, y0 = max(0, int(region.x)), max(0, int(region.y))
        x1, y1 = min(width, int(np.ceil(region.x + region.side))), min(height, int(np.ceil(region.y + region.side)))
        if min(x1 - x0, y1 - y0) < box.side * 2 / 3:  # the face has (nearly) left the picture
            return []
        scale = min(1.0, self.near_face_side / box.side)
        grey = _equalised_grey(frame[y0:y1, x0:x1], scale)
        expected = box.side * scale
        change = self.near_size_change
        found = self._run(grey, round(expected / change), round(expected * change))
        return [face.scaled(1 / scale).shifted(x0, y0) for face in found]

    def _run(self, grey: np.ndarray, min_side: int, max_side: int = 0) -> list[FaceBox]:
        found, _, scores = self._cascade().detectMultiScale3(
            grey,
            scaleFactor=self.scale_factor,
            minNeighbors=self.min_neighbors,
            minSize=(min_side, min_side),
            maxSize=(max_side, max_side),
            outputRejectLevels=True,  # same boxes, plus each one's score
        )
        return [FaceBox(*map(float, box), strength=float(score)) for box, score in zip(found, scores)]

    def _cascade(self) -> cv2.CascadeClassifier:
        if not hasattr(self._per_thread, "cascade"):
            self._per_thread.cascade = cv2.CascadeClassifier(str(self.cascade_path))
        return self._per_thread.cascade


def _equalised_grey(image: np.ndarray, scale: float) -> np.ndarray:
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    if scale < 1.0:
        grey = cv2.resize(grey, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    return cv2.equalizeHist(grey)


_default_detector: HaarFaceDetector | None = None
_default_detector_lock = threading.Lock()


def default_face_detector() -> HaarFaceDetector:
    global _default_detector
    with _default_detector_lock:
        if _default_detector is None:
            _default_detector = HaarFaceDetector()
        return _default_detector


# --- tracking -----------------------------------------------------------------------


@dataclass
class FaceTrack:
    """One face followed across frames: the boxes the detector found, by frame index."""

    boxes: dict[int, FaceBox] = field(default_factory=dict)
    whole: set[int] = field(default_factory=set)  # frames whose box a whole-frame detection found

    @property
    def last_box(self) -> FaceBox:
        return self.boxes[max(self.boxes)]

    @property
    def clear_frames(self) -> int:
        """Frames where the face was seen clearly: its detection's strength is above 0.

        For the Haar cascade that is where the last stage's boosted vote is for a face on
        its own, before the threshold that training lowers to miss almost no face; a
        detector that gives no strengths sees every face clearly.
        """
        return sum(box.strength > 0 for box in self.boxes.values())

    @property
    def rank(self) -> tuple[int, int, float]:
        """The people's order, larger first: frames seen clearly, then frames seen, then size."""
        return self.clear_frames, len(self.boxes), self.mean_area

    @property
    def mean_area(self) -> float:
        return float(np.mean([box.area for box in self.boxes.values()]))

    @property
    def median_side(self) -> float:
        """The crops' side: from whole-frame detections when there are any, since the search
        near a box may lock onto part of the face and let the size drift."""
        sides = [box.side for index, box in self.boxes.items() if index in self.whole]
        return float(np.median(sides or [box.side for box in self.boxes.values()]))

    def box_at(self, index: int, times: Sequence[float]) -> FaceBox:
        """The detected box, else one interpolated in time between detections, else the nearest."""
        if index in self.boxes:
            return self.boxes[index]
        seen = sorted(self.boxes)
        before = [i for i in seen if i < index]
        after = [i for i in seen if i > index]
        if not before:
            return self.boxes[after[0]]
        if not after:
            return self.boxes[before[-1]]
        i, j = before[-1], after[0]
        span = times[j] - times[i]
        weight = (times[index] - times[i]) / span if span > 0 else 0.5
        return self.boxes[i].towards(self.boxes[j], weight)

    def matches(self, box: FaceBox) -> float | None:
        """How far ``box`` is from where this face was last seen, or None if it is someone else."""
        return _step(self.last_box, box)


def _step(last: FaceBox, box: FaceBox) -> float | None:
    """How far ``box`` is from ``last`` in face sides, or None if it cannot be the same face a
    sampled frame later: a box of a very different size is another face (or a false
    detection), even nearby."""
    larger, smaller = max(last.side, box.side), min(last.side, box.side)
    if larger > 2 * smaller:
        return None
    distance = last.centre_distance(box) / larger
    if last.iou(box) >= 0.3 or distance <= 0.6:
        return distance
    return None


def link_tracks(detections: Sequence[Sequence[FaceBox]]) -> list[FaceTrack]:
    """Link per-frame detections (frames in time order) into tracks."""
    tracks: list[FaceTrack] = []
    for index, boxes in enumerate(detections):
        link_frame(tracks, index, boxes)
    return tracks


def link_frame(tracks: list[FaceTrack], index: int, boxes: Sequence[FaceBox]) -> None:
    """Give frame ``index``'s detections to ``tracks`` (all seen before ``index`` only).

    A box on a face some track already has in this frame (found near its box) is that
    face found again and is dropped. The other boxes go to the nearest free tracks
    first; a leftover box that overlaps a box already placed in the same frame is the
    same face found twice (the cascade often fires on a face and on part of it) and is
    dropped; any other leftover starts a new track.
    """
    taken = {t for t, track in enumerate(tracks) if index in track.boxes}
    placed = [tracks[t].boxes[index] for t in taken]
    boxes = [box for box in boxes if not any(_same_face(box, other) for other in placed)]
    candidates = sorted(
        (distance, t, b)
        for t, track in enumerate(tracks)
        if t not in taken
        for b, box in enumerate(boxes)
        if (distance := track.matches(box)) is not None
    )
    used: set[int] = set()
    for _, t, b in candidates:
        if t not in taken and b not in used:
            tracks[t].boxes[index] = boxes[b]
            tracks[t].whole.add(index)
            taken.add(t)
            used.add(b)
            placed.append(boxes[b])
    for b, box in sorted(enumerate(boxes), key=lambda item: -item[1].area):
        if b in used or any(_same_face(box, other) for other in placed):
            continue
        tracks.append(FaceTrack({index: box}, {index}))
        placed.append(box)


def key_frames(count: int, every: int) -> set[int]:
    """The frames searched whole: the first, every ``every``-th, and the last."""
    return set(range(0, count, max(1, every))) | ({count - 1} if count else set())


def track_faces(frames: Sequence[np.ndarray], detector: FaceDetector, full_every: int = FULL_EVERY) -> list[FaceTrack]:
    """Every face in ``frames`` (in time order), followed: full detections on the key frames,
    searches near each track's box in the frames between (forwards, then backwards from
    where a track was found later), and a full detection where a track is lost.

    With ``full_every`` 1, or a detector without ``detect_near``, every frame is searched whole.
    """
    search_near = getattr(detector, "detect_near", None)
    if search_near is None or full_every <= 1:
        return link_tracks([detector.detect(frame) for frame in frames])
    keys = key_frames(len(frames), full_every)
    tracks: list[FaceTrack] = []
    for index, frame in enumerate(frames):
        lost = index not in keys and _follow(tracks, index, frame, search_near)
        if index in keys or lost:
            link_frame(tracks, index, detector.detect(frame))
    for track in tracks:  # back from each box to the frames before it that were missed
        for index in range(len(frames) - 2, -1, -1):
            if index not in track.boxes and index + 1 in track.boxes:
                _search(tracks, track, index, frames[index], track.boxes[index + 1], search_near)
    return tracks


def _follow(tracks: list[FaceTrack], index: int, frame: np.ndarray, search_near) -> bool:
    """Search near each recent track's last box; True when the track ranked first so far was
    in the frame before and is not found (other tracks wait for the next key frame)."""
    leader = max(tracks, key=lambda t: t.rank, default=None)
    lost = False
    for track in tracks:
        last = max(track.boxes)
        if index - last <= HOLD and not _search(tracks, track, index, frame, track.boxes[last], search_near):
            lost = lost or (track is leader and last == index - 1)
    return lost


def _search(tracks: list[FaceTrack], track: FaceTrack, index: int, frame: np.ndarray, near: FaceBox,
            search_near) -> bool:
    """Give ``track`` the face found closest to ``near`` in ``frame``, unless it is too far to
    be the same face or another track has it."""
    others = [other.boxes[index] for other in tracks if other is not track and index in other.boxes]
    found = [box for box in search_near(frame, near)
             if _step(near, box) is not None and not any(_same_face(box, other) for other in others)]
    if found:
        track.boxes[index] = min(found, key=near.centre_distance)
    return bool(found)


def _same_face(a: FaceBox, b: FaceBox) -> bool:
    small, large = sorted((a, b), key=lambda box: box.area)
    cx, cy = small.centre
    inside = large.x <= cx <= large.x + large.width and large.y <= cy <= large.y + large.height
    return a.iou(b) >= 0.3 or inside


@dataclass
class FaceAnalysis:
    """The chosen person's face over the sampled frames, and everyone else who was seen.

    ``boxes`` holds, for every frame, the square the crops are cut from (centred on the
    found, interpolated or held box, with the track's median size so crops do not
    jitter); it is all None when no face was found. ``people`` lists the persistent
    faces, the most persistent first; ``person`` is the index of the one followed.
    """

    boxes: list[FaceBox | None]
    detected: list[bool]  # the chosen face was seen in this frame: found whole-frame or near its box
    other_people: int
    people: list[Person] = field(default_factory=list)
    person: int = 0

    @property
    def face_found(self) -> bool:
        return any(self.detected)

    @property
    def coverage(self) -> float:
        """Share of the sampled frames in which the chosen face was seen: found by the detector
        in the whole frame or near its box of a neighbouring frame; frames where its box was
        only interpolated or held do not count."""
        return sum(self.detected) / len(self.detected) if self.detected else 0.0

    @property
    def note(self) -> str:
        return coverage_note(sum(self.detected), len(self.detected))

    @property
    def within_track(self) -> list[bool]:
        """Frames from the first to the last detection: there the box is seen or interpolated.

        Outside that span the box is only held, and the face may have left the picture.
        """
        seen = [i for i, detected in enumerate(self.detected) if detected]
        return [bool(seen) and seen[0] <= i <= seen[-1] for i in range(len(self.detected))]

    def crops(self, frames: Sequence[np.ndarray], size: int = 224, padding: float = 0.25) -> np.ndarray:
        """``(N, size, size, 3)`` crops of the chosen face, one per frame (the centre square without a face)."""
        return np.stack([crop_face(frame, box, size, padding) for frame, box in zip(frames, self.boxes)])


def coverage_note(seen: int, total: int) -> str:
    """A sentence for people: how often the face was seen in the sampled frames."""
    if not seen:
        return f"no face seen in {MIN_SIGHTINGS} or more of the {total} sampled frames: the face was left out"
    return f"face seen in {seen} of {total} sampled frames"


def follow_person(
    frames: Sequence[np.ndarray],
    times: Sequence[float],
    detector: FaceDetector | None = None,
    *,
    person: int | None = None,
    full_every: int = FULL_EVERY,
    min_other_share: float = 1 / 3,
) -> FaceAnalysis:
    """Find the people in ``frames`` (in time order, taken at ``times``) and follow one.

    People are the tracks seen in at least ``min_other_share`` of the frames (and twice),
    so a single false detection is not a person, plus the most persistent track if it was
    seen ``MIN_SIGHTINGS`` times (or in every frame, when fewer were sampled): no face
    otherwise; ``person`` indexes them (None or 0: the one seen most often and most clearly, the largest
    ``FaceTrack.rank``). Raises
    ``NoSuchPersonError`` for an index past the people found.
    """
    tracks = track_faces(frames, detector or default_face_detector(), full_every)
    tracks.sort(key=lambda t: t.rank, reverse=True)
    seen_enough = [track for track in tracks if len(track.boxes) >= min(MIN_SIGHTINGS, len(frames))]
    min_frames = max(2, min_other_share * len(frames))
    people = seen_enough[:1] + [track for track in seen_enough[1:] if len(track.boxes) >= min_frames]
    chosen = _person_index(person, len(people))
    if not people:
        return FaceAnalysis([None] * len(frames), [False] * len(frames), 0)
    track, n = people[chosen], len(frames)
    return FaceAnalysis(
        boxes=[track.box_at(i, times).square(track.median_side) for i in range(n)],
        detected=[i in track.boxes for i in range(n)],
        other_people=len(people) - 1,
        people=[_person(index, track, frames) for index, track in enumerate(people)],
        person=chosen,
    )


def find_main_face(
    frames: Sequence[np.ndarray], times: Sequence[float], detector: FaceDetector | None = None,
    min_other_share: float = 1 / 3,
) -> FaceAnalysis:
    """The person seen most often and most clearly (``follow_person`` with person 0)."""
    return follow_person(frames, times, detector, min_other_share=min_other_share)


def _person_index(person: int | None, found: int) -> int:
    chosen = person or 0
    if chosen < 0 or chosen >= max(1, found):
        seen = (f"{found} people were found, numbered 0 to {found - 1} (0 is the one seen most often and most clearly)"
                if found > 1 else "only one person was found (person 0)" if found else
                "no face was found, so only person 0 (the centre of the frame) can be analysed")
        raise NoSuchPersonError(f"there is no person {person} in this clip: {seen}; choose one of them.")
    return chosen


def _person(index: int, track: FaceTrack, frames: Sequence[np.ndarray]) -> Person:
    """``track`` for the page: its size-typical detection as a thumbnail, and how often it was seen."""
    side = track.median_side
    frame_index = min(track.boxes, key=lambda i: (abs(track.boxes[i].side - side), i))
    box = track.boxes[frame_index]
    return Person(index=index, frames_seen=len(track.boxes), frames_sampled=len(frames), box=box.as_ints(),
                  frame_index=frame_index, thumbnail=crop_face(frames[frame_index], box, THUMBNAIL_SIDE))


# --- crops and the peak frame -------------------------------------------------------


def crop_face(frame: np.ndarray, box: FaceBox | None, size: int = 224, padding: float = 0.25) -> np.ndarray:
    """A ``size`` x ``size`` crop around ``box`` grown by ``padding`` of its side on each edge.

    Parts outside the frame are black, so the face stays centred; without a box the
    crop is the centre square of the frame.
    """
    height, width = frame.shape[:2]
    if box is None:
        side = min(height, width)
        box = FaceBox((width - side) / 2, (height - side) / 2, side, side)
    else:
        box = box.square(box.side * (1 + 2 * padding))
    x0, y0, side = round(box.x), round(box.y), max(1, round(box.side))
    square = np.zeros((side, side, 3), np.uint8)
    src_x0, src_y0 = max(0, x0), max(0, y0)
    src_x1, src_y1 = min(width, x0 + side), min(height, y0 + side)
    if src_x1 > src_x0 and src_y1 > src_y0:
        square[src_y0 - y0 : src_y1 - y0, src_x0 - x0 : src_x1 - x0] = frame[src_y0:src_y1, src_x0:src_x1]
    interpolation = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
    return cv2.resize(square, (size, size), interpolation=interpolation)


def choose_peak_frame(crops: np.ndarray, candidates: Sequence[bool] | None = None, thumb_side: int = 32) -> int:
    """Index of the crop farthest from the median crop: the strongest expression.

    Only ``candidates`` (all crops when None or none is a candidate) are compared, so
    a crop where the face may be missing cannot win. Crops are compared as small grey
    thumbnails, each standardised so a change of lighting does not count as expression.
    """
    if len(crops) == 0:
        raise ValueError("no crops to choose a peak frame from")
    indices = [i for i, usable in enumerate(candidates or []) if usable] or list(range(len(crops)))
    thumbs = np.stack(
        [
            cv2.resize(
                cv2.cvtColor(crops[i], cv2.COLOR_RGB2GRAY), (thumb_side, thumb_side), interpolation=cv2.INTER_AREA
            ).astype(np.float32)
            for i in indices
        ]
    )
    flat = thumbs.reshape(len(thumbs), -1)
    flat = (flat - flat.mean(axis=1, keepdims=True)) / (flat.std(axis=1, keepdims=True) + 1e-6)
    distances = np.linalg.norm(flat - np.median(flat, axis=0), axis=1)
    return indices[int(np.argmax(distances))]
