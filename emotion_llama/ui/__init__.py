"""The web demo's Python side: form parsing, rendering, upload hygiene and the handlers.

``app.py`` lays out the page and wires events to ``handlers``; everything here runs
without a browser.
"""

from .forms import generation_from_form, labels_from_form, options_from_form
from .render import engine_banner, face_strip, subtitle_markdown
from .uploads import UploadStore

__all__ = ["UploadStore", "engine_banner", "face_strip", "generation_from_form", "labels_from_form",
           "options_from_form", "subtitle_markdown"]
