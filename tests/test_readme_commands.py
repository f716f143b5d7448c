"""The README's first hour, run for real: tools/readme_check.py clones the repository, runs `make demo` and
every usage command exactly as printed (about 4 minutes on an idle 2-core machine, most of it `eval`)."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("readme_check", REPO / "tools" / "readme_check.py")
readme_check = importlib.util.module_from_spec(spec)
sys.modules["readme_check"] = readme_check  # its dataclasses look their module up while being defined
spec.loader.exec_module(readme_check)

SAMPLE = """# x
## Set-up (two commands)

```sh
make demo    # the main job
make test    # would recurse
```

## Using it

```sh
# a comment line is skipped
edge-mfr a \\
    --b c                   # two lines, one command
edge-mfr bad   # exits 2

```

### A subsection stays in its section

```sh
edge-mfr sub
```

## The appliance

```sh
sudo deploy/install.sh     # not a usage section: not run
```
"""


def test_commands_are_read_from_the_setup_and_usage_sections():
    setup, usage = readme_check.readme_commands(SAMPLE)
    assert setup.text.startswith("make demo")
    assert [c.text for c in usage] == ["edge-mfr a \\\n    --b c                   # two lines, one command",
                                       "edge-mfr bad   # exits 2", "edge-mfr sub"]
    assert [c.expected_exit for c in usage] == [0, 2, 0]


def test_a_test_command_as_setup_is_refused():
    with pytest.raises(SystemExit, match="recurse"):
        readme_check.readme_commands(SAMPLE.replace("make demo    # the main job\n", ""))


def test_failures_name_the_command_the_exit_and_tracebacks(tmp_path):
    commands = [readme_check.Command("ok", 0, "s"), readme_check.Command("bad # exits 2", 2, "s"),
                readme_check.Command("crash", 0, "s"), readme_check.Command("hung", 0, "s")]
    (tmp_path / "2.err").write_text("Traceback (most recent call last):\n  boom\n")
    failures = readme_check.check_results(commands, {0: (0, 1.0), 1: (1, 1.0), 2: (0, 1.0)}, tmp_path)
    assert len(failures) == 3
    assert "exit 1, README announces 2" in failures[0]
    assert "printed a traceback" in failures[1] and "boom" in failures[1]
    assert "did not finish" in failures[2]


@pytest.mark.data
def test_every_readme_command_works_as_printed_in_a_fresh_clone(data_dir):
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("needs git and a git checkout to clone")
    proc = subprocess.run([sys.executable, str(REPO / "tools" / "readme_check.py"), "--data", str(data_dir),
                           "--timeout", "1500"], capture_output=True, text=True, timeout=1600)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
