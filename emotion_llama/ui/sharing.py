"""Sharing the demo with a team: passwords, fairness between visitors, and a health report.

- ``logins``: who may sign in (``--auth user:password``, or ``EMOTION_LLAMA_AUTH``: a file of
  ``user:password`` lines), for Gradio's own login. Passwords are never logged or shown.
- ``Fairness``: at most ``EMOTION_LLAMA_PER_VISITOR`` model requests waiting or running per
  visitor; the next one is refused at once with a readable message instead of taking a
  queue slot. A visitor is a browser session (or one ``gradio_client.Client``), and also a
  client address when the server sits behind one trusted proxy (``EMOTION_LLAMA_TRUSTED_PROXY``,
  on by default on Hugging Face Spaces): the address is the last hop of ``X-Forwarded-For``.
- ``Health``: counts since start (requests served, refused, failed by kind), plus what the
  engine runs and the queue's length; nothing of any request's content.
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from .. import limits
from ..errors import ConfigError

AUTH_FILE_ENV = "EMOTION_LLAMA_AUTH"
TRUSTED_PROXY_ENV = "EMOTION_LLAMA_TRUSTED_PROXY"


def logins(pairs: list[str] | None, file: str | None = None) -> list[tuple[str, str]] | None:
    """``user:password`` pairs from the command line and the file named by ``EMOTION_LLAMA_AUTH``;
    None when there are none (the demo is open). A malformed entry is refused without echoing it."""
    file = file if file is not None else os.environ.get(AUTH_FILE_ENV, "").strip() or None
    entries = list(pairs or [])
    if file:
        try:
            entries += [line.strip() for line in Path(file).read_text(encoding="utf-8").splitlines()
                        if line.strip() and not line.lstrip().startswith("#")]
        except OSError as error:
            raise ConfigError(f"{AUTH_FILE_ENV}: cannot read the file of logins ({error.strerror})") from None
    found = []
    for number, entry in enumerate(entries, start=1):
        user, colon, password = entry.partition(":")
        if not colon or not user.strip() or not password:
            raise ConfigError(f"login {number} is not user:password (a user name, a colon, a password)")
        found.append((user.strip(), password))
    return found or None


def behind_proxy() -> bool:
    """Whether client addresses come from one trusted proxy's ``X-Forwarded-For`` (as on Spaces)."""
    value = os.environ.get(TRUSTED_PROXY_ENV, "").strip().lower()
    if value:
        return value in ("1", "true", "yes", "on")
    return bool(os.environ.get("SPACE_ID"))


def visitor_keys(session_hash: str | None, request, trust_proxy: bool) -> set[tuple[str, str]]:
    """Who sent a request: its session, and its address when a trusted proxy names it."""
    keys = {("session", session_hash)} if session_hash else set()
    if trust_proxy and request is not None:
        forwarded = request.headers.get("x-forwarded-for", "")
        address = forwarded.split(",")[-1].strip() if forwarded else ""
        if address:
            keys.add(("address", address))
    return keys


def refusal(limit: int) -> str:
    return (f"You already have {limit} request{'s' if limit != 1 else ''} waiting or running; "
            "this one was not queued. Wait for one to finish, then try again.")


class Fairness:
    """At most ``limit`` model requests (``concurrency_id``) per visitor in a Gradio queue."""

    def __init__(self, limit: int | None = None, concurrency_id: str = "model", trust_proxy: bool | None = None,
                 health: Health | None = None):
        self.limit = limit or int(limits.get("per_visitor"))
        self.concurrency_id = concurrency_id
        self.trust_proxy = behind_proxy() if trust_proxy is None else trust_proxy
        self.health = health
        self._admitting: Counter = Counter()  # pushes under way, per visitor key

    def install(self, blocks) -> None:
        """Check every push into ``blocks``' queue (call after ``blocks.queue(...)``)."""
        queue = blocks._queue
        original = queue.push

        async def push(body, request, username):
            keys = self._keys_of(blocks, body, request)
            if keys and self.busy(queue, keys) >= self.limit:
                if self.health:
                    self.health.refused()
                # Gradio's own way to refuse before queuing: the page shows the message at the
                # clip, and gradio_client raises it as a ValidationError.
                return False, [{"__type__": "validate", "is_valid": False, "parameter_name": "video",
                                "message": refusal(self.limit)}], "validator_error"
            self._admitting.update(keys)
            try:
                return await original(body=body, request=request, username=username)
            finally:
                self._admitting.subtract(keys)

        queue.push = push

    def _keys_of(self, blocks, body, request) -> set[tuple[str, str]]:
        from gradio import route_utils

        try:
            fn = route_utils.get_fn(blocks, None, body)
        except Exception:  # noqa: BLE001 - an unknown function is Gradio's to refuse
            return set()
        if fn.concurrency_id != self.concurrency_id:
            return set()
        return visitor_keys(body.session_hash, request, self.trust_proxy)

    def busy(self, queue, keys: set[tuple[str, str]]) -> int:
        """Model requests of any of ``keys`` waiting, running or being admitted."""
        count = sum(self._admitting[key] for key in keys)
        for event in _events(queue):
            if event.concurrency_id == self.concurrency_id and visitor_keys(
                    event.session_hash, event.request, self.trust_proxy) & keys:
                count += 1
        return count


def _events(queue) -> Iterator:
    for waiting in queue.event_queue_per_concurrency_id.values():
        yield from list(waiting.queue)
    for job in list(queue.active_jobs):
        yield from job or []


class Health:
    """Counts since start, safe to show anyone: no request's content, no user names."""

    def __init__(self, engine_info: dict[str, str]):
        self.engine = {key: value for key, value in engine_info.items() if key in ("weights", "device", "dtype",
                                                                                 "decoding", "quantization")}
        self.started = time.time()
        self._lock = threading.Lock()
        self._served = 0
        self._refused = 0
        self._errors: Counter = Counter()

    def served(self) -> None:
        with self._lock:
            self._served += 1

    def refused(self) -> None:
        with self._lock:
            self._refused += 1

    def failed(self, kind: str) -> None:
        with self._lock:
            self._errors[kind] += 1

    def report(self, queue_length: int) -> dict:
        with self._lock:
            return {"status": "ok", "weights_loaded": True, **self.engine,
                    "uptime_s": round(time.time() - self.started, 1), "queue_length": queue_length,
                    "requests_served": self._served, "requests_refused": self._refused,
                    "errors_by_kind": dict(self._errors)}
