"""Dataset formats (MERR, MER2023).

``merr`` reads and writes annotations (standard library only). The synthetic corpus
generator that writes them is the top-level package ``synthetic``, outside the library.
"""

from .merr import Annotation, clue_vocabulary, find_clues, load_annotations, write_annotations

__all__ = ["Annotation", "clue_vocabulary", "find_clues", "load_annotations", "write_annotations"]
