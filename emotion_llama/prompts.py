"""Prompt templates, task tags, instruction pools, and escaping of untrusted text.

A prompt is never built as one string and split on placeholders (the reference demo
does that and crashes when a user types ``<VideoHere>``). It is a list of ``Piece``s:
text pieces, each tagged with the span it belongs to, and slots where modality
embeddings go. User text is escaped first so it cannot create, move or remove a
placeholder or a chat turn.

Prompt the model was tuned on (LLaMA-2 chat template, reference ``first_face.py``):
``<s>[INST] <video><VideoHere></video> <feature><FeatureHere></feature>
The person in video says: {subtitle}.  [emotion] {instruction}  [/INST]``, two spaces where
the tiny model's layout has one (``REFERENCE_SPACE``).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, replace

from .errors import PromptError
from .text_limits import check_label_list, check_labels
from .vocab import MERR_LABELS, TASKS

# Instructions the reference was tuned on (from its public dataset code).
EMOTION_INSTRUCTION = (
    "Please determine which emotion label in the video represents: "
    "happy, sad, neutral, angry, worried, surprise, fear, contempt, doubt."
)
REASON_INSTRUCTIONS = (
    "Please analyze all the clues in the video and reason out the emotional label of the person in the video.",
    "What is the emotional state of the person in the video? Please tell me the reason.",
    ("What are the facial expressions and vocal tone used in the video? What is the intended meaning behind "
     "his words? Which emotion does this reflect?"),
    ("Please integrate information from various modalities to infer the emotional category of the person in "
     "the video."),
    ("Could you describe the emotion-related features of the individual in the video? What emotional category "
     "do they fall into?"),
)
# Offered by the reference demo, not part of its tuning data.
VISUAL_INSTRUCTION = "Please describe the facial expression of the person in the video."
AUDIO_INSTRUCTION = "Please describe the tone of voice of the person in the video."

# Markers with a meaning to the template or the tokenizer; never allowed in from a user.
RESERVED_MARKERS = (
    "<VideoHere>",
    "<FeatureHere>",
    "<video>",
    "</video>",
    "<feature>",
    "</feature>",
    "[INST]",
    "[/INST]",
    "<<SYS>>",
    "<</SYS>>",
    "<s>",
    "</s>",
    "<unk>",
)
_MARKER_RE = re.compile("|".join(re.escape(m) for m in sorted(RESERVED_MARKERS, key=len, reverse=True)), re.IGNORECASE)
_TASK_TAG_RE = re.compile(r"\[(emotion|reason|visual|audio|identify|vqa|caption)\]", re.IGNORECASE)


def _defang(marker: str) -> str:
    # Angle and square brackets become look-alike guillemets and parentheses: still
    # readable to the model and to a person, but no longer the template's tokens.
    return marker.replace("<", "\u2039").replace(">", "\u203a").replace("[", "(").replace("]", ")")


def escape_user_text(text: str) -> str:
    """Make untrusted text inert: reserved markers and task tags lose their brackets."""
    text = _MARKER_RE.sub(lambda m: _defang(m.group(0)), text)
    return _TASK_TAG_RE.sub(lambda m: _defang(m.group(0)), text)


@dataclass(frozen=True)
class Piece:
    """One piece of a prompt: text of a span kind, or a slot for modality embeddings."""

    kind: str  # "bos", "eos", "template", "subtitle", "instruction", "answer", "history", or a slot kind
    text: str = ""
    slot: bool = False
    # Tokenised on its own, as the reference tokenises answers apart from the prompt.
    standalone: bool = False
    # A space of the official weights' training text only (``config.reference_spacing``).
    spacing: bool = False


# The training text of the official weights (reference dataset code) is
# ``... </feature> {line} [{task}] {instruction} `` inside ``[INST] {} [/INST]``, with
# ``{line}`` = ``The person in video says: {sentence}. ``: so one space more before the task
# tag and before ``[/INST]`` than the tiny model's layout.
REFERENCE_SPACE = Piece("template", " ", spacing=True)


def instruction_for(task: str, *, labels: tuple[str, ...] | None = None, rng: random.Random | None = None) -> str:
    """The instruction text of a task tag (``free`` has none: the user's text is the question)."""
    if task == "emotion":
        if labels is None or tuple(labels) == MERR_LABELS:
            return EMOTION_INSTRUCTION
        return f"Please determine which emotion label in the video represents: {', '.join(labels)}."
    if task == "reason":
        return rng.choice(REASON_INSTRUCTIONS) if rng else REASON_INSTRUCTIONS[0]
    if task == "visual":
        return VISUAL_INSTRUCTION
    if task == "audio":
        return AUDIO_INSTRUCTION
    if task == "free":
        return ""
    raise PromptError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")


def parse_labels(text: str | None, default: tuple[str, ...] = MERR_LABELS) -> tuple[str, ...]:
    """A comma list of labels typed by a user -> a clean tuple (order kept, duplicates dropped)."""
    if text is None or not text.strip():
        return default
    check_label_list(text)
    labels: list[str] = []
    for raw in text.split(","):
        label = " ".join(escape_user_text(raw).split())
        if label and label.lower() not in (x.lower() for x in labels):
            labels.append(label)
    if len(labels) < 2:
        raise PromptError("give at least two emotion labels, separated by commas")
    check_labels(tuple(labels))
    return tuple(labels)


def user_turn(
    task: str,
    *,
    subtitle: str | None,
    question: str | None = None,
    labels: tuple[str, ...] | None = None,
    rng: random.Random | None = None,
) -> list[Piece]:
    """The pieces of the user's words: subtitle sentence, task tag and instruction.

    ``question`` replaces the task's instruction (free chat, or a user's own wording).
    """
    pieces: list[Piece] = []
    if subtitle:
        pieces += [
            Piece("template", "The person in video says: "),
            Piece("subtitle", escape_user_text(subtitle.strip())),
            Piece("template", ". "),
        ]
    if task != "free":
        pieces += [REFERENCE_SPACE, Piece("template", f"[{task}] ")]
    instruction = escape_user_text(question.strip()) if question else instruction_for(task, labels=labels, rng=rng)
    if instruction:
        pieces.append(Piece("instruction", instruction))
    if task != "free":
        pieces.append(REFERENCE_SPACE)
    return pieces


def first_turn(user_pieces: list[Piece], *, demo_parity: bool = False) -> list[Piece]:
    """``<s>[INST] <video>...</video> <feature>...</feature> {user} [/INST]``.

    Trained layout: 256 visual tokens at ``<VideoHere>``; face, temporal, audio and CLS at
    ``<FeatureHere>``. ``demo_parity``: the reference demo's layout, all 260 tokens at
    ``<VideoHere>`` and the literal text ``<FeatureHere>`` left in the prompt.
    """
    if demo_parity:
        media = [
            Piece("template", "[INST] <video>"),
            Piece("visual", slot=True),
            Piece("face", slot=True),
            Piece("temporal", slot=True),
            Piece("audio", slot=True),
            Piece("cls", slot=True),
            Piece("template", "</video> <feature><FeatureHere></feature> "),
        ]
    else:
        media = [
            Piece("template", "[INST] <video>"),
            Piece("visual", slot=True),
            Piece("template", "</video> <feature>"),
            Piece("face", slot=True),
            Piece("temporal", slot=True),
            Piece("audio", slot=True),
            Piece("cls", slot=True),
            Piece("template", "</feature> "),
        ]
    return [Piece("bos", slot=True), *media, *user_pieces, Piece("template", " [/INST]")]


def later_turn(user_pieces: list[Piece]) -> list[Piece]:
    """A follow-up turn of the same chat (LLaMA-2 chat: ``<s>[INST] {user} [/INST]``)."""
    return [Piece("bos", slot=True), Piece("template", "[INST] "), *user_pieces, Piece("template", " [/INST]")]


def answer_pieces(answer: str, *, kind: str = "answer", close: bool = False) -> list[Piece]:
    """An answer after ``[/INST]``; ``close`` appends ``</s>`` (training targets, earlier turns)."""
    pieces = [Piece(kind, answer.strip(), standalone=True)]
    if close:
        pieces.append(Piece("eos", slot=True))
    return pieces


def as_history(pieces: list[Piece]) -> list[Piece]:
    """Earlier turns: the user's words become ``history`` (subtitle and slots keep their kind)."""
    return [replace(p, kind="history") if p.kind == "instruction" else p for p in pieces]


def reason_after_label(
    label: str,
    *,
    subtitle: str | None,
    labels: tuple[str, ...] | None = None,
    question: str | None = None,
    rng: random.Random | None = None,
    label_kind: str = "history",
) -> list[Piece]:
    """A two-turn chat whose second turn asks for the reasoning behind the first turn's
    label answer: ``[emotion]`` question, ``label``, then ``[reason]`` question.

    The app shows the label and the reasoning side by side; asking for the reasoning as a
    follow-up to the label (as a user who asks "why?" would) keeps the two consistent.
    ``label_kind="answer"`` makes the label a training target too.
    """
    first = first_turn(user_turn("emotion", subtitle=subtitle, labels=labels))
    return (
        as_history(first)
        + answer_pieces(label, kind=label_kind, close=True)
        + later_turn(user_turn("reason", subtitle=None, question=question, rng=rng))
    )
