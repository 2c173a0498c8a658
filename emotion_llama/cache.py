"""One content-addressed cache of clips for the app, the API, the CLI and ``evaluate``.

A clip is known by the SHA-256 of its bytes. It is decoded once per person followed
(frames, faces, sound), its automatic subtitle found once, and it is encoded once per
person, frame choice and set of encoders; the typed subtitle, the frame choice and the modalities left out are applied
to those results, so changing them never decodes the file again. Every table is a
bounded LRU whose entries also expire ``ttl`` seconds (``EMOTION_LLAMA_SESSION_TTL``)
after their last use, and a clip that two threads ask for at once is worked on once.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import replace
from pathlib import Path
from typing import Any

from . import limits
from .clip import Subtitle, check_person
from .errors import UnreadableFileError
from .prepare import DecodedClip, PrepareOptions, decode_for_encoders, subtitle_of

GONE = "this clip was deleted after its last request (uploads are not kept); please upload it again"


class _Lru:
    """At most ``capacity`` items, none older than ``ttl`` seconds since its last use."""

    def __init__(self, capacity: int, ttl: float, clock: Callable[[], float]):
        self.capacity = capacity
        self.ttl = ttl
        self.clock = clock
        self._items: OrderedDict[Hashable, tuple[Any, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: Hashable) -> Any:
        if key not in self._items:
            return None
        value, used = self._items[key]
        if self.clock() - used > self.ttl:
            del self._items[key]
            return None
        self.put(key, value)
        return value

    def put(self, key: Hashable, value: Any) -> None:
        self._items[key] = (value, self.clock())
        self._items.move_to_end(key)
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)

    def sweep(self) -> None:
        now = self.clock()
        for key in [key for key, (_, used) in self._items.items() if now - used > self.ttl]:
            del self._items[key]


class ClipCache:
    """Decoded clips, automatic subtitles and encoder outputs, by content.

    ``decodes`` and ``encodes`` count the work done (what the tests and benchmarks read).
    A path seen before is remembered with its size and modification time, so a file is
    hashed once, and an upload deleted after its request is still found by its path.
    """

    def __init__(self, capacity: int = 16, options: PrepareOptions | None = None, ttl: float | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.options = options or PrepareOptions()
        self.ttl = ttl or limits.get("session_ttl_s")
        self._decoded, self._subtitles = _Lru(capacity, self.ttl, clock), _Lru(capacity, self.ttl, clock)
        self._encoded, self._paths = _Lru(2 * capacity, self.ttl, clock), _Lru(8 * capacity, self.ttl, clock)
        self._lock = threading.Lock()
        self._working: dict[Hashable, threading.Lock] = {}
        self.decodes = self.encodes = 0

    def key(self, path: str | Path) -> str:
        """The content digest of the file at ``path``."""
        name = os.path.abspath(path)
        try:
            stat = os.stat(name)
        except FileNotFoundError:
            with self._lock:
                known = self._paths.get(name)
            if known is None:
                raise UnreadableFileError(f"cannot open {Path(path).name}: no such file") from None
            return known[2]
        with self._lock:
            known = self._paths.get(name)
        if known and known[:2] == (stat.st_size, stat.st_mtime_ns):
            return known[2]
        digest = file_digest(name)
        with self._lock:
            self._paths.put(name, (stat.st_size, stat.st_mtime_ns, digest))
        return digest

    def decoded(self, key: str, path: str | Path, person: int | None = None) -> DecodedClip:
        """The clip decoded with ``person``'s face cropped (None: the one seen most often)."""
        check_person(person)

        def decode() -> DecodedClip:
            if not os.path.exists(path):
                raise UnreadableFileError(GONE)
            with self._lock:
                self.decodes += 1
            return decode_for_encoders(path, replace(self.options, person=person))

        return self._once(self._decoded, (key, person or 0), decode)

    def subtitle(self, key: str, path: str | Path, decoded: DecodedClip, typed: str | None) -> Subtitle:
        """The typed words, else the clip's own subtitle (sidecar or Whisper), found once."""
        if typed and typed.strip():
            return subtitle_of(None, decoded, typed, self.options)
        return self._once(self._subtitles, key, lambda: subtitle_of(path, decoded, None, self.options))

    def encoded(self, key: Hashable, encode: Callable[[], Any]) -> Any:
        def counted() -> Any:
            with self._lock:
                self.encodes += 1
            return encode()

        return self._once(self._encoded, key, counted)

    def __len__(self) -> int:
        """Clips held decoded."""
        return len(self._decoded)

    def sweep(self) -> None:
        """Forget every clip unused for ``ttl`` seconds (decoded frames, subtitle, features, path)."""
        with self._lock:
            for table in (self._decoded, self._subtitles, self._encoded, self._paths):
                table.sweep()

    def _once(self, table: _Lru, key: Hashable, make: Callable[[], Any]) -> Any:
        """``table[key]``, made by ``make`` if missing; concurrent askers of one key wait for one maker."""
        with self._lock:
            found = table.get(key)
            if found is not None:
                return found
            working = self._working.setdefault((id(table), key), threading.Lock())
        try:
            with working:
                with self._lock:
                    found = table.get(key)
                if found is None:
                    found = make()
                    with self._lock:
                        table.put(key, found)
            return found
        finally:
            with self._lock:
                self._working.pop((id(table), key), None)


def file_digest(path: str | Path) -> str:
    """SHA-256 of a file, read in 1 MiB blocks; a missing or unreadable file is a user's error."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    except (FileNotFoundError, IsADirectoryError, PermissionError) as error:
        raise UnreadableFileError(f"cannot open {Path(path).name}: {error.strerror.lower()}") from error
    return digest.hexdigest()


# Shared by every engine in the process: decoding does not depend on the model.
SHARED = ClipCache()
