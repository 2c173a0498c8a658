"""Run one job per clip of a folder: resumable, failures logged, split across processes.

``run_per_clip(folder, out, make_worker, settings=...)`` calls a worker on every video
under ``folder`` and appends one JSON line per clip to ``out`` (``{"clip": relative path,
..., "file": {"size", "mtime_ns"}, "settings": ...}``). A clip that cannot be done is
logged in ``OUT.failures.jsonl`` with the reason and skipped; the run goes on.

- **Resumable.** A clip is done when ``out`` holds a line for its relative path with the
  same size and modification time: a clip edited or replaced since is done again (and its
  old line dropped). Statting is free where hashing a folder of videos would read it all.
  A clip that failed before is skipped unless ``retry_failed``.
- **One set of settings per file.** Lines made with other settings (task, labels, weights,
  generation) are an error, not silently mixed: write them to another file.
- **Several processes.** Under ``torchrun --nproc_per_node N`` or ``accelerate launch``
  each process takes every N-th clip (``features.process_share``) and appends its lines to
  the same file under a lock (``OUT.lock``), so the file is the one-process file in another
  order; nobody has to wait for a merge.

``analyze_folder`` is the ``analyze FOLDER --out results.jsonl`` command; a per-clip
timeline can reuse ``run_per_clip`` with its own worker and settings.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ConfigError, EmotionLlamaError
from .features import launcher_rank, list_videos, process_share

if TYPE_CHECKING:
    from .analysis import AnalysisOptions

Worker = Callable[[Path], dict[str, Any]]


@dataclass(frozen=True)
class ClipFile:
    path: Path
    clip: str  # path relative to the folder, with forward slashes: the line's key
    size: int
    mtime_ns: int

    @property
    def stamp(self) -> dict[str, int]:
        return {"size": self.size, "mtime_ns": self.mtime_ns}


def clip_files(folder: str | Path) -> list[ClipFile]:
    """Every video under ``folder``, in name order, with what says whether it changed."""
    folder = Path(folder)
    files = []
    for path in list_videos(folder):
        stat = path.stat()
        files.append(ClipFile(path, path.relative_to(folder).as_posix(), stat.st_size, stat.st_mtime_ns))
    return files


def _is_current(line: dict[str, Any], current: dict[str, ClipFile]) -> bool:
    """False for the line of a clip that is still there but changed since (it is redone)."""
    now = current.get(line.get("clip"))
    return now is None or line.get("file") == now.stamp


class ResultFile:
    """The results (JSON lines) and their failures file, shared by every process under one lock."""

    def __init__(self, out: str | Path):
        self.path = Path(out)
        self.failures = self.path.with_name(self.path.stem + ".failures.jsonl")
        self.lock_path = self.path.with_name(self.path.name + ".lock")

    @contextmanager
    def locked(self) -> Iterator[None]:
        try:
            import fcntl
        except ImportError:  # no flock (Windows): one process at a time there
            yield
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    @staticmethod
    def _read(path: Path) -> list[dict[str, Any]]:
        if not path.is_file():
            return []
        lines = []
        for number, text in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not text.strip():
                continue
            try:
                lines.append(json.loads(text))
            except json.JSONDecodeError:  # a line cut by a crash: that clip is simply redone
                print(f"warning: {path.name} line {number} is not JSON; ignoring it")
        return lines

    def read(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        with self.locked():
            return self._read(self.path), self._read(self.failures)

    def append(self, line: dict[str, Any], *, failed: bool = False) -> None:
        with self.locked(), open(self.failures if failed else self.path, "a", encoding="utf-8") as file:
            file.write(json.dumps(line, ensure_ascii=False) + "\n")

    def tidy(self, current: dict[str, ClipFile]) -> None:
        """Drop the lines of clips changed since, older lines of a clip done again, and failures
        of clips that are now done."""
        with self.locked():
            results = _last_per_clip([x for x in self._read(self.path) if _is_current(x, current)])
            done = {(x["clip"], json.dumps(x.get("file"))) for x in results}
            failures = _last_per_clip([x for x in self._read(self.failures) if _is_current(x, current)
                                       and (x["clip"], json.dumps(x.get("file"))) not in done])
            for path, lines in ((self.path, results), (self.failures, failures)):
                if path.is_file():
                    _rewrite(path, lines)


def _last_per_clip(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return list({line.get("clip"): line for line in lines}.values())


def _rewrite(path: Path, lines: list[dict[str, Any]]) -> None:
    # A temporary file renamed over the old: an interruption never leaves half a file.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text("".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines), encoding="utf-8")
    os.replace(tmp, path)


@dataclass
class BatchSummary:
    rank: int
    world: int
    done: int = 0  # analysed by this run
    already: int = 0  # done by an earlier run
    failed_before: int = 0  # skipped: failed in an earlier run
    failed: int = 0  # failed in this run
    failures_file: str = ""

    def line(self) -> str:
        where = f"[{self.rank}/{self.world}]"
        if not self.done and not self.failed:
            return (f"{where} nothing to do: {self.already} clips already done, {self.failed_before} failed before "
                    "(--retry-failed tries them again)")
        return (f"{where} {self.done} analysed, {self.already} already done, {self.failed} failed"
                + (f" (see {self.failures_file})" if self.failed else ""))


def check_settings(lines: list[dict[str, Any]], settings: dict[str, Any], path: Path) -> None:
    """Refuse to add to a file whose lines were made with other settings."""
    other = next((line["settings"] for line in lines if line.get("settings") != settings), None)
    if other is not None:
        changed = sorted(k for k in settings.keys() | other.keys() if settings.get(k) != other.get(k))
        raise ConfigError(f"{path} holds results made with other settings ({', '.join(changed)} differ): "
                          "write to another --out file, or delete it to start again")


def run_per_clip(folder: str | Path, out: str | Path, make_worker: Callable[[], Worker], *,
                 settings: dict[str, Any], retry_failed: bool = False, desc: str = "analyze",
                 progress: bool = True) -> BatchSummary:
    """Call the worker (made once, only if there is work) on this process's share of the clips
    under ``folder`` that ``out`` does not hold yet; one line per clip, failures beside."""
    from tqdm import tqdm

    rank, world = launcher_rank()
    settings = json.loads(json.dumps(settings, default=str))  # as a line reads it back
    clips = clip_files(folder)
    current = {clip.clip: clip for clip in clips}
    results = ResultFile(out)
    summary = BatchSummary(rank, world, failures_file=results.failures.name)
    lines, failures = results.read()
    check_settings(lines + failures, settings, results.path)
    done = {(x["clip"], json.dumps(x.get("file"))) for x in lines}
    failed = {(x["clip"], json.dumps(x.get("file"))) for x in failures}
    todo = []
    for clip in process_share(clips, rank, world):
        key = (clip.clip, json.dumps(clip.stamp))
        if key in done:
            summary.already += 1
        elif key in failed and not retry_failed:
            summary.failed_before += 1
        else:
            todo.append(clip)
    if todo:
        work = make_worker()
        for clip in tqdm(todo, desc=f"{desc} {rank + 1}/{world}", unit="clip", position=rank, disable=not progress):
            line, ok = _run_one(work, clip, settings)
            results.append(line, failed=not ok)
            summary.done += ok
            summary.failed += not ok
    results.tidy(current)
    return summary


def _run_one(work: Worker, clip: ClipFile, settings: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """The clip's line, and whether it worked; any error becomes a failure line, never the end of the run."""
    head = {"clip": clip.clip}
    tail = {"file": clip.stamp, "settings": settings}
    try:
        return {**head, **work(clip.path), **tail}, True
    except EmotionLlamaError as error:  # the clip's fault: its message says what is wrong
        return {**head, "error": str(error), "error_type": type(error).__name__, **tail}, False
    except Exception as error:  # noqa: BLE001 - a bug met on one clip is logged as such; the others still run
        return {**head, "error": f"internal error: {error}", "error_type": type(error).__name__, **tail}, False


# -- analyze FOLDER ----------------------------------------------------------------------------
def weights_name(weights: str | None) -> str:
    """Which weights a folder's results came from, as its lines record it."""
    return weights or os.environ.get("EMOTION_LLAMA_WEIGHTS") or "tiny"


def analysis_settings(options: AnalysisOptions, weights: str | None) -> dict[str, Any]:
    """What makes two analyses of one clip comparable: the options and which weights."""
    return {"weights": weights_name(weights), **asdict(options)}


def run_folder(folder: str | Path, out: str | Path, run: Callable[[Any, str], dict[str, Any]], *,
               settings: dict[str, Any], weights: str | None = None, device: str | None = None,
               threads: int | None = 1, retry_failed: bool = False, desc: str = "analyze",
               progress: bool = True) -> BatchSummary:
    """``run(engine, path)`` on every clip of ``folder`` (``run_per_clip``), the engine loaded
    once per process, and only when there is work."""

    def make_worker() -> Worker:
        import torch

        from .pipeline import load_engine

        if threads:  # a fixed count per process: the numbers do not depend on how many share the work
            torch.set_num_threads(threads)
        engine = load_engine(weights, device=device)
        return lambda path: run(engine, path)

    return run_per_clip(folder, out, make_worker, settings=settings, retry_failed=retry_failed, desc=desc,
                        progress=progress)


def analyze_folder(folder: str | Path, out: str | Path, options: AnalysisOptions, **how: Any) -> BatchSummary:
    """``analyze FOLDER --out results.jsonl``: one analysis JSON line per clip; ``how``: ``run_folder``'s."""
    return run_folder(folder, out, lambda engine, path: engine.analyze(path, options=options).to_json(),
                      settings=analysis_settings(options, how.get("weights")), desc="analyze", **how)


def timeline_folder(folder: str | Path, out: str | Path, options, **how: Any) -> BatchSummary:
    """``timeline FOLDER --out timelines.jsonl``: one timeline JSON line per video; ``options``: a
    ``timeline.TimelineOptions``."""
    from .timeline import build_timeline

    settings = {"weights": weights_name(how.get("weights")), "timeline": asdict(options)}
    return run_folder(folder, out, lambda engine, path: build_timeline(engine, path, options).to_json(),
                      settings=settings, desc="timeline", **how)
