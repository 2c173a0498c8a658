"""The code's shape, as the shape issue set it: what inference imports, how long functions
are, and each shared name defined once."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))


def modules_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print('\\n'.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_the_demo_imports_no_corpus_generator_and_no_training_code():
    for statement in ("import emotion_llama.pipeline", "import app", "import emotion_llama.cli as c; c.build_parser()"):
        loaded = modules_after(statement)
        assert not {m for m in loaded if m.startswith("synthetic") or "synth" in m.split(".")[-1]}, statement
        assert not {m for m in loaded if m.startswith(("emotion_llama.training", "emotion_llama.data"))}, statement


def test_no_function_over_60_lines_and_no_class_over_150():
    import shape

    found = [item for path in shape.sources() for item in shape.too_long(path, 60, 150)]
    assert found == []


def python_sources() -> list[Path]:
    return [ROOT / "app.py", *(ROOT / "emotion_llama").rglob("*.py")]


def files_defining(pattern: str) -> set[str]:
    regex = re.compile(pattern)
    return {path.relative_to(ROOT).as_posix() for path in python_sources() if regex.search(path.read_text())}


def test_each_shared_name_is_spelled_in_the_vocabulary_only():
    vocab = {"emotion_llama/vocab.py"}
    assert files_defining(r"[\"'](maeV_399_UTT|mae_340_UTT|HL-UTT|global_tokens)[\"']") == vocab
    assert files_defining(r"\"face sequence\"|\"Face sequence\"") == vocab
    assert files_defining(r"\"emotion\",\s*\"reason\",\s*\"visual\"|\"Describe the voice\"") == vocab
    assert files_defining(r"\"peak\",\s*\"middle\"|\"Peak of expression\"") == vocab
    assert files_defining(r"\"contempt\",\s*\"doubt\"\)") == vocab
    assert files_defining(r"MERR_LABELS\s*=|MER2023_LABELS\s*=|TASKS\s*=|class GenerationSettings") == vocab
    assert files_defining(r"temperature: float = 0\.2|max_new_tokens: int = 500") == vocab


def test_the_readme_lists_every_limit_with_its_default():
    from emotion_llama.limits import SETTINGS

    readme = (ROOT / "README.md").read_text()
    for setting in SETTINGS.values():
        default = format(setting.default, ",") if isinstance(setting.default, int) else f"{setting.default:g}"
        rows = [line for line in readme.splitlines() if line.startswith(f"| `{setting.env}` |")]
        assert len(rows) == 1 and rows[0].split("|")[2].strip() == default, setting.env
