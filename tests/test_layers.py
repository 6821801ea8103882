"""The layer contract of pyproject.toml (``[tool.importlinter]``): a facetx package imports only the packages below it.

``make lint`` runs ``lint-imports`` too; this test makes a broken contract fail the suite (and CI) wherever it runs,
with import-linter's report (which import, on which line) as the failure message.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _lint_imports() -> str:
    beside = Path(sys.executable).parent / "lint-imports"
    found = str(beside) if beside.is_file() else shutil.which("lint-imports")
    if found is None:
        pytest.fail("lint-imports not found: install the dev extra (pip install -e '.[dev]'), it brings import-linter")
    return found


def test_imports_flow_down_the_layers() -> None:
    proc = subprocess.run(
        [_lint_imports(), "--no-logo", "--no-cache", str(ROOT / "pyproject.toml")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, f"lint-imports failed (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
