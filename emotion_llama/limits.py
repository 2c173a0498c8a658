"""Every limit on what one request may cost, each an environment setting with a default.

A public demo is only as safe as its cheapest hostile request, so each limit is
checked from what a request *declares* (container headers, text lengths) before the
work it bounds starts. ``get(name)`` reads the setting at call time, so a test or an
operator may change it without a restart of the library (the app reads the page-level
ones once, at start-up). The README's table of limits is checked against ``SETTINGS``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from .errors import ConfigError


@dataclass(frozen=True)
class Setting:
    env: str
    default: int | float
    what: str  # one line for the README and for error messages

    @property
    def kind(self) -> type:
        return type(self.default)


SETTINGS: dict[str, Setting] = {
    # -- uploads and decoding ---------------------------------------------------------------
    "max_upload_mb": Setting("EMOTION_LLAMA_MAX_UPLOAD_MB", 50, "largest upload, in MB"),
    "unused_upload_s": Setting("EMOTION_LLAMA_UNUSED_UPLOAD", 600.0,
                               "seconds an upload no request used is kept (deleted within a minute after)"),
    "max_seconds": Setting("EMOTION_LLAMA_MAX_SECONDS", 30.0, "seconds of a clip analysed (its start)"),
    "max_frame_pixels": Setting("EMOTION_LLAMA_MAX_FRAME_PIXELS", 3840 * 2160,
                                "pixels per video frame, from the header, before decoding (4K UHD)"),
    "max_streams": Setting("EMOTION_LLAMA_MAX_STREAMS", 16, "streams in one container"),
    "decoder_threads": Setting("EMOTION_LLAMA_DECODER_THREADS", 2, "threads of the video decoder, per request"),
    "decode_seconds": Setting("EMOTION_LLAMA_DECODE_SECONDS", 60.0, "seconds a clip may take to decode"),
    "max_timeline_seconds": Setting("EMOTION_LLAMA_MAX_TIMELINE_SECONDS", 600.0,
                                    "seconds of a video an emotion timeline covers (its start)"),
    "timeline_seconds": Setting("EMOTION_LLAMA_TIMELINE_SECONDS", 900.0,
                                "seconds one timeline may take, decoding and scoring (it stops there, "
                                "keeping the segments done)"),
    # -- text ---------------------------------------------------------------------------------
    "max_subtitle_chars": Setting("EMOTION_LLAMA_MAX_SUBTITLE_CHARS", 1500, "characters of a subtitle"),
    "max_subtitle_tokens": Setting("EMOTION_LLAMA_MAX_SUBTITLE_TOKENS", 400, "tokens of a subtitle"),
    "max_question_chars": Setting("EMOTION_LLAMA_MAX_QUESTION_CHARS", 1000, "characters of a question"),
    "max_question_tokens": Setting("EMOTION_LLAMA_MAX_QUESTION_TOKENS", 250, "tokens of a question"),
    "max_labels": Setting("EMOTION_LLAMA_MAX_LABELS", 32, "candidate labels"),
    "max_label_chars": Setting("EMOTION_LLAMA_MAX_LABEL_CHARS", 40, "characters of one label"),
    "max_label_tokens": Setting("EMOTION_LLAMA_MAX_LABEL_TOKENS", 12, "tokens of one label"),
    # -- the server -----------------------------------------------------------------------------
    "concurrency": Setting("EMOTION_LLAMA_CONCURRENCY", 2, "model calls running at once, all endpoints together"),
    "queue_size": Setting("EMOTION_LLAMA_QUEUE_SIZE", 32, "requests waiting in the queue"),
    "per_visitor": Setting("EMOTION_LLAMA_PER_VISITOR", 2,
                           "model requests one visitor may have waiting or running (the next is refused)"),
    "chat_turns": Setting("EMOTION_LLAMA_CHAT_TURNS", 8, "earlier chat turns kept in a conversation"),
    "max_sessions": Setting("EMOTION_LLAMA_MAX_SESSIONS", 16, "conversations held in memory (least recent closed)"),
    "session_ttl_s": Setting("EMOTION_LLAMA_SESSION_TTL", 900.0,
                             "seconds a conversation and a decoded clip are kept after their last use"),
}


def get(name: str) -> int | float:
    """The value of limit ``name``: its environment variable if set, else its default."""
    setting = SETTINGS[name]
    raw = os.environ.get(setting.env, "").strip()
    if not raw:
        return setting.default
    try:
        value = setting.kind(float(raw)) if setting.kind is int else float(raw)
    except ValueError:
        raise ConfigError(f"{setting.env} must be a number ({setting.what}), not {raw!r}") from None
    if value <= 0:
        raise ConfigError(f"{setting.env} must be more than 0 ({setting.what}), not {raw!r}")
    return value
