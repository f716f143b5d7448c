"""FaceNet's packed XNNPACK weights cached in a file: same embeddings, built once, damage detected."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge_mfr.vision import runtime, weight_cache
from edge_mfr.vision.runtime import CachedWeightsModel, TFLiteModel, find_model, load_model

pytest.importorskip("ai_edge_litert.compiled_model", reason="the weight cache needs LiteRT's CompiledModel")

FACENET_INPUT = (1, 160, 160, 3)


@pytest.fixture()
def cache_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "xnnpack"
    monkeypatch.setenv(weight_cache.ENV_SWITCH, str(folder))
    return folder


def _probe_input() -> np.ndarray:
    return np.random.default_rng(7).uniform(-1.0, 1.0, FACENET_INPUT).astype(np.float32)


@pytest.fixture(scope="module")
def reference_embedding() -> np.ndarray:
    """FaceNet's output from the plain Interpreter, the behaviour the cached model must reproduce."""
    path, spec = find_model("embedder")
    return TFLiteModel(path, spec).run(_probe_input())[0][0]


def _cache_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.name.endswith(weight_cache.SUFFIX))


def test_cached_model_gives_the_interpreters_embeddings(cache_folder, reference_embedding):
    model = load_model("embedder", cache_weights=True)
    assert isinstance(model, CachedWeightsModel)
    np.testing.assert_array_equal(model.run(_probe_input())[0][0], reference_embedding)
    # Batches larger than the graph's batch of one run item by item, as with the Interpreter.
    batch = np.concatenate([_probe_input(), -_probe_input()])
    out = model.run(batch)[0]
    assert out.shape == (2, 512)
    np.testing.assert_array_equal(out[0], reference_embedding)


def test_cache_is_built_once_with_a_checksum_then_reused(cache_folder):
    load_model("embedder", cache_weights=True)
    [cache] = _cache_files(cache_folder)
    sidecar = cache.with_name(cache.name + ".sha256")
    assert sidecar.read_text().strip() == runtime.sha256_file(cache)
    assert not list(cache_folder.glob("*.tmp*")), "temporary build files were left behind"
    before = cache.stat()
    second = load_model("embedder", cache_weights=True)
    assert isinstance(second, CachedWeightsModel)
    after = cache.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_damaged_cache_is_rebuilt_not_trusted(cache_folder, reference_embedding, caplog):
    """XNNPACK itself accepts flipped bits in the packed weights and returns wrong embeddings."""
    load_model("embedder", cache_weights=True)
    [cache] = _cache_files(cache_folder)
    with open(cache, "r+b") as fh:
        fh.seek(cache.stat().st_size // 2)
        fh.write(b"\xff" * 4096)
    with caplog.at_level(logging.WARNING):
        model = load_model("embedder", cache_weights=True)
    assert "does not match its checksum" in caplog.text
    np.testing.assert_array_equal(model.run(_probe_input())[0][0], reference_embedding)
    assert weight_cache.usable(cache)


def test_cache_without_its_checksum_is_rebuilt(cache_folder, reference_embedding):
    load_model("embedder", cache_weights=True)
    [cache] = _cache_files(cache_folder)
    cache.with_name(cache.name + ".sha256").unlink()
    cache.write_bytes(b"\0" * 1000)
    model = load_model("embedder", cache_weights=True)
    np.testing.assert_array_equal(model.run(_probe_input())[0][0], reference_embedding)
    assert weight_cache.usable(cache)


def test_switched_off_uses_the_interpreter(monkeypatch, tmp_path):
    monkeypatch.setenv(weight_cache.ENV_SWITCH, "off")
    assert isinstance(load_model("embedder", cache_weights=True), TFLiteModel)


def test_unusable_cache_folder_falls_back_with_a_warning(monkeypatch, tmp_path, caplog, reference_embedding):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv(weight_cache.ENV_SWITCH, str(blocker / "xnnpack"))
    with caplog.at_level(logging.WARNING):
        model = load_model("embedder", cache_weights=True)
    assert isinstance(model, TFLiteModel)
    assert "weight cache unavailable" in caplog.text
    np.testing.assert_array_equal(model.run(_probe_input())[0][0], reference_embedding)


def test_cache_name_separates_models_runtimes_and_machines(tmp_path):
    a = weight_cache.cache_path(Path("facenet_int8.tflite"), "a" * 64, "2.3.0", tmp_path)
    b = weight_cache.cache_path(Path("facenet_int8.tflite"), "b" * 64, "2.3.0", tmp_path)
    c = weight_cache.cache_path(Path("facenet_int8.tflite"), "a" * 64, "2.4.0", tmp_path)
    assert len({a, b, c}) == 3
    assert a.parent == tmp_path


def test_litert_startup_chatter_stays_out_of_stderr(tmp_path):
    """GPU/NPU probing warnings go to our debug log, not to the journal at every start."""
    env = {**os.environ, weight_cache.ENV_SWITCH: str(tmp_path / "xnnpack")}
    code = ("import numpy as np; from edge_mfr.vision.runtime import load_model; "
            "m = load_model('embedder', cache_weights=True); m.run(np.zeros((2, 160, 160, 3), np.float32))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    # (LiteRT's two INFO lines when it unloads at exit are left alone: hiding them would hide real errors.)
    for chatter in ("could not be loaded", "Creating LiteRT environment", "Attempting to load"):
        assert chatter not in proc.stderr, proc.stderr


_RSS_PROBE = """
import json, sys
from edge_mfr.vision.runtime import load_model
model = load_model('embedder', cache_weights=sys.argv[1] == 'cached')
import numpy as np
model.run(np.zeros((1, 160, 160, 3), np.float32))
status = dict(line.split(':', 1) for line in open('/proc/self/status'))
print(json.dumps({'type': type(model).__name__, 'hwm_kib': int(status['VmHWM'].split()[0])}))
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_cached_weights_cost_less_peak_memory_than_the_interpreter(tmp_path):
    """The point of the cache: FaceNet's packed weights are not held a second time on the heap."""
    env = {**os.environ, weight_cache.ENV_SWITCH: str(tmp_path / "xnnpack")}
    peaks = {}
    for mode in ("plain", "cached", "cached"):  # the second cached run maps an existing cache
        out = subprocess.run([sys.executable, "-c", _RSS_PROBE, mode], capture_output=True, text=True, env=env,
                             check=True).stdout
        result = json.loads(out.strip().splitlines()[-1])
        assert result["type"] == ("CachedWeightsModel" if mode == "cached" else "TFLiteModel")
        peaks[mode] = result["hwm_kib"] / 1024
    # Measured: about 16 MiB less; FaceNet's packed int8 weights are 22.6 MiB.
    assert peaks["cached"] < peaks["plain"] - 8, peaks
