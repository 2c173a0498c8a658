"""The ZeroGPU contract, checked with a stand-in ``spaces`` module: only model work runs
inside ``spaces.GPU`` calls, each with a stated duration; what crosses into and out of a
call survives pickling (ZeroGPU runs it in a forked worker), carries no model and no
tensor outside host memory; and the page and the API give the same answers as without it."""

from __future__ import annotations

import inspect
import io
import pickle
import shutil
import sys
import types
from pathlib import Path

import pytest
import torch

from emotion_llama.cache import ClipCache
from emotion_llama.pipeline import Engine
from emotion_llama.ui import handlers, timelines
from emotion_llama.ui.gpu import ANALYSIS_SECONDS, CHAT_SECONDS, TIMELINE_SECONDS, GpuWork
from emotion_llama.ui.uploads import UploadStore

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "happy.mp4"
MAX_CROSSING_BYTES = 20_000_000  # a decoded clip is ~10 MB; the tiny model alone is larger than this


class Boundary:
    """What a ZeroGPU worker would see: each call's arguments and each result go through
    pickle (so changes made inside stay inside), and ``inside`` is set while it runs."""

    def __init__(self) -> None:
        self.inside = False
        self.calls: list[tuple[str, int]] = []
        self.log: list[tuple[str, bool]] = []
        self.crossings: list[int] = []

    def cross(self, value):
        buffer = io.BytesIO()
        pickle.dump(value, buffer)
        self.crossings.append(buffer.tell())
        tensors = [v for v in _walk(value) if isinstance(v, torch.Tensor)]
        assert all(t.device.type == "cpu" for t in tensors)
        assert not any(isinstance(v, torch.nn.Module) for v in _walk(value)), "a model crossed the boundary"
        return pickle.loads(buffer.getvalue())

    def GPU(self, function, duration=None):
        assert inspect.isgeneratorfunction(function), "ZeroGPU streams generators"
        self.calls.append((function.func.__name__, duration))

        def in_worker(*args, **kwargs):
            args, kwargs = self.cross((args, kwargs))
            self.inside = True
            try:
                for item in function(*args, **kwargs):
                    self.inside = False
                    yield self.cross(item)
                    self.inside = True
            finally:
                self.inside = False

        return in_worker


def _walk(value, depth: int = 0):
    """``value`` and what it holds, as pickle sees it (``__getstate__``)."""
    yield value
    if depth > 6 or isinstance(value, type | torch.Tensor | str | bytes):
        return
    state = value.__getstate__() if hasattr(value, "__dict__") else None
    children = (value.values() if isinstance(value, dict) else value if isinstance(value, list | tuple)
                else state.values() if isinstance(state, dict) else ())
    for child in children:
        yield from _walk(child, depth + 1)


@pytest.fixture
def zero(monkeypatch, tiny_model, tmp_path):
    """A demo whose model work goes through the stand-in; returns (demo, boundary)."""
    import emotion_llama.cache as cache_module
    import emotion_llama.timeline as timeline_module

    boundary = Boundary()
    monkeypatch.setitem(sys.modules, "spaces", types.SimpleNamespace(GPU=boundary.GPU))
    decode = cache_module.decode_for_encoders
    monkeypatch.setattr(cache_module, "decode_for_encoders",
                        lambda *a: boundary.log.append(("decode", boundary.inside)) or decode(*a))
    faces = timeline_module.follow_faces  # a timeline segment's frames become the encoders' inputs
    monkeypatch.setattr(timeline_module, "follow_faces",
                        lambda *a, **k: boundary.log.append(("decode", boundary.inside)) or faces(*a, **k))
    hook = tiny_model.llama_model.get_base_model().model.register_forward_hook(
        lambda *a: boundary.log.append(("llm", boundary.inside)))
    encode = tiny_model.encode
    monkeypatch.setattr(tiny_model, "encode", lambda *a, **k: boundary.log.append(("encode", boundary.inside))
                        or encode(*a, **k))
    engine = Engine(tiny_model, {"weights": "tiny (random)"}, cache=ClipCache())
    yield handlers.Demo(engine, UploadStore(tmp_path / "uploads")), boundary
    hook.remove()


def test_only_model_work_runs_inside_the_gpu_calls(zero, tmp_path):
    demo, boundary = zero
    assert boundary.calls == [("_analysis", ANALYSIS_SECONDS), ("_reply", CHAT_SECONDS), ("score_segments", TIMELINE_SECONDS)]
    upload = tmp_path / "uploads" / "0a1b" / "clip.mp4"
    upload.parent.mkdir(parents=True)
    shutil.copy(EXAMPLE, upload)
    result = handlers.analyze_api(demo, str(upload), None, "reason", None, "merr", None, 0.0, 12)
    ask = handlers.chat_api(demo, str(EXAMPLE), None, "", "emotion", "merr", None, 0.0, 6)
    first, ticket = list(ask)[-1]
    second, same = list(handlers.chat_api(demo, str(EXAMPLE), None, "Why?", "free", "merr", None, 0.0, 6,
                                          ticket))[-1]
    assert same == ticket and len(demo.conversations.get(ticket).session.turns) == 2  # state came back out
    timeline = timelines.timeline_api(demo, str(EXAMPLE), "merr")
    assert timeline["segments"] and all(s["label"] in s["probabilities"] for s in timeline["segments"])
    kinds = {kind for kind, _ in boundary.log}
    assert kinds == {"decode", "encode", "llm"}
    assert all(not inside for kind, inside in boundary.log if kind == "decode"), "decoding borrowed the GPU"
    assert all(inside for kind, inside in boundary.log if kind != "decode"), "model work ran outside"
    assert max(boundary.crossings) < MAX_CROSSING_BYTES
    assert result["label"] in result["probabilities"] and first and second


def test_answers_are_the_same_as_without_zerogpu(zero, tiny_model, tmp_path):
    demo, _ = zero
    plain = handlers.Demo(Engine(tiny_model, {"weights": "tiny (random)"}, cache=ClipCache()),
                          UploadStore(tmp_path / "plain"), work=GpuWork.__new__(GpuWork))
    plain.work.__init__(plain.engine, wrap=lambda function, duration: function)
    args = (str(EXAMPLE), "I got the job!", "reason", None, "merr", None, 0.0, 16)
    through, direct = handlers.analyze_api(demo, *args), handlers.analyze_api(plain, *args)
    assert through["answer"] == direct["answer"] and through["probabilities"] == direct["probabilities"]
    chat_args = (str(EXAMPLE), None, "What do you see?", "free", "merr", None, 0.0, 8)
    assert list(handlers.chat_api(demo, *chat_args))[-1][0] == list(handlers.chat_api(plain, *chat_args))[-1][0]
