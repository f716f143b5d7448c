#!/usr/bin/env python3
"""Run the README as a new user would: fresh clone, the set-up command, then every usage command as printed.

Why: the README is the first hour of every new user; a command that fails as printed costs them more than
any bug the unit tests catch. This script reads the README, so commands added to it are checked too:

1. ``git clone`` the repository (its committed HEAD) into a temporary folder, next to a link
   ``shared/data`` -> the real data set, so ``../shared/data`` in the README resolves as it does for a
   developer checkout;
2. run the first command of the "Set-up" section exactly as printed (``make demo``: it creates .venv and
   installs edge-mfr; the test command would recurse into this script);
3. run every command of the ``sh`` blocks in the usage sections (``## Using it`` and its subsections),
   exactly as printed, one after the other in one shell (so ``. .venv/bin/activate`` carries over), with
   ``EDGE_MFR_STATE_DIR`` set to a temporary folder and no edge-mfr from any other venv on PATH.

A command fails when its exit status differs from the one its trailing comment announces (``# exits 2``,
``# exit 1``; 0 when none is announced) or when its output holds a Python traceback. pip's own cache
(``PIP_CACHE_DIR`` or ~/.cache/pip) keeps the set-up fast after the first run; it is really run every time.

Usage: python tools/readme_check.py [--data DIR] [--keep] [--timeout SECONDS]
Exit status: 0 when every command behaved as announced, 1 otherwise (each failure printed with its output).
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SETUP_HEADING = re.compile(r"^##\s+Set-up\b", re.IGNORECASE)
USAGE_HEADING = re.compile(r"^##\s+Using it\b", re.IGNORECASE)
EXPECTED_EXIT = re.compile(r"#.*\bexits?\s+(\d+)\b")
TRACEBACK = "Traceback (most recent call last)"


@dataclass
class Command:
    """One command of the README: its text as printed (continuation lines included) and its expected exit."""

    text: str
    expected_exit: int
    section: str


def sections(readme: str) -> list[tuple[str, list[str]]]:
    """(heading, lines) of every ``##`` section; ``###`` subsections stay inside their ``##`` section."""
    out: list[tuple[str, list[str]]] = []
    for line in readme.splitlines():
        if line.startswith("## "):
            out.append((line, []))
        elif out:
            out[-1][1].append(line)
    return out


def sh_commands(lines: list[str], section: str) -> list[Command]:
    """The commands of the ``sh`` fenced blocks in ``lines``: blank and comment-only lines skipped,
    a line ending in a backslash joined with the next one (kept verbatim, so the shell sees it as printed)."""
    commands: list[Command] = []
    in_block, pending = False, ""
    for line in lines:
        stripped = line.strip()
        if not in_block:
            in_block = stripped in ("```sh", "```bash", "```shell")
            continue
        if stripped.startswith("```"):
            in_block = False
            continue
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        pending = f"{pending}\n{line}" if pending else line
        if line.rstrip().endswith("\\"):
            continue
        match = EXPECTED_EXIT.search(pending.splitlines()[-1])
        commands.append(Command(pending, int(match.group(1)) if match else 0, section))
        pending = ""
    return commands


def readme_commands(readme: str) -> tuple[Command, list[Command]]:
    """The set-up command (first command of the Set-up section) and the usage sections' commands."""
    setup: list[Command] = []
    usage: list[Command] = []
    for heading, lines in sections(readme):
        if SETUP_HEADING.match(heading):
            setup += sh_commands(lines, heading)
        elif USAGE_HEADING.match(heading):
            usage += sh_commands(lines, heading)
    if not setup:
        raise SystemExit("readme_check: README has no sh block under '## Set-up'")
    if not usage:
        raise SystemExit("readme_check: README has no sh block under '## Using it'")
    first = setup[0]
    if "make test" in first.text or "pytest" in first.text:
        raise SystemExit(f"readme_check: the set-up command is the test command ({first.text!r}): it would recurse")
    return first, usage


def clean_env(state_dir: Path) -> dict[str, str]:
    """This process's environment minus any virtualenv: the clone's own .venv must be what runs."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    path = [p for p in env.get("PATH", "").split(os.pathsep)
            if p and not (Path(p) / "activate").is_file() and not (Path(p) / "edge-mfr").exists()]
    env["PATH"] = os.pathsep.join(path) or "/usr/bin:/bin"
    env["EDGE_MFR_STATE_DIR"] = str(state_dir)
    env.pop("EDGE_MFR_DATA", None)  # the README's ../shared/data is what is checked
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def shell_script(commands: list[Command], results: Path) -> str:
    """One bash script running every command as printed, each one's output and exit status kept apart."""
    parts = ["cd \"$CLONE\""]
    for i, command in enumerate(commands):
        parts += [
            f"printf '@@start {i}\\n'",
            "{",
            command.text,
            f"}} >{shlex.quote(str(results / f'{i}.out'))} 2>{shlex.quote(str(results / f'{i}.err'))} </dev/null",
            "rc=$?",
            f"printf '@@done {i} %s\\n' \"$rc\"",
        ]
    return "\n".join(parts) + "\n"


def run(data: Path, keep: bool, timeout: float) -> int:
    work = Path(tempfile.mkdtemp(prefix="readme-check-"))
    clone, state, results = work / "edge-mfr", work / "state", work / "results"
    state.mkdir()
    results.mkdir()
    (work / "shared").mkdir()
    (work / "shared" / "data").symlink_to(data.resolve())
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True)
    # The clone's README is the one run (it is the committed one, which may differ from a dirty checkout).
    setup, usage = readme_commands((clone / "README.md").read_text())
    commands = [setup, *usage]
    script = work / "readme.sh"
    script.write_text(shell_script(commands, results))
    env = clean_env(state) | {"CLONE": str(clone)}
    print(f"readme_check: {len(commands)} commands in {clone} (state {state})", flush=True)
    begun = time.monotonic()
    proc = subprocess.Popen(["bash", str(script)], cwd=clone, env=env, stdout=subprocess.PIPE, text=True)
    done: dict[int, tuple[int, float]] = {}
    started = begun
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            fields = line.split()
            if fields[:1] == ["@@start"]:
                started = time.monotonic()
                lines = commands[int(fields[1])].text.splitlines()
                print(f"$ {lines[0]}{' ...' if len(lines) > 1 else ''}", flush=True)
            elif fields[:1] == ["@@done"]:
                seconds = time.monotonic() - started
                done[int(fields[1])] = (int(fields[2]), seconds)
                print(f"  -> exit {fields[2]} in {seconds:.1f} s", flush=True)
            if time.monotonic() - begun > timeout:
                proc.kill()
                break
        proc.wait(timeout=max(1.0, timeout - (time.monotonic() - begun)))
    except subprocess.TimeoutExpired:
        proc.kill()
    failures = check_results(commands, done, results)
    total = time.monotonic() - begun
    if failures:
        print(f"readme_check: {len(failures)} of {len(commands)} commands failed ({total:.0f} s):")
        for failure in failures:
            print(failure)
    else:
        print(f"readme_check: all {len(commands)} commands behaved as the README says ({total:.0f} s)")
    if keep or failures:
        print(f"readme_check: kept {work}")
    else:
        subprocess.run(["rm", "-rf", str(work)], check=False)
    return 1 if failures else 0


def check_results(commands: list[Command], done: dict[int, tuple[int, float]], results: Path) -> list[str]:
    """One message per command that did not behave as the README announces."""
    failures = []
    for i, command in enumerate(commands):
        out_path, err_path = results / f"{i}.out", results / f"{i}.err"
        out = out_path.read_text(errors="replace") if out_path.exists() else ""
        err = err_path.read_text(errors="replace") if err_path.exists() else ""
        if i not in done:
            failures.append(f"--- {command.text}\n    did not finish (time limit or the shell exited)\n"
                            f"{_tail(out, err)}")
            continue
        rc, _ = done[i]
        if rc != command.expected_exit:
            failures.append(f"--- {command.text}\n    exit {rc}, README announces {command.expected_exit}\n"
                            f"{_tail(out, err)}")
        elif TRACEBACK in out or TRACEBACK in err:
            failures.append(f"--- {command.text}\n    printed a traceback\n{_tail(out, err)}")
    return failures


def _tail(out: str, err: str, lines: int = 30) -> str:
    text = (out + "\n" + err).strip().splitlines()[-lines:]
    return "\n".join("    | " + line for line in text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_data = os.environ.get("EDGE_MFR_DATA") or str(REPO.parent / "shared" / "data")
    parser.add_argument("--data", type=Path, default=Path(default_data),
                        help="the face data set the README's ../shared/data stands for (default: $EDGE_MFR_DATA "
                             "or ../shared/data)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary clone and outputs")
    parser.add_argument("--timeout", type=float, default=1500.0, help="seconds for everything (default 1500)")
    parser.add_argument("--list", action="store_true", help="only print the commands that would run")
    args = parser.parse_args(argv)
    if args.list:
        setup, usage = readme_commands((REPO / "README.md").read_text())
        for command in [setup, *usage]:
            print(f"[exit {command.expected_exit}] {command.text}")
        return 0
    if not (args.data / "labels.csv").is_file():
        print(f"readme_check: {args.data}: no data set (labels.csv) there; pass --data", file=sys.stderr)
        return 2
    return run(args.data, args.keep, args.timeout)


if __name__ == "__main__":
    sys.exit(main())
