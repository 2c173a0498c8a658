"""Conversations held for the page's and the API's visitors, bounded in number and age.

A visitor's ``gr.State`` holds only a ``ChatTicket`` (an id and the clip and settings it
was opened with); the ``ChatSession`` itself lives here. At most ``max_sessions`` are
kept (the least recently used is closed to make room), and one unused for ``ttl``
seconds is closed by ``sweep``; a visitor who comes back to a closed one is told so.
"""

from __future__ import annotations

import ctypes
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from .. import limits
from ..chat import ChatSession
from ..clip import PreparedClip
from ..errors import SessionExpiredError


@dataclass(frozen=True)
class ChatTicket:
    """What a visitor's browser session keeps: which conversation, about what."""

    id: str
    key: tuple


@dataclass
class Conversation:
    """One conversation about one clip with one set of settings; one turn at a time.
    ``session`` is the decoded clip until the first turn has encoded it (on the GPU)."""

    session: ChatSession | PreparedClip
    lock: threading.Lock = field(default_factory=threading.Lock)
    messages: list[dict[str, str]] = field(default_factory=list)
    last_used: float = 0.0


class ConversationStore:
    def __init__(self, capacity: int | None = None, ttl: float | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.capacity = capacity or limits.get("max_sessions")
        self.ttl = ttl or limits.get("session_ttl_s")
        self.clock = clock
        self._open: OrderedDict[str, Conversation] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._open)

    def open(self, key: tuple, session: ChatSession | PreparedClip) -> ChatTicket:
        """Keep ``session``, closing the least recently used one if the store is full."""
        ticket = ChatTicket(secrets.token_hex(8), key)
        with self._lock:
            self._open[ticket.id] = Conversation(session, last_used=self.clock())
            while len(self._open) > self.capacity:
                self._open.popitem(last=False)
        return ticket

    def get(self, ticket: ChatTicket) -> Conversation:
        """The visitor's conversation; ``SessionExpiredError`` when it was closed."""
        with self._lock:
            conversation = self._open.get(ticket.id)
            if conversation is None or self._expired(conversation):
                self._open.pop(ticket.id, None)
                raise SessionExpiredError(
                    f"this conversation was closed: conversations end after {self.ttl / 60:g} minutes "
                    f"without a message, and at most {self.capacity} are kept at once. Press Reset to start "
                    "a new one (upload the clip again if it asks for it)."
                )
            conversation.last_used = self.clock()
            self._open.move_to_end(ticket.id)
            return conversation

    def close(self, ticket: ChatTicket | None) -> None:
        if ticket is not None:
            with self._lock:
                self._open.pop(ticket.id, None)

    def sweep(self) -> int:
        """Close every conversation unused for ``ttl`` seconds; how many were closed."""
        with self._lock:
            stale = [ticket for ticket, conversation in self._open.items() if self._expired(conversation)]
            for ticket in stale:
                del self._open[ticket]
        return len(stale)

    def _expired(self, conversation: Conversation) -> bool:
        return self.clock() - conversation.last_used > self.ttl


class Janitor:
    """Calls each of ``sweeps`` every ``every`` seconds on a daemon thread until ``stop``."""

    def __init__(self, sweeps: list[Callable[[], object]], every: float):
        self.sweeps = sweeps
        self.every = every
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="emotion-llama-janitor", daemon=True)

    def start(self) -> Janitor:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopped.set()

    def _run(self) -> None:
        while not self._stopped.wait(self.every):
            for sweep in self.sweeps:
                sweep()
            give_back_freed_memory()


def give_back_freed_memory() -> None:
    """glibc keeps the pages of freed clips in the heap; hand them back to the system, so the
    server's memory falls once idle visitors are forgotten (a no-op without glibc)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
