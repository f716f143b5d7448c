"""The one rule for faces judged masked: their embedding is replaced by their eyes-and-nose embedding."""

from __future__ import annotations

import numpy as np

from edge_mfr.identity.identify import reembed_masked


def test_only_faces_judged_masked_are_reembedded_and_the_input_is_kept() -> None:
    e = np.eye(4, dtype=np.float32)[:3]
    asked: list[list[int]] = []

    def embed(idx: np.ndarray) -> np.ndarray:
        asked.append(idx.tolist())
        return np.full((len(idx), 4), 0.5, np.float32)

    out = reembed_masked(e, np.array([False, True, True]), embed)
    assert asked == [[1, 2]]
    np.testing.assert_array_equal(out[0], e[0])
    np.testing.assert_array_equal(out[1:], np.full((2, 4), 0.5, np.float32))
    np.testing.assert_array_equal(e, np.eye(4, dtype=np.float32)[:3])  # the caller's array is untouched


def test_no_face_judged_masked_embeds_nothing() -> None:
    e = np.eye(3, dtype=np.float32)

    def embed(idx: np.ndarray) -> np.ndarray:
        raise AssertionError("nothing masked: no second embedding")

    assert reembed_masked(e, np.zeros(3, bool), embed) is e
