"""Form values -> library options, and the choices the form offers (from ``vocab``)."""

from __future__ import annotations

from collections.abc import Iterable

from ..analysis import AnalysisOptions
from ..errors import PromptError
from ..prompts import parse_labels
from ..vocab import (
    ANSWER_TOKENS,
    DEFAULT_FRAME,
    FRAME_CHOICES,
    LABEL_SET_NAMES,
    LABEL_SETS,
    MAX_ANSWER_TOKENS,
    MODALITIES,
    MODALITY,
    TASKS,
    GenerationSettings,
)

# Form choices: (what the person reads, what the library takes).
TASK_CHOICES = [(name, task) for task, name in TASKS.items()]
LABEL_SET_CHOICES = [(name, key) for key, name in LABEL_SET_NAMES.items()]
FRAME_CHOICE_LIST = [(name, key) for key, name in FRAME_CHOICES.items()]
LEAVE_OUT_CHOICES = [(MODALITY[m].display.capitalize(), m) for m in MODALITIES]


def labels_from_form(label_set: str, custom_labels: str | None) -> tuple[str, ...]:
    if label_set == "custom":
        if not custom_labels or not custom_labels.strip():
            raise PromptError("type your own labels, separated by commas (for example: calm, tense, joyful)")
        return parse_labels(custom_labels)
    if label_set not in LABEL_SETS:
        raise PromptError(f"unknown label set {label_set!r}; choose {', '.join(LABEL_SET_NAMES)}")
    return LABEL_SETS[label_set]


def generation_from_form(temperature: float | None, max_new_tokens: float | None) -> GenerationSettings:
    """Temperature 0 means greedy decoding; otherwise sample as the reference demo does."""
    temperature = float(temperature or 0.0)
    tokens = int(max_new_tokens or ANSWER_TOKENS)
    if not 1 <= tokens <= MAX_ANSWER_TOKENS:
        raise PromptError(f"max new tokens must be between 1 and {MAX_ANSWER_TOKENS}")
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
    person: float | None = None,
) -> AnalysisOptions:
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
        frame_choice=frame_choice or DEFAULT_FRAME,
        person=person_from_form(person),
    )


def person_from_form(person: float | str | None) -> int | None:
    """The picker's or an API client's person index; None or empty for the default."""
    if person is None or person == "":
        return None
    try:
        index = int(person)
    except (TypeError, ValueError):
        raise PromptError(f"person must be a whole number from 0, not {person!r}") from None
    if index != person and str(index) != str(person).strip():
        raise PromptError(f"person must be a whole number from 0, not {person!r}")
    return index
