"""Face embedders on the TFLite runtime: aligned crops in, L2-normalised embeddings out.

Everything that belongs to the weights comes from the model's manifest entry, never from code: the
preprocessing (``mean``/``std``), the alignment template and crop size (``alignment``; FaceNet's entry
predates the field and means the project's 160x160 template), and a batch the graph cannot change
(``fixed_batch``: a graph that hard-codes a batch in a reshape takes faces in groups of that size, padded
with a copy; MobileFaceNet's published batch of two is rewritten to one by tools/convert.py ``--batch 1``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge_mfr.errors import ModelError
from edge_mfr.vision.align import DEFAULT_TEMPLATE, template_points
from edge_mfr.vision.runtime import TFLiteModel, load_model

# The best set measured (README, "fused recognition"): FaceNet first (mask status and enrollment checks run
# on it), then the two ArcFace-style embedders of issue 11. `recognition.embedders` in the config overrides it.
DEFAULT_EMBEDDERS = ("facenet_int8.tflite", "fr_feature_dynamic.tflite", "mobilefacenet.tflite")


class Embedder:
    """Batch-friendly embedder for one model file.

    The preprocessing comes from the manifest, because it belongs to the weights: FaceNet was trained
    on ``(x - 127.5) / 128``; per-image prewhitening (what older FaceNet code does) costs it most of its
    masked-face accuracy.
    """

    def __init__(self, num_threads: int = 1, models_dir: Path | None = None, model: TFLiteModel | None = None,
                 max_batch: int = 8, name: str | None = None):
        self.model = model or load_model("embedder", num_threads=num_threads, models_dir=models_dir, name=name)
        spec = self.model.spec
        self.name = spec.file
        pre = spec.preprocessing
        self.mean = float(pre.get("mean", 127.5))
        self.std = float(pre.get("std", 128.0))
        if str(pre.get("color", "RGB")).upper() != "RGB":
            raise ModelError(f"{self.name}: only RGB embedders are supported (manifest says {pre.get('color')!r})")
        alignment = spec.extra.get("alignment") or {}
        self.template = str(alignment.get("template", DEFAULT_TEMPLATE))
        try:
            template_points(self.template)
        except ValueError as exc:
            raise ModelError(f"{self.name}: {exc}") from None
        self.size = int(self.model.input_shape[1])
        if int(alignment.get("size", self.size)) != self.size:
            raise ModelError(f"{self.name}: manifest alignment size {alignment.get('size')} but the model "
                             f"takes {self.size}x{self.size}")
        self.dim = int(self.model.spec.outputs[0]["shape"][-1])
        self.fixed_batch = int(spec.extra.get("fixed_batch") or 0)
        self.max_batch = max(max_batch - max_batch % self.fixed_batch, self.fixed_batch) if self.fixed_batch \
            else max_batch

    @property
    def model_sha256(self) -> str:
        return self.model.spec.sha256

    def embed(self, crops: np.ndarray | list[np.ndarray]) -> np.ndarray:
        """(N, dim) float32 unit vectors for N aligned RGB uint8 crops."""
        batch = np.asarray(crops)
        if batch.ndim == 3:
            batch = batch[None]
        if batch.ndim != 4 or batch.shape[1:] != (self.size, self.size, 3):
            raise ValueError(f"expected crops of shape (N, {self.size}, {self.size}, 3), got {batch.shape}")
        n = len(batch)
        if self.fixed_batch and n % self.fixed_batch:
            pad = self.fixed_batch - n % self.fixed_batch  # a copy of the last face; its output is dropped
            batch = np.concatenate([batch, np.repeat(batch[-1:], pad, axis=0)])
        out = np.empty((len(batch), self.dim), dtype=np.float32)
        for start in range(0, len(batch), self.max_batch):
            chunk = batch[start : start + self.max_batch].astype(np.float32)
            out[start : start + len(chunk)] = self.model.run((chunk - self.mean) / self.std)[0]
        return l2_normalize(out[:n])


def l2_normalize(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32)
