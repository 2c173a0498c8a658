"""Which pronouns a text uses for the person it describes (quoted words left out: a
subtitle may speak of someone else)."""

from __future__ import annotations

import re

PRONOUN_SETS = {
    "male": ("he", "him", "his", "himself"),
    "female": ("she", "her", "hers", "herself"),
    # "they" alone is left out: the reasoning also says it of the words.
    "neutral": ("them", "their", "theirs", "themselves"),
}
_SET_OF = {word: name for name, words in PRONOUN_SETS.items() for word in words}


def pronoun_sets(text: str) -> set[str]:
    """The pronoun sets (``male``, ``female``, ``neutral``) ``text`` uses outside quotes;
    more than one means it refers to the person with two different pronouns."""
    unquoted = re.sub(r'"[^"]*"', " ", text)
    return {_SET_OF[word] for word in re.findall(r"[a-z]+", unquoted.lower()) if word in _SET_OF}
