"""The synthetic audio-visual emotion corpus: rendered faces that speak, in MERR's format.

``generate_corpus(out_dir, n, seed)`` writes ``n`` short clips (H.264 + AAC ``.mp4``,
256x256, 25 fps, 2-4 s) of a drawn face speaking a subtitle with emotional prosody, and
their annotations (see ``emotion_llama/data/merr.py``), for the nine MERR labels. It exists so that the
``tiny`` preset can be trained and tested here, where no real dataset or official weight
can be downloaded.

Design (details in ``docs/synthetic_corpus.md``):

* **Label rule.** The label is the emotion that the face and the voice show. They always
  agree when both are present. The words agree with them in most clips, but not all:
* **Cases**, scheduled in shuffled blocks of 20 clips so that every 20 consecutive clips
  hold exactly: 12 *congruent* (words express the label), 3 *neutral words* (neutral or
  ambiguous words over an emotional face and voice), 3 *conflict* (the words express
  another emotion, or are ironic: literally positive words over a negative face and
  voice; the label still follows face and voice), 1 *missing audio* (a silent track or
  no audio stream at all; the words are then congruent so the label is recoverable),
  1 *missing face* (head turned away, or face covered; words congruent).
  That is 60 / 15 / 15 / 5 / 5 per cent.
* **Labels** are balanced: every block of 9 consecutive clips holds each label once.
* **Splits** (when ``split`` is None): every block of 10 holds 8 train, 1 val, 1 test.
* **Fusion is necessary by construction**: the face confuses fear/surprise,
  sad/worried and contempt/doubt (shared action units, a distinguishing "tell" in only a
  third of clips); the voice confuses happy/surprise, sad/contempt, fear/worried and
  neutral/doubt (shared prosody groups); the words are off in 30 % of clips. Face and
  voice together separate all nine.

Every clip is a pure function of ``(seed, index)``: the output does not depend on the
number of worker processes.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from emotion_llama.data.merr import FACE_MISSING_CLUES, Annotation, write_annotations
from emotion_llama.errors import EmotionLlamaError
from emotion_llama.vocab import MERR_LABELS

from . import face, text, voice

SYNTH_VERSION = 2  # 2: annotations carry meta['without_subtitle'] (the clips are as in 1)
FPS = 25
RENDER_EVERY = 2  # render every 2nd frame (12.5 fps of drawing), each shown twice
MIN_SECONDS, MAX_SECONDS = 2.0, 4.0
MAX_SPEECH_SECONDS = 3.4
X264_PARAMS = "ref=1:subme=2:me=dia:trellis=0"
# ffmpeg's threaded pipeline now and then deadlocks on a clip (once in 3,000 with the
# ffmpeg 9 of imageio-ffmpeg 0.8.1): a clip takes well under a second, so one that takes
# ENCODE_TIMEOUT_S is killed and encoded again.
ENCODE_TIMEOUT_S = 60
ENCODE_ATTEMPTS = 3

CASES = ("congruent", "neutral_words", "conflict", "no_audio", "no_face")
CASE_BLOCK: tuple[str, ...] = ("congruent",) * 12 + ("neutral_words",) * 3 + ("conflict",) * 3 + ("no_audio", "no_face")
SPLIT_BLOCK: tuple[str, ...] = ("train",) * 8 + ("val", "test")
IRONY_TARGETS = ("angry", "contempt", "sad", "doubt", "worried")
IRONY_PROBABILITY = 0.4
NON_NEUTRAL = tuple(e for e in MERR_LABELS if e != "neutral")


class SynthError(EmotionLlamaError):
    """The synthetic corpus could not be generated (a tool is missing or failed)."""


@dataclass(frozen=True)
class SampleTask:
    index: int
    name: str
    seed: int
    label: str
    case: str
    split: str
    out_dir: str


@dataclass
class CorpusSummary:
    out_dir: str
    n: int
    seed: int
    workers: int
    seconds: float
    clips_per_minute: float
    label_counts: dict[str, int]
    case_counts: dict[str, int]
    split_counts: dict[str, int]
    total_bytes: int
    mean_clip_bytes: float
    mean_duration: float
    files: dict[str, str] = field(default_factory=dict)
    version: int = SYNTH_VERSION

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def sample_name(seed: int, index: int) -> str:
    return f"synth_s{seed}_{index:06d}"


def _block_perm(seed: int, stream: int, block: int, items: tuple[str, ...]) -> list[str]:
    rng = np.random.default_rng([seed, stream, block])
    return [items[i] for i in rng.permutation(len(items))]


def plan_corpus(n: int, seed: int, out_dir: str | Path = ".", split: str | None = None) -> list[SampleTask]:
    """The label, case and split of each of the ``n`` clips (cheap; no rendering)."""
    if n < 0:
        raise ValueError("n must be >= 0")
    tasks = []
    for i in range(n):
        label = _block_perm(seed, 1, i // len(MERR_LABELS), MERR_LABELS)[i % len(MERR_LABELS)]
        case = _block_perm(seed, 2, i // len(CASE_BLOCK), CASE_BLOCK)[i % len(CASE_BLOCK)]
        sp = split or _block_perm(seed, 3, i // len(SPLIT_BLOCK), SPLIT_BLOCK)[i % len(SPLIT_BLOCK)]
        tasks.append(SampleTask(i, sample_name(seed, i), int(seed), label, case, sp, str(out_dir)))
    return tasks


# ----------------------------------------------------------------------------- one clip


def _ffmpeg() -> str:
    try:
        import imageio_ffmpeg
    except ImportError as e:  # pragma: no cover - a declared dependency
        raise SynthError("imageio-ffmpeg is needed to write clips (pip install imageio-ffmpeg)") from e
    return imageio_ffmpeg.get_ffmpeg_exe()


def encode_clip(path: Path, frames: np.ndarray, n_frames: int, wav: Path | None, duration: float) -> None:
    """Pipe raw RGB frames (rendered at FPS / RENDER_EVERY) and a WAV to ffmpeg -> mp4 at FPS."""
    h, w = frames.shape[1:3]
    cmd = [_ffmpeg(), "-hide_banner", "-loglevel", "error", "-y", "-threads", "1"]
    render_fps = f"{FPS / RENDER_EVERY:g}"
    cmd += ["-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}", "-r", render_fps, "-i", "pipe:0"]
    if wav is not None:
        cmd += ["-i", str(wav)]
    cmd += ["-map", "0:v:0"]
    if wav is not None:
        cmd += ["-map", "1:a:0"]
    # ffmpeg repeats each rendered frame to reach FPS (cheaper than piping duplicates)
    cmd += ["-r", str(FPS), "-c:v", "libx264", "-preset", "veryfast", "-x264-params", X264_PARAMS]
    cmd += ["-crf", "28", "-pix_fmt", "yuv420p", "-g", "50", "-threads", "1"]
    if wav is not None:
        cmd += ["-c:a", "aac", "-aac_coder", "fast", "-b:a", "32k", "-ar", "16000", "-ac", "1"]
    cmd += ["-t", f"{duration:.3f}", "-map_metadata", "-1", "-fflags", "+bitexact", "-flags:v", "+bitexact"]
    cmd += ["-flags:a", "+bitexact", "-movflags", "+faststart", "-f", "mp4", str(path)]
    raw = memoryview(np.ascontiguousarray(frames)).cast("B")
    for _ in range(ENCODE_ATTEMPTS):
        try:
            return _run_ffmpeg(cmd, raw, path)
        except subprocess.TimeoutExpired:
            continue
    raise SynthError(f"ffmpeg hung writing {path.name} {ENCODE_ATTEMPTS} times (over {ENCODE_TIMEOUT_S} s each)")


def _run_ffmpeg(cmd: list[str], raw: memoryview, path: Path) -> None:
    """One ffmpeg run fed ``raw`` on stdin, killed after ``ENCODE_TIMEOUT_S``.

    stderr goes to a file, not a pipe, so that it cannot fill up and block ffmpeg.
    """
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=err)
        try:
            proc.communicate(raw, timeout=ENCODE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise
        if proc.returncode != 0:
            err.seek(0)
            msg = err.read().decode(errors="replace")[-500:]
            raise SynthError(f"ffmpeg failed writing {path.name}: {msg}")


def _choose_words(rng: np.random.Generator, label: str, case: str) -> tuple[str, str]:
    """(words_kind, words_emotion): what kind of sentence, and the emotion it literally says."""
    if case == "conflict":
        if label in IRONY_TARGETS and rng.random() < IRONY_PROBABILITY:
            return "ironic", "happy"
        others = [e for e in NON_NEUTRAL if e != label]
        return "emotion", others[int(rng.integers(len(others)))]
    if case == "neutral_words":
        return ("neutral" if rng.random() < 0.6 else "ambiguous"), "neutral"
    if label == "neutral":
        return ("neutral" if rng.random() < 0.85 else "ambiguous"), "neutral"
    return "emotion", label


def make_sample(task: SampleTask) -> dict[str, Any]:
    """Render, voice and encode one clip; return its annotation dict and stats."""
    t0 = time.perf_counter()
    rng = np.random.default_rng([task.seed, 0x5E7D, task.index])
    label, case = task.label, task.case
    face_vis = "visible"
    audio_mode = "present"
    if case == "no_face":
        face_vis = "turned_away" if rng.random() < 0.5 else "occluded"
    if case == "no_audio":
        audio_mode = "silent" if rng.random() < 0.5 else "absent"
    words_kind, words_emotion = _choose_words(rng, label, case)

    # voice and words
    vplan = voice.plan_voice(rng, label)
    bank = text.bank_for(words_kind, words_emotion)
    subtitle = text.pick_sentence(rng, bank, voice.max_words(vplan, MAX_SPEECH_SECONDS - 0.3))
    speech = voice.synthesize(vplan, subtitle)
    seconds = len(speech) / voice.SPEECH_RATE
    if seconds > MAX_SPEECH_SECONDS:
        speech = voice.synthesize(vplan, subtitle, rate_scale=seconds / (MAX_SPEECH_SECONDS - 0.1))
        seconds = len(speech) / voice.SPEECH_RATE
    speech = voice.apply_effects(rng, vplan, speech)
    lead = float(rng.uniform(0.15, 0.45))
    tail = float(rng.uniform(0.2, 0.45))
    duration = float(np.clip(lead + seconds + tail, MIN_SECONDS, MAX_SECONDS))
    n_frames = int(round(duration * FPS))
    duration = n_frames / FPS
    speech = speech[: max(0, int((duration - lead) * voice.SPEECH_RATE))]
    times = np.arange(0, n_frames, RENDER_EVERY) / FPS
    mouth = voice.mouth_openness(speech, lead, times)

    # face
    ident = face.sample_identity(rng)
    fplan = face.plan_face(rng, label, duration, visibility=face_vis)
    clip = face.render_clip(rng, ident, fplan, times, mouth, duration)

    # sound track
    track = None
    if audio_mode == "present":
        track = voice.mix_track(rng, vplan, speech, lead, duration)
    elif audio_mode == "silent":
        track = np.zeros(int(round(duration * voice.SPEECH_RATE)), np.float32)

    out = Path(task.out_dir)
    video_rel = f"videos/{task.name}.mp4"
    video_path = out / video_rel
    tmp_dir = out / ".synth-tmp"
    wav = None
    if track is not None:
        wav = tmp_dir / f"{task.name}.wav"
        voice.write_wav(str(wav), track)
    part = video_path.with_name(video_path.name + ".part")
    try:
        encode_clip(part, clip.frames, n_frames, wav, duration)
        part.replace(video_path)
    finally:
        if wav is not None and wav.exists():
            wav.unlink()
        if part.exists():
            part.unlink()

    # annotation
    face_aus = fplan.clue_aus() if face_vis == "visible" else []
    voice_present = audio_mode == "present"
    face_pair = next((p for p in face.FACE_PAIRS if label in p), None)
    info = {
        "label": label,
        "gender": vplan.gender,
        "face_visibility": face_vis,
        "face_aus": face_aus,
        "subtle": fplan.intensity < 0.6,
        "tell": fplan.tell,
        "face_pair": face_pair,
        "voice_present": voice_present,
        "voice_clues": vplan.clues(),
        "voice_group": vplan.group,
        "audio_mode": audio_mode,
        "subtitle": subtitle,
        "words_kind": words_kind,
        "words_emotion": words_emotion,
        "words_clue": text.words_clue(words_kind, words_emotion),
        "conflict": case == "conflict",
    }
    text_seed = [task.seed, 0x7E47, task.index]
    text_rng = np.random.default_rng(text_seed)
    clues = {
        "face": [face.AU_NAMES[a] for a in face_aus] if face_vis == "visible" else [FACE_MISSING_CLUES[face_vis]],
        "voice": vplan.clues() if voice_present else ["no audible speech"],
        "words": [info["words_clue"]],
    }
    missing = (["face"] if face_vis != "visible" else []) + (["audio"] if not voice_present else [])
    ann = Annotation(
        name=task.name,
        label=label,
        subtitle=subtitle,
        coarse_caption=text.coarse_caption(info),
        fine_reasoning=text.fine_reasoning(text_rng, info),
        clues=clues,
        conflict=case == "conflict",
        missing=missing,
        modalities={
            "face": label if face_vis == "visible" else None,
            "voice": label if voice_present else None,
            "words": words_emotion,
        },
        split=task.split,
        video=video_rel,
        meta={
            "source": "synthetic",
            "synth_version": SYNTH_VERSION,
            "seed": task.seed,
            "index": task.index,
            "case": case,
            # The caption and reasoning as they read when the clip is shown without its
            # subtitle (training asks reasoning questions that way too; see emotion_llama/training/tuning.py).
            "without_subtitle": {
                "coarse_caption": text.coarse_caption(info, words=False),
                "fine_reasoning": text.fine_reasoning(np.random.default_rng(text_seed), info, words=False),
            },
            "words_kind": words_kind,
            "face_visibility": face_vis,
            "audio_mode": audio_mode,
            "n_frames": n_frames,
            "fps": FPS,
            "duration": round(duration, 3),
            "speech_start": round(lead, 3),
            "speech_end": round(lead + len(speech) / voice.SPEECH_RATE, 3),
            "face_box": list(clip.face_box),
            "face": {
                "intensity": round(fplan.intensity, 3),
                "tell": fplan.tell,
                "apex": {k: round(v, 3) for k, v in sorted(fplan.apex.items())},
                "onset": round(fplan.onset, 3),
                "apex_start": round(fplan.apex_start, 3),
                "apex_end": round(fplan.apex_end, 3),
                "prop": fplan.prop,
                "glasses": ident.glasses,
                "hair": ident.hair_style,
            },
            "voice": {
                "group": vplan.group,
                "gender": vplan.gender,
                "espeak_voice": vplan.voice,
                "pitch": vplan.pitch,
                "range": vplan.pitch_range,
                "rate": vplan.rate,
                "gap": vplan.gap,
                "gain_db": round(vplan.gain_db, 2),
                "effects": list(vplan.effects),
                "snr_db": round(vplan.snr_db, 1) if voice_present else None,
                "noise": vplan.noise if voice_present else None,
            },
        },
    )
    return {
        "index": task.index,
        "annotation": ann.to_dict(),
        "bytes": video_path.stat().st_size,
        "seconds": time.perf_counter() - t0,
    }


# ----------------------------------------------------------------------------- the corpus


def _init_worker() -> None:
    import cv2

    cv2.setNumThreads(1)


def _default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def check_tools() -> None:
    """Raise ``SynthError`` when espeak-ng or the bundled ffmpeg is unavailable."""
    if voice.espeak_binary() is None:
        raise voice.EspeakUnavailableError(
            "espeak-ng is not installed; the synthetic corpus needs it for speech (apt-get install espeak-ng)"
        )
    exe = _ffmpeg()
    if not Path(exe).exists():
        raise SynthError(f"ffmpeg not found at {exe}")


def generate_corpus(
    out_dir: str | Path,
    n: int,
    seed: int,
    workers: int | None = None,
    progress: bool = True,
    split: str | None = None,
) -> CorpusSummary:
    """Generate ``n`` clips and their annotations into ``out_dir``.

    Writes ``videos/NAME.mp4``, ``annotations.json`` (full records),
    ``MERR_coarse_grained.json``, ``MERR_fine_grained.json``, ``label.csv``,
    ``subtitle.csv``, ``{split}.txt`` list files and ``corpus.json`` (this summary).
    Names are ``synth_s{seed}_{index:06d}``, so corpora made with different seeds can be
    merged. ``split`` puts every clip in that split; by default 80/10/10
    train/val/test. ``workers`` processes (default: the usable CPU cores; 1 runs inline)
    share the work; the output is identical for any number of workers.
    """
    check_tools()
    out = Path(out_dir)
    (out / "videos").mkdir(parents=True, exist_ok=True)
    (out / ".synth-tmp").mkdir(parents=True, exist_ok=True)
    tasks = plan_corpus(n, seed, out, split)
    workers = _default_workers() if workers is None else max(1, int(workers))
    workers = min(workers, max(1, n))
    results: list[dict[str, Any] | None] = [None] * n
    t0 = time.perf_counter()
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=n, desc="synth clips", unit="clip", file=sys.stderr)
    try:
        if workers == 1:
            _init_worker()
            for task in tasks:
                results[task.index] = make_sample(task)
                if bar is not None:
                    bar.update(1)
        else:
            ctx = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker) as pool:
                futures = [pool.submit(make_sample, task) for task in tasks]
                try:
                    for fut in as_completed(futures):
                        res = fut.result()
                        results[res["index"]] = res
                        if bar is not None:
                            bar.update(1)
                except BaseException:
                    # one clip failed (or Ctrl-C): do not render the thousands still queued
                    for fut in futures:
                        fut.cancel()
                    raise
    finally:
        if bar is not None:
            bar.close()
        try:
            (out / ".synth-tmp").rmdir()
        except OSError:
            pass
    seconds = time.perf_counter() - t0
    anns = [Annotation.from_dict(r["annotation"]) for r in results if r is not None]
    files = write_annotations(anns, out)
    label_counts = {e: 0 for e in MERR_LABELS}
    case_counts = {c: 0 for c in CASES}
    split_counts: dict[str, int] = {}
    for t in tasks:
        label_counts[t.label] += 1
        case_counts[t.case] += 1
        split_counts[t.split] = split_counts.get(t.split, 0) + 1
    total_bytes = sum(r["bytes"] for r in results if r is not None)
    summary = CorpusSummary(
        out_dir=str(out),
        n=n,
        seed=int(seed),
        workers=workers,
        seconds=round(seconds, 2),
        clips_per_minute=round(60.0 * n / seconds, 1) if seconds > 0 else 0.0,
        label_counts=label_counts,
        case_counts=case_counts,
        split_counts=split_counts,
        total_bytes=int(total_bytes),
        mean_clip_bytes=round(total_bytes / n, 1) if n else 0.0,
        mean_duration=round(float(np.mean([a.meta["duration"] for a in anns])), 3) if anns else 0.0,
        files={k: str(v.relative_to(out)) for k, v in files.items()},
    )
    with open(out / "corpus.json", "w", encoding="utf-8") as f:
        json.dump(summary.to_dict(), f, indent=1)
        f.write("\n")
    return summary


# ----------------------------------------------------------------------------- command line


def run_synth(args: argparse.Namespace) -> int:
    """Run ``python -m emotion_llama synth`` (options in ``emotion_llama/cli.py``); prints the summary as JSON."""
    if args.n < 1:
        raise SynthError("--n must be at least 1")
    summary = generate_corpus(
        args.out,
        args.n,
        args.seed,
        workers=args.workers,
        progress=not args.no_progress,
        split=args.split,
    )
    print(json.dumps(summary.to_dict(), indent=1))
    return 0
