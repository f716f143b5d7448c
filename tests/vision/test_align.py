"""Similarity alignment: exact on synthetic points, and the crop puts real keypoints on the template."""

from __future__ import annotations

import numpy as np

from edge_mfr.vision.align import (
    ALIGN_POINTS,
    TEMPLATE_160,
    align_face,
    alignment_matrix,
    similarity_transform,
    transform_points,
)


def test_similarity_transform_recovers_a_known_transform():
    rng = np.random.default_rng(1)
    src = rng.uniform(0, 100, (4, 2))
    angle, scale, t = 0.3, 1.7, np.array([12.0, -5.0])
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    dst = (scale * rot @ src.T).T + t
    m = similarity_transform(src, dst)
    assert np.allclose(m[:, :2], scale * rot, atol=1e-4)
    assert np.allclose(m[:, 2], t, atol=1e-3)


def test_similarity_never_reflects():
    src = np.array([[0, 0], [3, 0], [1, 2], [1, 5]], dtype=np.float64)
    mirrored = src * [-1, 1]
    m = similarity_transform(src, mirrored)
    assert np.linalg.det(m[:, :2]) > 0  # a rotation with positive scale, never a flip


def test_aligned_crop_places_keypoints_on_the_template(short_detector, astronaut):
    face = short_detector.detect(astronaut)[0]
    crop = align_face(astronaut, face)
    assert crop.shape == (160, 160, 3) and crop.dtype == np.uint8
    mapped = transform_points(face.keypoints[list(ALIGN_POINTS)], alignment_matrix(face))
    assert np.abs(mapped - TEMPLATE_160).max() < 8
    # Re-detecting on the crop finds the eyes where the template says.
    again = short_detector.detect(np.pad(crop, ((80, 80), (80, 80), (0, 0))))
    assert again, "face not found again in its own aligned crop"
    eyes = again[0].keypoints[:2] - 80
    assert np.abs(eyes - TEMPLATE_160[:2]).max() < 10


def test_masked_alignment_ignores_the_mouth_keypoint(short_detector, astronaut):
    """Under a mask BlazeFace's mouth point is a guess: the masked crop must not move with it."""
    from dataclasses import replace

    from edge_mfr.vision.align import MASKED_ALIGN_POINTS
    from edge_mfr.vision.types import KP_MOUTH

    face = short_detector.detect(astronaut)[0]
    keypoints = face.keypoints.copy()
    keypoints[KP_MOUTH] += [0.0, 25.0]  # the mouth guessed far too low
    moved = replace(face, keypoints=keypoints)
    assert KP_MOUTH not in MASKED_ALIGN_POINTS
    np.testing.assert_allclose(alignment_matrix(moved, masked=True), alignment_matrix(face, masked=True))
    assert not np.allclose(alignment_matrix(moved), alignment_matrix(face), atol=1e-3)  # the bare path uses it
    crop = align_face(astronaut, face, masked=True)
    mapped = transform_points(face.keypoints[list(MASKED_ALIGN_POINTS)], alignment_matrix(face, masked=True))
    assert crop.shape == (160, 160, 3)
    assert np.abs(mapped - TEMPLATE_160[list(MASKED_ALIGN_POINTS)]).max() < 8
