"""Test media made on the spot with the ffmpeg binary bundled in imageio-ffmpeg.

Every clip is small and quick to make (160x120 to 320x240 unless the case needs more).
Tests get them from ``session_catalogue``, which makes each file once per session, on
first use; the benchmark and the app's browser tests call the ``make_*`` functions.
"""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import imageio_ffmpeg
import numpy as np
import pytest

FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()
H264 = ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]
BACKGROUND_RGB = (90, 110, 130)


def run_ffmpeg(*args: str, stdin: bytes | None = None, attempts: int = 3) -> None:
    """ffmpeg with ``args``; a run that hangs (its threaded pipeline rarely deadlocks) is
    killed after two minutes and run again."""
    for attempt in range(attempts):
        try:
            subprocess.run([FFMPEG, "-hide_banner", "-loglevel", "error", "-y", *args],
                           input=stdin if stdin is not None else b"", check=True, timeout=120)
            return
        except subprocess.TimeoutExpired:
            if attempt == attempts - 1:
                raise


# --- a drawn face the OpenCV frontal cascade recognises ---------------------------


@dataclass(frozen=True)
class DrawnFace:
    """A cartoon face; ``half_width`` in pixels, expression from 0 (neutral) to 1."""

    centre_x: int
    centre_y: int
    half_width: int
    expression: float = 0.0


def draw_face(image: np.ndarray, face: DrawnFace) -> None:
    """Draw ``face`` into the RGB ``image`` in place."""
    cx, cy, s = face.centre_x, face.centre_y, face.half_width
    mouth_open, brow_raise = 0.35 * face.expression, 0.3 * face.expression
    aa = cv2.LINE_AA
    # fmt: off
    cv2.ellipse(image, (cx, cy), (s, int(s * 1.3)), 0, 0, 360, (205, 160, 135), -1, aa)  # skin
    cv2.ellipse(image, (cx, cy - int(s * 0.9)), (int(s * 1.05), int(s * 0.55)), 0, 180, 360, (60, 40, 30), -1, aa)
    eye_y, eye_dx = cy - int(s * 0.25), int(s * 0.42)
    for side in (-1, 1):
        cv2.ellipse(image, (cx + side * eye_dx, eye_y), (int(s * 0.22), int(s * 0.12)), 0, 0, 360,
                    (250, 250, 250), -1, aa)
        cv2.circle(image, (cx + side * eye_dx, eye_y), int(s * 0.09), (40, 30, 25), -1, aa)
        brow_y = eye_y - int(s * (0.25 + 0.15 * brow_raise))
        cv2.line(image, (cx + side * int(s * 0.2), brow_y), (cx + side * int(s * 0.65), brow_y - int(s * 0.03)),
                 (50, 35, 30), max(2, int(s * 0.08)), aa)
    cv2.line(image, (cx, eye_y + int(s * 0.05)), (cx - int(s * 0.08), cy + int(s * 0.3)), (170, 120, 100),
             max(2, int(s * 0.06)), aa)  # nose shadow
    cv2.ellipse(image, (cx, cy + int(s * 0.6)), (int(s * 0.35), max(2, int(s * (0.06 + 0.3 * mouth_open)))),
                0, 0, 360, (120, 40, 40), -1, aa)  # mouth
    # fmt: on


FaceScript = Callable[[float], list[DrawnFace]]


def make_face_clip(
    path: Path,
    script: FaceScript,
    *,
    size: tuple[int, int] = (320, 240),
    seconds: float = 3.0,
    fps: int = 25,
    audio: bool = True,
    sound: str = "sine=frequency=220",
    stored_rotation: int = 0,
) -> Path:
    """Encode a clip whose frame at time ``t`` shows the faces ``script(t)``, with ``sound``
    (an ffmpeg lavfi source) as its sound track when ``audio``.

    ``stored_rotation`` (a multiple of 90, counter-clockwise) stores the pixels turned
    the other way and tags the stream with that display rotation, as phones do; a
    player that honours the tag shows the faces upright at ``size``.
    """
    width, height = size
    frames = []
    for index in range(round(seconds * fps)):
        image = np.full((height, width, 3), BACKGROUND_RGB, np.uint8)
        for face in script(index / fps):
            draw_face(image, face)
        frames.append(np.ascontiguousarray(np.rot90(image, k=-stored_rotation // 90)))
    coded_height, coded_width = frames[0].shape[:2]
    audio_args = ["-f", "lavfi", "-t", str(seconds), "-i", sound] if audio else []
    encoded = path.with_name(path.stem + ".unrotated" + path.suffix) if stored_rotation else path
    run_ffmpeg(
        "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{coded_width}x{coded_height}", "-r", str(fps),
        "-i", "-", *audio_args, *H264, *(["-c:a", "aac", "-shortest"] if audio else []), str(encoded),
        stdin=b"".join(frame.tobytes() for frame in frames),
    )  # fmt: skip
    if stored_rotation:
        run_ffmpeg("-display_rotation", str(stored_rotation), "-i", str(encoded), "-c", "copy", str(path))
        encoded.unlink()
    return path


def one_face(width: int = 320, height: int = 240) -> FaceScript:
    """One still, neutral face in the middle of the frame."""
    return lambda t: [DrawnFace(width // 2, height // 2, height // 4)]


def expressive_face(peak_start: float, peak_end: float, width: int = 320, height: int = 240) -> FaceScript:
    """A face drifting slowly to the right that opens its mouth between two times."""

    def script(t: float) -> list[DrawnFace]:
        expression = 1.0 if peak_start <= t < peak_end else 0.0
        return [DrawnFace(width // 2 - 20 + int(10 * t), height // 2, height // 4, expression)]

    return script


def two_faces(width: int = 320, height: int = 240) -> FaceScript:
    """A large face on the left for the whole clip and a smaller one on the right."""
    return lambda t: [
        DrawnFace(width // 3, height // 2, height // 4),
        DrawnFace(4 * width // 5, height // 2, height // 6),
    ]


# --- synthetic clips from ffmpeg's own sources ------------------------------------


def make_test_pattern_clip(
    path: Path,
    *,
    size: tuple[int, int] = (160, 120),
    seconds: float = 2.0,
    fps: float = 25,
    audio: bool = True,
    video_codec: list[str] | None = None,
    audio_codec: list[str] | None = None,
    extra: list[str] | None = None,
) -> Path:
    """testsrc2 pattern (no face) with a sine tone; codecs default to H.264 + AAC."""
    width, height = size
    video_codec = video_codec or H264
    audio_codec = audio_codec or ["-c:a", "aac"]
    audio_args = ["-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}"] if audio else []
    run_ffmpeg(
        "-f", "lavfi", "-i", f"testsrc2=size={width}x{height}:rate={fps}:duration={seconds}", *audio_args,
        *video_codec, *(audio_codec if audio else []), *(extra or []), str(path),
    )  # fmt: skip
    return path


def make_audio_only(path: Path, seconds: float = 2.0) -> Path:
    run_ffmpeg("-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}", "-c:a", "aac", str(path))
    return path


def make_long_clip(path: Path, *, seconds: float = 600.0, size: tuple[int, int] = (64, 48), fps: float = 1.0) -> Path:
    """A long, low-bitrate clip (a 10-minute 64x48 one takes about a second to make)."""
    return make_test_pattern_clip(
        path,
        size=size,
        seconds=seconds,
        fps=fps,
        video_codec=[*H264, "-crf", "40", "-g", str(max(1, round(fps * 2)))],
        audio_codec=["-c:a", "aac", "-ar", "8000", "-ac", "1", "-b:a", "16k"],
    )


def make_variable_frame_rate_clip(path: Path) -> Path:
    """Frames 40 ms apart, then 200 ms apart: the timestamps, not a rate, say when."""
    run_ffmpeg(
        "-f", "lavfi", "-i", "testsrc2=size=160x120:rate=25:duration=3",
        "-f", "lavfi", "-i", "sine=frequency=440:duration=3",
        "-vf", "select='lt(t\\,1)+not(mod(n\\,5))'", "-fps_mode", "vfr", *H264, "-c:a", "aac", str(path),
    )  # fmt: skip
    return path


def make_unknown_codec_avi(path: Path) -> Path:
    """A Motion-JPEG AVI whose codec tag is changed to one no decoder knows."""
    source = make_test_pattern_clip(
        path.with_name(path.stem + ".mjpeg.avi"),
        audio=False,
        video_codec=["-c:v", "mjpeg"],
    )
    path.write_bytes(source.read_bytes().replace(b"MJPG", b"QQQQ"))
    source.unlink()
    return path


def truncate(source: Path, path: Path, fraction: float = 0.5) -> Path:
    data = source.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    return path


def make_song_with_cover(path: Path, cover: Path) -> Path:
    """An MP3 whose only picture is its cover art: sound, no video."""
    run_ffmpeg(
        "-f", "lavfi", "-i", "sine=frequency=440:duration=2", "-i", str(cover),
        "-map", "0", "-map", "1", "-c:a", "libmp3lame", "-c:v", "png", "-disposition:v", "attached_pic",
        str(path),
    )  # fmt: skip
    return path


def make_png(path: Path) -> Path:
    run_ffmpeg("-f", "lavfi", "-i", "testsrc2=size=160x120", "-frames:v", "1", "-f", "image2", "-c:v", "png", str(path))
    return path


# --- hostile clips: tiny files whose headers declare a huge cost ----------------------


def make_late_audio_clip(path: Path, audio_start: float, *, seconds: float = 2.0) -> Path:
    """A normal short clip (MKV) whose sound track says it starts ``audio_start`` s in."""
    run_ffmpeg(
        "-f", "lavfi", "-i", f"testsrc2=size=160x120:rate=25:duration={seconds}",
        "-itsoffset", str(audio_start), "-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}",
        *H264, "-c:a", "aac", str(path),
    )  # fmt: skip
    return path


def make_huge_frame_clip(path: Path, side: int = 8192, frames: int = 4) -> Path:
    """A few plain grey ``side`` x ``side`` H.264 frames, 0.2 s apart: about 200 KB at 8192."""
    run_ffmpeg(
        "-f", "lavfi", "-i", f"color=c=gray:size={side}x{side}:rate=5", "-frames:v", str(frames), *H264, str(path),
    )  # fmt: skip
    return path


def make_many_streams_clip(path: Path, audio_streams: int = 40) -> Path:
    """A short clip carrying ``audio_streams`` copies of one quiet sound track."""
    maps = [arg for _ in range(audio_streams) for arg in ("-map", "1:a")]
    run_ffmpeg(
        "-f", "lavfi", "-i", "testsrc2=size=160x120:rate=25:duration=1",
        "-f", "lavfi", "-i", "sine=frequency=440:duration=1:sample_rate=8000",
        "-map", "0:v", *maps, *H264, "-c:a", "aac", "-b:a", "16k", str(path),
    )  # fmt: skip
    return path


def make_dense_frames_clip(path: Path) -> Path:
    """1,000 frames a second for 1.5 s in one keyframe interval: denser than any real video."""
    one_gop = [*H264, "-g", "2000", "-sc_threshold", "0"]
    return make_test_pattern_clip(path, size=(64, 48), seconds=1.5, fps=1000, audio=False, video_codec=one_gop)


# --- the session-wide catalogue ----------------------------------------------------


class MediaCatalogue:
    """Makes each named clip once per test session, on first use."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._lock = threading.RLock()  # recipes may ask for other clips
        self._made: dict[str, Path] = {}

    def __getitem__(self, name: str) -> Path:
        with self._lock:
            if name not in self._made:
                self._made[name] = self._recipes()[name](self.folder / name)
            return self._made[name]

    def _recipes(self) -> dict[str, Callable[[Path], Path]]:
        return {
            "zero_bytes.mp4": lambda p: (p.write_bytes(b""), p)[1],
            "text_renamed.mp4": lambda p: (p.write_text("These are my holiday notes, not a video.\n" * 20), p)[1],
            "image.png": make_png,
            "png_renamed.mp4": lambda p: (p.write_bytes(self["image.png"].read_bytes()), p)[1],
            "truncated.mp4": lambda p: truncate(self["face.mp4"], p),
            "truncated_faststart.mp4": lambda p: truncate(self["face_faststart.mp4"], p),
            "audio_only.m4a": make_audio_only,
            "audio_only.mp4": make_audio_only,
            "song_with_cover.mp3": lambda p: make_song_with_cover(p, self["image.png"]),
            "face.mp4": lambda p: make_face_clip(p, one_face()),
            "face_faststart.mp4": self._faststart,
            "face_no_audio.mp4": lambda p: make_face_clip(p, one_face(), audio=False),
            "face_silent_track.mp4": lambda p: make_face_clip(p, one_face(), sound="anullsrc=r=44100:cl=mono"),
            "face_quiet_tone.mp4": lambda p: make_face_clip(p, one_face(), sound="sine=frequency=220,volume=-50dB"),
            "expressive_face.mp4": lambda p: make_face_clip(p, expressive_face(1.6, 2.4), seconds=4.0),
            "two_faces.mp4": lambda p: make_face_clip(p, two_faces()),
            "rotated_face.mp4": lambda p: make_face_clip(
                p, one_face(240, 320), size=(240, 320), seconds=1.0, stored_rotation=90
            ),
            "no_face.mp4": lambda p: make_test_pattern_clip(p),
            "short_0.2s.mp4": lambda p: make_test_pattern_clip(p, seconds=0.2),
            "long_10min.mp4": make_long_clip,
            "uhd_4k.mp4": lambda p: make_test_pattern_clip(p, size=(3840, 2160), seconds=0.5, audio=False),
            "vp9.webm": lambda p: make_test_pattern_clip(
                p,
                video_codec=["-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-b:v", "200k"],
                audio_codec=["-c:a", "libopus"],
            ),
            "clip.mov": lambda p: make_test_pattern_clip(p),
            "clip.mkv": lambda p: make_test_pattern_clip(p, audio_codec=["-c:a", "libvorbis"]),
            "clip.avi": lambda p: make_test_pattern_clip(
                p, video_codec=["-c:v", "mpeg4", "-q:v", "5"], audio_codec=["-c:a", "libmp3lame"]
            ),
            "variable_frame_rate.mp4": make_variable_frame_rate_clip,
            "unknown_codec.avi": make_unknown_codec_avi,
            "audio_at_1e7s.mkv": lambda p: make_late_audio_clip(p, 1e7),
            "audio_at_30000s.mkv": lambda p: make_late_audio_clip(p, 30_000),
            "audio_at_20s.mkv": lambda p: make_late_audio_clip(p, 20),
            "frames_8192x8192.mp4": make_huge_frame_clip,
            "streams_41.mkv": make_many_streams_clip,
            "frames_1000fps.mp4": make_dense_frames_clip,
        }

    def _faststart(self, path: Path) -> Path:
        """The index at the front, so a cut file still opens and plays up to the cut."""
        raw = make_face_clip(path.with_name("face_slow_start.mp4"), one_face(), seconds=4.0)
        run_ffmpeg("-i", str(raw), "-c", "copy", "-movflags", "+faststart", str(path))
        raw.unlink()
        return path


_CATALOGUES: dict[Path, MediaCatalogue] = {}


def session_catalogue(tmp_path_factory: pytest.TempPathFactory) -> MediaCatalogue:
    """The session's test media: one catalogue for every test module that asks."""
    base = tmp_path_factory.getbasetemp()
    if base not in _CATALOGUES:
        _CATALOGUES[base] = MediaCatalogue(tmp_path_factory.mktemp("media"))
    return _CATALOGUES[base]


@pytest.fixture(scope="session")
def media(tmp_path_factory: pytest.TempPathFactory) -> MediaCatalogue:
    """The session's test media, for modules that import this fixture."""
    return session_catalogue(tmp_path_factory)
