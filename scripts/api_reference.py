"""Write docs/api.md, the Python API reference, from the public functions' signatures and
docstrings (``python scripts/api_reference.py``; a test checks the committed file is current)."""

from __future__ import annotations

import inspect
import sys
from pathlib import Path

import ensemble_distill
from ensemble_distill import api

ROOT = Path(__file__).resolve().parents[1]
HEADER = """# Python API reference

Generated from the docstrings by `python scripts/api_reference.py`; everything here is
importable from `ensemble_distill` (see the README's Python quick start and `examples/`).
"""


def entry(name: str) -> str:
    """One ``## name`` section: the signature in a code block, then the docstring."""
    target = getattr(api, name)
    title = f"## `{name}`\n\n"
    if inspect.isclass(target):  # DeepEnsemble, also exported as Teacher
        return f"{title}(also exported as `Teacher`)\n\n{inspect.getdoc(target) or ''}\n"
    signature = str(inspect.signature(target))
    return f"{title}```python\n{name}{signature}\n```\n\n{inspect.getdoc(target) or ''}\n"


def reference() -> str:
    # DataLike is a type alias (Dataset | DataLoader | (x, y) tensors), Teacher another name.
    names = [n for n in ensemble_distill.__all__ if n not in ("DataLike", "Teacher")]
    return HEADER + "\n" + "\n".join(entry(name) for name in names)


def main() -> None:
    out = ROOT / "docs" / "api.md"
    out.write_text(reference())
    print(out, file=sys.stderr)


if __name__ == "__main__":
    main()
