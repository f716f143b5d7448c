"""FaceNet on the TFLite runtime: aligned 160x160 crops in, L2-normalised 512-d embeddings out."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge_mfr.vision.runtime import TFLiteModel, load_model


class Embedder:
    """Batch-friendly FaceNet embedder.

    The preprocessing comes from the manifest, because it belongs to the weights: this model was trained
    on ``(x - 127.5) / 128``; per-image prewhitening (what older FaceNet code does) costs it most of its
    masked-face accuracy.
    """

    def __init__(self, num_threads: int = 1, models_dir: Path | None = None, model: TFLiteModel | None = None,
                 max_batch: int = 8):
        self.model = model or load_model("embedder", num_threads=num_threads, models_dir=models_dir)
        pre = self.model.spec.preprocessing
        self.mean = float(pre.get("mean", 127.5))
        self.std = float(pre.get("std", 128.0))
        self.size = int(self.model.input_shape[1])
        self.dim = int(self.model.spec.outputs[0]["shape"][-1])
        self.max_batch = max_batch

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
        out = np.empty((len(batch), self.dim), dtype=np.float32)
        for start in range(0, len(batch), self.max_batch):
            chunk = batch[start : start + self.max_batch].astype(np.float32)
            out[start : start + len(chunk)] = self.model.run((chunk - self.mean) / self.std)[0]
        return l2_normalize(out)


def l2_normalize(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32)
