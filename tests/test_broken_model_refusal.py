"""A model this CPU computes wrongly never runs the door: `run` refuses (journaled), `doctor` fails."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from gpiozero.pins.mock import MockFactory

from edge_mfr.app import Appliance
from edge_mfr.config import Config
from edge_mfr.device.journal import Journal
from edge_mfr.vision import selftest
from edge_mfr.vision.runtime import TFLiteModel

REPO = Path(__file__).resolve().parents[1]
RELAY = 17
EMBEDDER = "facenet_int8.tflite"


def config(tmp_path: Path, models: Path | None = None) -> Config:
    state = tmp_path / "state"
    state.mkdir(exist_ok=True)
    data = {"device": {"state_dir": str(state)}, "camera": {"source": str(tmp_path / "never-opened.mp4")},
            "doors": [{"name": "front", "relay_pin": RELAY}]}
    if models is not None:
        data["models"] = {"dir": str(models)}
    return Config.model_validate(data)


class Notifier:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def __getattr__(self, name):
        return lambda *a, **k: self.calls.append(name) or True


def test_constant_embedder_output_refuses_start_journaled_and_locked(tmp_path, monkeypatch):
    real_run = TFLiteModel.run

    def broken(self, x):  # the emulated CPU's failure: one embedding whatever the face
        if self.spec.role == "embedder":
            return [np.full((len(x), 512), 0.044, np.float32)]
        return real_run(self, x)

    monkeypatch.setattr(TFLiteModel, "run", broken)
    cfg = config(tmp_path)
    factory = MockFactory()
    notifier = Notifier()
    with pytest.raises(selftest.SelfTestError, match=f"{EMBEDDER}: known-answer self-test failed"):
        Appliance(cfg, pin_factory=factory, notifier=notifier).run()
    assert "ready" not in notifier.calls
    # The relays are created de-energised before the models load (issue 16: relock first); none was ever on.
    assert all(not pin.state for pin in factory.pins.values())
    assert all(state is False for pin in factory.pins.values() for _, state in getattr(pin, "states", []))
    with Journal(cfg.journal.path, readonly=True) as journal:
        events = journal.query(limit=None, newest_first=False)
    faults = [e for e in events if e["kind"] == "fault"]
    assert len(faults) == 1 and "known-answer self-test failed" in faults[0]["payload"]["reason"]
    assert faults[0]["payload"]["action"] == "refused to start; doors stay locked"
    assert not [e for e in events if e["kind"] in ("unlocked", "access_granted", "started")]


def wrong_answers(tmp_path: Path) -> Path:
    """models/ where FaceNet's recorded answer for the astronaut is the cameraman's: this runtime disagrees."""
    import shutil

    models = tmp_path / "models"
    shutil.copytree(REPO / "models", models, ignore=shutil.ignore_patterns("*.md"))
    arrays = selftest.read_known_answers(models)
    a, c = (selftest.array_key(EMBEDDER, r, "out0") for r in ("astronaut", "cameraman"))
    arrays[a] = arrays[c].copy()
    np.savez_compressed(models / selftest.KNOWN_ANSWERS_FILE, **arrays)
    manifest = json.loads((models / "manifest.json").read_text())
    block = manifest["models"][EMBEDDER][selftest.KEY]
    keys = [selftest.array_key(EMBEDDER, r, "in") for r in block["inputs"]]
    keys += [selftest.array_key(EMBEDDER, r, "out0") for r in block["inputs"]]
    block["sha256"] = selftest.digest([arrays[k] for k in keys])
    (models / "manifest.json").write_text(json.dumps(manifest))
    return models


def test_run_refuses_in_one_line_and_doctor_fails(tmp_path):
    models = wrong_answers(tmp_path)
    env = {**os.environ, "EDGE_MFR_GPIO": "mock", "EDGE_MFR_MODELS": str(models),
           "EDGE_MFR_STATE_DIR": str(tmp_path / "state")}

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "edge_mfr.cli", *args], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=120)

    run = cli("run", "--source", "synthetic", "--max-frames", "3")
    assert run.returncode == 2 and "Traceback" not in run.stderr
    errors = [line for line in run.stderr.splitlines() if line.startswith("edge-mfr: error: ")]
    assert len(errors) == 1 and "known-answer self-test failed on reference 'astronaut'" in errors[0], run.stderr
    doctor = cli("doctor")
    assert doctor.returncode == 1
    assert "FAIL  models" in doctor.stdout and "self-test failed" in doctor.stdout
