"""Known-answer self-test: every model must reproduce outputs recorded on a known-good machine.

Why: the manifest's sha256 proves the model *file* is right, not that this CPU's runtime computes it
right. Under an emulated CPU whose vector unit LiteRT mis-handles, FaceNet returned nearly the same
embedding for every face, the sha256 still matched, and the demo unlocked for a stranger. So each model
whose manifest entry carries a ``known_answer`` block is run on reference inputs shipped beside it
(``models/known_answers.npz``: public-domain faces, see tools/known_answers.py) and every output tensor
must match the recorded one with cosine >= ``min_cosine`` (0.99: the cross-architecture spread measured
for int8 FaceNet between x86-64 and aarch64 was 0.998). Each output is compared both as is and with its
mean removed, so a runtime that returns a constant cannot pass on tensors whose values share a large
offset (BlazeFace's score logits).

The check is generic: the reference input is stored already at the model's input size, preprocessed with
the manifest's ``mean``/``std`` and fed to the raw interpreter, so any model (detectors, embedders,
landmark models) is covered by adding its entry with ``tools/known_answers.py``; nothing here knows roles.
"""

from __future__ import annotations

import hashlib
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_mfr.errors import ModelError
from edge_mfr.vision.runtime import TFLiteModel, default_models_dir, load_manifest, load_model

KNOWN_ANSWERS_FILE = "known_answers.npz"
KEY = "known_answer"
MIN_COSINE = 0.99
_CENTERED_MIN_SIZE = 8  # a mean-removed 2-value softmax is all sign, no signal: compare small tensors as is


class SelfTestError(ModelError):
    """A model computes something other than its recorded known answer: this runtime/CPU is not trusted."""


@dataclass(frozen=True)
class SelfTestResult:
    file: str
    role: str
    worst_cosine: float
    inputs: int


def array_key(model_file: str, ref: str, what: str) -> str:
    """Name of one array in known_answers.npz (``what``: ``in`` or ``out0``, ``out1``, ...)."""
    return f"{model_file}__{ref}__{what}"


def digest(arrays: list[np.ndarray]) -> str:
    """sha256 over the arrays' dtype, shape and bytes: ties a manifest entry to its own arrays."""
    h = hashlib.sha256()
    for a in arrays:
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def preprocess(image: np.ndarray, spec_preprocessing: dict[str, Any], batch: int = 1) -> np.ndarray:
    """A stored uint8 reference input as the float batch the check feeds (the same on every machine).

    Models built with a fixed batch larger than one get the reference repeated; row 0 is compared.
    """
    mean = float(spec_preprocessing.get("mean", 127.5))
    std = float(spec_preprocessing.get("std", 128.0))
    x = ((image.astype(np.float32) - mean) / std)[None]
    return np.repeat(x, max(1, batch), axis=0)


def first_row(output: np.ndarray) -> np.ndarray:
    """Row 0 of a batched output (every model here has a batch axis first)."""
    return output[0]


def agreement(actual: np.ndarray, expected: np.ndarray) -> float:
    """Cosine of the flattened tensors; for tensors of 8+ values, the lower of it and the mean-removed one."""
    a = np.asarray(actual, np.float64).ravel()
    e = np.asarray(expected, np.float64).ravel()
    if a.shape != e.shape:
        return -1.0
    values = [_cosine(a, e)]
    if a.size >= _CENTERED_MIN_SIZE:
        values.append(_cosine(a - a.mean(), e - e.mean()))
    return min(values)


def _cosine(a: np.ndarray, e: np.ndarray) -> float:
    na, ne = float(np.linalg.norm(a)), float(np.linalg.norm(e))
    if na == 0.0 or ne == 0.0:
        return 1.0 if na == ne else 0.0  # a constant where a signal was recorded fails; both constant agree
    if not (np.isfinite(na) and np.isfinite(ne)):
        return -1.0
    return float(np.dot(a, e) / (na * ne))


def read_known_answers(models_dir: Path) -> dict[str, np.ndarray]:
    """Every array of models/known_answers.npz (small: a few hundred KB)."""
    path = models_dir / KNOWN_ANSWERS_FILE
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except FileNotFoundError:
        raise SelfTestError(f"{path}: missing; it holds the models' known answers "
                            "(reinstall, or regenerate with tools/known_answers.py)") from None
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise SelfTestError(f"{path}: unreadable ({exc})") from None


def check_model(model: TFLiteModel, answers: dict[str, np.ndarray]) -> SelfTestResult | None:
    """Run ``model`` on its reference inputs; None when its manifest entry has no known answer.

    Raises SelfTestError naming the model, the reference input and the cosine reached.
    """
    spec = model.spec
    block = spec.extra.get(KEY)
    if not block:
        return None
    where = f"{model.path}"
    if block.get("model_sha256") != spec.sha256:
        raise SelfTestError(f"{where}: the known answers were recorded for another version of this model; "
                            "regenerate them: python tools/known_answers.py")
    minimum = float(block.get("min_cosine", MIN_COSINE))
    refs = list(block.get("inputs", []))
    keys = [array_key(spec.file, r, "in") for r in refs]
    for r in refs:
        keys += [array_key(spec.file, r, f"out{k}") for k in range(len(spec.outputs))]
    missing = [k for k in keys if k not in answers]
    if not refs or missing:
        raise SelfTestError(f"{where}: {KNOWN_ANSWERS_FILE} lacks this model's reference arrays "
                            f"({', '.join(missing[:2]) or 'no inputs listed'}); regenerate: "
                            "python tools/known_answers.py")
    if digest([answers[k] for k in keys]) != block.get("sha256"):
        raise SelfTestError(f"{where}: its arrays in {KNOWN_ANSWERS_FILE} do not match the manifest's sha256")
    worst = 1.0
    for ref in refs:
        x = preprocess(answers[array_key(spec.file, ref, "in")], spec.preprocessing, model.input_shape[0])
        for k, out in enumerate(model.run(x)):
            expected = answers[array_key(spec.file, ref, f"out{k}")].astype(np.float32)
            score = agreement(first_row(out), expected)
            worst = min(worst, score)
            if not score >= minimum:
                name = spec.outputs[k].get("name", f"output {k}")
                raise SelfTestError(
                    f"{where}: known-answer self-test failed on reference '{ref}', output {name}: cosine "
                    f"{score:.3f} < {minimum:g} to the recorded result; this CPU/runtime ({model.runtime}) "
                    "computes this model wrongly, so it must not decide who opens a door")
    return SelfTestResult(spec.file, spec.role, worst, len(refs))


def models_of(obj: Any) -> list[TFLiteModel]:
    """The TFLite models an object holds directly (a detector, an embedder): what a pipeline really runs."""
    found = [v for v in vars(obj).values() if isinstance(v, TFLiteModel)]
    return found


def check_pipeline(pipeline: Any, models_dir: Path | None = None) -> list[SelfTestResult]:
    """Self-test the very interpreters a FacePipeline loaded (its detector's and every embedder's)."""
    folder = Path(models_dir or default_models_dir())
    answers = read_known_answers(folder)
    parts = [pipeline.detector] + list(getattr(pipeline, "embedders", []))
    results = []
    for part in parts:
        for model in models_of(part):
            result = check_model(model, answers)
            if result is not None:
                results.append(result)
    _require_embedder_covered(pipeline, results, folder)
    return results


def _require_embedder_covered(pipeline: Any, results: list[SelfTestResult], folder: Path) -> None:
    """The embedders decide who opens the door: running one without a known answer is refused."""
    for embedder in getattr(pipeline, "embedders", []):
        file = embedder.model.spec.file
        if not any(r.file == file for r in results):
            raise SelfTestError(f"{folder / file}: no known answer in the manifest for this embedder; record "
                                "one: python tools/known_answers.py")


def check_all(models_dir: Path | None = None, num_threads: int = 1) -> list[SelfTestResult]:
    """Load every manifest model that has a known answer and check it (doctor; one model at a time)."""
    folder = Path(models_dir or default_models_dir())
    specs = load_manifest(folder)
    answers = read_known_answers(folder)
    results = []
    for name, spec in specs.items():
        if not spec.extra.get(KEY):
            continue
        model = load_model(spec.role, num_threads=num_threads, models_dir=folder, name=name)
        result = check_model(model, answers)
        del model
        if result is not None:
            results.append(result)
    tested = {r.file for r in results}
    missing = [n for n, spec in specs.items() if spec.role == "embedder" and n not in tested]
    if missing:
        raise SelfTestError(f"{folder / 'manifest.json'}: no known answer for the embedder(s) "
                            f"{', '.join(missing)}; record one: python tools/known_answers.py")
    return results
