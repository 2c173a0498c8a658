"""Long functions and classes in the app and the library: ``python tools/shape.py``.

Prints every function over ``--function-lines`` (60) and every class over
``--class-lines`` (150) lines, decorators and docstrings included, and exits 1 if
there is any. Preset functions in ``config.py`` (plain data) and the CLI's argument
parser are exempt. Training and dataset code is checked too.
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXEMPT = {("emotion_llama/config.py", "official"), ("emotion_llama/config.py", "tiny"),
          ("emotion_llama/cli.py", "build_parser")}


def sources() -> list[Path]:
    return [ROOT / "app.py", *sorted((ROOT / "emotion_llama").rglob("*.py"))]


def too_long(path: Path, function_lines: int, class_lines: int) -> list[tuple[str, str, int]]:
    """(file, name, lines) of each function or class over its limit."""
    relative = path.relative_to(ROOT).as_posix()
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            continue
        start = min([node.lineno, *(d.lineno for d in node.decorator_list)])
        lines = node.end_lineno - start + 1
        limit = class_lines if isinstance(node, ast.ClassDef) else function_lines
        if lines > limit and (relative, node.name) not in EXEMPT:
            found.append((relative, node.name, lines))
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--function-lines", type=int, default=60)
    parser.add_argument("--class-lines", type=int, default=150)
    args = parser.parse_args(argv)
    found = [item for path in sources() for item in too_long(path, args.function_lines, args.class_lines)]
    for relative, name, lines in sorted(found, key=lambda item: -item[2]):
        print(f"{lines:5d}  {relative}::{name}")
    print(f"{len(found)} over the limits ({args.function_lines} lines a function, {args.class_lines} a class)")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
