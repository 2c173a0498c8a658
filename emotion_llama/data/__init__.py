"""Dataset formats (MERR, MER2023) and the synthetic audio-visual emotion corpus.

``merr`` reads and writes annotations (standard library only); ``synth`` generates the
synthetic corpus (numpy, OpenCV, espeak-ng, the bundled ffmpeg) and is imported on use.
"""

from .merr import Annotation, clue_vocabulary, find_clues, load_annotations, write_annotations

__all__ = ["Annotation", "clue_vocabulary", "find_clues", "load_annotations", "write_annotations"]
