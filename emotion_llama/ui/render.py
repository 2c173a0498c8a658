"""What the web app needs besides Gradio: option parsing, rendering, and upload hygiene.

``app.py`` lays out the page and wires events; everything here is plain Python that
tests can call without a browser. Nothing here knows about the model's internals: it
turns form values into ``AnalysisOptions`` and an ``Analysis`` into things to show.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .clip import PreparedClip
from .config import MER2023_LABELS, MERR_LABELS, GenerationSettings, WeightSources
from .errors import PromptError, UnreadableFileError
from .prompts import parse_labels

# Form choices: (what the person reads, what the library takes).
TASK_CHOICES = [
    ("Recognise the emotion", "emotion"),
    ("Explain the reasoning", "reason"),
    ("Describe the face", "visual"),
    ("Describe the voice", "audio"),
    ("Ask a free question", "free"),
]
LABEL_SET_CHOICES = [
    ("MER2023: 6 labels", "mer2023"),
    ("MERR: 9 labels", "merr"),
    ("My own labels", "custom"),
]
LABEL_SETS = {"mer2023": MER2023_LABELS, "merr": MERR_LABELS}
FRAME_CHOICES = [
    ("Peak of expression", "peak"),
    ("Middle of the clip", "middle"),
    ("First frame (reference demo)", "first"),
]
LEAVE_OUT_CHOICES = [
    ("Global frame", "global"),
    ("Face", "face"),
    ("Face sequence", "temporal"),
    ("Audio", "audio"),
    ("Subtitle", "subtitle"),
]
MODALITY_NAMES = {value: name.lower() for name, value in LEAVE_OUT_CHOICES}
# Short names for the attention chart's axis, in the order of the prompt.
ATTENTION_NAMES = {
    "global frame": "frame",
    "face": "face",
    "face sequence": "face seq.",
    "audio": "audio",
    "subtitle": "subtitle",
    "instruction": "question",
    "template": "prompt",
    "history": "earlier turns",  # in a chat, or the label answer a reasoning follows
}


# -- form values -> library options ----------------------------------------------------------
def labels_from_form(label_set: str, custom_labels: str | None) -> tuple[str, ...]:
    if label_set == "custom":
        if not custom_labels or not custom_labels.strip():
            raise PromptError("type your own labels, separated by commas (for example: calm, tense, joyful)")
        return parse_labels(custom_labels)
    if label_set not in LABEL_SETS:
        raise PromptError(f"unknown label set {label_set!r}; choose mer2023, merr or custom")
    return LABEL_SETS[label_set]


def generation_from_form(temperature: float | None, max_new_tokens: float | None) -> GenerationSettings:
    """Temperature 0 means greedy decoding; otherwise sample as the reference demo does."""
    temperature = float(temperature or 0.0)
    tokens = int(max_new_tokens or GenerationSettings.max_new_tokens)
    if not 1 <= tokens <= 2000:
        raise PromptError("max new tokens must be between 1 and 2000")
    if temperature <= 0:
        return GenerationSettings(do_sample=False, max_new_tokens=tokens)
    return GenerationSettings(do_sample=True, temperature=temperature, max_new_tokens=tokens)


def options_from_form(
    task: str,
    question: str | None,
    label_set: str,
    custom_labels: str | None,
    temperature: float | None,
    max_new_tokens: float | None,
    frame_choice: str | None,
    leave_out: Iterable[str] | None,
    demo_parity: bool | None,
):
    from .pipeline import AnalysisOptions

    question = (question or "").strip() or None
    if task == "free" and not question:
        raise PromptError("type a question for the free-question task")
    return AnalysisOptions(
        task=task,
        labels=labels_from_form(label_set, custom_labels),
        question=question if task == "free" else None,
        generation=generation_from_form(temperature, max_new_tokens),
        leave_out=tuple(leave_out or ()),
        demo_parity=bool(demo_parity),
        frame_choice=frame_choice or "peak",
    )


# -- rendering -------------------------------------------------------------------------------
def engine_banner(info: dict[str, str]) -> str:
    """Markdown saying which weights answer, what they can do, and how to load the official ones."""
    weights = info.get("weights", "unknown")
    where = f"device `{info.get('device', '?')}`, dtype `{info.get('dtype', '?')}`"
    env = ", ".join(f"`{var}`" for var in WeightSources.ENV.values())
    how = (
        "To load the published model, set `EMOTION_LLAMA_WEIGHTS=official` on a machine with a GPU "
        f"(about 16 GB of memory), point {env} at local copies or Hub ids if the defaults do not suit, "
        "and set `HF_TOKEN` to a token that may read the gated LLaMA-2 repository."
    )
    if weights == "official":
        return (
            f"**Model: Emotion-LLaMA, official weights** ({where}). LLaMA-2-7B-chat with the published "
            "Emotion-LLaMA adapters and LoRA; EVA ViT-g, MAE, VideoMAE and HuBERT encoders."
        )
    if info.get("warning"):
        return (
            f"**Model: tiny Emotion-LLaMA with untrained, random weights** ({where}). "
            "Its labels and answers are noise: this page only shows how the pipeline works "
            f"(decoding, face crops, attention, streaming). {how}"
        )
    return (
        f"**Model: tiny Emotion-LLaMA ({weights})** ({where}). A few-million-parameter copy of the "
        "architecture, trained in this repository on synthetic clips of drawn faces and synthesised voices "
        "(see docs/model_card.md). It reads the cues of that corpus, as in the examples below; on real "
        f"people its labels and explanations mean nothing. {how}"
    )


RESPONSIBLE_USE = """\
**Responsible use.** A face and a voice show expressions, not feelings: the same smile can be
joy, politeness or discomfort, and people and cultures express and read emotion differently.
This model was trained on narrow data (acted and TV clips, mostly Chinese and English speakers;
the tiny model only on synthetic clips), so its label is a guess with a probability, never a
finding about a person. Do not use it to judge, screen or monitor anyone, and only analyse
clips of people who have agreed to it. Clips are processed in memory and the uploaded file is
deleted when the request finishes; nothing is stored or logged.
"""


def probability_label(probabilities: dict[str, float]) -> dict[str, float]:
    """For ``gr.Label``: every candidate with its probability, best first."""
    return dict(sorted(probabilities.items(), key=lambda item: -item[1]))


def attention_table(modality_attention: dict[str, float]):
    """For ``gr.BarPlot``: share of the answer's attention per modality, in percent."""
    import pandas as pd

    order = list(ATTENTION_NAMES)
    ranked = sorted(modality_attention.items(), key=lambda item: order.index(item[0]) if item[0] in order else 99)
    rows = [(ATTENTION_NAMES.get(name, name), round(100 * share, 1)) for name, share in ranked]
    return pd.DataFrame(rows, columns=["modality", "attention %"])


def face_strip(crops: np.ndarray | None, peak_index: int | None, size: int = 96) -> np.ndarray | None:
    """The face crops side by side; the peak frame has a thick orange frame and a 'peak' tag."""
    import cv2

    if crops is None or len(crops) == 0:
        return None
    border, gap = 5, 4
    cell = size + 2 * border
    strip = np.full((cell + 18, len(crops) * (cell + gap) - gap, 3), 255, np.uint8)
    for index, crop in enumerate(crops):
        x = index * (cell + gap)
        is_peak = index == peak_index
        colour = (240, 120, 0) if is_peak else (200, 200, 200)
        strip[:cell, x : x + cell] = colour
        strip[border : border + size, x + border : x + border + size] = cv2.resize(
            np.ascontiguousarray(crop), (size, size), interpolation=cv2.INTER_AREA
        )
        text = "peak" if is_peak else str(index + 1)
        cv2.putText(strip, text, (x + 4, cell + 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                    colour if is_peak else (90, 90, 90), 1, cv2.LINE_AA)
    return strip


def subtitle_markdown(text: str | None, source: str, left_out: bool = False, note: str | None = None) -> str:
    """Where the subtitle came from; ``note`` (``Subtitle.note``) says why there is none,
    e.g. that Whisper's checkpoint is missing, or that Whisper translated it."""
    if source == "user":
        where = "typed by you"
    elif source.startswith("sidecar:"):
        where = f"read from the subtitle file {source.removeprefix('sidecar:')}"
    elif source.startswith("whisper:"):
        where = f"transcribed by Whisper ({source.removeprefix('whisper:')})"
    else:
        where = "none found"
    if not text:
        if note:  # e.g. "No subtitle: none was typed, and the Whisper model is not in ..."
            reason = note.removeprefix("No subtitle: ")
            return f"**Subtitle:** none. {reason[:1].upper()}{reason[1:]}"
        return "**Subtitle:** none (none typed, no subtitle file, no speech recognised)."
    extra = f" {note}" if note else ""
    extra += " It was left out of the prompt." if left_out else ""
    return f"**Subtitle** ({where}): “{text}”{extra}"


def warnings_markdown(warnings: list[str]) -> str:
    if not warnings:
        return "**Warnings:** none."
    return "**Warnings:**\n\n" + "\n".join(f"- {warning}" for warning in warnings)


def modalities_markdown(present: dict[str, bool], filled: dict[str, str], frame_time: float) -> str:
    used = [MODALITY_NAMES.get(name, name) for name, ok in present.items() if ok]
    lines = [f"**Inputs used:** {', '.join(used) or 'none'}; the global frame is at {frame_time:.2f} s."]
    missing = [f"{MODALITY_NAMES.get(name, name)} ({how})" for name, how in filled.items()
               if name != "subtitle"]
    if missing:
        lines.append(f"**Not used:** {', '.join(missing)}.")
    return "\n\n".join(lines)


def timings_markdown(timings: dict[str, float]) -> str:
    rows = "\n".join(f"| {stage.replace('_', ' ')} | {seconds:.3f} |" for stage, seconds in timings.items())
    return f"| stage | seconds |\n|---|---:|\n{rows}"


# -- uploads ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class _ClipKey:
    path: str
    frame_choice: str
    subtitle: str


class UploadStore:
    """Reads each upload once, deletes it when no request uses it, remembers the decoded clip.

    Gradio files an upload under a folder named by its content hash, so two requests with
    the same clip share one path; a request that starts after the file was deleted (the
    second Analyze click, a chat turn, a queued twin) gets the decoded clip from memory.
    Only files under ``upload_root`` (Gradio's upload folder) are deleted, and never one
    whose content is one of ``keep`` (the example clips, which Gradio caches there too).
    """

    def __init__(self, upload_root: str | Path, keep: Iterable[str | Path] = (), capacity: int = 16):
        self._root = Path(upload_root).resolve()
        self._keep = {_digest(path) for path in keep}
        self._clips: OrderedDict[_ClipKey, PreparedClip] = OrderedDict()
        self._in_use: dict[str, int] = {}
        self._lock = threading.Lock()
        self._capacity = capacity

    @contextmanager
    def using(self, path: str | None) -> Iterator[None]:
        """Around a request: the upload is deleted when its last request ends."""
        if not path:
            yield
            return
        self.acquire(path)
        try:
            yield
        finally:
            self.release(path)

    def acquire(self, path: str) -> None:
        with self._lock:
            self._in_use[path] = self._in_use.get(path, 0) + 1

    def release(self, path: str) -> None:
        """Delete the file (and its hash folder, when empty) once the last request is done."""
        with self._lock:
            count = self._in_use.get(path, 1) - 1
            if count > 0:
                self._in_use[path] = count
                return
            self._in_use.pop(path, None)
            file = Path(path).resolve()
            if file.is_relative_to(self._root):
                _delete_upload(file, self._root, self._keep)

    def prepared(self, path: str, subtitle: str | None, frame_choice: str) -> PreparedClip:
        """The decoded clip for an upload, from memory or from the file."""
        from .prepare import PrepareOptions, prepare_clip

        key = _ClipKey(path, frame_choice, subtitle or "")
        with self._lock:
            if key in self._clips:
                self._clips.move_to_end(key)
                return self._clips[key]
        if not os.path.exists(path):
            raise UnreadableFileError(
                "this clip was deleted after its last request (uploads are not kept); please upload it again"
            )
        clip = prepare_clip(path, subtitle=subtitle, options=PrepareOptions(frame_choice=frame_choice))
        with self._lock:
            self._clips[key] = clip
            while len(self._clips) > self._capacity:
                self._clips.popitem(last=False)
        return clip


def _delete_upload(path: Path, root: Path, keep: set[str]) -> None:
    try:
        if not path.is_file() or _digest(path) in keep:
            return
        path.unlink()
        if path.parent != root:
            path.parent.rmdir()  # Gradio's per-upload hash folder; fails harmlessly when not empty
    except OSError:
        pass


def _digest(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
