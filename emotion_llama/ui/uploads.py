"""Upload hygiene: each upload is deleted as soon as no request uses it.

Gradio files an upload under a folder named by its content hash, so two requests with
the same clip share one path. The decoded clip stays in the engine's cache (bounded, in
memory), so a request that starts after the file was deleted (the second Analyze click,
a chat turn, a queued twin) is still served.

A clip the visitor replaces or clears before any request used it (a second upload, a new
webcam take) is ``discard``-ed at once rather than left for Gradio's unused-upload sweep.

One exception: a video made into a timeline is ``hold``-ed for a time after its request
(its segments are decoded again when the visitor opens them), at most ``max_held`` at
once (the oldest let go first), and deleted by ``sweep`` once that time is up.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from ..cache import file_digest


class UploadStore:
    """Only files under ``upload_root`` (Gradio's upload folder) are deleted, and never one
    whose content is one of ``keep`` (the example clips, which Gradio caches there too)."""

    def __init__(self, upload_root: str | Path, keep: Iterable[str | Path] = (), max_held: int = 16,
                 clock: Callable[[], float] = time.monotonic):
        self._root = Path(upload_root).resolve()
        self._keep = {file_digest(path) for path in keep}
        self._in_use: dict[str, int] = {}
        self._held: OrderedDict[str, float] = OrderedDict()  # path -> when it is let go
        self.max_held, self.clock = max_held, clock
        self._lock = threading.Lock()

    def hold(self, path: str | None, seconds: float) -> None:
        """Keep the upload at ``path`` until ``seconds`` from now (again: from now on)."""
        if not path:
            return
        with self._lock:
            if path not in self._held:
                self._in_use[path] = self._in_use.get(path, 0) + 1
            self._held[path] = self.clock() + seconds
            self._held.move_to_end(path)
            dropped = list(self._held)[: max(0, len(self._held) - self.max_held)]
            for old in dropped:
                del self._held[old]
        for old in dropped:
            self.release(old)

    def held(self, path: str | None) -> bool:
        with self._lock:
            return path in self._held

    def sweep(self) -> int:
        """Let go of every hold whose time is up (the file is deleted unless a request uses it)."""
        with self._lock:
            now = self.clock()
            expired = [path for path, until in self._held.items() if until <= now]
            for path in expired:
                del self._held[path]
        for path in expired:
            self.release(path)
        return len(expired)

    @contextmanager
    def using(self, path: str | None) -> Iterator[None]:
        """Around a request: the upload is deleted when its last request ends."""
        if not path:
            yield
            return
        self.acquire(path)
        try:
            yield
        finally:
            self.release(path)

    def discard(self, path: str | None) -> bool:
        """Delete an upload the page no longer shows, unless a request uses it or it is held;
        True when it was deleted."""
        if not path:
            return False
        with self._lock:
            if path in self._in_use or path in self._held:
                return False
            file = Path(path).resolve()
            return file.is_relative_to(self._root) and _delete_upload(file, self._root, self._keep)

    def acquire(self, path: str) -> None:
        with self._lock:
            self._in_use[path] = self._in_use.get(path, 0) + 1

    def release(self, path: str) -> None:
        """Delete the file (and its hash folder, when empty) once the last request is done."""
        with self._lock:
            count = self._in_use.get(path, 1) - 1
            if count > 0:
                self._in_use[path] = count
                return
            self._in_use.pop(path, None)
            file = Path(path).resolve()
            if file.is_relative_to(self._root):
                _delete_upload(file, self._root, self._keep)


def _delete_upload(path: Path, root: Path, keep: set[str]) -> bool:
    try:
        if not path.is_file() or file_digest(path) in keep:
            return False
        path.unlink()
        if path.parent != root:
            path.parent.rmdir()  # Gradio's per-upload hash folder; fails harmlessly when not empty
    except OSError:
        return not path.exists()
    return True
