"""Annotation formats: MERR-style JSON, MER2023-style label CSVs, the reference's list file.

One record type, :class:`Annotation`, read from and written to the formats that the
training and evaluation commands accept, so a real dataset and the synthetic corpus go
through the same code:

``annotations.json``
    Our full format: a dict keyed by sample name, each value the fields of
    :class:`Annotation` (``name``, ``label``, ``subtitle``, ``coarse_caption``,
    ``fine_reasoning``, ``clues``, ``conflict``, ``missing``, ``modalities``, ``split``,
    ``video``, ``meta``).
``MERR_coarse_grained.json`` / ``MERR_fine_grained.json``
    The public MERR release's shape: dicts keyed by name whose values carry ``caption``
    (coarse) or ``smp_reason_caption`` (fine). The public files carry no label field of
    their own (the label comes from a list file); we add ``pseu_emotion`` and read it back
    when present.
``label.csv`` (``name,discrete``) and ``subtitle.csv`` (``name,english``)
    MER2023's label and transcription tables (MER2023 calls the transcription
    ``transcription*.csv`` with ``name,chinese,english``; the reference training code
    reads a ``sentence`` column: all three spellings are read).
``{split}.txt``
    The reference code's list file: ``name frame_count label`` per line.

The clue vocabulary (:func:`clue_vocabulary`) is the set of canonical phrases the
synthetic corpus uses for facial action units, vocal cues and the words; reasoning texts
contain them verbatim, so :func:`find_clues` can score which true clues a generated
explanation mentions.

This module imports only the standard library (and the plain-data ``vocab``).
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ..errors import EmotionLlamaError

MODALITY_KEYS: tuple[str, ...] = ("face", "voice", "words")

# Spellings seen in public label files -> our label names.
LABEL_ALIASES: dict[str, str] = {
    "happiness": "happy",
    "joy": "happy",
    "sadness": "sad",
    "anger": "angry",
    "worry": "worried",
    "surprised": "surprise",
    "fearful": "fear",
    "afraid": "fear",
    "contemptuous": "contempt",
    "doubtful": "doubt",
    "neu": "neutral",
    "neutrality": "neutral",
}

# ----------------------------------------------------------------------------- clue vocabulary

# Facial action units, by FACS number, with the canonical (FACS-manual) name.
AU_CLUES: dict[str, str] = {
    "AU1": "inner brow raiser",
    "AU2": "outer brow raiser",
    "AU2_one": "one-sided brow raise",
    "AU4": "brow lowerer",
    "AU4_one": "one-sided brow lowerer",
    "AU5": "upper lid raiser",
    "AU6": "cheek raiser",
    "AU7": "lid tightener",
    "AU9": "nose wrinkler",
    "AU12": "lip corner puller",
    "AU12_one": "one-sided lip corner puller",
    "AU14_one": "one-sided dimpler",
    "AU15": "lip corner depressor",
    "AU17": "chin raiser",
    "AU20": "lip stretcher",
    "AU23": "lip tightener",
    "AU24": "lip pressor",
    "AU25": "lips part",
    "AU26": "jaw drop",
    "AU41": "lid droop",
    "AU53": "head up",
}
FACE_MISSING_CLUES: dict[str, str] = {"turned_away": "face turned away", "occluded": "face covered"}

VOICE_CLUES: tuple[str, ...] = (
    "loud voice",
    "soft voice",
    "high pitch",
    "low pitch",
    "moderate pitch",
    "wide pitch range",
    "narrow pitch range",
    "fast speech rate",
    "slow speech rate",
    "even pace",
    "harsh voice",
    "rough voice",
    "trembling voice",
    "breathy voice",
    "whispering voice",
    "muffled voice",
    "bright tone",
    "steady tone",
    "pauses between words",
    "no audible speech",
)

# What the words say, by the emotion their literal meaning expresses.
WORDS_CLUES: dict[str, str] = {
    "happy": "words of joy",
    "sad": "words of sadness",
    "angry": "words of anger",
    "worried": "words of worry",
    "surprise": "words of astonishment",
    "fear": "words of fear",
    "contempt": "dismissive words",
    "doubt": "words of disbelief",
    "neutral": "neutral statement",
    "ironic": "ironic remark",
    "ambiguous": "ambiguous statement",
}


def clue_vocabulary() -> dict[str, tuple[str, ...]]:
    """The canonical clue phrases per modality (``face``, ``voice``, ``words``).

    Every clue listed in an annotation's ``clues`` is one of these strings, and the
    synthetic reasoning texts contain each true clue verbatim.
    """
    return {
        "face": tuple(dict.fromkeys(list(AU_CLUES.values()) + list(FACE_MISSING_CLUES.values()))),
        "voice": VOICE_CLUES,
        "words": tuple(dict.fromkeys(WORDS_CLUES.values())),
    }


def find_clues(text: str, vocabulary: dict[str, Iterable[str]] | None = None) -> dict[str, list[str]]:
    """Which canonical clue phrases occur in ``text`` (case-insensitive, whole words).

    Where one phrase sits inside a longer one at the same place (``"brow lowerer"`` in
    ``"one-sided brow lowerer"``), only the longer one counts.
    """
    vocab = vocabulary if vocabulary is not None else clue_vocabulary()
    low = text.lower()
    out: dict[str, list[str]] = {}
    all_phrases = sorted({p for ps in vocab.values() for p in ps}, key=len, reverse=True)
    taken: list[tuple[int, int]] = []
    hits: set[str] = set()
    for phrase in all_phrases:
        for m in re.finditer(r"(?<![\w-])" + re.escape(phrase.lower()) + r"(?![\w-])", low):
            span = (m.start(), m.end())
            if any(s <= span[0] and span[1] <= e for s, e in taken):
                continue
            taken.append(span)
            hits.add(phrase)
    for modality, phrases in vocab.items():
        out[modality] = [p for p in phrases if p in hits]
    return out


def normalise_label(label: str) -> str:
    """``"Happiness "`` -> ``"happy"``; unknown spellings come back lower-cased."""
    key = str(label).strip().lower()
    return LABEL_ALIASES.get(key, key)


# ----------------------------------------------------------------------------- the record


@dataclass
class Annotation:
    """One annotated clip.

    ``modalities`` says what each modality shows (an emotion label, or ``None`` when the
    modality is missing); ``missing`` lists the missing ones (``"face"``, ``"audio"``).
    ``clues`` holds canonical phrases from :func:`clue_vocabulary`. ``video`` is a path
    relative to the annotation file's folder (or absolute); ``meta`` holds anything else
    (synthetic generation details, frame counts, the MERR extra fields).
    """

    name: str
    label: str | None = None
    subtitle: str | None = None
    coarse_caption: str | None = None
    fine_reasoning: str | None = None
    clues: dict[str, list[str]] = field(default_factory=dict)
    conflict: bool = False
    missing: list[str] = field(default_factory=list)
    modalities: dict[str, str | None] = field(default_factory=dict)
    split: str | None = None
    video: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], name: str | None = None) -> Annotation:
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known}
        extra = {k: v for k, v in data.items() if k not in known}
        kwargs.setdefault("name", name)
        if kwargs.get("name") is None:
            raise AnnotationFormatError("an annotation has no name")
        # MERR public field names
        if kwargs.get("coarse_caption") is None and isinstance(extra.get("caption"), str):
            kwargs["coarse_caption"] = extra.pop("caption")
        if kwargs.get("fine_reasoning") is None and isinstance(extra.get("smp_reason_caption"), str):
            kwargs["fine_reasoning"] = extra.pop("smp_reason_caption")
        if kwargs.get("label") is None:
            for key in ("pseu_emotion", "emotion", "discrete"):
                if isinstance(extra.get(key), str):
                    kwargs["label"] = extra.pop(key)
                    break
        if kwargs.get("subtitle") is None:
            for key in ("english", "sentence", "text", "transcript"):
                if isinstance(extra.get(key), str):
                    kwargs["subtitle"] = extra.pop(key)
                    break
        if kwargs.get("label") is not None:
            kwargs["label"] = normalise_label(kwargs["label"])
        meta = dict(kwargs.get("meta") or {})
        meta.update(extra)
        kwargs["meta"] = meta
        kwargs["clues"] = {k: list(v) for k, v in (kwargs.get("clues") or {}).items()}
        kwargs["missing"] = list(kwargs.get("missing") or [])
        kwargs["modalities"] = dict(kwargs.get("modalities") or {})
        kwargs["name"] = str(kwargs["name"])
        return cls(**kwargs)

    def video_path(self, root: str | Path) -> Path | None:
        """The clip's path, resolved against the annotation folder ``root``."""
        if not self.video:
            return None
        p = Path(self.video)
        return p if p.is_absolute() else Path(root) / p


class AnnotationFormatError(EmotionLlamaError):
    """An annotation file is missing, unreadable or not in a format we know."""


# ----------------------------------------------------------------------------- writing

FORMATS = ("json", "merr", "csv", "lists")


def write_annotations(
    annotations: Iterable[Annotation],
    out_dir: str | Path,
    formats: Iterable[str] = FORMATS,
    json_name: str = "annotations.json",
) -> dict[str, Path]:
    """Write ``annotations`` into ``out_dir`` in the requested formats.

    ``json`` -> ``annotations.json`` (full records); ``merr`` -> ``MERR_coarse_grained.json``
    and ``MERR_fine_grained.json`` (the public release's field names, plus ``pseu_emotion``);
    ``csv`` -> ``label.csv`` (``name,discrete``) and ``subtitle.csv`` (``name,english``);
    ``lists`` -> ``{split}.txt`` files with ``name frame_count label`` lines (frame count
    from ``meta["n_frames"]``, 0 if unknown). Returns the written paths by kind.
    Output is deterministic: records keep their given order, JSON keys are not re-sorted.
    """
    anns = list(annotations)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    formats = set(formats)
    unknown = formats - set(FORMATS)
    if unknown:
        raise ValueError(f"unknown annotation formats: {sorted(unknown)}; choose from {FORMATS}")
    names = [a.name for a in anns]
    if len(set(names)) != len(names):
        raise AnnotationFormatError("duplicate sample names in annotations")
    written: dict[str, Path] = {}
    if "json" in formats:
        p = out / json_name
        _write_json(p, {a.name: a.to_dict() for a in anns})
        written["json"] = p
    if "merr" in formats:
        coarse = {a.name: {"caption": a.coarse_caption or "", "pseu_emotion": a.label} for a in anns}
        fine = {
            a.name: {"smp_reason_caption": a.fine_reasoning or "", "pseu_emotion": a.label, "text": a.subtitle or ""}
            for a in anns
        }
        _write_json(out / "MERR_coarse_grained.json", coarse)
        _write_json(out / "MERR_fine_grained.json", fine)
        written["merr_coarse"] = out / "MERR_coarse_grained.json"
        written["merr_fine"] = out / "MERR_fine_grained.json"
    if "csv" in formats:
        _write_csv(out / "label.csv", ["name", "discrete"], [[a.name, a.label or ""] for a in anns])
        _write_csv(out / "subtitle.csv", ["name", "english"], [[a.name, a.subtitle or ""] for a in anns])
        written["label_csv"] = out / "label.csv"
        written["subtitle_csv"] = out / "subtitle.csv"
    if "lists" in formats:
        by_split: dict[str, list[Annotation]] = {}
        for a in anns:
            by_split.setdefault(a.split or "all", []).append(a)
        for split, items in by_split.items():
            p = out / f"{split}.txt"
            with open(p, "w", encoding="utf-8") as f:
                for a in items:
                    f.write(f"{a.name} {int(a.meta.get('n_frames', 0))} {a.label or 'unknown'}\n")
            written[f"list_{split}"] = p
    return written


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, ensure_ascii=False, indent=1)
        f.write("\n")
    tmp.replace(path)


# ----------------------------------------------------------------------------- reading

_VIDEO_EXTS = (".mp4", ".avi", ".mkv", ".mov", ".webm")
_VIDEO_DIRS = ("videos", "video", "clips", ".")


def load_annotations(source: str | Path, split: str | None = None) -> list[Annotation]:
    """Read annotations from a folder or a file, in any of the formats above.

    A folder is read in this order of preference: ``annotations.json``; else the MERR
    JSON files (``MERR_fine_grained.json`` and/or ``MERR_coarse_grained.json``) joined
    with a label table; else a label CSV (``label.csv``, ``*label*.csv``) joined with a
    subtitle CSV (``subtitle.csv``, ``transcription*.csv``); else ``*.txt`` list files.
    A file is read by its kind (``.json``, ``.csv``, ``.txt``); subtitles from a sibling
    ``subtitle.csv`` are joined in when the file itself has none. ``video`` is filled in
    from ``videos/NAME.mp4`` (or ``video/``, ``clips/``, the folder itself, any usual
    extension) when the file does not name it. ``split`` keeps only that split.
    Records come back in file order.
    """
    src = Path(source)
    if not src.exists():
        raise AnnotationFormatError(f"annotation path not found: {src}")
    if src.is_dir():
        anns = _load_dir(src)
        root = src
    else:
        anns = _load_file(src)
        root = src.parent
        if any(a.subtitle is None for a in anns):
            _join_subtitles(anns, root)
    for a in anns:
        if a.video is None:
            found = _find_video(root, a.name)
            if found is not None:
                a.video = found
    if split is not None:
        anns = [a for a in anns if a.split == split]
    return anns


def _load_dir(d: Path) -> list[Annotation]:
    if (d / "annotations.json").is_file():
        return _load_json(d / "annotations.json")
    fine, coarse = d / "MERR_fine_grained.json", d / "MERR_coarse_grained.json"
    if fine.is_file() or coarse.is_file():
        anns = _load_json(fine) if fine.is_file() else _load_json(coarse)
        if fine.is_file() and coarse.is_file():
            by_name = {a.name: a for a in _load_json(coarse)}
            for a in anns:
                c = by_name.get(a.name)
                if c is not None and a.coarse_caption is None:
                    a.coarse_caption = c.coarse_caption
        _join_labels(anns, d)
        _join_subtitles(anns, d)
        return anns
    label_csv = _first_existing(d, ["label.csv"], ["*label*.csv"])
    if label_csv is not None:
        anns = _load_csv(label_csv)
        _join_subtitles(anns, d)
        return anns
    lists = sorted(d.glob("*.txt"))
    if lists:
        anns = []
        for p in lists:
            anns.extend(_load_list(p))
        _join_subtitles(anns, d)
        return anns
    raise AnnotationFormatError(
        f"no annotations found in {d}: expected annotations.json, MERR_*_grained.json, label.csv or NAME.txt lists"
    )


def _load_file(p: Path) -> list[Annotation]:
    suffix = p.suffix.lower()
    if suffix == ".json":
        return _load_json(p)
    if suffix == ".csv":
        return _load_csv(p)
    if suffix == ".txt":
        return _load_list(p)
    raise AnnotationFormatError(f"unknown annotation file type: {p.name} (expected .json, .csv or .txt)")


def _load_json(p: Path) -> list[Annotation]:
    try:
        with open(p, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        raise AnnotationFormatError(f"cannot read {p}: {e}") from e
    if isinstance(data, list):
        items = [(str(d.get("name")), d) for d in data if isinstance(d, dict)]
    elif isinstance(data, dict):
        items = [(str(k), v) for k, v in data.items()]
    else:
        raise AnnotationFormatError(f"{p}: expected a JSON object keyed by sample name")
    anns = []
    for name, value in items:
        if not isinstance(value, dict):
            raise AnnotationFormatError(f"{p}: the entry for {name!r} is not an object")
        value = dict(value)
        value.setdefault("name", name)
        anns.append(Annotation.from_dict(value))
    return anns


def _read_csv(p: Path) -> list[dict[str, str]]:
    try:
        with open(p, newline="", encoding="utf-8-sig") as f:
            return [dict(r) for r in csv.DictReader(f)]
    except (OSError, csv.Error, UnicodeDecodeError) as e:
        raise AnnotationFormatError(f"cannot read {p}: {e}") from e


def _load_csv(p: Path) -> list[Annotation]:
    rows = _read_csv(p)
    anns = []
    for r in rows:
        name = r.get("name") or r.get("video") or r.get("filename")
        if not name:
            raise AnnotationFormatError(f"{p}: a row has no 'name' column")
        label = r.get("discrete") or r.get("label") or r.get("emotion")
        subtitle = r.get("english") or r.get("sentence") or r.get("subtitle")
        meta = {
            k: v
            for k, v in r.items()
            if k not in ("name", "discrete", "label", "emotion", "english", "sentence", "subtitle")
        }
        anns.append(
            Annotation(
                name=str(name),
                label=normalise_label(label) if label else None,
                subtitle=subtitle if subtitle else None,
                meta=meta,
            )
        )
    return anns


def _load_list(p: Path) -> list[Annotation]:
    anns = []
    split = p.stem
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise AnnotationFormatError(f"cannot read {p}: {e}") from e
    for i, line in enumerate(lines, 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) < 3:
            raise AnnotationFormatError(f"{p}:{i}: expected 'name frame_count label'")
        meta: dict[str, Any] = {}
        try:
            meta["n_frames"] = int(parts[1])
        except ValueError:
            pass
        anns.append(Annotation(name=parts[0], label=normalise_label(parts[2]), split=split, meta=meta))
    return anns


def _first_existing(d: Path, names: list[str], globs: list[str]) -> Path | None:
    for n in names:
        if (d / n).is_file():
            return d / n
    for g in globs:
        hits = sorted(d.glob(g))
        if hits:
            return hits[0]
    return None


def _join_labels(anns: list[Annotation], d: Path) -> None:
    if all(a.label is not None for a in anns):
        return
    labels: dict[str, str] = {}
    label_csv = _first_existing(d, ["label.csv"], ["*label*.csv"])
    if label_csv is not None:
        for a in _load_csv(label_csv):
            if a.label:
                labels[a.name] = a.label
    else:
        for p in sorted(d.glob("*.txt")):
            try:
                for a in _load_list(p):
                    labels[a.name] = a.label or ""
            except AnnotationFormatError:
                continue
    for a in anns:
        if a.label is None and labels.get(a.name):
            a.label = labels[a.name]


def _join_subtitles(anns: list[Annotation], d: Path) -> None:
    if all(a.subtitle is not None for a in anns):
        return
    sub_csv = _first_existing(d, ["subtitle.csv"], ["transcription*.csv", "*subtitle*.csv"])
    if sub_csv is None:
        return
    subs = {}
    for r in _read_csv(sub_csv):
        text = r.get("english") or r.get("sentence") or r.get("subtitle") or r.get("text")
        if r.get("name") and text:
            subs[r["name"]] = text
    for a in anns:
        if a.subtitle is None and a.name in subs:
            a.subtitle = subs[a.name]


def _find_video(root: Path, name: str) -> str | None:
    for sub in _VIDEO_DIRS:
        for ext in _VIDEO_EXTS:
            p = root / sub / f"{name}{ext}"
            if p.is_file():
                return str(p.relative_to(root)) if sub != "." else p.name
    return None
