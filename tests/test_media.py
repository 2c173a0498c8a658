"""Decoding: every format and every bad upload gives frames and sound or a clear error."""

from __future__ import annotations

import resource
import threading
import tracemalloc
from dataclasses import dataclass, fields, replace
from pathlib import Path

import av
import numpy as np
import pytest
from media_factory import MediaCatalogue, session_catalogue

from emotion_llama.clip import SAMPLE_RATE, PreparedClip
from emotion_llama.errors import (
    ClipTooLargeError,
    ClipTooShortError,
    MediaError,
    MediaLimitError,
    NotAVideoError,
    NoVideoStreamError,
    UnreadableFileError,
    UnsupportedCodecError,
)
from emotion_llama.faces import NO_FACE_WARNING, FaceAnalysis, FaceBox, HaarFaceDetector, crop_face, find_main_face
from emotion_llama.media import MediaLimits, decode_clip
from emotion_llama.prepare import PrepareOptions, prepare_clip

ONE_FRAME_AT_25_FPS = 0.04
# Fewer sampled frames where the test is not about sampling: face detection is the slow part.
QUICK = PrepareOptions(n_local_frames=4, n_temporal_frames=4)


@pytest.fixture(scope="session")
def media(tmp_path_factory: pytest.TempPathFactory) -> MediaCatalogue:
    return session_catalogue(tmp_path_factory)


class RememberingDetector:
    """The default detector, remembering each frame's faces so tracking can be replayed."""

    def __init__(self) -> None:
        self.haar = HaarFaceDetector()
        self.frames: list[np.ndarray] = []
        self.found: dict[int, list[FaceBox]] = {}

    def detect(self, frame: np.ndarray) -> list[FaceBox]:
        if id(frame) not in self.found:
            self.frames.append(frame)
            self.found[id(frame)] = self.haar.detect(frame)
        return self.found[id(frame)]


@dataclass
class RealClipResult:
    prepared: PreparedClip
    faces: FaceAnalysis  # the tracking prepare_clip did, replayed to read its coverage


@pytest.fixture(scope="module")
def real_clips(shared_clips: list[Path]) -> dict[str, RealClipResult]:
    """The six real clips prepared once (face detection is the slow part of this file)."""
    results = {}
    for clip in shared_clips:
        detector = RememberingDetector()
        prepared = prepare_clip(clip, options=PrepareOptions(face_detector=detector))
        faces = find_main_face(detector.frames, range(len(detector.frames)), detector)
        results[clip.name] = RealClipResult(prepared, faces)
    return results


def declared_audio_seconds(path: Path) -> float:
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        return float(stream.duration * stream.time_base)


def declared_seconds(path: Path) -> float:
    with av.open(str(path)) as container:
        return container.duration / av.time_base


# --- the six real clips -------------------------------------------------------------


def test_every_real_clip_decodes_into_encoder_inputs(real_clips, shared_clips):
    assert len(real_clips) == 6
    for clip in shared_clips:
        prepared = real_clips[clip.name].prepared
        assert prepared.global_frame.dtype == np.uint8 and prepared.global_frame.ndim == 3
        assert max(prepared.global_frame.shape[:2]) <= 720
        assert prepared.face_crops.shape == (8, 224, 224, 3)
        assert prepared.face_sequence.shape == (16, 224, 224, 3)
        assert abs(prepared.duration - declared_seconds(clip)) <= ONE_FRAME_AT_25_FPS
        assert prepared.analysed_window == (0.0, prepared.duration)
        assert all("other face" in warning for warning in prepared.warnings), prepared.warnings


def test_real_clip_audio_is_16k_mono_as_long_as_the_clip(real_clips, shared_clips):
    for clip in shared_clips:
        audio = real_clips[clip.name].prepared.audio
        assert audio is not None and audio.dtype == np.float32 and audio.ndim == 1
        # Against the container: one clip's AAC track ends 67 ms before its picture, and the
        # missing tail is filled with silence, so the sound spans the whole clip.
        assert abs(audio.size / SAMPLE_RATE - declared_seconds(clip)) <= 0.050, clip.name
        assert audio.size / SAMPLE_RATE >= declared_audio_seconds(clip) - 0.050, clip.name
        assert np.sqrt(np.mean(audio**2)) > 0.01, f"{clip.name}: the speech came out silent"


def test_real_clip_face_is_followed_in_most_sampled_frames(real_clips):
    coverage = {name: result.faces.coverage for name, result in real_clips.items()}
    assert sum(share >= 0.8 for share in coverage.values()) >= 5, coverage
    assert all(result.prepared.face_found for result in real_clips.values())
    for result in real_clips.values():
        # One person: the crop size does not jump from frame to frame.
        assert len({(w, h) for x, y, w, h in result.prepared.face_boxes}) == 1


def test_real_clip_peak_frame_and_its_time_are_reported(real_clips):
    for name, result in real_clips.items():
        prepared = result.prepared
        peak = prepared.peak_frame_index
        assert peak is not None and 0 <= peak < len(prepared.face_crops), name
        assert prepared.global_frame_time == prepared.frame_times[peak]
        assert 0.0 <= prepared.global_frame_time < prepared.duration
        assert prepared.frame_times == sorted(prepared.frame_times)


def test_real_clip_peak_is_not_taken_after_the_face_has_gone(real_clips):
    # samplenew_00061200 cuts to another person near its end; its last local frame shows
    # the new scene through the held box, the most "different" crop, yet no expression.
    cut_clip = real_clips["samplenew_00061200.mp4"]
    assert not cut_clip.faces.detected[-1]
    assert cut_clip.prepared.global_frame_time < cut_clip.prepared.frame_times[-1]


def test_stage_timings_are_reported_in_seconds(real_clips):
    for result in real_clips.values():
        assert set(result.prepared.timings) == {"decode", "faces", "asr"}
        assert all(0.0 <= seconds < 60.0 for seconds in result.prepared.timings.values())


# --- formats --------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["clip.mov", "clip.mkv", "clip.avi", "vp9.webm", "no_face.mp4"])
def test_common_formats_give_frames_and_two_seconds_of_sound(media: MediaCatalogue, name: str):
    decoded = decode_clip(media[name], [0.0, 0.5, 0.99])
    assert [frame.shape for frame in decoded.frames] == [(120, 160, 3)] * 3
    assert decoded.frame_times == sorted(decoded.frame_times) and decoded.frame_times[0] == 0.0
    assert decoded.audio is not None
    assert abs(decoded.audio.size / SAMPLE_RATE - 2.0) <= 0.05
    assert decoded.warnings == []


def test_frames_are_sampled_where_asked_in_a_variable_frame_rate_clip(media: MediaCatalogue):
    # Frames 40 ms apart for the first second, then 200 ms apart.
    decoded = decode_clip(media["variable_frame_rate.mp4"], [i / 10 for i in range(10)])
    window_end = decoded.window[1]
    for position, shown in zip([i / 10 for i in range(10)], decoded.frame_times):
        target = position * window_end
        gap = 0.04 if target < 1.0 else 0.2
        assert target - gap - 1e-6 <= shown <= target + 1e-6


def test_phone_rotation_is_honoured(media: MediaCatalogue):
    # Stored as 320x240 pixels with a 90-degree display rotation, like a phone held upright.
    with av.open(str(media["rotated_face.mp4"])) as container:
        stream = container.streams.video[0]
        assert (stream.codec_context.width, stream.codec_context.height) == (320, 240)
    prepared = prepare_clip(media["rotated_face.mp4"], options=QUICK)
    assert prepared.global_frame.shape == (320, 240, 3)
    assert prepared.face_found, "the drawn face is upright only once the rotation is applied"


def test_phone_rotation_is_read_from_the_display_matrix(media: MediaCatalogue):
    decoded = decode_clip(media["rotated_face.mp4"], [0.5])
    assert decoded.rotation == 90 and decoded.frames[0].shape == (320, 240, 3)


def test_webm_is_decoded_as_vp9(media: MediaCatalogue):
    assert decode_clip(media["vp9.webm"], [0.5]).video_codec == "vp9"


def test_a_file_that_reads_too_slowly_fails_instead_of_hanging(media: MediaCatalogue):
    with pytest.raises(UnreadableFileError, match=r"took more than 0 s to read \(EMOTION_LLAMA_DECODE_SECONDS\)"):
        decode_clip(media["face.mp4"], [0.5], MediaLimits(time_budget_s=0.0))


def test_4k_frames_are_downscaled_to_720_on_the_long_side(media: MediaCatalogue):
    decoded = decode_clip(media["uhd_4k.mp4"], [0.0, 0.5])
    assert decoded.frames[0].shape == (405, 720, 3)


@pytest.mark.timeout(60)
def test_long_clip_is_analysed_for_its_first_30_seconds_with_a_warning(media: MediaCatalogue):
    prepared = prepare_clip(media["long_10min.mp4"])
    assert prepared.duration == pytest.approx(600.0, abs=1.0)
    assert prepared.analysed_window == (0.0, 30.0)
    assert max(prepared.frame_times) < 30.0
    assert prepared.audio is not None and abs(prepared.audio.size / SAMPLE_RATE - 30.0) <= 0.05
    assert any("10 minutes" in w and "first 30 s" in w for w in prepared.warnings)
    assert prepared.timings["decode"] < 10.0


def test_the_window_length_is_configurable(media: MediaCatalogue):
    prepared = prepare_clip(media["long_10min.mp4"], options=replace(QUICK, max_seconds=12))
    assert prepared.analysed_window == (0.0, 12.0)
    assert any("first 12 s" in w for w in prepared.warnings)


@pytest.mark.parametrize(("choice", "expected_time"), [("first", 0.0), ("middle", 1.5)])
def test_global_frame_choice(media: MediaCatalogue, choice: str, expected_time: float):
    prepared = prepare_clip(media["face.mp4"], options=replace(QUICK, frame_choice=choice))
    assert prepared.global_frame_time == pytest.approx(expected_time, abs=ONE_FRAME_AT_25_FPS)


# --- odd inputs that still give a result ------------------------------------------------


@pytest.mark.timeout(30)
def test_clip_without_sound_is_analysed_without_audio(media: MediaCatalogue):
    prepared = prepare_clip(media["face_no_audio.mp4"], options=QUICK)
    assert prepared.audio is None and not prepared.has_audio
    assert prepared.face_found
    assert any("no sound track" in w for w in prepared.warnings)


@pytest.mark.timeout(30)
def test_a_digitally_silent_track_counts_as_no_voice_but_a_quiet_one_is_kept(media: MediaCatalogue):
    """Every sample under -80 dBFS: nothing to hear, so the voice is left out (and speech
    recognition gets nothing to invent words from); a tone at -68 dBFS (ffmpeg's sine at -18, turned down 50 dB) is still sound."""
    silent = prepare_clip(media["face_silent_track.mp4"], options=QUICK)
    assert silent.audio is None and not silent.has_audio
    assert any("sound track is silent" in w for w in silent.warnings)
    quiet = prepare_clip(media["face_quiet_tone.mp4"], options=QUICK)
    assert quiet.has_audio and 2e-4 < float(np.abs(quiet.audio).max()) < 1e-3
    assert not any("silent" in w for w in quiet.warnings)


@pytest.mark.timeout(60)
def test_clip_without_face_shows_the_centre_and_leaves_the_face_encoders_out(media: MediaCatalogue, tiny_model):
    """The pictures show the frame's centre; the model is told the face is missing (zeros,
    as for a left-out modality) rather than reading a wall as an expression."""
    prepared = prepare_clip(media["no_face.mp4"])
    assert not prepared.face_found
    assert NO_FACE_WARNING in prepared.warnings
    assert prepared.face_boxes == [None] * 8
    centre = crop_face(prepared.global_frame, None)
    assert np.array_equal(prepared.face_crops[prepared.peak_frame_index], centre)
    encoded = tiny_model.encode(prepared)
    assert encoded.present == {"global": True, "face": False, "temporal": False, "audio": True}
    assert not encoded.features["face"].any() and not encoded.features["temporal"].any()
    assert encoded.filled == {"face": "missing: zeros", "temporal": "missing: zeros"}
    with_face = tiny_model.encode(prepare_clip(media["expressive_face.mp4"], options=QUICK))
    assert with_face.present["face"] and with_face.features["face"].abs().sum() > 0


@pytest.mark.timeout(60)
def test_training_cache_keeps_no_crops_of_a_clip_without_face(media: MediaCatalogue, tmp_path):
    """Training sees what inference does: a clip whose face is not found has no face inputs."""
    from emotion_llama.config import preset
    from emotion_llama.data.merr import Annotation
    from emotion_llama.training.cache import RunCache
    from emotion_llama.training.decoding import decode_clips

    names = {"no_face": media["no_face.mp4"], "face": media["expressive_face.mp4"]}
    annotations = [Annotation(name=name, video=str(path)) for name, path in names.items()]
    cache = RunCache(tmp_path / "cache")
    decode_clips(annotations, tmp_path, cache, preset("tiny"), workers=1)
    crops = {name: cache.clip_array(name, "face_crops") for name in names}
    assert crops["no_face"].shape[0] == 0 and cache.clip_array("no_face", "face_sequence").shape[0] == 0
    assert crops["face"].shape[0] == 8
    assert cache.read_clip(annotations[0]).face_crops.shape[0] == 0


@pytest.mark.timeout(30)
def test_clip_cut_short_keeps_what_was_recorded(media: MediaCatalogue):
    prepared = prepare_clip(media["truncated_faststart.mp4"], options=QUICK)
    assert prepared.duration == pytest.approx(4.0)
    assert max(prepared.frame_times) < 2.5
    assert prepared.audio is not None and prepared.audio.size / SAMPLE_RATE < 2.5
    assert any("cut short" in w for w in prepared.warnings)


# --- inputs that must be refused with the right error --------------------------------


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("name", "error"),
    [
        ("zero_bytes.mp4", UnreadableFileError),
        ("truncated.mp4", UnreadableFileError),
        ("text_renamed.mp4", NotAVideoError),
        ("png_renamed.mp4", NotAVideoError),
        ("image.png", NotAVideoError),
        ("audio_only.m4a", NoVideoStreamError),
        ("audio_only.mp4", NoVideoStreamError),
        ("song_with_cover.mp3", NoVideoStreamError),
        ("short_0.2s.mp4", ClipTooShortError),
        ("unknown_codec.avi", UnsupportedCodecError),
    ],
)
def test_bad_upload_gives_a_typed_error_a_person_can_act_on(media: MediaCatalogue, name: str, error: type[MediaError]):
    with pytest.raises(error) as raised:
        prepare_clip(media[name])
    message = str(raised.value)
    assert "\n" not in message and name in message
    assert len(message) < 300
    assert "Errno" not in message and "Invalid data found" not in message
    assert any(word in message for word in ("upload", "convert", "export"))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", ["face.mp4", "vp9.webm", "clip.avi", "clip.mkv", "face_faststart.mp4"])
def test_damaged_bytes_give_a_result_or_a_typed_error(media: MediaCatalogue, tmp_path: Path, name: str):
    rng = np.random.default_rng(0)
    original = media[name].read_bytes()
    outcomes = []
    for attempt in range(8):
        data = bytearray(original)
        for _ in range(int(rng.integers(1, 300))):
            data[int(rng.integers(0, len(data)))] = int(rng.integers(0, 256))
        if attempt % 2:
            data = data[: int(len(data) * rng.uniform(0.05, 1.0))]
        damaged = tmp_path / f"damaged_{attempt}{media[name].suffix}"
        damaged.write_bytes(bytes(data))
        try:
            decoded = decode_clip(damaged, [i / 8 for i in range(8)])
            outcomes.append(all(frame.dtype == np.uint8 and frame.ndim == 3 for frame in decoded.frames))
        except MediaError as error:
            outcomes.append("\n" not in str(error) and damaged.name in str(error))
    assert all(outcomes)


def test_missing_file_is_reported_as_unreadable(tmp_path: Path):
    with pytest.raises(UnreadableFileError, match="not found"):
        prepare_clip(tmp_path / "gone.mp4")


def test_upload_over_the_size_limit_is_refused_before_decoding(media: MediaCatalogue):
    with pytest.raises(ClipTooLargeError, match=r"over the 0 MB limit"):
        prepare_clip(media["face.mp4"], options=PrepareOptions(max_bytes=1000))


# --- how it behaves, not only what it returns -------------------------------------------


def test_nothing_is_written_in_the_working_folder(
    media: MediaCatalogue, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.chdir(tmp_path)
    prepare_clip(media["face.mp4"], options=QUICK)
    assert list(tmp_path.iterdir()) == []


def same_prepared(a: PreparedClip, b: PreparedClip) -> bool:
    for field in fields(PreparedClip):
        if field.name == "timings":
            continue
        left, right = getattr(a, field.name), getattr(b, field.name)
        if isinstance(left, np.ndarray) or isinstance(right, np.ndarray):
            if not (isinstance(left, np.ndarray) and isinstance(right, np.ndarray) and np.array_equal(left, right)):
                return False
        elif left != right:
            return False
    return True


@pytest.mark.timeout(60)
def test_two_clips_prepared_in_threads_equal_sequential_results(media: MediaCatalogue):
    clips = [media["expressive_face.mp4"], media["two_faces.mp4"]]
    sequential = [prepare_clip(clip, options=QUICK) for clip in clips]
    threaded: list[PreparedClip | None] = [None, None]

    def work(index: int) -> None:
        threaded[index] = prepare_clip(clips[index], options=QUICK)

    workers = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert all(same_prepared(s, t) for s, t in zip(sequential, threaded))


# --- hostile headers: the cost is bounded before decoding ------------------------------


def peak_rss_growth_mb(work) -> float:
    """How far ``work()`` raises this process's peak resident memory, in MB (0 if below the old peak)."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        work()
    except MediaError:
        pass
    return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("name", "start"), [("audio_at_1e7s.mkv", "10,000,000 s"), ("audio_at_30000s.mkv", "30,000 s")]
)
def test_sound_starting_after_the_window_counts_as_no_sound(media: MediaCatalogue, name: str, start: str):
    tracemalloc.start()
    try:
        prepared = prepare_clip(media[name], options=QUICK)
        _, peak_bytes = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert prepared.audio is None and not prepared.has_audio
    assert any(f"sound starts at {start}" in w and "after the analysed part" in w for w in prepared.warnings)
    # The picture is 2 s long; the sound track stretches the container, not the analysed window.
    assert prepared.analysed_window == (0.0, 2.0)
    assert len(set(prepared.frame_times)) == 4
    assert peak_bytes < 64 * 2**20  # what Python and numpy allocated (the old padding: 2 GB or a MemoryError)


@pytest.mark.timeout(60)
def test_leading_silence_is_never_longer_than_the_window(media: MediaCatalogue):
    # The sound starts 20 s in: within a 30 s window it is padded, within a 10 s window it is absent.
    decoded = decode_clip(media["audio_at_20s.mkv"], [0.5], MediaLimits(max_seconds=30))
    assert decoded.audio is not None and decoded.audio.size <= round(decoded.window[1] * SAMPLE_RATE)
    assert np.all(decoded.audio[: 19 * SAMPLE_RATE] == 0) and np.abs(decoded.audio[-SAMPLE_RATE:]).max() > 0.1
    short = decode_clip(media["audio_at_20s.mkv"], [0.5], MediaLimits(max_seconds=10))
    assert short.audio is None and any("sound starts at 20 s" in w for w in short.warnings)


@pytest.mark.timeout(60)
def test_frames_over_the_pixel_limit_are_refused_from_the_header(media: MediaCatalogue):
    clip = media["frames_8192x8192.mp4"]
    assert clip.stat().st_size < 300_000  # tiny on disk, 67 megapixels a frame once decoded
    with pytest.raises(MediaLimitError) as raised:
        prepare_clip(clip, options=QUICK)
    message = str(raised.value)
    assert "8192x8192" in message and "8.3 megapixels" in message and "EMOTION_LLAMA_MAX_FRAME_PIXELS" in message
    assert "1080p" in message and "\n" not in message
    # One decoded frame would be 100 MB (YUV 4:2:0); opening the file and refusing it costs far less.
    assert peak_rss_growth_mb(lambda: prepare_clip(clip, options=QUICK)) < 50


def test_the_pixel_limit_is_an_environment_setting(media: MediaCatalogue, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("EMOTION_LLAMA_MAX_FRAME_PIXELS", str(160 * 120 - 1))
    with pytest.raises(MediaLimitError, match=r"160x120 frames"):
        decode_clip(media["no_face.mp4"], [0.5])
    monkeypatch.setenv("EMOTION_LLAMA_MAX_FRAME_PIXELS", str(160 * 120))
    assert decode_clip(media["no_face.mp4"], [0.5]).frames[0].shape == (120, 160, 3)


@pytest.mark.timeout(60)
def test_a_container_with_too_many_streams_is_refused(media: MediaCatalogue):
    with pytest.raises(MediaLimitError) as raised:
        prepare_clip(media["streams_41.mkv"], options=QUICK)
    message = str(raised.value)
    assert "41 tracks" in message and "at most 16" in message and "EMOTION_LLAMA_MAX_STREAMS" in message
    assert "streams_41.mkv" in message and "export" in message


@pytest.mark.timeout(60)
def test_timestamps_denser_than_any_real_video_stop_decoding_at_the_frame_budget(media: MediaCatalogue):
    # 1,000 frames a second in one GOP: in a 1 s window the budget is (1 + 1) x 240 = 480 frames.
    limits = MediaLimits(max_seconds=1.0)
    decoded = decode_clip(media["frames_1000fps.mp4"], [0.0, 0.5, 1.0], limits)
    assert limits.frame_budget == 480
    assert max(decoded.frame_times) < 0.48
    assert any("more than 480 frames" in w for w in decoded.warnings)


def test_decoder_thread_count_does_not_change_the_frames(media: MediaCatalogue):
    one, three = (decode_clip(media["face.mp4"], [0.1, 0.6], MediaLimits(decoder_threads=n)) for n in (1, 3))
    assert all(np.array_equal(a, b) for a, b in zip(one.frames, three.frames))


def test_limits_follow_the_environment(media: MediaCatalogue, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("EMOTION_LLAMA_MAX_SECONDS", "12")
    monkeypatch.setenv("EMOTION_LLAMA_DECODE_SECONDS", "7")
    assert decode_clip(media["long_10min.mp4"], [0.5]).window == (0.0, 12.0)
    assert MediaLimits().time_budget_s == 7.0
    monkeypatch.setenv("EMOTION_LLAMA_MAX_UPLOAD_MB", "1")
    options = PrepareOptions()
    assert (options.max_seconds, options.max_bytes) == (12.0, 2**20)
    upload = tmp_path / "two_megabytes.mp4"
    upload.write_bytes(media["face.mp4"].read_bytes().ljust(2 * 2**20, b"\0"))
    with pytest.raises(ClipTooLargeError, match=r"over the 1 MB limit \(EMOTION_LLAMA_MAX_UPLOAD_MB\)"):
        prepare_clip(upload)
