"""tools/pi/check.sh options: the suite is chosen before anything needs root, debootstrap or a mount."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CHECK = REPO / "tools/pi/check.sh"

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(CHECK), *args], capture_output=True, text=True, timeout=30)


def test_help_names_the_suites_and_ends_with_the_header() -> None:
    out = _run("--help")
    assert out.returncode == 0
    assert "--suite bookworm|trixie" in out.stdout
    assert "set -euo" not in out.stdout and "REPO=" not in out.stdout


@pytest.mark.parametrize("args", [("--suite", "buster"), ("--suite=sid",), ("--suite",), ("--bogus",)])
def test_unknown_suite_or_option_is_refused_before_any_work(args: tuple[str, ...]) -> None:
    out = _run(*args)
    assert out.returncode == 2
    assert out.stderr.startswith("check.sh: ") and out.stderr.count("\n") == 1
    assert out.stdout == ""  # nothing started: no "==>" step, no root check
