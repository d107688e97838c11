"""Optional packages some tests read (torchvision, timm): why one cannot be used here.

``make test-vision`` installs them in a venv of its own and sets ``REQUIRE_TORCHVISION``: there
a package that does not import fails the tests that need it instead of skipping them, so that
venv can never pass by skipping everything it was built for.
"""

from __future__ import annotations

import importlib
import os


def import_problem(name: str) -> str | None:
    """Why module ``name`` cannot be imported here, or None where it can.

    Raises:
        RuntimeError: it cannot, and ``REQUIRE_TORCHVISION`` is set.
    """
    try:
        importlib.import_module(name)
    except (ImportError, OSError, RuntimeError) as exc:  # torchvision's ops vs another torch
        problem = f"{name} not importable beside this torch ({type(exc).__name__}: {exc})"
        if os.environ.get("REQUIRE_TORCHVISION"):
            raise RuntimeError(f"REQUIRE_TORCHVISION is set but {problem}") from exc
        return problem
    return None
