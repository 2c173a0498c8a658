"""Decode a clip: a few sampled frames, 16 kHz mono audio, limits and clear errors.

Everything happens in memory with PyAV. However long or large the upload, only the
analysed window (the first ``max_seconds``) is read, and only the sampled frames are
converted to pixels, downscaled so their long side is at most ``max_frame_side``.
Each problem a user can cause becomes a typed ``MediaError`` with a one-line message.

What a clip may cost is bounded from its container's headers before any frame is
decoded (``limits.py``): pixels per frame, number of streams, a fixed number of decoder
threads, and a time budget. No declared duration or timestamp makes it read more than
the window: the keyframe scan and the sampler stop at a frame budget, and sound that
starts after the window counts as no sound.
"""

from __future__ import annotations

import bisect
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import av.error
import numpy as np

from emotion_llama import limits as settings
from emotion_llama.clip import SAMPLE_RATE
from emotion_llama.errors import (
    ClipTooLargeError,
    ClipTooShortError,
    MediaLimitError,
    NotAVideoError,
    NoVideoStreamError,
    UnreadableFileError,
    UnsupportedCodecError,
)

UPLOAD_ADVICE = "upload a video file such as MP4 (H.264), MOV, WebM, MKV or AVI"
# Frames a second any real clip may hold (phones film slow motion at 240): more frames
# than this in the window means broken timestamps, and decoding stops there.
MAX_FRAME_RATE = 240

# PyAV opens single images through these demuxers; they hold a picture, not a clip.
_IMAGE_FORMATS = {"image2", "apng"}
_IMAGE_SIGNATURES = {
    b"\x89PNG\r\n\x1a\n": "a PNG image",
    b"\xff\xd8\xff": "a JPEG image",
    b"GIF8": "a GIF image",
    b"BM": "a BMP image",
}
# Signatures of video containers: a file that starts like one but will not open is damaged.
_VIDEO_SIGNATURES = (b"\x1a\x45\xdf\xa3", b"RIFF", b"OggS", b"FLV", b"\x00\x00\x01\xba")
_MP4_BOX_TYPES = (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip")


def _setting(name: str, convert: Callable[[float], float | int] = float, scale: float = 1) -> Any:
    """A dataclass field whose default is the limit ``name``, read when the object is made."""
    return field(default_factory=lambda: convert(settings.get(name) * scale))


@dataclass(frozen=True)
class MediaLimits:
    """What the decoder accepts and how much of a clip it reads.

    Defaults are the settings of ``limits.py`` (environment variables) at construction.
    """

    max_bytes: int = _setting("max_upload_mb", int, scale=2**20)
    max_seconds: float = _setting("max_seconds")
    min_seconds: float = 0.3
    max_frame_side: int = 720
    max_frame_pixels: int = _setting("max_frame_pixels", int)
    max_streams: int = _setting("max_streams", int)
    decoder_threads: int = _setting("decoder_threads", int)
    time_budget_s: float = _setting("decode_seconds")  # a damaged file must fail, not hang a worker

    @property
    def frame_budget(self) -> int:
        """Most video packets scanned, and frames decoded, for one window."""
        return math.ceil((self.max_seconds + 1.0) * MAX_FRAME_RATE)


@dataclass
class DecodedClip:
    """Sampled frames and audio from the analysed window of one clip.

    ``frames[i]`` is the frame shown at ``positions[i]`` of the window (positions are
    fractions from 0 to 1); two positions that land on the same frame share one array.
    """

    frames: list[np.ndarray]  # (H, W, 3) uint8 RGB, upright, long side <= max_frame_side
    frame_times: list[float]  # seconds from the start of the clip
    audio: np.ndarray | None  # (samples,) float32 at SAMPLE_RATE, None without sound
    duration: float
    window: tuple[float, float]
    rotation: int  # degrees counter-clockwise applied to make the frames upright
    video_codec: str
    warnings: list[str] = field(default_factory=list)


def decode_clip(
    path: str | os.PathLike[str], positions: Sequence[float], limits: MediaLimits | None = None
) -> DecodedClip:
    """Read the frames at ``positions`` (fractions of the analysed window) and its audio."""
    limits = limits or MediaLimits()
    path = Path(path)
    _check_file(path, limits)
    deadline = _Deadline(path, limits.time_budget_s)
    with _open(path, limits) as container:
        _check_stream_count(path, container, limits)
        video = _video_stream(path, container, limits)
        video_codec = video.codec_context.name
        origin = _container_start(container)
        index = _KeyframeIndex.scan(container, video, origin, limits, deadline)
        duration = _duration(container, video, index, origin, limits.max_seconds)
    if duration < limits.min_seconds:
        raise ClipTooShortError(
            f"'{path.name}' is only {duration:.2f} s long; upload a clip of at least "
            f"{limits.min_seconds:g} s (a few seconds of the person speaking works best)."
        )
    window = (0.0, min(duration, limits.max_seconds))
    warnings = []
    if duration > limits.max_seconds:
        warnings.append(
            f"The clip is {_seconds_in_words(duration)} long; only its first {limits.max_seconds:g} s were analysed."
        )
    times = [window[0] + min(max(p, 0.0), 1.0) * (window[1] - window[0]) for p in positions]
    with _open(path, limits) as container:
        sampler = _FrameSampler(
            path, container, _video_stream(path, container, limits), origin, index, limits, deadline
        )
        frames, frame_times = sampler.sample(times)
    warnings.extend(sampler.warnings(window))
    audio, audio_warning = _read_audio(path, origin, window, limits, deadline)
    if audio_warning:
        warnings.append(audio_warning)
    return DecodedClip(
        frames=frames,
        frame_times=frame_times,
        audio=audio,
        duration=duration,
        window=window,
        rotation=sampler.rotation,
        video_codec=video_codec,
        warnings=warnings,
    )


# --- opening and recognising the file ---------------------------------------------


def _check_file(path: Path, limits: MediaLimits) -> None:
    if not path.is_file():
        raise UnreadableFileError(f"'{path.name}' was not found; upload the video again.")
    size = path.stat().st_size
    if size == 0:
        raise UnreadableFileError(
            f"'{path.name}' is empty (0 bytes); the upload may have failed, upload the video again."
        )
    if size > limits.max_bytes:
        raise ClipTooLargeError(
            f"'{path.name}' is {size / 2**20:.0f} MB, over the {limits.max_bytes / 2**20:.0f} MB "
            f"limit ({_env('max_upload_mb')}); upload a shorter or smaller clip (a few seconds around the "
            "moment that matters)."
        )
    what = _non_video_content(path)
    if what:
        raise NotAVideoError(f"'{path.name}' is {what}, not a video; {UPLOAD_ADVICE}.")


def _non_video_content(path: Path) -> str | None:
    """Name what the file holds when its first bytes show it is plainly not a video."""
    with path.open("rb") as handle:
        head = handle.read(4096)
    for signature, what in _IMAGE_SIGNATURES.items():
        if head.startswith(signature):
            return what
    if b"\x00" not in head:
        try:
            head.decode("utf-8")
        except UnicodeDecodeError as error:
            # A multi-byte character cut by the 4 KB read is still text.
            if error.start < len(head) - 4:
                return None
        return "a text file"
    return None


def _looks_like_video_container(path: Path) -> bool:
    with path.open("rb") as handle:
        head = handle.read(12)
    return head.startswith(_VIDEO_SIGNATURES) or head[4:8] in _MP4_BOX_TYPES


@contextmanager
def _open(path: Path, limits: MediaLimits) -> Iterator[av.container.InputContainer]:
    """``av.open`` with its failures turned into messages a person can act on."""
    try:
        # max_pixels: probing the streams must not decode a frame over the limit either.
        container = av.open(str(path), metadata_errors="ignore", options=_decoder_options(limits))
    except PermissionError as error:
        raise UnreadableFileError(
            f"'{path.name}' could not be opened (permission denied); upload a copy of it."
        ) from error
    except (av.error.FFmpegError, OSError, ValueError) as error:
        if _looks_like_video_container(path):
            raise UnreadableFileError(
                f"'{path.name}' looks like a video but is damaged or incomplete "
                "(perhaps the upload or the recording was cut short); upload it again."
            ) from error
        raise NotAVideoError(f"'{path.name}' is not in a video format this app can read; {UPLOAD_ADVICE}.") from error
    try:
        yield container
    finally:
        container.close()


def _decoder_options(limits: MediaLimits) -> dict[str, str]:
    """FFmpeg refuses to allocate a frame over ``max_pixels``: a backstop for frames that grow
    mid-stream. Twice the limit, as decoders count rows padded to their alignment."""
    return {"max_pixels": str(2 * limits.max_frame_pixels)}


def _env(name: str) -> str:
    return settings.SETTINGS[name].env


def _check_stream_count(path: Path, container: av.container.InputContainer, limits: MediaLimits) -> None:
    count = len(container.streams)
    if count > limits.max_streams:
        raise MediaLimitError(
            f"'{path.name}' holds {count} tracks (video, sound, subtitles); this demo accepts at most "
            f"{limits.max_streams} ({_env('max_streams')}); export it with one video and one sound track "
            "and upload again."
        )


def _check_frame_size(path: Path, video: av.VideoStream, limits: MediaLimits) -> None:
    """Refuse frames over the pixel limit from the stream's header, before decoding one."""
    width, height = video.codec_context.width, video.codec_context.height
    if width * height > limits.max_frame_pixels:
        raise MediaLimitError(
            f"'{path.name}' has {width}x{height} frames ({width * height / 1e6:.0f} megapixels); this demo "
            f"accepts at most {limits.max_frame_pixels / 1e6:.1f} megapixels per frame "
            f"({_env('max_frame_pixels')}); export it at 1080p or smaller and upload again."
        )


def _video_stream(path: Path, container: av.container.InputContainer, limits: MediaLimits) -> av.VideoStream:
    if container.format.name in _IMAGE_FORMATS or container.format.name.endswith("_pipe"):
        raise NotAVideoError(f"'{path.name}' is a still image, not a video; {UPLOAD_ADVICE}.")
    cover_art = av.stream.Disposition.attached_pic | av.stream.Disposition.still_image
    videos = [s for s in container.streams.video if not s.disposition & cover_art]
    if not videos:
        if container.streams.audio:
            raise NoVideoStreamError(
                f"'{path.name}' has sound but no picture; upload a video in which the person's face can be seen."
            )
        raise NotAVideoError(f"'{path.name}' holds no video track; {UPLOAD_ADVICE}.")
    video = max(
        videos, key=lambda s: (s.codec_context is not None, bool(s.disposition & av.stream.Disposition.default))
    )
    if video.codec_context is None:
        raise UnsupportedCodecError(
            f"'{path.name}' uses a video codec this app cannot decode; convert it to MP4 with H.264 "
            "video (most editors and phones can export that)."
        )
    _check_frame_size(path, video, limits)
    # A fixed thread count: one per host CPU would multiply memory on a big server.
    video.thread_type = "AUTO"
    video.codec_context.thread_count = limits.decoder_threads
    video.codec_context.options = {**video.codec_context.options, **_decoder_options(limits)}
    return video


def _container_start(container: av.container.InputContainer) -> float:
    """Seconds at which the file's clock starts; times we report count from here."""
    return container.start_time / av.time_base if container.start_time is not None else 0.0


def _duration(
    container: av.container.InputContainer,
    video: av.VideoStream,
    index: _KeyframeIndex,
    origin: float,
    max_seconds: float,
) -> float:
    """Duration the file declares, or what the packets show when it declares none."""
    if video.duration is not None and video.time_base is not None and video.duration > 0:
        stream_start = float(video.start_time * video.time_base) if video.start_time else origin
        return stream_start - origin + float(video.duration * video.time_base)
    if container.duration is not None and container.duration > 0:
        declared = container.duration / av.time_base
        # Another track can stretch the container (sound said to start hours in) although
        # the picture ended inside the window: the picture's own end is the clip's.
        if declared > max_seconds and index.reached_end:
            return index.end_time
        return declared
    return index.end_time


class _Deadline:
    def __init__(self, path: Path, budget_s: float) -> None:
        self.path = path
        self.budget_s = budget_s
        self.expires = time.monotonic() + budget_s

    def check(self) -> None:
        if time.monotonic() > self.expires:
            raise UnreadableFileError(
                f"'{self.path.name}' took more than {self.budget_s:g} s to read ({_env('decode_seconds')}), so "
                "it is probably damaged; convert it to MP4 (H.264) and upload it again."
            )


def _read_only(container: av.container.InputContainer, wanted: av.stream.Stream) -> None:
    """Tell the demuxer to skip the bytes of every other stream."""
    for stream in container.streams:
        if stream is not wanted:
            stream.discard = av.stream.Discard.all


# --- video ------------------------------------------------------------------------


@dataclass
class _KeyframeIndex:
    """Keyframe times in the analysed window, found by reading packets without decoding."""

    keyframes: list[tuple[float, int]]  # (seconds from the clip start, pts in stream units)
    end_time: float  # end of the last packet read, seconds from the clip start
    reached_end: bool  # every packet of the stream was read (it ends inside the window)

    @classmethod
    def scan(
        cls,
        container: av.container.InputContainer,
        video: av.VideoStream,
        origin: float,
        limits: MediaLimits,
        deadline: _Deadline,
    ) -> _KeyframeIndex:
        _read_only(container, video)
        keyframes: list[tuple[float, int]] = []
        end_time = 0.0
        reached_end = False
        packets = container.demux(video)
        # Packets without timestamps, or stuck ones, must not make the scan read the whole file.
        for _ in range(limits.frame_budget):
            deadline.check()
            try:
                packet = next(packets)
            except (StopIteration, av.error.FFmpegError):
                reached_end = True  # a damaged tail is handled when the frames are decoded
                break
            timestamp = packet.pts if packet.pts is not None else packet.dts
            if timestamp is None or packet.time_base is None:
                continue
            start = float(timestamp * packet.time_base) - origin
            end_time = max(end_time, start + float((packet.duration or 0) * packet.time_base))
            if packet.is_keyframe:
                keyframes.append((start, timestamp))
            # One second past the window covers frames that arrive out of order.
            if start > limits.max_seconds + 1.0:
                break
        keyframes.sort()
        return cls(keyframes, end_time, reached_end)

    def keyframe_before(self, seconds: float) -> tuple[float, int] | None:
        position = bisect.bisect_right(self.keyframes, (seconds, math.inf)) - 1
        return self.keyframes[position] if position >= 0 else None


class _FrameSampler:
    """Decodes forward through the window and keeps only the frames shown at the targets.

    It jumps to the keyframe before a target whenever that keyframe lies ahead of what
    has been decoded, so sparse targets in a long window cost a few GOPs, not all frames.
    """

    def __init__(
        self,
        path: Path,
        container: av.container.InputContainer,
        video: av.VideoStream,
        origin: float,
        index: _KeyframeIndex,
        limits: MediaLimits,
        deadline: _Deadline,
    ) -> None:
        self.path = path
        self.container = container
        self.video = video
        self.origin = origin
        self.index = index
        self.limits = limits
        self.deadline = deadline
        self.rotation = 0
        self.sample_aspect = video.codec_context.sample_aspect_ratio or Fraction(1)
        self.damaged_packets = 0
        self.frames_decoded = 0
        self.exhausted = False  # no frame left to decode, or the frame budget spent
        self.last_time: float | None = None
        self._frames: Iterator[av.VideoFrame] | None = None
        self._lookahead: tuple[float, av.VideoFrame] | None = None
        self._current: tuple[float, av.VideoFrame] | None = None

    def sample(self, targets: Sequence[float]) -> tuple[list[np.ndarray], list[float]]:
        pixels: dict[float, np.ndarray] = {}  # converted once, however many targets share it
        shown_at: dict[float, float] = {}
        for target in sorted(set(targets)):
            shown = self._frame_shown_at(target)
            if shown is None:
                break
            frame_time, frame = shown
            if frame_time not in pixels:
                pixels[frame_time] = self._to_pixels(frame)
            shown_at[target] = frame_time
        if not pixels:
            raise ClipTooShortError(
                f"No picture could be decoded from '{self.path.name}'; the file may be damaged or hold "
                "no frames. Export the clip again as MP4 (H.264) and upload it."
            )
        last = max(pixels)
        times = [shown_at.get(target, last) for target in targets]
        return [pixels[t] for t in times], times

    def warnings(self, window: tuple[float, float]) -> list[str]:
        notes = []
        if self.frames_decoded >= self.limits.frame_budget:
            notes.append(
                f"'{self.path.name}' gave more than {self.limits.frame_budget:,} frames for its first "
                f"{self.limits.max_seconds:g} s, more than a real video holds (its timestamps may be broken); "
                "only those frames were used."
            )
        elif self.exhausted and self.last_time is not None and self.last_time < window[1] - 0.5:
            notes.append(
                f"The picture stops at {self.last_time:.1f} s although '{self.path.name}' says it lasts "
                f"{window[1]:.1f} s; the file may be cut short, so only the part before was analysed."
            )
        if self.damaged_packets:
            notes.append(
                f"{self.damaged_packets} damaged piece(s) of the video were skipped; some frames may look broken."
            )
        return notes

    def _frame_shown_at(self, target: float) -> tuple[float, av.VideoFrame] | None:
        """The last frame whose time is at or before ``target`` (the first frame if none is)."""
        keyframe = self.index.keyframe_before(target)
        decoded_up_to = (self._lookahead or self._current or (-math.inf,))[0]
        if self._frames is None or (keyframe is not None and keyframe[0] > decoded_up_to and not self.exhausted):
            self._seek(keyframe)
        while True:
            if self._lookahead is None:
                self._lookahead = self._next_frame()
                if self._lookahead is None:
                    return self._current
            if self._lookahead[0] > target and self._current is not None:
                return self._current
            self._current, self._lookahead = self._lookahead, None

    def _seek(self, keyframe: tuple[float, int] | None) -> None:
        if keyframe is not None and keyframe[0] > 0:
            self.container.seek(keyframe[1], stream=self.video, backward=True)
        self._frames = self._decode()
        self._lookahead = None

    def _decode(self) -> Iterator[av.VideoFrame]:
        _read_only(self.container, self.video)
        packets = self.container.demux(self.video)
        while True:
            self.deadline.check()
            try:
                packet = next(packets)
            except StopIteration:
                return
            except av.error.FFmpegError:
                return  # a cut or damaged tail ends the picture there
            try:
                yield from packet.decode()
            except av.error.FFmpegError:
                self.damaged_packets += 1

    def _next_frame(self) -> tuple[float, av.VideoFrame] | None:
        assert self._frames is not None
        # Stuck or missing timestamps must not make the sampler decode the whole file.
        frame = next(self._frames, None) if self.frames_decoded < self.limits.frame_budget else None
        if frame is None:
            self.exhausted = True
            return None
        self.frames_decoded += 1
        if frame.time is not None:
            frame_time = frame.time - self.origin
        else:  # no timestamp: count on from the previous frame at the nominal rate
            step = 1 / float(self.video.average_rate or 25)
            frame_time = (self.last_time + step) if self.last_time is not None else 0.0
        self.last_time = frame_time
        return frame_time, frame

    def _to_pixels(self, frame: av.VideoFrame) -> np.ndarray:
        display_width = frame.width * float(self.sample_aspect)
        scale = min(1.0, self.limits.max_frame_side / max(display_width, frame.height))
        width = max(2, round(display_width * scale))
        height = max(2, round(frame.height * scale))
        rgb = frame.to_ndarray(format="rgb24", width=width, height=height, interpolation="AREA")
        self.rotation = frame.rotation % 360
        return np.ascontiguousarray(np.rot90(rgb, k=self.rotation // 90))


# --- audio ------------------------------------------------------------------------


TRAILING_SILENCE_MAX = 0.5  # seconds of missing sound at the end that are filled with silence
# A track whose every sample is quieter than this (-80 dBFS, far below any recorded room
# noise) holds no sound: it is treated as no sound track, so the voice is left out (as the
# model is trained to expect when it is missing) and speech recognition does not invent
# words from silence.
SILENT_PEAK = 1e-4


def _read_audio(
    path: Path, origin: float, window: tuple[float, float], limits: MediaLimits, deadline: _Deadline
) -> tuple[np.ndarray | None, str | None]:
    """16 kHz mono float32 covering the window, or None and a note saying why not."""
    with _open(path, limits) as container:
        if not container.streams.audio:
            return None, "The clip has no sound track, so the voice could not be analysed."
        stream = container.streams.audio[0]
        _read_only(container, stream)
        if stream.codec_context is None:
            return None, (
                "The sound track uses a codec this app cannot decode, so the voice was not "
                "analysed; export the clip with AAC sound."
            )
        declared_start = _stream_start(stream, origin)
        if declared_start is not None and declared_start >= window[1]:
            return None, _late_sound_note(declared_start, window)
        chunks, first_time = _decode_sound(container, stream, origin, window, deadline)
    if first_time is not None and first_time >= window[1]:
        return None, _late_sound_note(first_time, window)
    if not chunks:
        return None, "The sound track holds no audio, so the voice could not be analysed."
    samples = _fit_to_window(np.concatenate(chunks).astype(np.float32, copy=False), first_time or 0.0, window)
    if samples.size == 0:
        return None, "The sound track holds no sound in the analysed part of the clip, so the voice was not analysed."
    if float(np.abs(samples).max()) < SILENT_PEAK:
        return None, "The sound track is silent, so there was no voice to analyse."
    return samples, None


def _stream_start(stream: av.stream.Stream, origin: float) -> float | None:
    """Seconds from the clip start at which the header says ``stream`` starts."""
    if stream.start_time is None or stream.time_base is None:
        return None
    return float(stream.start_time * stream.time_base) - origin


def _late_sound_note(start: float, window: tuple[float, float]) -> str:
    return (
        f"The sound starts at {_seconds(start)}, after the analysed part of the clip (the first "
        f"{_seconds(window[1])}), so the voice was not analysed."
    )


def _decode_sound(
    container: av.container.InputContainer,
    stream: av.AudioStream,
    origin: float,
    window: tuple[float, float],
    deadline: _Deadline,
) -> tuple[list[np.ndarray], float | None]:
    """Mono chunks from the track's start, at most the window and a second, and when they start."""
    resampler = _MonoResampler()
    chunks: list[np.ndarray] = []
    first_time: float | None = None  # when the sound starts, from its first frame
    max_samples = int((window[1] - window[0] + 1.0) * SAMPLE_RATE)
    collected = 0
    packets = container.demux(stream)
    while collected < max_samples:
        deadline.check()
        try:
            packet = next(packets)
        except (StopIteration, av.error.FFmpegError):
            break
        try:
            frames = packet.decode()
        except av.error.FFmpegError:
            continue  # a damaged packet is a moment of silence, not a failed clip
        for frame in frames:
            if first_time is None:
                first_time = frame.time - origin if frame.time is not None else 0.0
                if first_time >= window[1]:  # the header did not say so: stop before decoding more
                    return [], first_time
            for chunk in resampler.push(frame):
                chunks.append(chunk)
                collected += chunk.size
    return chunks + resampler.flush(), first_time


def _fit_to_window(samples: np.ndarray, start: float, window: tuple[float, float]) -> np.ndarray:
    """Sound that starts at ``start`` placed on the window: sample i at time window[0] + i / rate."""
    window_samples = round((window[1] - window[0]) * SAMPLE_RATE)
    if start > window[0]:  # sound starting late: leading silence, never longer than the window
        lead = min(round((start - window[0]) * SAMPLE_RATE), window_samples)
        samples = np.concatenate([np.zeros(lead, np.float32), samples[: window_samples - lead]])
    else:
        samples = samples[round((window[0] - start) * SAMPLE_RATE) :]
    samples = samples[:window_samples]
    gap = window_samples - samples.size
    if 0 < gap <= TRAILING_SILENCE_MAX * SAMPLE_RATE:
        # An AAC track often ends a few frames before the picture: trailing silence makes the
        # audio span the window, as an editor exporting the clip would. Longer gaps are kept.
        samples = np.concatenate([samples, np.zeros(gap, np.float32)])
    return samples


class _MonoResampler:
    """``av.AudioResampler`` to 16 kHz mono that survives the input format changing mid-stream."""

    def __init__(self) -> None:
        self._resampler: av.AudioResampler | None = None
        self._source: tuple[str, str, int] | None = None

    def push(self, frame: av.AudioFrame) -> list[np.ndarray]:
        source = (frame.format.name, frame.layout.name, frame.sample_rate)
        chunks = []
        if source != self._source:
            chunks = self.flush()
            self._resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
            self._source = source
        try:
            resampled = self._resampler.resample(frame)
        except (ValueError, av.error.FFmpegError):
            return chunks  # a frame the resampler cannot take (damaged header): skip it
        return chunks + [piece.to_ndarray().reshape(-1) for piece in resampled]

    def flush(self) -> list[np.ndarray]:
        if self._resampler is None:
            return []
        return [piece.to_ndarray().reshape(-1) for piece in self._resampler.resample(None)]


def _seconds(seconds: float) -> str:
    """'10,000,000 s', '2.3 s', '2 s'."""
    if abs(seconds) >= 100:
        return f"{seconds:,.0f} s"
    return f"{seconds:.1f}".rstrip("0").rstrip(".") + " s"


def _seconds_in_words(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} minutes"
