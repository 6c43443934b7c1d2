"""The repository is lint-clean and formatted: `ruff check` and `ruff format --check` (settings in pyproject.toml,
line length 110). Fix with `ruff check --fix .` and `ruff format .`."""

import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def ruff(*args: str) -> subprocess.CompletedProcess:
    try:
        import ruff as _  # noqa: F401 - the dev extra installs it; without it the message says how to get it
    except ImportError:
        pytest.fail('ruff is not installed: pip install -e ".[dev]"', pytrace=False)
    return subprocess.run(
        [sys.executable, "-m", "ruff", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300
    )


def test_ruff_check_passes():
    result = ruff("check", "--no-cache", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format_leaves_every_file_unchanged():
    result = ruff("format", "--check", "--no-cache", ".")
    assert result.returncode == 0, f"run `ruff format .` to fix:\n{result.stdout}{result.stderr}"
