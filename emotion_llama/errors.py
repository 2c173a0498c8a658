"""Errors a user can cause. Each carries a message a person can act on.

The UI and the CLI print ``str(error)`` and nothing else; anything that is not an
``EmotionLlamaError`` is a bug and is reported as such.
"""

from __future__ import annotations


class EmotionLlamaError(Exception):
    """Base class for every error caused by input, files or configuration."""


class MediaError(EmotionLlamaError):
    """A clip cannot be used (base class for the specific media errors)."""


class UnreadableFileError(MediaError):
    """The file is missing, empty, truncated or corrupt."""


class NotAVideoError(MediaError):
    """The file is readable but is not a video (an image, text, audio only...)."""


class NoVideoStreamError(NotAVideoError):
    """The container holds no video stream (for example an audio-only file)."""


class ClipTooShortError(MediaError):
    """The clip has zero or too little duration to analyse."""


class ClipTooLargeError(MediaError):
    """The upload is over the configured size limit."""


class UnsupportedCodecError(MediaError):
    """The video is encoded with a codec the bundled decoder cannot read."""


class CheckpointError(EmotionLlamaError):
    """A checkpoint is unsafe, malformed, or does not fit the model."""


class WeightsUnavailableError(EmotionLlamaError):
    """Weights could not be found locally or on the Hub (gated, offline, missing)."""


class PromptError(EmotionLlamaError):
    """A prompt or label set cannot be used (for example an empty label list)."""


class ConfigError(EmotionLlamaError):
    """A setting (an environment variable, a flag) has a value that cannot be used."""


class LimitError(EmotionLlamaError):
    """A request would cost more than a limit allows (``limits.py``); the message says
    which limit, its value and what to do instead."""


class MediaLimitError(LimitError, MediaError):
    """A clip's header declares more than the decoder accepts (frame size, streams)."""


class TextTooLongError(LimitError, PromptError):
    """A subtitle, question, label or whole prompt is over its length limit."""


class SessionExpiredError(EmotionLlamaError):
    """A conversation was closed (idle too long, or the server needed the room)."""


class MergedWeightsError(CheckpointError):
    """A model whose LoRA was merged into its base weights for inference was asked to be
    saved or trained (its tensors are no longer the base model's and the LoRA's)."""


class NoSuchPersonError(MediaError):
    """A person was chosen by an index past the faces found in the clip."""
