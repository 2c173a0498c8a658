"""Make the example clips in this folder and ``examples.json``. Run from the repository root:

    python examples/make_examples.py

Eight clips come from the synthetic corpus generator (``python -m emotion_llama synth``)
with seed 3000, which no training run uses: for each wanted kind (a label and a case, see
``docs/synthetic_corpus.md``) the first clip of that kind, in the generator's order, whose
label face and voice settle without the words, and that the shipped tiny model labels
correctly both with its subtitle (as the page loads it) and without (the bare file a
visitor downloads). The model card says how often it is right on
clips it was not picked for. ``two_people.mp4`` (two drawn faces and a tone) comes from
``tests/media_factory.py`` and shows how the pipeline picks the person to follow.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from emotion_llama.data.merr import Annotation
from emotion_llama.pipeline import load_engine
from synthetic import make_sample, plan_corpus
from tests.media_factory import make_face_clip, two_faces

SEED, SEARCH = 3000, 4000
# Labels whose face alone tells them from every other (the rest come in look-alike pairs,
# see docs/synthetic_corpus.md).
UNPAIRED_FACES = ("happy", "neutral", "angry")
# (file name, label, case, words kind or None for any, task shown in the app)
WANTED = [
    ("happy.mp4", "happy", "congruent", None, "reason"),
    ("sad.mp4", "sad", "congruent", None, "emotion"),
    ("angry.mp4", "angry", "congruent", None, "reason"),
    ("surprise.mp4", "surprise", "congruent", None, "emotion"),
    ("worried_neutral_words.mp4", "worried", "neutral_words", None, "reason"),
    ("contempt.mp4", "contempt", "congruent", None, "emotion"),
    ("fear_silent.mp4", "fear", "no_audio", None, "emotion"),
    ("ironic_angry.mp4", "angry", "conflict", "ironic", "reason"),
]


def decided_without_words(ann: Annotation) -> bool:
    """Whether face and voice alone settle the label, as they must for a visitor who uploads
    the bare file: without a voice, the face must show its label's tell (fear and surprise,
    say, share every other action unit)."""
    return "audio" not in ann.missing or bool(ann.meta.get("face", {}).get("tell")) or ann.label in UNPAIRED_FACES


def main() -> None:
    engine = load_engine(device="cpu")
    if "warning" in engine.info:
        raise SystemExit("the trained tiny weights are missing: examples are picked with them")
    manifest = []
    with tempfile.TemporaryDirectory() as tmp:
        for sub in ("videos", ".synth-tmp"):
            (Path(tmp) / sub).mkdir()
        plan = plan_corpus(SEARCH, SEED, tmp, split="test")
        for name, label, case, words_kind, task in WANTED:
            tried = 0
            for sample in (t for t in plan if t.label == label and t.case == case):
                record = make_sample(sample)["annotation"]
                ann = Annotation.from_dict(record)
                if words_kind and ann.meta.get("words_kind") != words_kind:
                    continue
                if not decided_without_words(ann):
                    continue
                tried += 1
                if all(engine.analyze(Path(tmp) / ann.video, words).label == label for words in (ann.subtitle, None)):
                    break
            else:
                raise SystemExit(f"no {label}/{case} clip among the first {SEARCH} that the model gets right")
            shutil.copyfile(Path(tmp) / ann.video, HERE / name)
            manifest.append({"clip": name, "subtitle": ann.subtitle or "", "task": task, "question": "",
                             "label": label, "case": case, "source": f"synth seed {SEED}, clip {sample.index}",
                             "candidates_tried": tried,
                             "shows": ann.coarse_caption})
            print(f"{name}: clip {sample.index} ({tried} tried), {ann.coarse_caption}")
    make_face_clip(HERE / "two_people.mp4", two_faces(), seconds=3.0, fps=15)
    manifest.append({"clip": "two_people.mp4", "subtitle": "", "task": "free",
                     "question": "How many people are in the video, and who is speaking?", "label": None,
                     "case": "two faces", "source": "tests/media_factory.py", "candidates_tried": None,
                     "shows": "a large drawn face and a smaller second one, with a tone"})
    (HERE / "examples.json").write_text(json.dumps(manifest, indent=1) + "\n")


if __name__ == "__main__":
    main()
