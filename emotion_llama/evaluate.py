"""Evaluation on an annotated dataset: label metrics, the modality ablation, reasoning.

``python -m emotion_llama evaluate --data DIR [--ablate] [--json]``

- Labels: weighted F1 (MER2023's headline metric), accuracy, UAR (mean per-class
  recall, DFEW's), WAR (recall weighted by class size = accuracy), the confusion matrix,
  and accuracy on the hard cases: the clips whose words disagree with face and voice
  (``conflict``) and those without a voice or a visible face (``missing_audio``, ``missing_face``).
- ``--ablate``: the same label metrics with each modality alone and with all but one
  (the paper's modality table). A left-out modality is zeros at the encoder output, as
  for a missing one; a left-out subtitle is not in the prompt.
- Reasoning (when the annotations carry clues): the share of the true clues that the
  generated reasoning mentions, and how often the label it argues for (the last label
  it names) agrees with the label answer.

Clips are encoded once and kept in a feature folder, so ablations cost only LLM passes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, recall_score
from tqdm import tqdm

from .data.merr import Annotation, clue_vocabulary, find_clues, load_annotations
from .encoders import without
from .errors import EmotionLlamaError
from .features import FeatureStore
from .pipeline import Engine
from .prompts import first_turn, reason_after_label, user_turn
from .vocab import MERR_LABELS, MODALITIES, REASON_SETTINGS, REASONING_REDRAFTS


@dataclass
class ClipResult:
    name: str
    truth: str
    probabilities: dict[str, dict[str, float]]  # variant -> label -> probability


def label_metrics(truth: list[str], predicted: list[str], labels: tuple[str, ...]) -> dict:
    present = [label for label in labels if label in truth or label in predicted]
    return {
        "weighted_f1": round(float(f1_score(truth, predicted, labels=present, average="weighted", zero_division=0)), 4),
        "accuracy": round(float(accuracy_score(truth, predicted)), 4),
        "uar": round(float(recall_score(truth, predicted, labels=[l for l in labels if l in truth],
                                        average="macro", zero_division=0)), 4),
        "war": round(float(recall_score(truth, predicted, labels=[l for l in labels if l in truth],
                                        average="weighted", zero_division=0)), 4),
        "n": len(truth),
    }


def ablation_variants() -> dict[str, tuple[str, ...]]:
    """Variant name -> modalities left out."""
    variants = {"all": ()}
    for modality in MODALITIES:
        variants[f"only {modality}"] = tuple(m for m in MODALITIES if m != modality)
    for modality in MODALITIES:
        variants[f"all but {modality}"] = (modality,)
    return variants


@dataclass
class ReasoningScores:
    clue_recall: list[float] = field(default_factory=list)
    agreement: list[bool] = field(default_factory=list)
    first_agreement: list[bool] = field(default_factory=list)
    drafts: list[int] = field(default_factory=list)

    def add(self, ann: Annotation, text: str, check) -> None:
        self.agreement.append(check.agrees)
        self.first_agreement.append(check.first_agreed)
        self.drafts.append(check.drafts)
        true_clues = {c for cs in ann.clues.values() for c in cs}
        mentioned = {c for cs in find_clues(text, clue_vocabulary()).values() for c in cs}
        if true_clues:
            self.clue_recall.append(len(true_clues & mentioned) / len(true_clues))

    def report(self, single_turn: bool, redrafts: int) -> dict:
        return {
            "clue_recall": round(float(np.mean(self.clue_recall)), 4),
            "label_agreement": round(float(np.mean(self.agreement)), 4),
            "first_draft_agreement": round(float(np.mean(self.first_agreement)), 4),
            "mean_drafts": round(float(np.mean(self.drafts)), 3),
            "n": len(self.clue_recall),
            "prompt": "single turn" if single_turn else "follow-up to the label answer",
            "redrafts": 0 if single_turn else redrafts,
        }


def evaluate(
    engine: Engine,
    annotations: list[Annotation],
    corpus_root: Path,
    feature_dir: Path,
    *,
    labels: tuple[str, ...] = MERR_LABELS,
    ablate: bool = False,
    reasoning: bool = True,
    single_turn_reasoning: bool = False,
    redrafts: int | None = None,
) -> dict:
    """Label metrics (with ``ablate``, for every modality variant) and reasoning scores.

    The reasoning is asked as the app asks it: a follow-up to the label answer
    (``prompts.reason_after_label``), with up to ``redrafts`` more drafts while it argues
    for another label (``writing.Writer.reasoning``); agreement is reported both for the
    reasoning kept and for the first draft alone. ``single_turn_reasoning`` asks it in
    one turn instead, as the paper's evaluation does (one draft).
    """
    redrafts = REASONING_REDRAFTS if redrafts is None else redrafts
    store = FeatureStore(feature_dir)
    variants = ablation_variants() if ablate else {"all": ()}
    results: list[ClipResult] = []
    scores = ReasoningScores()
    skipped: list[str] = []
    for ann in tqdm(annotations, desc="evaluate", unit="clip"):
        stored = _stored(engine, store, ann, corpus_root) if ann.label in labels else None
        if stored is None:
            skipped.append(ann.name)
            continue
        per_variant = {variant: _probabilities(engine, stored, left_out, labels) for variant, left_out in variants.items()}
        results.append(ClipResult(ann.name, ann.label, per_variant))
        if reasoning and ann.clues:
            answer = max(per_variant["all"], key=per_variant["all"].get)
            scores.add(ann, *_reasoning(engine, stored, answer, labels, single_turn_reasoning, redrafts))
    if not results:
        raise EmotionLlamaError("no clip could be evaluated")
    report: dict = {"labels": list(labels), "skipped": skipped,
                    "variants": _label_report(results, variants, labels, hard_cases(annotations))}
    if scores.clue_recall:
        report["reasoning"] = scores.report(single_turn_reasoning, redrafts)
    return report


def feature_folder(engine: Engine, data_root: Path) -> Path:
    """Where a dataset's encoded clips are kept by default: cached features belong to one set
    of encoders, so the folder is named after them."""
    return Path(data_root) / "features" / f"{engine.model.config.preset}-{engine.encoders_key}"


def _stored(engine: Engine, store: FeatureStore, ann: Annotation, corpus_root: Path):
    """The clip's features from the feature folder, encoded (through the engine's cache) if
    missing; None when the clip cannot be read."""
    if not store.has(ann.name):
        try:
            prepared, encoded = engine.prepare(ann.video_path(corpus_root), ann.subtitle)
        except (EmotionLlamaError, TypeError):
            return None
        store.write(ann.name, encoded, prepared)
    return store.read(ann.name)


def _probabilities(engine: Engine, stored, left_out: tuple[str, ...], labels: tuple[str, ...]) -> dict[str, float]:
    projected = engine.model.project(without(stored.encoded, tuple(m for m in left_out if m != "subtitle")))
    subtitle = None if "subtitle" in left_out else stored.subtitle
    return engine.label_probabilities(projected, subtitle, labels, demo_parity=False)


def _reasoning(engine: Engine, stored, answer: str, labels: tuple[str, ...], single_turn: bool, redrafts: int):
    if single_turn:
        prompt, allowed = first_turn(user_turn("reason", subtitle=stored.subtitle)), 0
    else:
        prompt, allowed = reason_after_label(answer, subtitle=stored.subtitle, labels=labels), redrafts
    sequence = engine.model.assemble(prompt, engine.model.project(stored.encoded))
    return engine.writer.reasoning_quietly(sequence, answer, labels, REASON_SETTINGS, allowed)


# The hard cases whose accuracy is reported apart: clips whose words disagree with face and
# voice, and clips without a voice or without a visible face.
HARD_CASES = ("conflict", "missing_audio", "missing_face")


def hard_cases(annotations: list[Annotation]) -> dict[str, set[str]]:
    """The names of the clips of each hard case (``HARD_CASES``)."""
    return {"conflict": {a.name for a in annotations if a.conflict},
            "missing_audio": {a.name for a in annotations if "audio" in a.missing},
            "missing_face": {a.name for a in annotations if "face" in a.missing}}


def _label_report(results: list[ClipResult], variants: dict, labels: tuple[str, ...],
                  cases: dict[str, set[str]]) -> dict:
    truth = [r.truth for r in results]
    out = {}
    for variant in variants:
        predicted = [max(r.probabilities[variant], key=r.probabilities[variant].get) for r in results]
        metrics = label_metrics(truth, predicted, labels)
        for case, names in cases.items():
            pairs = [(t, p) for r, t, p in zip(results, truth, predicted) if r.name in names]
            if pairs:
                metrics[f"{case}_accuracy"] = round(sum(t == p for t, p in pairs) / len(pairs), 4)
                metrics[f"{case}_n"] = len(pairs)
        if variant == "all":
            metrics["confusion_matrix"] = confusion_matrix(truth, predicted, labels=list(labels)).tolist()
        out[variant] = metrics
    return out


def markdown(report: dict) -> str:
    lines = ["| variant | weighted F1 | accuracy | UAR | WAR | conflict acc. | missing audio | missing face | n |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, m in report["variants"].items():
        cases = " | ".join(f"{m.get(f'{case}_accuracy', float('nan')):.4f}" for case in HARD_CASES)
        lines.append(f"| {name} | {m['weighted_f1']:.4f} | {m['accuracy']:.4f} | {m['uar']:.4f} | {m['war']:.4f} | "
                     f"{cases} | {m['n']} |")
    labels = report["labels"]
    matrix = report["variants"]["all"]["confusion_matrix"]
    lines += ["", "Confusion matrix (rows: truth, columns: prediction)", "",
              "| | " + " | ".join(labels) + " |", "|---" * (len(labels) + 1) + "|"]
    lines += [f"| {label} | " + " | ".join(str(v) for v in row) + " |" for label, row in zip(labels, matrix)]
    if "reasoning" in report:
        r = report["reasoning"]
        lines += ["", (f"Reasoning: clue recall {r['clue_recall']:.4f}, label agreement {r['label_agreement']:.4f} "
                       f"(first draft {r['first_draft_agreement']:.4f}, {r['mean_drafts']:.2f} drafts on average, "
                       f"at most {r['redrafts'] + 1}) over {r['n']} clips ({r['prompt']})")]
    return "\n".join(lines)


def load_split(data: str | Path, split: str | None) -> tuple[list[Annotation], Path]:
    root = Path(data) if Path(data).is_dir() else Path(data).parent
    annotations = load_annotations(data)
    if split:
        annotations = [a for a in annotations if a.split == split]
    if not annotations:
        raise EmotionLlamaError(f"no annotations{' in split ' + split if split else ''} under {data}")
    return annotations, root
