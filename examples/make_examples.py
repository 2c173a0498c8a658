"""Make the example clips in this folder: drawn faces and a tone, encoded with the ffmpeg
binary bundled in imageio-ffmpeg. Run from the repository root:

    python examples/make_examples.py
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from tests.media_factory import expressive_face, make_face_clip, one_face, two_faces

CLIPS = {
    "smile.mp4": expressive_face(peak_start=1.0, peak_end=2.2),
    "still_face.mp4": one_face(),
    "two_people.mp4": two_faces(),
}


def main() -> None:
    for name, script in CLIPS.items():
        path = make_face_clip(HERE / name, script, seconds=3.0, fps=15)
        print(f"{path.name}: {path.stat().st_size / 1024:.0f} KB")


if __name__ == "__main__":
    main()
