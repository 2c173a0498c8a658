"""Length limits on every text a visitor sends: subtitle, question, candidate labels.

Characters are checked first (free), tokens next (one tokenizer call on text already
known to be short), and all of it before the clip is decoded or the model runs. The
limits themselves are settings in ``limits.py``.
"""

from __future__ import annotations

from .errors import TextTooLongError
from .limits import SETTINGS, get

ADVICE = {
    "subtitle": "keep the sentence or two the person says in the clip",
    "question": "ask a shorter question",
    "label": "use a word or two per label",
}


def check_text(kind: str, text: str | None, tokenizer=None) -> None:
    """Raise ``TextTooLongError`` when ``text`` (a ``kind`` of ``ADVICE``) is over its limits."""
    if not text:
        return
    _check_count(kind, "characters", len(text), f"max_{kind}_chars")
    if tokenizer is not None:
        tokens = len(tokenizer(text, add_special_tokens=False)["input_ids"])
        _check_count(kind, "tokens", tokens, f"max_{kind}_tokens")


def check_labels(labels: tuple[str, ...], tokenizer=None) -> None:
    """The number of candidate labels and each label's length."""
    _check_count("label list", "labels", len(labels), "max_labels", advice="keep the labels you need")
    for label in labels:
        check_text("label", label, tokenizer)


def max_label_list_chars() -> int:
    """Characters of a typed label list: the most labels at the longest length, with ", " between."""
    return get("max_labels") * (get("max_label_chars") + 2)


def check_label_list(text: str) -> None:
    """A typed, comma-separated label list, before it is split."""
    allowed = max_label_list_chars()
    if len(text) > allowed:
        raise TextTooLongError(
            f"the label list has {len(text):,} characters; at most {allowed:,} are accepted "
            f"({get('max_labels')} labels of up to {get('max_label_chars')} characters: settings "
            f"{SETTINGS['max_labels'].env} and {SETTINGS['max_label_chars'].env}); {ADVICE['label']}"
        )


def check_prompt_length(kind: str, tokens: int, context: int) -> None:
    """A whole prompt (with its longest answer) must fit the model's context."""
    if tokens > context:
        raise TextTooLongError(
            f"the {kind} would be {tokens:,} tokens long, more than the {context:,} the model reads at once; "
            "shorten the subtitle, the question or the labels"
        )


def _check_count(kind: str, unit: str, count: int, limit: str, advice: str | None = None) -> None:
    allowed = get(limit)
    if count > allowed:
        raise TextTooLongError(
            f"the {kind} has {count:,} {unit}; at most {allowed:,} are accepted "
            f"(setting {SETTINGS[limit].env}); {advice or ADVICE[kind]}"
        )
