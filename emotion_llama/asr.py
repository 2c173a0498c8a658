"""What the person says: typed text, a sidecar subtitle file, Whisper, or nothing.

The sources are tried in that order and the one used is recorded in
``Subtitle.source``. Whisper runs only when its checkpoint is already on disk: this
module never downloads anything. Speech that is not English is translated by Whisper,
because the language model reads English.
"""

from __future__ import annotations

import html
import os
import pickle
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from emotion_llama.clip import SAMPLE_RATE, Subtitle

if TYPE_CHECKING:
    import whisper

WHISPER_DIR_ENV = "EMOTION_LLAMA_WHISPER_DIR"
DEFAULT_WHISPER_MODEL = "base"
SIDECAR_SUFFIXES = (".srt", ".vtt", ".txt")
# Whisper's aliases whose checkpoint file is named after the full model name.
_WHISPER_FILE_ALIASES = {"large": "large-v3", "turbo": "large-v3-turbo"}

_MARKUP = re.compile(r"<[^>]*>|\{[^}]*\}")


@dataclass(frozen=True)
class WhisperSettings:
    """Which Whisper checkpoint to use and where to look for it."""

    model: str = DEFAULT_WHISPER_MODEL  # a model name ("base", "small"...) or a .pt path
    download_root: Path | None = None  # default: $EMOTION_LLAMA_WHISPER_DIR, else Whisper's cache

    def checkpoint(self) -> Path | None:
        """The checkpoint file on disk, or None when it is not there."""
        as_path = Path(self.model).expanduser()
        if as_path.suffix == ".pt":
            return as_path if as_path.is_file() else None
        name = _WHISPER_FILE_ALIASES.get(self.model, self.model)
        candidate = self.root() / f"{name}.pt"
        return candidate if candidate.is_file() else None

    @property
    def name(self) -> str:
        """The model's name, also when it is given as a checkpoint path."""
        return Path(self.model).stem if self.model.endswith(".pt") else self.model

    def root(self) -> Path:
        if self.download_root is not None:
            return Path(self.download_root).expanduser()
        if os.environ.get(WHISPER_DIR_ENV):
            return Path(os.environ[WHISPER_DIR_ENV]).expanduser()
        cache = os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")
        return Path(cache) / "whisper"


def find_subtitle(
    clip_path: str | os.PathLike[str] | None,
    audio: np.ndarray | None,
    *,
    typed: str | None = None,
    whisper_settings: WhisperSettings | None = None,
) -> Subtitle:
    """The subtitle of a clip from the first source that has one."""
    if typed is not None and typed.strip():
        return Subtitle(" ".join(typed.split()), "user")
    if clip_path is not None:
        sidecar = read_sidecar(Path(clip_path))
        if sidecar is not None:
            return sidecar
    settings = whisper_settings or WhisperSettings()
    if audio is None or audio.size == 0:
        return Subtitle(None, "none", note="No subtitle: the clip has no sound to transcribe and none was typed.")
    checkpoint = settings.checkpoint()
    if checkpoint is None:
        return Subtitle(
            None,
            "none",
            note=(
                f"No subtitle: none was typed, and the Whisper '{settings.name}' model is not installed "
                f"(set {WHISPER_DIR_ENV} to a folder holding it to transcribe speech)."
            ),
        )
    return transcribe(audio, checkpoint, settings.name)


# --- sidecar files ------------------------------------------------------------------


def read_sidecar(clip_path: Path) -> Subtitle | None:
    """Text of a ``.srt``, ``.vtt`` or ``.txt`` file with the clip's name, if there is one."""
    for suffix in SIDECAR_SUFFIXES:
        sidecar = clip_path.with_suffix(suffix)
        if sidecar.is_file():
            text = subtitle_file_text(sidecar.read_bytes().decode("utf-8-sig", errors="replace"))
            if text:
                return Subtitle(text, f"sidecar:{sidecar.name}")
    return None


def subtitle_file_text(content: str) -> str:
    """Plain spoken text of an SRT, WebVTT or plain-text subtitle: no numbers, times or tags."""
    content = content.replace("\r\n", "\n").replace("\r", "\n")
    if "-->" in content:
        spoken = []
        for block in re.split(r"\n\s*\n", content.strip()):
            lines = block.split("\n")
            timing = next((i for i, line in enumerate(lines) if "-->" in line), None)
            # Blocks without cue times are headers, NOTE, STYLE or REGION blocks.
            if timing is not None:
                spoken.extend(lines[timing + 1 :])
        content = "\n".join(spoken)
    return " ".join(html.unescape(_MARKUP.sub("", content)).split())


# --- Whisper ------------------------------------------------------------------------

_models: dict[Path, whisper.model.Whisper] = {}
_models_lock = threading.Lock()
_transcribe_lock = threading.Lock()  # Whisper's decoder hooks a cache onto the shared model


def load_whisper(checkpoint: Path) -> whisper.model.Whisper:
    """The Whisper model in ``checkpoint``, loaded once per process."""
    with _models_lock:
        if checkpoint not in _models:
            import whisper

            # Loading by path, not by name, so Whisper never tries to download.
            _models[checkpoint] = whisper.load_model(str(checkpoint))
        return _models[checkpoint]


def transcribe(audio: np.ndarray, checkpoint: Path, model_name: str) -> Subtitle:
    """English text of the speech in ``audio`` (16 kHz mono), translated when needed."""
    import whisper

    source = f"whisper:{model_name}"
    try:
        model = load_whisper(checkpoint)
    except (OSError, EOFError, RuntimeError, KeyError, TypeError, ValueError, pickle.UnpicklingError) as error:
        # A damaged or foreign checkpoint must not fail the whole analysis.
        return Subtitle(
            None,
            "none",
            note=(
                f"No subtitle: the Whisper checkpoint '{checkpoint.name}' could not be loaded "
                f"({type(error).__name__}); replace it with a fresh copy."
            ),
        )
    with _transcribe_lock:
        language = _spoken_language(model, audio)
        task = "transcribe" if language == "en" else "translate"
        # Beam search at temperature 0 (the Whisper CLI's default beam, no sampling fallback):
        # the same clip always gives the same words, and the process-wide random state the
        # language model samples from is left alone.
        result = whisper.transcribe(
            model,
            audio.astype(np.float32, copy=False),
            task=task,
            language=language,
            temperature=0.0,
            beam_size=5,
            fp16=model.device.type == "cuda",
            verbose=None,
            condition_on_previous_text=False,
        )
    text = " ".join(str(result.get("text", "")).split())
    note = f"Translated from '{language}' to English by Whisper." if task == "translate" else None
    if not text:
        return Subtitle(None, source, language, note="Whisper heard no words in the clip.")
    return Subtitle(text, source, language, note)


def _spoken_language(model: whisper.model.Whisper, audio: np.ndarray) -> str:
    """Language code Whisper hears in the first 30 s; English-only models say "en"."""
    import whisper

    if not model.is_multilingual:
        return "en"
    window = whisper.pad_or_trim(audio.astype(np.float32, copy=False), 30 * SAMPLE_RATE)
    mel = whisper.log_mel_spectrogram(window, model.dims.n_mels).to(model.device)
    _, probabilities = model.detect_language(mel)
    return max(probabilities, key=probabilities.get)
