"""Synthetic masks: geometry from keypoints, appearance, robustness, and detection after masking."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_mfr.errors import ImageError
from edge_mfr.vision.synthetic_masks import (
    KINDS,
    MaskStyle,
    mask_region,
    random_style,
    render_mask,
    standard_styles,
)

# A level, frontal face in a 160x160 crop, proportioned like BlazeFace keypoints on MFR2 crops.
KPS = np.array(
    [[60, 66], [100, 66], [80, 89], [80, 109], [38, 76], [122, 76]],
    dtype=np.float32,
)
EYE_Y = 66
SURGICAL = MaskStyle("surgical", (138, 186, 222), "pleats", 0.5)


def textured_image(size: int = 160, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(30, 226, (size, size, 3), dtype=np.uint8)


def flat_image(value: int, size: int = 160) -> np.ndarray:
    return np.full((size, size, 3), value, np.uint8)


def rotate_points(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    return (points @ matrix[:, :2].T + matrix[:, 2]).astype(np.float32)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0.5, b > 0.5
    return float((a & b).sum() / max((a | b).sum(), 1))


@pytest.mark.parametrize("style", standard_styles(), ids=lambda s: f"{s.kind}-{s.texture}")
def test_mask_covers_nose_and_mouth_never_eyes(style: MaskStyle) -> None:
    alpha = mask_region((160, 160), KPS, style)
    assert alpha.dtype == np.float32 and alpha.shape == (160, 160)
    assert 0.0 <= alpha.min() and alpha.max() <= 1.0
    for x, y in KPS[[2, 3]]:
        assert alpha[int(y), int(x)] > 0.95
    for x, y in KPS[[0, 1]]:
        assert alpha[int(y) - 3 : int(y) + 4, int(x) - 3 : int(x) + 4].max() == 0.0
    # A face-sized mask: wider than the eye distance, and reaching below the mouth.
    cols = np.flatnonzero(alpha.max(axis=0) > 0.5)
    rows = np.flatnonzero(alpha.max(axis=1) > 0.5)
    assert cols[-1] - cols[0] > 1.2 * (KPS[1, 0] - KPS[0, 0])
    assert rows[-1] > KPS[3, 1] + 0.5 * (KPS[3, 1] - KPS[2, 1])


def top_row(alpha: np.ndarray, x: int) -> int:
    return int(np.flatnonzero(alpha[:, x] > 0.5)[0])


def test_top_edge_rises_with_nose_height() -> None:
    tops = [
        top_row(mask_region((160, 160), KPS, MaskStyle("cloth", (0, 0, 0), "plain", h)), 80)
        for h in (0.2, 0.5, 0.8)
    ]
    assert tops[0] > tops[1] > tops[2]
    assert EYE_Y < tops[2] < KPS[2, 1] and tops[0] < KPS[2, 1]


def test_rendered_top_edge_follows_nose_height() -> None:
    img = flat_image(128)
    low = render_mask(img, KPS, MaskStyle("n95", (240, 240, 240), "plain", 0.3))
    high = render_mask(img, KPS, MaskStyle("n95", (240, 240, 240), "plain", 0.7))
    first_changed = [int(np.flatnonzero((r[:, 80] != img[:, 80]).any(-1))[0]) for r in (low, high)]
    assert first_changed[1] < first_changed[0]


@pytest.mark.parametrize("kind", KINDS)
def test_pixels_on_and_above_eye_line_unchanged(kind: str) -> None:
    img = textured_image()
    style = next(s for s in standard_styles() if s.kind == kind)
    for seed in range(3):
        out = render_mask(
            img, KPS, MaskStyle(kind, style.color, style.texture, 1.0), np.random.default_rng(seed)
        )
        np.testing.assert_array_equal(out[: EYE_Y + 1], img[: EYE_Y + 1])
        assert (out[EYE_Y + 1 :] != img[EYE_Y + 1 :]).any()


def test_pixels_above_a_rolled_eye_line_unchanged() -> None:
    img = textured_image()
    m = cv2.getRotationMatrix2D((80, 80), 25, 1.0)
    kps = rotate_points(KPS, m)
    out = render_mask(img, kps, standard_styles()[6], np.random.default_rng(0))
    eye_r, eye_l = kps[0], kps[1]
    ys, xs = np.mgrid[0:160, 0:160]
    # Signed distance from the eye line, positive towards the mouth.
    normal = np.array([-(eye_l - eye_r)[1], (eye_l - eye_r)[0]]) / np.linalg.norm(eye_l - eye_r)
    if (kps[3] - eye_r) @ normal < 0:
        normal = -normal
    side = (xs - eye_r[0]) * normal[0] + (ys - eye_r[1]) * normal[1]
    above = side <= 0
    np.testing.assert_array_equal(out[above], img[above])


@pytest.mark.parametrize("size", [112, 160, 400])
def test_output_shape_dtype_and_input_untouched(size: int) -> None:
    img = textured_image(size)
    before = img.copy()
    kps = KPS * (size / 160)
    for style in standard_styles():
        out = render_mask(img, kps, style, np.random.default_rng(3))
        assert out.shape == img.shape and out.dtype == np.uint8
        assert out is not img and not np.shares_memory(out, img)
        changed = (out != img).any(-1)
        assert changed.sum() > 0.05 * size * size  # the mask is drawn at this scale
    np.testing.assert_array_equal(img, before)


def test_deterministic_for_a_seed_and_varied_across_seeds() -> None:
    img = textured_image()
    style = standard_styles()[0]
    a = render_mask(img, KPS, style, np.random.default_rng(7))
    b = render_mask(img, KPS, style, np.random.default_rng(7))
    c = render_mask(img, KPS, style, np.random.default_rng(8))
    np.testing.assert_array_equal(a, b)
    assert (a != c).any()
    np.testing.assert_array_equal(render_mask(img, KPS, style), render_mask(img, KPS, style))
    assert random_style(np.random.default_rng(5)) == random_style(np.random.default_rng(5))


def test_standard_styles_stable_and_cover_all_kinds() -> None:
    styles = standard_styles()
    assert styles == standard_styles()
    assert 6 <= len(styles) <= 8
    assert {s.kind for s in styles} == set(KINDS)
    assert len({s.nose_height for s in styles}) >= 3
    assert all(0.3 <= s.nose_height <= 0.7 for s in styles)
    assert len(set(styles)) == len(styles)


def test_random_styles_are_valid_and_varied() -> None:
    rng = np.random.default_rng(0)
    styles = [random_style(rng) for _ in range(60)]
    assert {s.kind for s in styles} == set(KINDS)
    img = textured_image()
    for s in styles[:8]:
        assert render_mask(img, KPS, s, rng).shape == img.shape


def test_rolled_keypoints_rotate_the_mask() -> None:
    style = standard_styles()[0]
    upright = mask_region((160, 160), KPS, style)
    for angle in (-30, 20, 90):
        m = cv2.getRotationMatrix2D((80, 80), angle, 1.0)
        rolled = mask_region((160, 160), rotate_points(KPS, m), style)
        expected = cv2.warpAffine(upright, m, (160, 160))
        assert iou(rolled, expected) > 0.93
        assert iou(rolled, upright) < 0.9


def test_turned_face_mask_follows_the_near_ear() -> None:
    # Face turned to the image right: the subject's left ear (image right) lies close to the nose.
    turned = KPS.copy()
    turned[2, 0] += 12
    turned[3, 0] += 8
    turned[5, 0] = turned[2, 0] + 16
    alpha = mask_region((160, 160), turned, standard_styles()[0])
    cols = np.flatnonzero(alpha[int(turned[3, 1])] > 0.5)
    right_extent = cols[-1] - turned[3, 0]
    left_extent = turned[3, 0] - cols[0]
    assert right_extent < 0.6 * left_extent
    assert alpha[int(turned[2, 1]), int(turned[2, 0])] > 0.95


@pytest.mark.parametrize(
    "shift",
    [(-70, 0), (70, 0), (0, 70), (0, -60), (-400, 0), (0, 500), (1e4, 1e4)],
)
def test_keypoints_near_or_beyond_the_border(shift: tuple[float, float]) -> None:
    img = textured_image()
    kps = KPS + np.array(shift, np.float32)
    out = render_mask(img, kps, standard_styles()[2], np.random.default_rng(0))
    alpha = mask_region(img.shape, kps, standard_styles()[2])
    assert out.shape == img.shape and alpha.shape == img.shape[:2]
    if abs(shift[0]) >= 400 or abs(shift[1]) >= 400:
        np.testing.assert_array_equal(out, img)
        assert alpha.max() == 0.0


def test_tiny_and_degenerate_but_finite_faces() -> None:
    img = textured_image()
    tiny = (KPS - 80) * 0.05 + 80  # a face two pixels wide
    assert render_mask(img, tiny, standard_styles()[0]).shape == img.shape
    # Ears swapped inside the face and mouth above the nose: clamped to plausible proportions.
    odd = KPS.copy()
    odd[[4, 5]] = odd[[5, 4]]
    odd[3, 1] = odd[2, 1] - 5
    alpha = mask_region((160, 160), odd, standard_styles()[0])
    assert alpha[int(KPS[2, 1]), 80] > 0.9 and alpha[: EYE_Y + 1].max() == 0.0


def test_mask_brightness_follows_the_face() -> None:
    style = standard_styles()[1]  # white surgical
    region = mask_region((160, 160), KPS, style) > 0.9
    dark = render_mask(flat_image(40), KPS, style)[region].mean()
    mid = render_mask(flat_image(120), KPS, style)[region].mean()
    bright = render_mask(flat_image(200), KPS, style)[region].mean()
    assert dark < mid < bright
    assert dark < 120  # a white mask in a dark photo is not white


def test_mask_is_shaded_not_flat() -> None:
    # Light from the image left: the left half of the mask comes out brighter than the right.
    ramp = np.tile(np.linspace(200, 60, 160, dtype=np.float32)[None, :, None], (160, 1, 3)).astype(np.uint8)
    style = standard_styles()[6]
    out = render_mask(ramp, KPS, style).astype(float)
    region = mask_region((160, 160), KPS, style) > 0.9
    left = out[:, :80][region[:, :80]].mean()
    right = out[:, 80:][region[:, 80:]].mean()
    assert left > right + 10


def test_bad_inputs_raise_clear_errors() -> None:
    img = textured_image()
    with pytest.raises(ImageError, match="RGB uint8"):
        render_mask(img.astype(np.float32), KPS, SURGICAL)
    with pytest.raises(ImageError, match="RGB uint8"):
        render_mask(img[..., 0], KPS, SURGICAL)
    with pytest.raises(ImageError, match="shape"):
        render_mask(img, KPS[:5], SURGICAL)
    with pytest.raises(ImageError, match="NaN"):
        render_mask(img, np.full((6, 2), np.nan, np.float32), SURGICAL)
    with pytest.raises(ImageError, match="degenerate"):
        render_mask(img, np.full((6, 2), 80, np.float32), SURGICAL)
    with pytest.raises(ValueError, match="kind"):
        MaskStyle("bandana", (0, 0, 0), "plain", 0.5)
    with pytest.raises(ValueError, match="texture"):
        MaskStyle("n95", (0, 0, 0), "pleats", 0.5)
    with pytest.raises(ValueError, match="nose_height"):
        MaskStyle("cloth", (0, 0, 0), "plain", 1.5)
    with pytest.raises(ValueError, match="color"):
        MaskStyle("cloth", (0, 0, 300), "plain", 0.5)


def data_dir() -> Path:
    env = os.environ.get("EDGE_MFR_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[2].parent / "shared" / "data"


@pytest.mark.data
def test_blazeface_still_finds_masked_mfr2_faces() -> None:
    root = data_dir() / "mfr2"
    if not (root / "labels.csv").is_file():
        pytest.skip(f"MFR2 data not found at {root} (set EDGE_MFR_DATA)")
    from edge_mfr.vision.detector import BlazeFaceDetector

    detector = BlazeFaceDetector("short")

    def detect(crop: np.ndarray) -> np.ndarray | None:
        """Keypoints of the crop's face in crop pixels, or None (the crop is padded first, as for MFR2)."""
        pad = crop.shape[0] // 2
        faces = detector.detect(cv2.copyMakeBorder(crop, pad, pad, pad, pad, cv2.BORDER_CONSTANT))
        if not faces:
            return None
        best = max(faces, key=lambda f: f.score)
        centre = (best.box[:2] + best.box[2:]) / 2 - pad
        half = np.array(crop.shape[1::-1], np.float32) / 2
        # Must be the crop's face, not something found in the padding.
        return best.keypoints - pad if np.all(np.abs(centre - half) < crop.shape[0] / 4) else None

    with open(root / "labels.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["masked"] == "0"]
    styles = standard_styles()
    found = tried = 0
    for row in rows:
        crop = cv2.cvtColor(cv2.imread(str(root / row["path"])), cv2.COLOR_BGR2RGB)
        keypoints = detect(crop)
        if keypoints is None:
            continue
        for i, style in enumerate(styles):
            masked = render_mask(crop, keypoints, style, np.random.default_rng(i))
            assert (masked != crop).any(-1).mean() > 0.1  # the mask was really drawn
            tried += 1
            found += detect(masked) is not None
    assert tried >= 8 * 40, f"only {tried // 8} unmasked MFR2 faces detected before masking"
    rate = found / tried
    print(f"BlazeFace detection after synthetic masks: {found}/{tried} = {rate:.3f}")
    assert rate >= 0.9
