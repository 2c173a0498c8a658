"""Load and fault harness for the demo: visitors and hostile requests against a real ``python app.py``.

Run from the repository root::

    python benchmarks/load_harness.py --visitors 8 --seconds 180 [--json report.json]

1. Start-up: ``python app.py --host 127.0.0.1 --port P`` (a free port) as a subprocess with
   its own ``GRADIO_TEMP_DIR`` and ``TMPDIR`` (fresh folders, so what it leaves can be
   listed); stopped at the end, on an error and on Ctrl-C. Its RSS (the process tree) is
   sampled every 0.2 s.
2. Sequential answers: every valid greedy ``/analyze`` input of the pool once, one at a time.
3. Warm-up: every visitor runs one round of every request kind, all visitors at once. The
   server's RSS after it is the reference for the memory target.
4. Load: ``--visitors`` threads, each a ``gradio_client`` session (a new one every few
   requests, as new people arrive), loop for ``--seconds`` over a seeded random mix of the
   request kinds (``MIX``): ``/analyze`` of an example clip or of a re-muxed copy (an upload
   the app must delete), the page's own Analyze event (as the browser sends it: images in
   its outputs), a re-analysis with a new typed subtitle, a ``/chat`` turn and a follow-up,
   a stream left at its first chunk or after a short delay, and the hostile requests
   (``HOSTILE_KINDS``). ``--only`` narrows the mix, to find which kind costs memory.
5. The end: one more ``/analyze`` (is the server alive and still right?), RSS after a short
   settle, the files left in the server's temp folders that were not there at start-up.

Every answer of a valid analysis input (API or page) must equal its sequential answer (label, each
probability to 1e-6, answer text). A hostile request must get a readable refusal (gradio's
``AppError`` with the app's own message) or a result, never the generic internal error.
Prints counts, failures by kind and p50/p95 latency per request kind, RSS, files left and
each target as pass/fail; exits 1 when a target is missed. Loopback only, bounded in time.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import functools
import json
import math
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
GENERIC_FAILURE_START = "Something went wrong on our side"  # app.GENERIC_FAILURE, without importing the app
PROBABILITY_TOLERANCE = 1e-6
MB = 1024 * 1024

# The mix of a visitor's loop: request kind -> weight. "hostile" picks one of HOSTILE_KINDS.
MIX = {"analyze": 3, "page_analyze": 2, "reanalyze": 2, "chat": 2, "cancel_chat": 1, "cancel_analyze": 1, "hostile": 3}
VALID_KINDS = ("analyze", "page_analyze", "reanalyze", "chat", "chat_followup", "cancel_chat", "cancel_analyze")
HOSTILE_KINDS = ("truncated_mp4", "text_as_mp4", "long_subtitle", "many_labels", "long_question", "long_chat_message")
# The page's Analyze event (private to API clients: the harness sends it as the page does, by index).
PAGE_ANALYZE = "analyze_stream"
# Outcomes: the first three are fine (for a valid kind, "refused" is a failure); the rest are failures.
FINE = ("answered", "refused", "cancelled")
FAILURES = ("refused", "generic_error", "unexpected_error", "timeout", "connection_refused")

RETYPED_SUBTITLES = ("I honestly don't know what to think about all this.",
                     "That went better than I expected, to be fair.",
                     "Please just leave me alone for a while.")
CHAT_QUESTIONS = ("What does the voice tell you?", "Why do you think so?", "Describe the face.",
                  "Is the person calm?", "What did the person say?")
WORDS = ("the", "clip", "shows", "a", "person", "who", "talks", "about", "their", "day", "and", "then", "laughs")


@dataclass(frozen=True)
class Settings:
    visitors: int = 8
    seconds: float = 180.0
    seed: int = 0
    clips: int = 0  # example clips in the pool, the first ones of examples.json (0: all)
    visitor_copies: int = 2  # example clips re-muxed into new files (uploads the app must delete)
    requests_per_session: int = 6  # a visitor opens a new gradio session after this many requests
    request_timeout: float = 120.0
    start_timeout: float = 300.0
    settle_seconds: float = 3.0
    rss_margin_mb: float = 150.0
    only: str = ""  # request kinds of MIX to send, comma-separated (empty: all), to find what costs memory
    keep: bool = False  # keep the work folder (server log, temp folders) for a look afterwards
    unused_upload: float = 20.0  # the app's EMOTION_LLAMA_UNUSED_UPLOAD for this run


FLAG_HELP = {
    "visitors": "visitors at once (threads, each its own gradio session)",
    "seconds": "seconds of load after the warm-up",
    "seed": "seed of the visitors' random mix",
    "clips": "example clips in the pool, the first of examples.json (0: all)",
    "visitor_copies": "example clips re-muxed into new files, uploads the app must delete",
    "requests_per_session": "requests before a visitor opens a new gradio session",
    "request_timeout": "seconds a request may take before it counts as a timeout",
    "start_timeout": "seconds app.py may take to answer after its start",
    "settle_seconds": "seconds the server rests before the final RSS and the files left are read",
    "rss_margin_mb": "the RSS target: final RSS at most this many MB over the RSS after warm-up",
    "only": f"send only these request kinds, comma-separated, of: {', '.join(MIX)} (default: all)",
    "keep": "keep the work folder (server log, its temp folders) and print where it is",
    "unused_upload": "the app's EMOTION_LLAMA_UNUSED_UPLOAD: seconds an upload no request used is kept (one "
                     "cancelled while queued); files left are read again once that time has passed",
}


def mix_of(settings: Settings) -> dict[str, int]:
    """MIX, or the part of it that ``--only`` names."""
    chosen = {k.strip() for k in settings.only.split(",") if k.strip()}
    unknown = chosen - set(MIX)
    if unknown:
        raise ValueError(f"--only: unknown request kinds {sorted(unknown)}; choose from {', '.join(MIX)}")
    return {k: w for k, w in MIX.items() if not chosen or k in chosen}


# -- the server ---------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """``python app.py`` of this checkout on loopback, with its own temp folders and log."""

    def __init__(self, work: Path, start_timeout: float, unused_upload: float):
        self.gradio_temp, self.tmpdir, self.log = work / "gradio_temp", work / "tmp", work / "server.log"
        self.start_timeout, self.unused_upload = start_timeout, unused_upload
        self.process: subprocess.Popen | None = None
        self.url = ""
        self.startup_files: set[str] = set()

    def start(self) -> str:
        self.gradio_temp.mkdir()
        self.tmpdir.mkdir()
        port = free_port()
        env = {**os.environ, "GRADIO_TEMP_DIR": str(self.gradio_temp), "TMPDIR": str(self.tmpdir),
               "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONUNBUFFERED": "1",
               "EMOTION_LLAMA_UNUSED_UPLOAD": str(self.unused_upload)}
        with self.log.open("wb") as log:
            self.process = subprocess.Popen([sys.executable, "app.py", "--host", "127.0.0.1", "--port", str(port)],
                                            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{port}/"
        self._wait_until_it_answers()
        self.startup_files = self.files()
        return self.url

    def _wait_until_it_answers(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"app.py exited with {self.process.returncode}:\n{self.log_tail()}")
            if self.answers():
                return
            time.sleep(0.5)
        raise RuntimeError(f"app.py did not answer within {self.start_timeout:.0f} s:\n{self.log_tail()}")

    def answers(self) -> bool:
        try:
            return httpx.get(self.url, timeout=5.0).status_code == 200
        except httpx.HTTPError:
            return False

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None and self.answers()

    def files(self) -> set[str]:
        """Every file under the server's temp folders, relative to the work folder."""
        work = self.gradio_temp.parent
        return {str(p.relative_to(work)) for root in (self.gradio_temp, self.tmpdir) for p in root.rglob("*")
                if p.is_file()}

    def files_left(self) -> list[str]:
        return sorted(self.files() - self.startup_files)

    def internal_errors_logged(self) -> int:
        """Lines where the app logged a bug behind a generic message (handlers.user_facing)."""
        return self.log.read_text(errors="replace").count("request failed with") if self.log.exists() else 0

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:]) if self.log.exists() else ""

    def stop(self) -> None:
        """Terminate the app and whatever it started; kill what is left after 15 s."""
        if self.process is None or self.process.poll() is not None:
            return
        try:
            children = psutil.Process(self.process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            children = []
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(15)
        for child in children:
            try:
                child.kill()
            except psutil.NoSuchProcess:
                pass


class RssSampler:
    """RSS of a process and its children, every ``every`` seconds, in a thread."""

    def __init__(self, pid: int, every: float = 0.2):
        self.pid, self.every = pid, every
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def start(self) -> RssSampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            rss = tree_rss(self.pid)
            if rss is not None:
                self.samples.append((time.monotonic(), rss))

    def peak(self) -> int:
        return max((rss for _, rss in self.samples), default=0)

    def timeline(self, step: float) -> list[list[float]]:
        """[seconds since the first sample, mean RSS in MB] per ``step`` seconds."""
        buckets: dict[int, list[int]] = defaultdict(list)
        for when, rss in self.samples:
            buckets[int((when - self.samples[0][0]) // step)].append(rss)
        return [[round(i * step), round(sum(v) / len(v) / MB)] for i, v in sorted(buckets.items())]

    def mean_of_last(self, seconds: float) -> int:
        """Mean RSS over the last ``seconds`` (smooths one sample caught mid-allocation)."""
        if not self.samples:
            return tree_rss(self.pid) or 0
        end = self.samples[-1][0]
        recent = [rss for when, rss in self.samples if when >= end - seconds]
        return round(sum(recent) / len(recent))


def tree_rss(pid: int) -> int | None:
    try:
        process = psutil.Process(pid)
        members = [process, *process.children(recursive=True)]
    except psutil.NoSuchProcess:
        return None
    total = 0
    for member in members:
        try:
            total += member.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


# -- what visitors send ---------------------------------------------------------------------------
@dataclass(frozen=True)
class AnalysisInput:
    """One valid greedy ``/analyze`` request; equal inputs must get equal answers."""

    clip: Path
    subtitle: str
    task: str
    question: str = ""

    def arguments(self) -> dict[str, Any]:
        from gradio_client import handle_file

        return {"video": handle_file(str(self.clip)), "subtitle": self.subtitle, "task": self.task,
                "question": self.question, "temperature": 0.0}

    @property
    def name(self) -> str:
        return f"{self.clip.name} / {self.task} / {self.subtitle[:40]!r}"


@dataclass
class Pool:
    """Valid inputs (with their sequential answers, once known) and the hostile files."""

    first: list[AnalysisInput]  # each clip with the subtitle it comes with
    retyped: dict[Path, AnalysisInput]  # the same clip with a new typed subtitle
    truncated: Path
    text_as_mp4: Path
    expected: dict[AnalysisInput, dict] = field(default_factory=dict)

    def all_valid(self) -> list[AnalysisInput]:
        return [*self.first, *self.retyped.values()]


def example_entries(count: int) -> list[dict]:
    entries = [e for e in json.loads((EXAMPLES / "examples.json").read_text()) if (EXAMPLES / e["clip"]).is_file()]
    if not entries:
        raise RuntimeError("no example clips in examples/ (examples.json lists them)")
    return entries[:count] if count > 0 else entries


def remux(source: Path, target: Path, title: str) -> Path:
    """The same streams in a new file (a new title tag, so new bytes): an upload that is not an example."""
    import imageio_ffmpeg

    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", "-i", str(source), "-map", "0",
                    "-c", "copy", "-metadata", f"title={title}", str(target)], check=True, timeout=120)
    return target


def build_pool(folder: Path, settings: Settings) -> Pool:
    entries = example_entries(settings.clips)
    first = [AnalysisInput(EXAMPLES / e["clip"], e["subtitle"], e["task"], e["question"]) for e in entries]
    for index, entry in enumerate(entries[:settings.visitor_copies]):
        copy = remux(EXAMPLES / entry["clip"], folder / f"visitor_{index}_{entry['clip']}", f"visitor {index}")
        first.append(AnalysisInput(copy, entry["subtitle"], entry["task"], entry["question"]))
    retyped = {a.clip: AnalysisInput(a.clip, RETYPED_SUBTITLES[i % len(RETYPED_SUBTITLES)], a.task, a.question)
               for i, a in enumerate(first)}
    whole = (EXAMPLES / entries[0]["clip"]).read_bytes()
    truncated = folder / "truncated.mp4"
    truncated.write_bytes(whole[: len(whole) * 2 // 5])
    text = folder / "shopping_list.mp4"
    text.write_text("This is a shopping list, not a video.\nmilk\neggs\nbread\n")
    return Pool(first, retyped, truncated, text)


def words(count: int, rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(count))


# -- outcomes -------------------------------------------------------------------------------------
class RequestTimedOut(Exception):
    pass


@dataclass
class Outcome:
    kind: str
    status: str  # one of FINE or FAILURES
    seconds: float
    phase: str
    detail: str = ""
    mismatch: str = ""  # how a valid /analyze answer differs from its sequential one
    compared: bool = False

    @property
    def failed(self) -> bool:
        if self.kind in HOSTILE_KINDS:
            return self.status not in FINE
        return self.status not in ("answered", "cancelled")


def classify(error: BaseException) -> tuple[str, str]:
    """(status, detail) of a request that raised ``error``."""
    from gradio_client.exceptions import AppError

    if isinstance(error, RequestTimedOut):
        return "timeout", str(error)
    if isinstance(error, AppError):
        message = str(error)
        if message.startswith(GENERIC_FAILURE_START):
            return "generic_error", message[:120]
        if not message.strip() or "Traceback" in message:
            return "unexpected_error", f"unreadable AppError: {message[:200]!r}"
        return "refused", message[:200]
    if isinstance(error, (httpx.ConnectError, ConnectionRefusedError)) or "Connection refused" in str(error):
        return "connection_refused", str(error)[:200]
    return "unexpected_error", f"{type(error).__name__}: {str(error)[:200]}"


def differences(expected: dict, answer: dict) -> str:
    """'' when ``answer`` equals ``expected`` (label, probabilities to 1e-6, answer text), else what differs."""
    found = []
    if answer.get("label") != expected["label"]:
        found.append(f"label {answer.get('label')!r} != {expected['label']!r}")
    got, want = answer.get("probabilities") or {}, expected["probabilities"]
    if set(got) != set(want):
        found.append(f"labels {sorted(got)} != {sorted(want)}")
    else:
        worst = max(abs(float(got[k]) - float(want[k])) for k in want)
        if worst > PROBABILITY_TOLERANCE:
            found.append(f"a probability differs by {worst:.2e}")
    if answer.get("answer") != expected["answer"]:
        found.append(f"answer text differs: {answer.get('answer', '')[:60]!r} vs {expected['answer'][:60]!r}")
    return "; ".join(found)


def is_analysis(value: Any) -> bool:
    return isinstance(value, dict) and value.get("label") in (value.get("probabilities") or {})


# -- visitors -------------------------------------------------------------------------------------
@dataclass
class Run:
    """What every visitor shares: the settings, the server's address, the pool, the outcomes."""

    settings: Settings
    url: str
    pool: Pool
    long_answer_tokens: int
    phase: str = "sequential"
    outcomes: list[Outcome] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    sessions: int = 0  # gradio sessions opened by visitors

    @property
    def mix(self) -> dict[str, int]:
        return mix_of(self.settings)

    def record(self, outcome: Outcome) -> None:
        with self.lock:
            self.outcomes.append(outcome)


class Visitor:
    """One person: a gradio session, renewed every few requests (new people arrive), and a seeded mix."""

    def __init__(self, index: int, run: Run):
        self.index, self.run = index, run
        self.rng = random.Random(f"{run.settings.seed}/{index}")
        self.client = None
        self.requests = 0
        self.last: AnalysisInput | None = None

    def session(self, renew: bool = True):
        from gradio_client import Client

        if self.client is None or (renew and self.requests >= self.run.settings.requests_per_session):
            self.close()
            self.client = Client(self.run.url, verbose=False, download_files=False, analytics_enabled=False)
            self.requests = 0
            with self.run.lock:
                self.run.sessions += 1
        self.requests += 1
        return self.client

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None

    def send(self, kind: str, api_name: str, arguments: dict, check: Callable[[Any, Outcome], None] | None = None,
             renew: bool = True) -> Any:
        """One request, timed and classified; the answer, or None when it failed."""
        start = time.monotonic()
        try:
            job = submit(self.session(renew), api_name, arguments)
            value = wait_for(job, self.run.settings.request_timeout)
        except Exception as error:  # noqa: BLE001 - every failure is an outcome to count
            status, detail = classify(error)
            self.run.record(Outcome(kind, status, time.monotonic() - start, self.run.phase, detail))
            return None
        outcome = Outcome(kind, "answered", time.monotonic() - start, self.run.phase)
        try:
            if check is not None:
                check(value, outcome)
        except Exception as error:  # noqa: BLE001 - an answer the harness cannot read is a failure, not a crash
            outcome.status, outcome.detail = "unexpected_error", f"answer not understood: {error!r}"[:200]
        self.run.record(outcome)
        return value if outcome.status == "answered" else None

    def cancel_midway(self, kind: str, api_name: str, arguments: dict, at_first_chunk: bool) -> None:
        """Submit a long answer and leave: at its first streamed chunk, or after a short random delay."""
        start, delay = time.monotonic(), self.rng.uniform(0.1, 0.8)
        try:
            job = submit(self.session(), api_name, arguments)
            status = leave_midway(job, start, delay, at_first_chunk, self.run.settings.request_timeout)
            detail = ""
        except Exception as error:  # noqa: BLE001
            status, detail = classify(error)
        self.run.record(Outcome(kind, status, time.monotonic() - start, self.run.phase, detail))


def submit(client, api_name: str, arguments: dict):
    """A job of endpoint ``/name``, or of the page's own event ``name`` (PAGE_ANALYZE) as a browser sends it."""
    if api_name.startswith("/"):
        return client.submit(api_name=api_name, **arguments)
    index = next((d.get("id", i) for i, d in enumerate(client.config["dependencies"]) if d.get("api_name") == api_name),
                 None)
    if index is None:
        raise RuntimeError(f"the page has no event named {api_name!r} (see wire() in app.py)")
    client.endpoints[index].is_valid = True  # gradio_client refuses the page's private events; a browser does not
    parameters = client.view_api(return_format="dict", print_info=False)["named_endpoints"]["/analyze"]["parameters"]
    values = [arguments.get(p["parameter_name"], p["parameter_default"]) for p in parameters]
    return client.submit(*values, fn_index=index)


def wait_for(job, timeout: float) -> Any:
    try:
        return job.result(timeout=timeout)
    except concurrent.futures.TimeoutError:
        job.cancel()
        raise RequestTimedOut(f"no answer within {timeout:.0f} s") from None


def leave_midway(job, start: float, delay: float, at_first_chunk: bool, timeout: float) -> str:
    """'cancelled', or 'answered' when the job finished before the visitor left; raises what a failed job raised."""
    left = False
    while not job.done():
        elapsed = time.monotonic() - start
        if not left and (job.outputs() if at_first_chunk else elapsed >= delay):
            job.cancel()
            left = True
        if elapsed > timeout:
            job.cancel()
            raise RequestTimedOut(f"the job did not end within {timeout:.0f} s" if left else
                                  f"no first chunk within {timeout:.0f} s")
        time.sleep(0.02)
    if job.status().code.name == "CANCELLED" or job.cancelled():
        return "cancelled"
    error = job.exception()
    if error is None:
        return "answered"
    if left and isinstance(error, KeyError) and "'data'" in str(error):
        return "cancelled"  # gradio_client's way to end a job it cancelled: the stream closes without data
    raise error


def expect_analysis(expected: dict | None) -> Callable[[Any, Outcome], None]:
    def check(value: Any, outcome: Outcome) -> None:
        if not is_analysis(value):
            outcome.status, outcome.detail = "unexpected_error", f"not an analysis: {str(value)[:120]}"
        elif expected is not None:
            outcome.compared, outcome.mismatch = True, differences(expected, value)
    return check


def expect_reply(value: Any, outcome: Outcome) -> None:
    if not isinstance(value, str):
        outcome.status, outcome.detail = "unexpected_error", f"not a chat reply: {str(value)[:120]}"


def chat_arguments(analysis: AnalysisInput, message: str, task: str = "free", **more: Any) -> dict:
    from gradio_client import handle_file

    return {"video": handle_file(str(analysis.clip)), "subtitle": analysis.subtitle, "message": message,
            "task": task, "temperature": 0.0, **more}


# -- request kinds --------------------------------------------------------------------------------
def do_analyze(visitor: Visitor) -> None:
    analysis = visitor.last = visitor.rng.choice(visitor.run.pool.first)
    visitor.send("analyze", "/analyze", analysis.arguments(), expect_analysis(visitor.run.pool.expected.get(analysis)))


def last_output(value: Any) -> Any:
    return value[-1] if isinstance(value, (tuple, list)) and value else value


def do_page_analyze(visitor: Visitor) -> None:
    """The page's Analyze button: the same inputs as /analyze, nine outputs (images among them), the JSON last."""
    analysis = visitor.last = visitor.rng.choice(visitor.run.pool.first)
    check = expect_analysis(visitor.run.pool.expected.get(analysis))
    visitor.send("page_analyze", PAGE_ANALYZE, analysis.arguments(),
                 lambda value, outcome: check(last_output(value), outcome))


def do_reanalyze(visitor: Visitor) -> None:
    """The clip this visitor analysed last (or any), with a new typed subtitle."""
    pool = visitor.run.pool
    analysis = pool.retyped[(visitor.last or visitor.rng.choice(pool.first)).clip]
    visitor.send("reanalyze", "/analyze", analysis.arguments(), expect_analysis(pool.expected.get(analysis)))


def do_chat(visitor: Visitor) -> None:
    """A turn, then a follow-up in the same session (the conversation's state is the session's)."""
    rng, analysis = visitor.rng, visitor.rng.choice(visitor.run.pool.first)
    if visitor.send("chat", "/chat", chat_arguments(analysis, rng.choice(CHAT_QUESTIONS)), expect_reply) is None:
        return
    follow_up = chat_arguments(analysis, rng.choice(CHAT_QUESTIONS), rng.choice(("free", "reason", "emotion")))
    visitor.send("chat_followup", "/chat", follow_up, expect_reply, renew=False)


def do_cancel_chat(visitor: Visitor) -> None:
    analysis = visitor.rng.choice(visitor.run.pool.first)
    arguments = chat_arguments(analysis, "Tell me everything you notice, in detail.",
                               max_new_tokens=visitor.run.long_answer_tokens)
    visitor.cancel_midway("cancel_chat", "/chat", arguments, at_first_chunk=True)


def do_cancel_analyze(visitor: Visitor) -> None:
    analysis = visitor.rng.choice(visitor.run.pool.first)
    arguments = {**analysis.arguments(), "task": "reason", "max_new_tokens": visitor.run.long_answer_tokens}
    visitor.cancel_midway("cancel_analyze", "/analyze", arguments, at_first_chunk=False)


def hostile_request(kind: str, pool: Pool, rng: random.Random) -> tuple[str, dict]:
    """(endpoint, arguments) of one hostile request of ``kind`` (one of HOSTILE_KINDS)."""
    from gradio_client import handle_file

    base = pool.first[0]
    if kind == "long_chat_message":
        return "/chat", chat_arguments(base, words(2500, rng))
    changes = {
        "truncated_mp4": {"video": handle_file(str(pool.truncated))},
        "text_as_mp4": {"video": handle_file(str(pool.text_as_mp4))},
        "long_subtitle": {"subtitle": words(2500, rng)},
        "many_labels": {"label_set": "custom", "custom_labels": ", ".join(f"mood {i}" for i in range(33))},
        "long_question": {"task": "free", "question": words(2500, rng)},
    }[kind]
    return "/analyze", {**base.arguments(), **changes}


def do_hostile(visitor: Visitor, kind: str | None = None) -> None:
    kind = kind or visitor.rng.choice(HOSTILE_KINDS)
    api_name, arguments = hostile_request(kind, visitor.run.pool, visitor.rng)
    visitor.send(kind, api_name, arguments)


ACTIONS: dict[str, Callable[[Visitor], None]] = {
    "analyze": do_analyze, "page_analyze": do_page_analyze, "reanalyze": do_reanalyze, "chat": do_chat,
    "cancel_chat": do_cancel_chat, "cancel_analyze": do_cancel_analyze, "hostile": do_hostile,
}


def warm_up_round(visitor: Visitor) -> None:
    """One of every request kind (each hostile kind too), in this visitor's own order."""
    mix = visitor.run.mix
    steps: list[Callable[[], None]] = [functools.partial(ACTIONS[k], visitor) for k in mix if k != "hostile"]
    steps += [functools.partial(do_hostile, visitor, kind) for kind in HOSTILE_KINDS if "hostile" in mix]
    visitor.rng.shuffle(steps)
    for step in steps:
        if visitor.run.stop.is_set():
            return
        step()


def visit_until(visitor: Visitor, deadline: float) -> None:
    kinds, weights = list(visitor.run.mix), list(visitor.run.mix.values())
    while time.monotonic() < deadline and not visitor.run.stop.is_set():
        ACTIONS[visitor.rng.choices(kinds, weights)[0]](visitor)


# -- phases ---------------------------------------------------------------------------------------
def slider_maximum(url: str, elem_id: str = "max-new-tokens", default: int = 1000) -> int:
    """The largest max_new_tokens the page's slider accepts (a longer ask is refused before it runs)."""
    for component in httpx.get(url + "config", timeout=30.0).json().get("components", []):
        props = component.get("props", {})
        if props.get("elem_id") == elem_id and props.get("maximum"):
            return int(props["maximum"])
    return default


def sequential_answers(run: Run) -> None:
    """Every valid /analyze input once, one at a time: the answers every concurrent one must equal."""
    visitor = Visitor(-1, run)
    for analysis in run.pool.all_valid():
        kind = "analyze" if analysis in run.pool.first else "reanalyze"
        answer = visitor.send(kind, "/analyze", analysis.arguments(), expect_analysis(None))
        if answer is not None:
            run.pool.expected[analysis] = answer
    visitor.close()


def run_visitors(visitors: list[Visitor], task: Callable[[Visitor], None], give_up_at: float) -> int:
    """Each visitor runs ``task`` in its own thread; the number still running at ``give_up_at``."""
    threads = [threading.Thread(target=task, args=(v,), name=f"visitor-{v.index}", daemon=True) for v in visitors]
    for thread in threads:
        thread.start()
    for thread in threads:
        while thread.is_alive() and time.monotonic() < give_up_at:
            thread.join(0.5)  # short joins: Ctrl-C reaches the main thread
    return sum(thread.is_alive() for thread in threads)


def concurrent_phases(run: Run, sampler: RssSampler, clock: dict[str, float]) -> dict[str, Any]:
    """Warm-up round, then the timed load; RSS after the warm-up; visitors that never came back."""
    settings = run.settings
    grace = 2 * settings.request_timeout + 30  # a chat is two requests
    visitors = [Visitor(index, run) for index in range(settings.visitors)]
    run.phase, started = "warm_up", time.monotonic()
    stuck = run_visitors(visitors, warm_up_round, time.monotonic() + 12 * settings.request_timeout)
    time.sleep(settings.settle_seconds)  # the same rest as before the final RSS: both read an idle server
    rss_after_warm_up = sampler.mean_of_last(1.0)
    clock["warm_up"], run.phase, started = time.monotonic() - started, "load", time.monotonic()
    deadline = started + settings.seconds
    stuck += run_visitors(visitors, functools.partial(visit_until, deadline=deadline), deadline + grace)
    clock["load"] = time.monotonic() - started
    for visitor in visitors:
        visitor.close()  # the visitors leave: the server may end their sessions
    return {"rss_after_warm_up": rss_after_warm_up, "stuck_visitors": stuck}


BURST = 10  # analyses one client fires at once in the fairness phase


def fairness_phase(run: Run) -> dict[str, Any]:
    """One client fires ``BURST`` reasoning analyses at once; a second client's analysis is sent
    a moment later: how many of the burst were accepted, and how long the second one waited."""
    from gradio_client import Client

    clients = [Client(run.url, verbose=False, download_files=False, analytics_enabled=False) for _ in range(2)]
    arguments = {**run.pool.first[0].arguments(), "task": "reason", "max_new_tokens": 200}

    def ask(client) -> tuple[bool, str, float]:
        started = time.monotonic()
        try:
            client.predict(api_name="/analyze", **arguments)
            return True, "", time.monotonic() - started
        except Exception as error:  # noqa: BLE001 - a refusal is an outcome here
            return False, str(error), time.monotonic() - started

    with concurrent.futures.ThreadPoolExecutor(BURST + 1) as pool:
        burst = [pool.submit(ask, clients[0]) for _ in range(BURST)]
        time.sleep(1.0)
        second = pool.submit(ask, clients[1]).result()
        outcomes = [job.result() for job in burst]
    refusals = [text for ok, text, _ in outcomes if not ok]
    return {"fairness": {"burst": BURST, "accepted": sum(ok for ok, _, _ in outcomes), "refused": len(refusals),
                         "refusals_readable": all("already have" in text for text in refusals),
                         "second_answered": second[0], "second_wait_s": round(second[2], 2)}}


def the_end(run: Run, server: Server, sampler: RssSampler) -> dict[str, Any]:
    """A last /analyze (alive and still right?), then RSS after a settle and the files left."""
    run.phase = "final"
    visitor = Visitor(-2, run)
    do_analyze(visitor)
    visitor.close()
    last = run.outcomes[-1]
    time.sleep(run.settings.settle_seconds)
    rss_final, files_at_end = sampler.mean_of_last(1.0), server.files_left()
    if files_at_end:  # uploads of requests cancelled in the queue: no request used them
        time.sleep(2 * run.settings.unused_upload + 1)  # the app's stated time, its sweep included
    return {"rss_final": rss_final, "files_at_end": files_at_end, "files_left": server.files_left(),
            "alive": server.alive() and last.status == "answered" and not last.mismatch,
            "internal_errors_logged": server.internal_errors_logged()}


def run_harness(settings: Settings, say: Callable[[str], None] = print) -> dict[str, Any]:
    """Start the app, run every phase, stop the app; the report (see ``build_report``)."""
    mix_of(settings)  # a wrong --only fails before the app starts
    work = Path(tempfile.mkdtemp(prefix="load_harness_"))
    server, sampler, run = Server(work, settings.start_timeout, settings.unused_upload), None, None
    clock: dict[str, float] = {}
    try:
        started = time.monotonic()
        url = server.start()
        sampler = RssSampler(server.process.pid).start()
        run = Run(settings, url, build_pool(work, settings), slider_maximum(url))
        clock["start"] = time.monotonic() - started
        say(f"app.py answers at {url} after {clock['start']:.1f} s; sequential answers ...")
        started = time.monotonic()
        sequential_answers(run)
        clock["sequential"] = time.monotonic() - started
        say(f"{len(run.pool.expected)} sequential answers in {clock['sequential']:.1f} s; warm-up, then "
            f"{settings.visitors} visitors for {settings.seconds:.0f} s ...")
        measured = {**concurrent_phases(run, sampler, clock), **fairness_phase(run), **the_end(run, server, sampler)}
        say("fairness: {accepted} of {burst} accepted, {refused} refused; a second visitor waited "
            "{second_wait_s} s".format(**measured["fairness"]))
        return build_report(settings, run, sampler, measured, clock)
    finally:
        if run is not None:
            run.stop.set()
        if sampler is not None:
            sampler.stop()
        server.stop()
        if settings.keep:
            say(f"work folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


# -- the report -----------------------------------------------------------------------------------
def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile; None without values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def per_kind(outcomes: list[Outcome]) -> dict[str, dict[str, Any]]:
    grouped: dict[str, list[Outcome]] = defaultdict(list)
    for outcome in outcomes:
        grouped[outcome.kind].append(outcome)
    table = {}
    for kind in [k for k in (*VALID_KINDS, *HOSTILE_KINDS) if k in grouped]:
        items = grouped[kind]
        counts = Counter(o.status for o in items if not o.failed)
        fine = [o.seconds for o in items if not o.failed]
        table[kind] = {"requests": len(items), "answered": counts["answered"], "refused": counts["refused"],
                       "cancelled": counts["cancelled"], "failures": dict(Counter(o.status for o in items if o.failed)),
                       "p50_s": percentile(fine, 50), "p95_s": percentile(fine, 95)}
    return table


def build_report(settings: Settings, run: Run, sampler: RssSampler, measured: dict, clock: dict) -> dict[str, Any]:
    outcomes = run.outcomes
    failed = [o for o in outcomes if o.failed]
    report = {
        "settings": asdict(settings), "long_answer_tokens": run.long_answer_tokens,
        "seconds": {k: round(v, 1) for k, v in clock.items()},
        "kinds": per_kind(outcomes),
        "failures": [{"kind": o.kind, "phase": o.phase, "status": o.status, "detail": o.detail} for o in failed],
        "valid_inputs": len(run.pool.all_valid()), "sequential_answers": len(run.pool.expected),
        "compared": sum(o.compared for o in outcomes),
        "mismatches": [{"kind": o.kind, "phase": o.phase, "difference": o.mismatch} for o in outcomes if o.mismatch],
        "rss_mb": {"after_warm_up": round(measured["rss_after_warm_up"] / MB, 1),
                   "peak": round(sampler.peak() / MB, 1), "final": round(measured["rss_final"] / MB, 1)},
        "rss_timeline_mb": sampler.timeline(5.0), "sessions": run.sessions,
        "files_at_end": measured["files_at_end"],
        "files_left": measured["files_left"], "files_left_count": len(measured["files_left"]),
        "server_alive": measured["alive"], "internal_errors_logged": measured["internal_errors_logged"],
        "stuck_visitors": measured["stuck_visitors"], "fairness": measured["fairness"],
    }
    report["targets"] = targets(report, outcomes, settings)
    report["passed"] = all(t["passed"] for t in report["targets"])
    return report


def target(key: str, name: str, passed: bool, measured: str) -> dict[str, Any]:
    return {"id": key, "name": name, "passed": bool(passed), "measured": measured}


def targets(report: dict, outcomes: list[Outcome], settings: Settings) -> list[dict[str, Any]]:
    """The issue's targets (and one for hostile requests), each with what was measured."""
    valid = [o for o in outcomes if o.kind in VALID_KINDS]
    valid_failed = sum(o.failed for o in valid)
    answered_under_load = sum(o.status == "answered" for o in valid if o.phase == "load")
    hostile = [o for o in outcomes if o.kind in HOSTILE_KINDS]
    hostile_failed = sum(o.failed for o in hostile)
    rss, margin = report["rss_mb"], settings.rss_margin_mb
    growth = rss["final"] - rss["after_warm_up"]
    every_input = report["sequential_answers"] == report["valid_inputs"]
    return [
        target("valid_requests", "0 failed valid requests",
               valid_failed == 0 and (answered_under_load > 0 or set(mix_of(settings)) == {"hostile"}),
               f"{valid_failed} of {len(valid)} failed; {answered_under_load} answered under load"),
        target("alive", "server alive at the end", report["server_alive"] and report["stuck_visitors"] == 0,
               f"alive and answering: {report['server_alive']}; visitors stuck: {report['stuck_visitors']}"),
        target("equal_answers", "answers equal the sequential ones",
               every_input and report["compared"] > 0 and not report["mismatches"],
               f"{len(report['mismatches'])} of {report['compared']} differ; sequential answers for "
               f"{report['sequential_answers']} of {report['valid_inputs']} inputs"),
        target("no_files_left", "0 files of visitors left in the temp folders", report["files_left_count"] == 0,
               f"{report['files_left_count']} files"),
        target("rss", f"final RSS within {margin:.0f} MB of the RSS after warm-up", growth <= margin,
               f"{rss['after_warm_up']:.0f} MB -> {rss['final']:.0f} MB ({growth:+.0f} MB)"),
        target("fair", "one client's burst: per-visitor limit accepted, the rest refused readably, a second "
                       "client still answered", _fair(report["fairness"]),
               "{accepted} accepted, {refused} refused (readable: {refusals_readable}); the second client "
               "waited {second_wait_s} s".format(**report["fairness"])),
        target("hostile_refused", "hostile requests refused readably (never the generic error)",
               hostile_failed == 0 and (len(hostile) > 0 or "hostile" not in mix_of(settings)),
               f"{hostile_failed} of {len(hostile)} failed"),
    ]


def _fair(fairness: dict[str, Any]) -> bool:
    limit = int(os.environ.get("EMOTION_LLAMA_PER_VISITOR", "2"))
    return (fairness["accepted"] == min(limit, fairness["burst"]) and fairness["refusals_readable"]
            and fairness["second_answered"])


def kinds_table(kinds: dict[str, dict]) -> list[str]:
    header = (f"{'kind':<18}{'requests':>9}{'answered':>9}{'refused':>8}{'cancel':>7}{'failed':>7}"
              f"{'p50 s':>8}{'p95 s':>8}  failures")
    lines = [header]
    for kind, row in kinds.items():
        p50, p95 = (f"{v:.2f}" if v is not None else "-" for v in (row["p50_s"], row["p95_s"]))
        failures = ", ".join(f"{k} {n}" for k, n in row["failures"].items())
        lines.append(f"{kind:<18}{row['requests']:>9}{row['answered']:>9}{row['refused']:>8}{row['cancelled']:>7}"
                     f"{sum(row['failures'].values()):>7}{p50:>8}{p95:>8}  {failures}")
    return lines


def readable(report: dict) -> str:
    s, rss = report["settings"], report["rss_mb"]
    lines = [f"Load harness: {s['visitors']} visitors, {s['seconds']:.0f} s of load, seed {s['seed']}",
             "phases (s): " + ", ".join(f"{k} {v}" for k, v in report["seconds"].items()), "",
             *kinds_table(report["kinds"]), "", "failures (distinct, first 12):"]
    distinct = dict.fromkeys(f"  {f['kind']} [{f['status']}, {f['phase']}] {f['detail']}" for f in report["failures"])
    lines += list(distinct)[:12] or ["  none"]
    lines.append(f"answers compared with the sequential ones: {report['compared']}, "
                 f"different: {len(report['mismatches'])}")
    lines += [f"  {m['kind']} [{m['phase']}]: {m['difference']}" for m in report["mismatches"][:5]]
    lines.append(f"server RSS: after warm-up {rss['after_warm_up']:.0f} MB, peak {rss['peak']:.0f} MB, "
                 f"final {rss['final']:.0f} MB")
    lines.append("RSS every 15 s (MB): " + " ".join(str(mb) for _, mb in report["rss_timeline_mb"][::3]))
    lines.append(f"gradio sessions opened by visitors: {report['sessions']}")
    lines.append(f"files in the server's temp folders at the end: {len(report['files_at_end'])} (uploads no "
                 f"request used, deleted within {2 * report['settings']['unused_upload']:g} s as the app states)")
    lines.append(f"files left in the server's temp folders after that time: {report['files_left_count']}")
    lines += [f"  {path}" for path in report["files_left"][:10]]
    lines.append(f"server alive at the end: {report['server_alive']}; "
                 f"internal errors in its log: {report['internal_errors_logged']}")
    lines += ["", "targets:"]
    lines += [f"  {'PASS' if t['passed'] else 'FAIL'}  {t['name']}  ({t['measured']})" for t in report["targets"]]
    return "\n".join(lines)


# -- command line ---------------------------------------------------------------------------------
def parse_settings(argv: list[str] | None) -> tuple[Settings, str | None]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name, value in asdict(Settings()).items():
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            parser.add_argument(flag, action="store_true", help=FLAG_HELP[name])
        else:
            parser.add_argument(flag, type=type(value), default=value, help=f"{FLAG_HELP[name]} (default {value})")
    parser.add_argument("--json", metavar="PATH", help="also write the report as JSON ('-': stdout)")
    args = vars(parser.parse_args(argv))
    json_path = args.pop("json")
    return Settings(**args), json_path


def interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    settings, json_path = parse_settings(argv)
    signal.signal(signal.SIGTERM, interrupt)  # a plain kill stops the app too
    say = functools.partial(print, file=sys.stderr if json_path == "-" else sys.stdout, flush=True)
    try:
        report = run_harness(settings, say)
    except KeyboardInterrupt:
        say("interrupted: the app was stopped")
        return 130
    say(readable(report))
    if json_path == "-":
        print(json.dumps(report, indent=1))
    elif json_path:
        Path(json_path).write_text(json.dumps(report, indent=1))
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
