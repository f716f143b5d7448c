"""Consistent output: readable people views, JSON lines for --json, event kinds checked, no broken-pipe noise."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge_mfr.cli import ERROR_PREFIX, main
from edge_mfr.device.journal import KNOWN_KINDS, Journal
from edge_mfr.identity.gallery import Gallery, TemplateMeta
from edge_mfr.identity.people_view import people_table

REPO = Path(__file__).resolve().parents[1]


def test_every_event_kind_the_code_writes_is_known_to_events_kind():
    """A kind added to the code but not to KNOWN_KINDS would be refused by `events --kind` on a fresh journal."""
    pattern = re.compile(r"""(?:\b_?(?:record|emit|event)|events\.append)\(\(?\s*["']([a-z][a-z0-9_.-]*)["']""")
    written = {m for path in (REPO / "edge_mfr").rglob("*.py") for m in pattern.findall(path.read_text())}
    assert len(written) >= 15  # the scan finds the policy's, the lock's and the loop's kinds
    assert written <= KNOWN_KINDS, sorted(written - KNOWN_KINDS)


@pytest.fixture()
def journal_path(tmp_path):
    path = tmp_path / "journal.db"
    with Journal(path) as journal:
        journal.record("access_granted", door="front", person_id="ada", payload={"score": 0.9})
    return path


def test_events_kind_typo_is_refused_with_the_closest_kind(journal_path, capsys, monkeypatch):
    monkeypatch.setenv("EDGE_MFR__JOURNAL__PATH", str(journal_path))
    assert main(["events", "--kind", "acces_granted"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"{ERROR_PREFIX}--kind: no event kind 'acces_granted'; did you mean 'access_granted'?"
    assert main(["events", "--kind", "access_granted,locked", "--json"]) == 0  # known, even when absent here
    (line,) = capsys.readouterr().out.strip().splitlines()
    assert json.loads(line)["person_id"] == "ada"


def _gallery(tmp_path: Path, names: list[str]) -> Path:
    """A gallery of people with 3 real and 8 synthetic templates each (random unit vectors: no model needed)."""
    path = tmp_path / "gallery.npz"
    rng = np.random.default_rng(0)
    with Gallery.edit(path, "0" * 64, dim=512) as g:
        for name in names:
            metas = [TemplateMeta(source=f"photos/{name}_{i}.jpg", quality=0.8 + i / 100) for i in range(3)]
            metas += [TemplateMeta(source=f"photos/{name}_0.jpg", quality=0.8, synthetic=True,
                                   mask_style=f"surgical-{i}", masked=True) for i in range(8)]
            emb = rng.normal(size=(len(metas), 512)).astype(np.float32)
            person = g.add_person(name)
            g.add_templates(person.person_id, emb / np.linalg.norm(emb, axis=1, keepdims=True), metas)
    return path


def test_people_list_aligns_long_names_and_gives_json_lines(tmp_path, capsys):
    long_name = "Maria Magdalena von Hohenzollern-Sigmaringen"
    gallery = _gallery(tmp_path, ["Ada", long_name])
    assert main(["people", "list", "--gallery", str(gallery)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len({line.index(" yes ") for line in lines[1:]}) == 1  # the allowed column lines up
    assert main(["people", "list", "--json", "--gallery", str(gallery)]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["name"] for r in rows] == ["Ada", long_name] and rows[1]["real"] == 3


def test_people_table_columns_fit_the_longest_value():
    rows = [{"person_id": "x" * 40, "name": "n", "allowed": False, "real": 1, "synthetic": 12}]
    header, row = people_table(rows).splitlines()
    assert header.index("name") == row.index(" n ") + 1


def test_people_show_is_a_short_summary_and_json_on_request(tmp_path, capsys):
    gallery = _gallery(tmp_path, ["Ada"])
    assert main(["people", "show", "Ada", "--gallery", str(gallery)]) == 0
    text = capsys.readouterr().out
    assert len(text.splitlines()) <= 10
    assert "Ada (" in text and "11: 3 from photos or video frames, 8 synthetic-masked" in text
    assert main(["people", "show", "Ada", "--json", "--gallery", str(gallery)]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    assert len(json.loads(line)["templates"]) == 11


def test_a_closed_pipe_ends_quietly(tmp_path):
    """`edge-mfr ... | head` must not print a BrokenPipeError traceback."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "EDGE_MFR_STATE_DIR": str(tmp_path)}
    # The child waits for a byte on stdin, so its output is written only after the reader has gone away.
    code = "import sys, edge_mfr.cli as c; sys.stdin.read(1); sys.exit(c.main(['people', 'list']))"
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env, cwd=REPO)
    proc.stdout.close()  # the reader goes away, as `head` does after its lines
    proc.stdin.write(b"x")
    proc.stdin.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141
    assert "Traceback" not in err and "BrokenPipeError" not in err, err


def test_a_taken_name_suggests_only_what_exists(tmp_path, capsys):
    gallery = _gallery(tmp_path, ["Ada", "Grace"])
    assert main(["people", "rename", "Grace", "Ada", "--gallery", str(gallery)]) == 2
    err = capsys.readouterr().err
    assert "already enrolled" in err and "allow a duplicate" not in err
