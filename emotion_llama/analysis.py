"""What an analysis is asked with and what it gives back: options, result, progress.

Plain data: ``pipeline.Engine`` fills these, the UI, the CLI and the API read them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .clip import Person, check_person
from .errors import PromptError
from .explain import heatmap_on_frame
from .familiarity import DomainCheck
from .vocab import (
    DEFAULT_FRAME,
    DEMO_PARITY_ZEROED,
    FRAME_CHOICES,
    GREEDY,
    MERR_LABELS,
    MODALITIES,
    REASONING_REDRAFTS,
    TASKS,
    GenerationSettings,
)


@dataclass(frozen=True)
class AnalysisOptions:
    task: str = "emotion"
    labels: tuple[str, ...] = MERR_LABELS
    question: str | None = None  # replaces the task's instruction (free questions)
    generation: GenerationSettings = GREEDY
    leave_out: tuple[str, ...] = ()  # any of vocab.MODALITIES
    demo_parity: bool = False
    frame_choice: str = DEFAULT_FRAME
    explain: bool = True  # attention shares and heatmap (one extra forward pass)
    # ``reason``: ask for the reasoning as a follow-up to the label answer, so the two
    # agree (False: one turn, as the paper's evaluation and the reference demo ask it).
    reason_follows_label: bool = True
    # With the follow-up: when the reasoning concludes with another label than the top
    # one, write up to this many more drafts (sampled) and show the first that agrees;
    # if none does, show the first draft and say so. 0: always show the first draft.
    reasoning_redrafts: int = REASONING_REDRAFTS
    person: int | None = None  # whose face to analyse: an index of ``Analysis.people`` (None: the one seen most)

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise PromptError(f"unknown task {self.task!r}; choose one of {', '.join(TASKS)}")
        if len(self.labels) < 2:
            raise PromptError("give at least two candidate labels")
        if self.frame_choice not in FRAME_CHOICES:
            raise PromptError(f"unknown frame {self.frame_choice!r}; choose one of {', '.join(FRAME_CHOICES)}")
        if unknown := set(self.leave_out) - set(MODALITIES):
            raise PromptError(f"cannot leave out {', '.join(sorted(unknown))}; choose from {', '.join(MODALITIES)}")
        if self.reasoning_redrafts < 0:
            raise ValueError("reasoning_redrafts must be 0 or more")
        check_person(self.person)

    @property
    def zeroed(self) -> set[str]:
        """Encoded modalities that go to the model as zeros: those left out, and in the
        reference demo's layout the ones that demo never computes."""
        return set(self.leave_out) - {"subtitle"} | (set(DEMO_PARITY_ZEROED) if self.demo_parity else set())

    @property
    def follow_up(self) -> bool:
        """The reasoning is asked as a second turn after the label answer."""
        return self.task == "reason" and self.reason_follows_label and not self.demo_parity


@dataclass(frozen=True)
class ReasoningCheck:
    """Whether the reasoning shown concludes with the label shown beside it.

    ``argued`` is the label the reasoning argues for (the last candidate it names),
    ``drafts`` the number of the draft shown (1: the first; 2 and on: a redraft, the
    redrafts being written as one batch), or how many were written when none agreed.
    """

    label: str
    argued: str | None
    drafts: int

    @property
    def agrees(self) -> bool:
        return self.argued == self.label

    @property
    def first_agreed(self) -> bool:
        """The first draft, written with the requested settings, already agreed."""
        return self.agrees and self.drafts == 1

    def to_json(self) -> dict[str, Any]:
        return {"label": self.label, "argued": self.argued, "agrees": self.agrees, "drafts": self.drafts,
                "first_agreed": self.first_agreed}


@dataclass
class Analysis:
    label: str
    probabilities: dict[str, float]
    answer: str
    task: str
    modality_attention: dict[str, float]
    span_attention: dict[str, float]
    modalities_present: dict[str, bool]
    filled_modalities: dict[str, str]
    subtitle: str | None
    subtitle_source: str
    frame_time: float
    warnings: list[str]
    timings: dict[str, float]
    engine: dict[str, str]
    # Pictures for the UI; not part of the JSON.
    frame: np.ndarray | None = field(default=None, repr=False)
    heatmap: np.ndarray | None = field(default=None, repr=False)
    face_crops: np.ndarray | None = field(default=None, repr=False)
    peak_frame_index: int | None = None
    reasoning_check: ReasoningCheck | None = None
    subtitle_note: str | None = None  # why there is no subtitle, or how it was made
    out_of_domain: DomainCheck | None = None  # how unlike the training clips it is (None: not measured)
    # The face: share of the sampled frames where it was seen (found by the detector, not only
    # estimated between sightings; None when the clip came already decoded without faces),
    # that in words, everyone seen (their thumbnails are for the UI), whose face was analysed,
    # and a note when the sound is shared by several people.
    face_coverage: float | None = None
    face_note: str | None = None
    people: list[Person] = field(default_factory=list, repr=False)
    person: int = 0
    audio_note: str | None = None

    def overlay(self) -> np.ndarray | None:
        if self.frame is None or self.heatmap is None:
            return None
        return heatmap_on_frame(self.frame, self.heatmap)

    def to_json(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "probabilities": self.probabilities,
            "answer": self.answer,
            "task": self.task,
            "modality_attention": self.modality_attention,
            "span_attention": self.span_attention,
            "modalities_present": self.modalities_present,
            "filled_modalities": self.filled_modalities,
            "subtitle": {"text": self.subtitle, "source": self.subtitle_source, "note": self.subtitle_note},
            "frame_time": round(self.frame_time, 3),
            "warnings": self.warnings,
            "timings": {k: round(v, 4) for k, v in self.timings.items()},
            "engine": self.engine,
            "reasoning_check": self.reasoning_check.to_json() if self.reasoning_check else None,
            "out_of_domain": self.out_of_domain.to_json() if self.out_of_domain else None,
            "face_coverage": None if self.face_coverage is None else round(self.face_coverage, 3),
            "face_note": self.face_note,
            "people": [person.to_json() for person in self.people],
            "person": self.person,
            "audio_note": self.audio_note,
        }


@dataclass(frozen=True)
class Event:
    """Progress of ``Engine.analyze_iter``: a stage that started, or answer text so far."""

    kind: str  # "stage" or "text"
    value: str


def torn_warning(check: ReasoningCheck | None) -> list[str]:
    """A warning when even the redrafted reasoning argues for another label than the top one."""
    if check is None or check.argued is None or check.agrees:
        return []
    return [(f"The reasoning argues for {check.argued or 'no listed label'}, not for the top label {check.label}, "
             f"even after {check.drafts} drafts: the model is torn between them.")]


DEFAULT_OPTIONS = AnalysisOptions()
