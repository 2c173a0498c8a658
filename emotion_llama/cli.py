"""``python -m emotion_llama``: info, analyze, and the dataset commands.

Every command prints a user's error as one line on stderr and exits with status 2;
anything else is a bug and says so.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings

from .errors import ConfigError, EmotionLlamaError
from .familiarity import DEFAULT_HELD_OUT_EVERY, DEFAULT_QUANTILE
from .vocab import DEFAULT_FRAME, FRAME_CHOICES, MODALITIES, MODALITY, REFERENCE_GENERATION, TASKS

FOLDERS = [m.reference_folder + "/" for m in MODALITY.values() if m.reference_folder]


def parameter_counts(model) -> dict[str, int]:
    """Parameters per component; ``trainable`` is adapters + LoRA."""

    def count(module) -> int:
        return sum(p.numel() for p in module.parameters())

    lora = sum(p.numel() for n, p in model.named_parameters() if ".lora_" in n)
    counts = {
        "global_encoder": count(model.encoders.global_frame),
        "face_encoder": count(model.encoders.face),
        "temporal_encoder": count(model.encoders.temporal),
        "audio_encoder": count(model.encoders.audio),
        "llm": count(model.llama_model) - lora,
        "lora": lora,
    }
    counts.update({name: count(layer) for name, layer in model.adapters().items()})
    counts["total"] = count(model)
    counts["trainable"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return counts


def cmd_info(args: argparse.Namespace) -> int:
    import torch

    from .config import preset
    from .model import EmotionLlama

    config = preset(args.preset)
    with torch.device(args.device):
        model = EmotionLlama(config)
    counts = parameter_counts(model)
    if args.json:
        print(json.dumps({"preset": args.preset, "device": args.device, "parameters": counts}, indent=2))
    else:
        for name, value in counts.items():
            print(f"{name:>20}  {value:>15,}")
    return 0


def cmd_analyze(args: argparse.Namespace) -> int:
    from .pipeline import AnalysisOptions, load_engine
    from .prompts import parse_labels
    from .vocab import GenerationSettings

    options = AnalysisOptions(
        task=args.task,
        labels=parse_labels(args.labels),
        question=args.question,
        generation=GenerationSettings(
            do_sample=args.sample, temperature=args.temperature, max_new_tokens=args.max_new_tokens, seed=args.seed
        ),
        leave_out=tuple(x for x in (args.leave_out or "").split(",") if x),
        demo_parity=args.demo_parity,
        frame_choice=args.frame,
        explain=not args.no_explain,
        person=args.person,
    )
    if os.path.isdir(args.clip):
        return analyze_folder(args, options)
    if args.out:
        raise ConfigError("--out is for a folder of clips; for one clip use --json or --report")
    engine = load_engine(args.weights, device=args.device)
    analysis = engine.analyze(args.clip, subtitle=args.subtitle, options=options)
    if args.report:
        from .report import write_report

        html_path, json_path = write_report(args.report, analysis, options, clip=os.path.basename(args.clip))
        print(f"report: {html_path} and {json_path}", file=sys.stderr)
    if args.json:
        print(json.dumps(analysis.to_json(), indent=2, ensure_ascii=False))
    else:
        best = analysis.probabilities[analysis.label]
        print(f"{analysis.label} ({best:.0%})\n{analysis.answer}")
        for warning in analysis.warnings:
            print(f"warning: {warning}", file=sys.stderr)
    return 0


def analyze_folder(args: argparse.Namespace, options) -> int:
    from .batch import analyze_folder

    if not args.out or args.subtitle or args.report:
        raise ConfigError("for a folder give --out results.jsonl (no --subtitle or --report: "
                          "put a subtitle file beside each clip, and make reports one clip at a time)")
    summary = analyze_folder(args.clip, args.out, options, weights=args.weights, device=args.device,
                             threads=args.threads, retry_failed=args.retry_failed)
    print(summary.line())
    return 0


def timeline_folder(args: argparse.Namespace, options) -> int:
    from .batch import timeline_folder

    if not args.out or args.csv:
        raise ConfigError("for a folder give --out timelines.jsonl (one JSON line per video; no --csv)")
    summary = timeline_folder(args.video, args.out, options, weights=args.weights, device=args.device,
                              threads=args.threads, retry_failed=args.retry_failed, progress=not args.no_progress)
    print(summary.line())
    return 0


def cmd_timeline(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .pipeline import load_engine
    from .prepare import PrepareOptions
    from .prompts import parse_labels
    from .timeline import Segment, Timeline, TimelineOptions, timeline_iter

    options = TimelineOptions(labels=parse_labels(args.labels), frame_choice=args.frame,
                              subtitles=not args.no_subtitles, prepare=PrepareOptions(person=args.person))
    if os.path.isdir(args.video):
        return timeline_folder(args, options)
    engine = load_engine(args.weights, device=args.device)
    timeline = bar = None
    for item in timeline_iter(engine, args.video, options):
        if isinstance(item, Segment):
            bar.set_postfix_str(f"{item.end:.0f} s: {item.label}", refresh=False)
            bar.update()
        elif isinstance(item, Timeline):
            timeline = item
        elif item.kind == "plan":  # the video is cut: the number of segments is known
            bar = tqdm(total=int(item.value), desc="timeline", unit="segment", disable=args.no_progress)
    if bar is not None:
        bar.close()
    text = timeline.to_csv() if args.csv else json.dumps(timeline.to_json(), indent=2, ensure_ascii=False) + "\n"
    if args.out:
        with open(args.out, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
    else:
        sys.stdout.write(text)
    for warning in timeline.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return 0


def cmd_extract(args: argparse.Namespace) -> int:
    from pathlib import Path

    import torch
    from tqdm import tqdm

    from .features import FeatureStore, launcher_rank, list_videos, process_share
    from .pipeline import AnalysisOptions, load_engine

    rank, world = launcher_rank()
    videos = process_share(list_videos(args.video_dir), rank, world)
    store = FeatureStore(args.out)
    failed_before = set() if args.retry_failed else store.failed_names()
    todo = [video for video in videos if not store.has(video.stem) and video.name not in failed_before]
    skipped_failed = sum(video.name in failed_before for video in videos)
    if not todo:
        print(f"[{rank}/{world}] nothing to do: {len(videos) - skipped_failed} clips already extracted, "
              f"{skipped_failed} failed before (--retry-failed tries them again)")
        return 0
    # A fixed thread count per process makes the files bit-identical however many
    # processes share the work (CPU kernels round differently with more threads).
    torch.set_num_threads(args.threads)
    engine = load_engine(args.weights, device=args.device)
    options = AnalysisOptions(frame_choice=args.frame)
    log_path = Path(args.out) / ("failed.log" if world == 1 else f"failed.rank{rank}.log")
    done = failed = 0
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a", encoding="utf-8") as log:
        for video in tqdm(todo, desc=f"extract {rank + 1}/{world}", unit="clip", position=rank):
            try:
                prepared, encoded = engine.prepare(video, None, options)
                store.write(video.stem, encoded, prepared)
                done += 1
            except EmotionLlamaError as error:
                log.write(f"{video.name}\t{error}\n")
                log.flush()
                failed += 1
    skipped = len(videos) - len(todo) - skipped_failed
    print(f"[{rank}/{world}] {done} extracted, {skipped} already there, {failed} failed"
          + (f" (see {log_path.name})" if failed else ""))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from .training import TrainConfig, run

    report = run(TrainConfig.load(args.config))
    print(json.dumps(report, indent=2))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .evaluate import evaluate, feature_folder, load_split, markdown
    from .pipeline import load_engine

    annotations, root = load_split(args.data, args.split)
    annotations = annotations[: args.limit] if args.limit else annotations
    engine = load_engine(args.weights, device=args.device)
    feature_dir = Path(args.features) if args.features else feature_folder(engine, root)
    report = evaluate(engine, annotations, root, feature_dir, ablate=args.ablate, reasoning=not args.no_reasoning,
                      single_turn_reasoning=args.single_turn_reasoning, redrafts=args.redrafts)
    report["engine"] = engine.info
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(markdown(report))
    if args.markdown:
        Path(args.markdown).write_text(markdown(report) + "\n")
    return 0


def cmd_feature_stats(args: argparse.Namespace) -> int:
    from .pipeline import TINY_WEIGHTS
    from .training.feature_stats import run_feature_stats  # on use only: inference never loads training code

    report = run_feature_stats(args.corpus, args.weights or TINY_WEIGHTS, quantile=args.quantile,
                               held_out_every=args.held_out_every, limit=args.limit)
    print(json.dumps(report, indent=2))
    return 0


def cmd_synth(args: argparse.Namespace) -> int:
    from synthetic import run_synth  # on use only: the demo and `analyze` never load the generator

    return run_synth(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m emotion_llama", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for add in (_info_command, _analyze_command, _timeline_command, _extract_command, _train_command,
                _evaluate_command, _feature_stats_command, _synth_command):
        add(commands)
    return parser


def _model_options(command: argparse.ArgumentParser, frame: bool = True) -> None:
    """Which weights, on which device (and which frame for the global encoder): shared by commands."""
    command.add_argument("--weights", help="weights folder, or 'official' (default: the shipped tiny model)")
    command.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    if frame:
        command.add_argument("--frame", choices=tuple(FRAME_CHOICES), default=DEFAULT_FRAME)


def _info_command(commands) -> None:
    info = commands.add_parser("info", help="parameter counts of a preset")
    info.add_argument("--preset", choices=("official", "tiny"), default="official")
    info.add_argument("--device", choices=("meta", "cpu", "cuda"), default="meta")
    info.add_argument("--json", action="store_true")
    info.set_defaults(run=cmd_info)


def _analyze_command(commands) -> None:
    analyze = commands.add_parser("analyze", help="recognise and explain the emotion in one clip")
    analyze.add_argument("clip", help="a video, or a folder of videos (with --out)")
    analyze.add_argument("--subtitle", help="what the person says (default: sidecar file, Whisper, or none)")
    analyze.add_argument("--task", choices=tuple(TASKS), default="emotion")
    analyze.add_argument("--question", help="your own question (with --task free)")
    analyze.add_argument("--labels", help="comma-separated candidate labels (default: MERR's nine)")
    _model_options(analyze)
    analyze.add_argument("--person", type=int, help="whose face: 0 = seen most often (default), 1 = next, ...")
    analyze.add_argument("--leave-out", help=f"comma list of modalities to drop: {','.join(MODALITIES)}")
    analyze.add_argument("--demo-parity", action="store_true", help="the reference demo's prompt layout")
    analyze.add_argument("--sample", action="store_true", help="sample (temperature, top-p) instead of greedy")
    analyze.add_argument("--temperature", type=float, default=REFERENCE_GENERATION.temperature)
    analyze.add_argument("--max-new-tokens", type=int, default=REFERENCE_GENERATION.max_new_tokens)
    analyze.add_argument("--seed", type=int, default=REFERENCE_GENERATION.seed)
    analyze.add_argument("--json", action="store_true")
    analyze.add_argument("--no-explain", action="store_true", help="skip the attention shares and heatmap (faster)")
    analyze.add_argument("--report", metavar="FILE", help="also write FILE.html (self-contained) and FILE.json")
    analyze.add_argument("--out", help="with a FOLDER: append one JSON line per clip here (resumable; failures in "
                         "OUT.failures.jsonl; split across processes with torchrun or accelerate launch)")
    analyze.add_argument("--retry-failed", action="store_true", help="with a FOLDER: try clips that failed before")
    analyze.add_argument("--threads", type=int, default=1, help="with a FOLDER: CPU threads per process (default 1)")
    analyze.set_defaults(run=cmd_analyze)


def _timeline_command(commands) -> None:
    timeline = commands.add_parser("timeline", help="label every segment of a whole video (JSON or CSV), "
                                                    "or of every video in a folder (--out FILE.jsonl, resumable)")
    timeline.add_argument("video")
    timeline_format = timeline.add_mutually_exclusive_group()
    timeline_format.add_argument("--json", action="store_true", help="one JSON document (the default)")
    timeline_format.add_argument("--csv", action="store_true", help="one row per segment")
    timeline.add_argument("--out", help="write to this file (default: standard output)")
    timeline.add_argument("--labels", help="comma-separated candidate labels (default: MERR's nine)")
    _model_options(timeline)
    timeline.add_argument("--person", type=int, default=None,
                          help="whose face to read in every segment: 0 = the one seen most in it (default)")
    timeline.add_argument("--no-subtitles", action="store_true", help="ignore a .srt/.vtt file beside the video")
    timeline.add_argument("--no-progress", action="store_true", help="no progress bar")
    timeline.add_argument("--retry-failed", action="store_true", help="with a FOLDER: try videos that failed before")
    timeline.add_argument("--threads", type=int, default=1, help="with a FOLDER: CPU threads per process (default 1)")
    timeline.set_defaults(run=cmd_timeline)


def _extract_command(commands) -> None:
    extract = commands.add_parser(
        "extract",
        help="encode a folder of videos into the reference feature layout (resumable; "
        "split across processes with torchrun or accelerate launch)",
    )
    extract.add_argument("video_dir")
    extract.add_argument("--out", required=True, help=f"feature folder ({', '.join(FOLDERS)}, meta/)")
    _model_options(extract)
    extract.add_argument("--threads", type=int, default=1, help="CPU threads per process (default 1)")
    extract.add_argument("--retry-failed", action="store_true", help="try clips that failed before again")
    extract.set_defaults(run=cmd_extract)


def _train_command(commands) -> None:
    train = commands.add_parser("train", help="run the training recipe described by a JSON config")
    train.add_argument("config")
    train.set_defaults(run=cmd_train)


def _evaluate_command(commands) -> None:
    evaluate = commands.add_parser("evaluate", help="label metrics, modality ablation and reasoning scores")
    evaluate.add_argument("--data", required=True, help="annotation folder or file (MERR / MER2023 formats)")
    evaluate.add_argument("--split", default="test", help="which split to use (default: test; '' for all)")
    _model_options(evaluate, frame=False)
    evaluate.add_argument("--features", help="where encoded clips are kept (default: DATA/features/MODEL-HASH)")
    evaluate.add_argument("--limit", type=int, help="evaluate only the first N clips")
    evaluate.add_argument("--ablate", action="store_true", help="each modality alone and all but one")
    evaluate.add_argument("--no-reasoning", action="store_true", help="skip generating reasoning")
    evaluate.add_argument("--single-turn-reasoning", action="store_true",
                          help="ask for the reasoning in one turn (the paper's protocol) instead of as a "
                               "follow-up to the label answer (the app's)")
    evaluate.add_argument("--redrafts", type=int, default=None,
                          help="more drafts of a follow-up reasoning that argues for another label than the "
                               "answer (default: as many as the app writes; 0: the first draft only)")
    evaluate.add_argument("--markdown", help="also write the Markdown table to this file")
    evaluate.add_argument("--json", action="store_true")
    evaluate.set_defaults(run=cmd_evaluate)


def _feature_stats_command(commands) -> None:
    stats = commands.add_parser("feature-stats", help="measure the model's training clips, for the warning on clips "
                                "unlike them (writes feature_stats.safetensors beside the weights)")
    stats.add_argument("corpus", help="folder of the model's training clips (videos anywhere below it)")
    stats.add_argument("--weights", help="weights folder (default: the shipped tiny model)")
    stats.add_argument("--limit", type=int, help="only the first N clips, in name order (a few hundred is plenty)")
    stats.add_argument("--quantile", type=float, default=DEFAULT_QUANTILE,
                       help=f"threshold: this quantile of the held-out clips' distances (default {DEFAULT_QUANTILE})")
    stats.add_argument("--held-out-every", type=int, default=DEFAULT_HELD_OUT_EVERY,
                       help=f"hold every N-th clip out of the fit, to measure the threshold on "
                            f"(default {DEFAULT_HELD_OUT_EVERY})")
    stats.set_defaults(run=cmd_feature_stats)


def _synth_command(commands) -> None:
    synth = commands.add_parser("synth", help="generate the synthetic audio-visual emotion corpus")
    synth.add_argument("--out", required=True, help="output folder (videos/ and the annotation files go here)")
    synth.add_argument("--n", type=int, default=100, help="number of clips (default 100)")
    synth.add_argument("--seed", type=int, default=0, help="random seed; the same seed and n give the same corpus")
    synth.add_argument("--workers", type=int, default=None, help="worker processes (default: all usable cores)")
    synth.add_argument("--split", choices=("train", "val", "test"), default=None,
                       help="put every clip in this split (default: 80/10/10 train/val/test)")
    synth.add_argument("--no-progress", action="store_true", help="no progress bar")
    synth.set_defaults(run=cmd_synth)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not os.environ.get("EMOTION_LLAMA_DEBUG"):
        warnings.filterwarnings("ignore")
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
    try:
        return args.run(args)
    except EmotionLlamaError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as error:  # a bug: one line unless debugging
        if os.environ.get("EMOTION_LLAMA_DEBUG"):
            raise
        print(f"internal error: {error.__class__.__name__}: {error} (set EMOTION_LLAMA_DEBUG=1 for details)", file=sys.stderr)
        return 1
