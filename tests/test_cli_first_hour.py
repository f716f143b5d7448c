"""What a new user meets first on the command line: options where the docs put them, outputs checked early."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "deploy" / "config.example.toml"


def run_cli(*args: str, cwd: Path = REPO, env: dict | None = None) -> subprocess.CompletedProcess:
    import os

    # PYTHONPATH: this checkout's code even when cwd is elsewhere (the shared venv's editable install is not it).
    full_env = {**os.environ, "EDGE_MFR_STATE_DIR": "/nonexistent-state", "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run([sys.executable, "-m", "edge_mfr.cli", *args], capture_output=True, text=True,
                          env=full_env, cwd=cwd, timeout=300)


def test_config_check_as_the_example_file_tells_users_to_run_it():
    command = re.search(r"Check a file with:\s+edge-mfr (.*)$", EXAMPLE.read_text(), re.MULTILINE).group(1)
    args = command.replace("/etc/edge-mfr/config.toml", str(EXAMPLE)).split()
    assert args[:2] == ["config", "check"] and "--config" in args  # the option after the subcommand
    proc = run_cli(*args)
    assert proc.returncode == 0, proc.stderr
    assert f"{EXAMPLE}: ok" in proc.stdout


def test_eval_refuses_an_unwritable_plot_folder_before_any_work(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    proc = run_cli("eval", str(tmp_path), "--subsets", "none", "--plots", str(blocker / "plots"))
    assert proc.returncode != 0
    assert "cannot create the plot folder" in proc.stderr and "Traceback" not in proc.stderr


def test_bench_with_a_missing_gallery_stops_before_measuring(tmp_path):
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"not looked at: the gallery is checked first")
    proc = run_cli("bench", "--source", str(clip), "--gallery", "state/gallery.npz", cwd=tmp_path)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert f"{tmp_path / 'state' / 'gallery.npz'}: no gallery file" in proc.stderr


def test_bench_gallery_is_resolved_against_the_callers_folder(tmp_path, monkeypatch):
    from edge_mfr.bench import resolve_gallery

    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "gallery.npz").write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    assert resolve_gallery(Path("state/gallery.npz")) == tmp_path / "state" / "gallery.npz"
    assert resolve_gallery(None) is None


def test_printed_hints_name_edge_mfr_as_it_can_be_typed_here(tmp_path, monkeypatch):
    """After `make demo` edge-mfr is .venv/bin/edge-mfr, not on PATH: a hint must work as printed."""
    from edge_mfr.paths import cli_command

    venv_bin = tmp_path / ".venv" / "bin"
    venv_bin.mkdir(parents=True)
    (venv_bin / "python").symlink_to(sys.executable)
    (venv_bin / "edge-mfr").write_text("#!/bin/sh\n")
    (venv_bin / "edge-mfr").chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(venv_bin / "python"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # not activated
    assert cli_command() == ".venv/bin/edge-mfr"
    monkeypatch.setenv("PATH", f"{venv_bin}:/usr/bin:/bin")  # activated
    assert cli_command() == "edge-mfr"
