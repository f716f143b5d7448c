"""Synthetic face masks drawn from the detector's six keypoints, for masked enrollment templates.

People enroll unmasked but may wear a mask at the door, so enrollment adds masked variants of each crop.
Published results show crude filled polygons already help and more realistic renderings may help more,
so the mask here follows the face: its outline is placed in a face frame built from the keypoints (eye
line for roll and scale, nose and mouth for the vertical axis and the centre line, ears for the width,
which also handles yaw), drawn as an anti-aliased closed spline, lit with the face's own brightness
under it (a dark photo gets a dark mask) and given a per-kind surface (surgical pleats, cloth weave or
print, N95 cup with a seam, KN95 centre fold), soft edges and ear loops or straps.

Face frame: ``a`` runs along the eye line (subject's right eye to left eye), ``b`` down the face, both
in pixels from the eye midpoint. Outline points are written in a normalised frame (``fx``, ``y``):
``y`` = 0 on the eye line, 1 at the nose tip, 2 at the mouth, 3 at the estimated chin; ``fx`` = 0 on
the face's centre line and +-1 at the ears. Only pixels below the eye line are ever changed.

Why one file: one rendering pipeline (face frame, outline geometry, shading, per-kind surface)
whose stages share the private face-frame types; none of them is used on its own.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import cv2
import numpy as np

from edge_mfr.errors import ImageError
from edge_mfr.vision.types import (
    KP_LEFT_EAR,
    KP_LEFT_EYE,
    KP_MOUTH,
    KP_NOSE,
    KP_RIGHT_EAR,
    KP_RIGHT_EYE,
    NUM_KEYPOINTS,
)

KINDS = ("surgical", "cloth", "n95", "kn95")
TEXTURES: dict[str, tuple[str, ...]] = {
    "surgical": ("pleats", "plain"),
    "cloth": ("plain", "weave", "pattern", "plaid"),
    "n95": ("plain",),
    "kn95": ("plain",),
}

# Chin below the mouth, in nose-tip-to-mouth distances. Typical faces have the menton about 0.8 eye
# distances under the mouth centre and the nose tip about 0.5 above it; tuned by eye on MFR2/LFW.
CHIN_FACTOR = 1.55
# Face luminance that leaves the mask colour unchanged; brighter faces brighten it, darker darken it.
SKIN_REF = 160.0


@dataclass(frozen=True)
class MaskStyle:
    """What to draw. ``nose_height``: 0 puts the top edge at the nose tip, 1 on the eye line."""

    kind: str
    color: tuple[int, int, int]
    texture: str
    nose_height: float

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"mask kind must be one of {KINDS}, not {self.kind!r}")
        if self.texture not in TEXTURES[self.kind]:
            raise ValueError(
                f"{self.kind} mask texture must be one of {TEXTURES[self.kind]}, not {self.texture!r}"
            )
        if len(self.color) != 3 or not all(0 <= int(c) <= 255 for c in self.color):
            raise ValueError(f"mask color must be three 0..255 values, not {self.color!r}")
        if not 0.0 <= float(self.nose_height) <= 1.0:
            raise ValueError(f"mask nose_height must be within 0..1, not {self.nose_height!r}")


def standard_styles() -> list[MaskStyle]:
    """The fixed set enrollment renders for every crop: common real masks, varied nose heights."""
    return [
        MaskStyle("surgical", (138, 186, 222), "pleats", 0.5),
        MaskStyle("surgical", (232, 235, 236), "pleats", 0.4),
        MaskStyle("cloth", (34, 34, 38), "weave", 0.55),
        MaskStyle("cloth", (128, 128, 132), "weave", 0.35),
        MaskStyle("cloth", (150, 30, 40), "pattern", 0.5),
        MaskStyle("cloth", (60, 82, 130), "plaid", 0.45),
        MaskStyle("n95", (236, 234, 226), "plain", 0.6),
        MaskStyle("kn95", (238, 238, 240), "plain", 0.5),
    ]


_PALETTES: dict[str, tuple[tuple[int, int, int], ...]] = {
    "surgical": ((138, 186, 222), (232, 235, 236), (120, 200, 190), (40, 40, 44), (230, 170, 190)),
    "cloth": (
        (34, 34, 38),
        (128, 128, 132),
        (150, 30, 40),
        (60, 82, 130),
        (40, 50, 95),
        (210, 205, 195),
        (90, 110, 70),
        (120, 60, 110),
    ),
    "n95": ((236, 234, 226), (222, 222, 218), (70, 110, 170)),
    "kn95": ((238, 238, 240), (30, 30, 32), (200, 205, 212), (225, 180, 190)),
}


def random_style(rng: np.random.Generator) -> MaskStyle:
    """A random plausible mask, for augmentation beyond the standard set."""
    kind = str(rng.choice(KINDS, p=[0.35, 0.4, 0.1, 0.15]))
    palette = _PALETTES[kind]
    base = np.array(palette[int(rng.integers(len(palette)))], dtype=float)
    color = tuple(int(c) for c in np.clip(base + rng.normal(0, 10, 3), 0, 255))
    texture = str(rng.choice(TEXTURES[kind]))
    return MaskStyle(kind, color, texture, float(rng.uniform(0.3, 0.7)))


# Half outlines (image-right side), from just after the top centre to just before the bottom centre.
# ``top`` points are (fx, frac): y = lerp(top centre y, corner y, frac), so the top edge keeps its curve
# whatever the nose height. ``bottom`` is the y of the bottom centre; ``sharp`` repeats the top and
# bottom centre points, which turns them into corners (the KN95's folded peak).
@dataclass(frozen=True)
class _Shape:
    top: tuple[tuple[float, float], ...]
    corner: tuple[float, float]
    sides: tuple[tuple[float, float], ...]
    bottom: float
    sharp: bool = False
    loop_from: tuple[tuple[float, float], tuple[float, float]] = ((0.9, 1.0), (0.85, 2.4))


_SHAPES = {
    "surgical": _Shape(
        top=((0.45, 0.35),),
        corner=(0.92, 0.95),
        sides=((0.97, 1.6), (0.9, 2.45), (0.55, 3.1)),
        bottom=3.2,
        loop_from=((0.92, 0.95), (0.9, 2.45)),
    ),
    "cloth": _Shape(
        top=((0.35, 0.3),),
        corner=(0.85, 1.0),
        sides=((0.93, 1.7), (0.82, 2.45), (0.5, 3.0)),
        bottom=3.15,
        loop_from=((0.85, 1.0), (0.85, 2.3)),
    ),
    "n95": _Shape(
        top=((0.4, 0.3),),
        corner=(0.8, 0.95),
        sides=((0.88, 1.65), (0.75, 2.5), (0.42, 3.05)),
        bottom=3.15,
        loop_from=((0.83, 1.15), (0.78, 2.45)),
    ),
    "kn95": _Shape(
        top=((0.5, 0.55),),
        corner=(0.9, 1.0),
        sides=((0.92, 1.7), (0.78, 2.5), (0.38, 3.05)),
        bottom=3.25,
        sharp=True,
        loop_from=((0.9, 1.05), (0.85, 2.4)),
    ),
}


@dataclass(frozen=True)
class _Frame:
    """The face frame: origin at the eye midpoint, unit axes, scale and the knots of the y mapping."""

    origin: np.ndarray
    u: np.ndarray
    v: np.ndarray
    scale: float
    knots_b: np.ndarray  # b of y = 0, 1, 2, 3 (eye line, nose tip, mouth, chin)
    knots_a: np.ndarray  # centre line a at the same y
    width_r: float  # centre line to the subject's right ear (image left), pixels
    width_l: float
    ear_r: np.ndarray  # ears in (a, b)
    ear_l: np.ndarray

    def b_of_y(self, y: np.ndarray) -> np.ndarray:
        return _interp_ext(y, _Y_KNOTS, self.knots_b)

    def y_of_b(self, b: np.ndarray) -> np.ndarray:
        return _interp_ext(b, self.knots_b, _Y_KNOTS)

    def centre_a(self, y: np.ndarray) -> np.ndarray:
        return np.interp(y, _Y_KNOTS, self.knots_a)

    def to_local(self, fx: np.ndarray, y: np.ndarray) -> np.ndarray:
        fx, y = np.asarray(fx, float), np.asarray(y, float)
        a = self.centre_a(y) + fx * np.where(fx >= 0, self.width_l, self.width_r)
        return np.stack([a, self.b_of_y(y)], axis=-1)

    def to_image(self, ab: np.ndarray) -> np.ndarray:
        return self.origin + ab[..., :1] * self.u + ab[..., 1:2] * self.v


_Y_KNOTS = np.array([0.0, 1.0, 2.0, 3.0])


def _interp_ext(x: np.ndarray, xp: np.ndarray, fp: np.ndarray) -> np.ndarray:
    """np.interp that extends the end segments linearly instead of clamping."""
    x = np.asarray(x, float)
    out = np.interp(x, xp, fp)
    lo_slope = (fp[1] - fp[0]) / (xp[1] - xp[0])
    hi_slope = (fp[-1] - fp[-2]) / (xp[-1] - xp[-2])
    out = np.where(x < xp[0], fp[0] + (x - xp[0]) * lo_slope, out)
    return np.where(x > xp[-1], fp[-1] + (x - xp[-1]) * hi_slope, out)


def _check_keypoints(keypoints: np.ndarray) -> np.ndarray:
    kps = np.asarray(keypoints, dtype=np.float64)
    if kps.shape != (NUM_KEYPOINTS, 2):
        raise ImageError(f"face keypoints must have shape ({NUM_KEYPOINTS}, 2), not {kps.shape}")
    if not np.isfinite(kps).all():
        raise ImageError("face keypoints contain NaN or infinite values")
    return kps


def _face_frame(keypoints: np.ndarray) -> _Frame:
    """Face frame from the keypoints, with every measured distance clamped to plausible face proportions.

    The clamps keep a wild keypoint (a guessed ear on a turned face, a mouth under a mask) from producing
    a wild mask; the scale takes the larger of the eye distance and the eye-to-mouth height, because
    yaw shrinks the first and pitch the second.
    """
    kps = _check_keypoints(keypoints)
    eye_r, eye_l = kps[KP_RIGHT_EYE], kps[KP_LEFT_EYE]
    origin = (eye_r + eye_l) / 2
    mouth_vec = kps[KP_MOUTH] - origin
    eye_vec = eye_l - eye_r
    eye_dist = float(np.linalg.norm(eye_vec))
    if eye_dist > 1e-6:
        u = eye_vec / eye_dist
        v = np.array([-u[1], u[0]])
        if mouth_vec @ v < 0:  # mirrored keypoints: keep "down" towards the mouth
            v = -v
    elif np.linalg.norm(mouth_vec) > 1e-6:
        v = mouth_vec / np.linalg.norm(mouth_vec)
        u = np.array([v[1], -v[0]])
    else:
        raise ImageError("face keypoints are degenerate: eyes and mouth coincide")

    def local(p: np.ndarray) -> np.ndarray:
        d = p - origin
        return np.array([d @ u, d @ v])

    nose, mouth = local(kps[KP_NOSE]), local(kps[KP_MOUTH])
    ear_r, ear_l = local(kps[KP_RIGHT_EAR]), local(kps[KP_LEFT_EAR])
    s = max(eye_dist, mouth[1] / 1.1, 1.0)
    nose_b = float(np.clip(nose[1], 0.3 * s, 0.95 * s))
    mouth_b = float(np.clip(mouth[1], nose_b + 0.25 * s, nose_b + 0.9 * s))
    chin_b = mouth_b + float(np.clip(CHIN_FACTOR * (mouth_b - nose_b), 0.55 * s, 1.1 * s))
    nose_a = float(np.clip(nose[0], -0.6 * s, 0.6 * s))
    mouth_a = float(np.clip(mouth[0], -0.45 * s, 0.45 * s))
    width_r = float(np.clip(nose_a - ear_r[0], 0.35 * s, 1.5 * s))
    width_l = float(np.clip(ear_l[0] - nose_a, 0.35 * s, 1.5 * s))
    return _Frame(
        origin=origin,
        u=u,
        v=v,
        scale=s,
        knots_b=np.array([0.0, nose_b, mouth_b, chin_b]),
        knots_a=np.array([0.0, nose_a, mouth_a, mouth_a]),
        width_r=width_r,
        width_l=width_l,
        ear_r=ear_r,
        ear_l=ear_l,
    )


def _catmull_rom_closed(points: np.ndarray, samples: int = 10) -> np.ndarray:
    """Closed uniform Catmull-Rom spline through ``points`` (N, 2): smooth, curved mask edges."""
    p0 = np.roll(points, 1, axis=0)
    p1 = points
    p2 = np.roll(points, -1, axis=0)
    p3 = np.roll(points, -2, axis=0)
    t = np.linspace(0.0, 1.0, samples, endpoint=False)[None, :, None]
    t2, t3 = t * t, t * t * t
    curve = 0.5 * (
        2 * p1[:, None]
        + (p2 - p0)[:, None] * t
        + (2 * p0 - 5 * p1 + 4 * p2 - p3)[:, None] * t2
        + (3 * p1 - p0 - 3 * p2 + p3)[:, None] * t3
    )
    return curve.reshape(-1, 2)


@dataclass(frozen=True)
class _Geometry:
    frame: _Frame
    outline: np.ndarray  # (M, 2) image pixels, closed spline
    outline_fy: np.ndarray  # (M, 2) the same points in (fx, y)
    loops: list[np.ndarray]  # image-pixel polylines of ear loops / straps


def _geometry(keypoints: np.ndarray, style: MaskStyle, rng: np.random.Generator | None) -> _Geometry:
    frame = _face_frame(keypoints)
    shape = _SHAPES[style.kind]
    h = style.nose_height
    jitter_fx = jitter_y = 0.0
    if rng is not None:
        h = float(np.clip(h + rng.uniform(-0.05, 0.05), 0.0, 1.0))
        jitter_fx, jitter_y = 0.03, 0.05
    y_top = 1.0 - h
    corner = shape.corner
    half = [(fx, y_top + frac * (corner[1] - y_top)) for fx, frac in shape.top] + [corner, *shape.sides]
    half_arr = np.array(half, dtype=float)
    if rng is not None:
        half_arr[:, 0] *= 1 + rng.normal(0, jitter_fx, len(half_arr))
        half_arr[:, 1] += rng.normal(0, jitter_y, len(half_arr))
    bottom = shape.bottom + (rng.normal(0, jitter_y) if rng is not None else 0.0)
    mirror = half_arr[::-1] * np.array([-1.0, 1.0])
    top_pt, bot_pt = np.array([[0.0, y_top]]), np.array([[0.0, bottom]])
    reps = 2 if shape.sharp else 1
    ctrl_fy = np.concatenate([np.repeat(top_pt, reps, 0), half_arr, np.repeat(bot_pt, reps, 0), mirror])
    ctrl_ab = frame.to_local(ctrl_fy[:, 0], ctrl_fy[:, 1])
    outline_ab = _catmull_rom_closed(ctrl_ab)
    # Back to (fx, y) for the texture coordinates.
    y = frame.y_of_b(outline_ab[:, 1])
    c = frame.centre_a(y)
    d = outline_ab[:, 0] - c
    fx = d / np.where(d >= 0, frame.width_l, frame.width_r)
    loops = _loops(frame, shape, style.kind, half_arr)
    return _Geometry(frame, frame.to_image(outline_ab), np.stack([fx, y], -1), loops)


def _bezier(p0: np.ndarray, p1: np.ndarray, p2: np.ndarray, n: int = 16) -> np.ndarray:
    t = np.linspace(0, 1, n)[:, None]
    return (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t * t * p2


def _loops(frame: _Frame, shape: _Shape, kind: str, half: np.ndarray) -> list[np.ndarray]:
    """Ear loops (or N95 head straps) from the mask's side to each visible ear, as image polylines."""
    s = frame.scale
    out: list[np.ndarray] = []
    for sign, ear in ((1.0, frame.ear_l), (-1.0, frame.ear_r)):
        (fa, ya), (fb, yb) = shape.loop_from
        start_top = frame.to_local(sign * fa, ya)
        start_bot = frame.to_local(sign * fb, yb)
        if kind == "n95":  # straps run round the head: straight back past the face edge
            end_top = frame.to_local(sign * 1.2, 1.0)
            end_bot = frame.to_local(sign * 1.15, 2.9)
            out.append(frame.to_image(np.stack([start_top, end_top])))
            out.append(frame.to_image(np.stack([start_bot, end_bot])))
            continue
        ear_a = ear[0]
        if sign * (ear_a - start_top[0]) < 0.12 * s:  # ear hidden behind the cheek (turned face)
            continue
        ear_pt = np.array([ear_a - sign * 0.05 * s, float(np.clip(ear[1], 0.12 * s, frame.knots_b[1]))])
        bulge = np.array([sign * 0.1 * s, 0.0])
        out.append(frame.to_image(_bezier(start_top, (start_top + ear_pt) / 2 + bulge, ear_pt)))
        out.append(frame.to_image(_bezier(start_bot, (start_bot + ear_pt) / 2 + bulge, ear_pt)))
    return out


def _roi(points: list[np.ndarray], shape: tuple[int, int], margin: float) -> tuple[int, int, int, int] | None:
    pts = np.concatenate(points)
    x0, y0 = np.floor(pts.min(0) - margin).astype(int)
    x1, y1 = np.ceil(pts.max(0) + margin).astype(int)
    h, w = shape
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if x1 <= x0 or y1 <= y0:
        return None
    return int(x0), int(y0), int(x1), int(y1)


_SHIFT = 4  # sub-pixel bits for cv2 drawing


def _fixed(points: np.ndarray, x0: int, y0: int) -> np.ndarray:
    return np.round((points - [x0, y0]) * (1 << _SHIFT)).astype(np.int32).reshape(-1, 1, 2)


def _below_eye_line(frame: _Frame, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """1 well below the eye line, 0 on and above it, a short ramp between (no pixel above ever changes)."""
    b = (xs - frame.origin[0]) * frame.v[0] + (ys - frame.origin[1]) * frame.v[1]
    return np.clip(b / max(1.0, 0.04 * frame.scale), 0.0, 1.0)


def _body_alpha(
    geo: _Geometry, roi: tuple[int, int, int, int], grid: tuple[np.ndarray, np.ndarray]
) -> np.ndarray:
    x0, y0, x1, y1 = roi
    canvas = np.zeros((y1 - y0, x1 - x0), np.uint8)
    cv2.fillPoly(canvas, [_fixed(geo.outline, x0, y0)], 255, lineType=cv2.LINE_AA, shift=_SHIFT)
    alpha = canvas.astype(np.float32) / 255.0
    sigma = max(0.5, 0.012 * geo.frame.scale)
    alpha = cv2.GaussianBlur(alpha, (0, 0), sigma)
    return alpha * _below_eye_line(geo.frame, *grid).astype(np.float32)


def _grid(roi: tuple[int, int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    x0, y0, x1, y1 = roi
    ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float64)
    return xs, ys  # pixel centres at integer coordinates, as cv2 draws


def _check_image(crop: np.ndarray) -> None:
    if not isinstance(crop, np.ndarray) or crop.dtype != np.uint8 or crop.ndim != 3 or crop.shape[2] != 3:
        desc = f"{crop.dtype} {crop.shape}" if isinstance(crop, np.ndarray) else type(crop).__name__
        raise ImageError(f"mask rendering needs an RGB uint8 HxWx3 image, not {desc}")
    if crop.shape[0] < 8 or crop.shape[1] < 8:
        raise ImageError(f"image too small to draw a mask on: {crop.shape[1]}x{crop.shape[0]}")


def mask_region(crop_shape: tuple[int, ...], keypoints: np.ndarray, style: MaskStyle) -> np.ndarray:
    """Float32 HxW alpha in [0, 1] of the mask body (no loops) as :func:`render_mask` draws it without rng."""
    h, w = int(crop_shape[0]), int(crop_shape[1])
    if h <= 0 or w <= 0:
        raise ImageError(f"image shape {tuple(crop_shape)} is empty")
    out = np.zeros((h, w), np.float32)
    geo = _geometry(keypoints, style, None)
    roi = _roi([geo.outline], (h, w), 2 + 0.05 * geo.frame.scale)
    if roi is None:
        return out
    x0, y0, x1, y1 = roi
    out[y0:y1, x0:x1] = _body_alpha(geo, roi, _grid(roi))
    return out


def _texture_coords(geo: _Geometry, grid: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, ...]:
    """Per pixel (fx, y, t): t runs 0 at the mask's top edge to 1 at its bottom edge in that column."""
    f = geo.frame
    dx, dy = grid[0] - f.origin[0], grid[1] - f.origin[1]
    a = dx * f.u[0] + dy * f.u[1]
    b = dx * f.v[0] + dy * f.v[1]
    y = f.y_of_b(b)
    d = a - f.centre_a(y)
    fx = d / np.where(d >= 0, f.width_l, f.width_r)
    # The outline starts at the top centre and runs clockwise: the upper edge is the stretch from its
    # leftmost point round through the start to its rightmost point.
    ofy = geo.outline_fy
    i_r, i_l = int(np.argmax(ofy[:, 0])), int(np.argmin(ofy[:, 0]))
    upper = np.concatenate([ofy[i_l:], ofy[: i_r + 1]])
    lower = ofy[i_r : i_l + 1]
    upper, lower = upper[np.argsort(upper[:, 0])], lower[np.argsort(lower[:, 0])]
    top = np.interp(fx, upper[:, 0], upper[:, 1])
    bot = np.interp(fx, lower[:, 0], lower[:, 1])
    t = np.clip((y - top) / np.maximum(bot - top, 1e-3), 0.0, 1.0)
    return fx, y, t


def _gauss_line(x: np.ndarray, centre: float, width: float) -> np.ndarray:
    return np.exp(-(((x - centre) / width) ** 2))


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    n = rng.standard_normal(shape).astype(np.float32)
    if sigma > 0.3:
        n = cv2.GaussianBlur(n, (0, 0), sigma)
        n /= max(float(n.std()), 1e-6)
    return n


def _surface(
    style: MaskStyle,
    fx: np.ndarray,
    y: np.ndarray,
    t: np.ndarray,
    edge: np.ndarray,
    scale: float,
    px_t: float,
    rng: np.random.Generator,
    varied: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-kind albedo (HxWx3, 0..255) and shading factor (HxW): the mask's look before lighting."""
    base = np.array(style.color, np.float32)
    albedo = np.broadcast_to(base, (*fx.shape, 3)).copy()
    shade = np.ones(fx.shape, np.float32)
    # Curved surface: sides and the part under the chin turn away from the camera.
    shade *= 1.0 - 0.22 * np.clip(np.abs(fx), 0, 1.2) ** 2 - 0.1 * np.clip((t - 0.75) / 0.25, 0, 1) ** 2
    # Soft rolled edge all round.
    shade *= 1.0 - 0.12 * np.exp(-edge / max(1.0, 0.05 * scale))
    if style.kind in ("surgical", "cloth"):
        # Fabric tents over the nose ridge and sags into the hollows beside it.
        shade *= 1.0 + 0.08 * np.exp(-((fx / 0.22) ** 2)) * np.clip(1.2 - 1.6 * t, 0, 1)
        shade *= 1.0 - 0.07 * np.exp(-(((np.abs(fx) - 0.45) / 0.2) ** 2) - ((t - 0.3) / 0.25) ** 2)
    lw = max(0.012, 0.7 * px_t)  # thin line width in t units, at least about a pixel
    if style.kind == "surgical":
        shade *= 1.0 + 0.06 * (_gauss_line(t, 0.06, 0.05))  # nose-wire hem
        for line in (0.11, 0.93):
            shade *= 1.0 - 0.1 * _gauss_line(t, line, lw)
        if style.texture == "pleats":
            phase = rng.uniform(-0.02, 0.02) if varied else 0.0
            for k in range(3):
                fold = 0.3 + 0.22 * k + phase
                within = np.clip((t - (fold - 0.2)) / 0.2, 0, 1) * (t < fold)
                shade *= 1.0 + 0.1 * within  # each pleat face catches more light towards its fold
                shade *= 1.0 - 0.22 * _gauss_line(t, fold + 1.5 * lw, lw * 2.0)  # shadow under the fold
        side_hem = np.clip((np.abs(fx) - 0.8) / 0.1, 0, 1)
        shade *= 1.0 + 0.04 * side_hem
    elif style.kind == "cloth":
        shade *= 1.0 - 0.12 * _gauss_line(fx, 0.0, 0.02)  # centre seam
        if style.texture in ("weave", "plain"):
            amp = 0.05 if style.texture == "weave" else 0.02
            grain_h = _smooth_noise(rng, fx.shape, 0.0)
            shade *= 1.0 + amp * np.clip(grain_h, -2.5, 2.5)
            wrinkles = _smooth_noise(rng, fx.shape, max(1.0, 0.12 * scale))
            shade *= 1.0 + 0.05 * wrinkles
        elif style.texture == "pattern":
            albedo = _print_pattern(albedo, base, fx, y, rng, varied)
        elif style.texture == "plaid":
            albedo = _plaid(albedo, base, fx, y, scale)
    elif style.kind == "n95":
        shade *= 1.0 + 0.12 * np.exp(-((fx / 0.5) ** 2) - ((t - 0.45) / 0.45) ** 2)  # dome highlight
        shade *= 1.0 - 0.1 * _gauss_line(fx, 0.0, 0.025)  # centre seam
        shade *= 1.0 - 0.1 * np.exp(-edge / max(1.0, 0.04 * scale))  # moulded rim
        shade *= 1.0 + 0.025 * np.clip(_smooth_noise(rng, fx.shape, 0.0), -2.5, 2.5)
    elif style.kind == "kn95":
        side = 1.0 if (not varied or rng.random() < 0.5) else -1.0
        shade *= np.where(fx * side > 0, 1.05, 0.93)  # the two halves face different ways
        shade *= 1.0 - 0.25 * _gauss_line(fx, 0.0, 0.03)  # crease
        seal = np.exp(-edge / max(1.0, 0.05 * scale))
        shade *= 1.0 - 0.12 * seal * (0.5 + 0.5 * np.sin(edge * 2.2))  # embossed heat seal
        shade *= 1.0 + 0.02 * np.clip(_smooth_noise(rng, fx.shape, 0.0), -2.5, 2.5)
    return albedo, shade


def _contrast_color(base: np.ndarray) -> np.ndarray:
    lum = float(base @ np.array([0.299, 0.587, 0.114]))
    return np.array([240, 235, 220], np.float32) if lum < 128 else np.array([30, 40, 70], np.float32)


def _print_pattern(
    albedo: np.ndarray,
    base: np.ndarray,
    fx: np.ndarray,
    y: np.ndarray,
    rng: np.random.Generator,
    varied: bool,
) -> np.ndarray:
    """Printed fabric: a staggered lattice of small flowers (dot plus petals) in two contrasting colours."""
    ink = _contrast_color(base)
    ink2 = (0.5 * ink + 0.5 * np.array([250, 200, 60], np.float32)).astype(np.float32)
    off = rng.uniform(0, 1, 2) if varied else np.zeros(2)
    px, py = fx * 4.0 + off[0], y * 2.2 + off[1]
    row = np.floor(py)
    px = px + 0.5 * (row % 2)
    cx, cy = px - np.floor(px) - 0.5, py - row - 0.5
    r = np.hypot(cx, cy)
    ang = np.arctan2(cy, cx)
    petals = np.clip(1.0 - (r - 0.12 - 0.12 * np.cos(5 * ang)) / 0.05, 0, 1) * (r < 0.32)
    centre = np.clip(1.0 - (r - 0.08) / 0.04, 0, 1)
    out = albedo * (1 - petals[..., None]) + ink * petals[..., None]
    return out * (1 - centre[..., None]) + ink2 * centre[..., None]


def _plaid(albedo: np.ndarray, base: np.ndarray, fx: np.ndarray, y: np.ndarray, scale: float) -> np.ndarray:
    """Checked fabric: light and dark stripes both ways over the base colour."""
    ink = _contrast_color(base)
    stripes_v = 0.5 + 0.5 * np.cos(2 * np.pi * fx * 3.0)
    stripes_h = 0.5 + 0.5 * np.cos(2 * np.pi * y * 1.6)
    thin = np.maximum(
        _gauss_line(np.sin(np.pi * fx * 3.0), 0, 0.12), _gauss_line(np.sin(np.pi * y * 1.6), 0, 0.12)
    )
    mix = 0.25 * (stripes_v**4 + stripes_h**4) + 0.2 * thin
    dark = 0.75 * base
    out = albedo * (1 - mix[..., None]) + ink * mix[..., None]
    both = (stripes_v * stripes_h)[..., None] ** 3
    return out * (1 - 0.4 * both) + dark * 0.4 * both


def _lighting(gray: np.ndarray, region: np.ndarray, grid: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Smooth illumination over the mask from the face's own brightness under it, as a gain per pixel.

    A plane fitted to the face's luminance (darkest pixels dropped: nostrils, lips, beard) keeps the
    photo's exposure and left/right light fall-off while leaving the features it would cover behind.
    """
    vals = gray[region]
    if vals.size < 12:
        vals, xs, ys = gray.ravel(), grid[0].ravel(), grid[1].ravel()
    else:
        xs, ys = grid[0][region], grid[1][region]
    lo, hi = np.percentile(vals, [20, 98])
    keep = (vals >= lo) & (vals <= hi)
    if keep.sum() < 6:
        keep = np.ones_like(vals, bool)
    xm, ym = xs[keep].mean(), ys[keep].mean()
    A = np.stack([np.ones(keep.sum()), xs[keep] - xm, ys[keep] - ym], 1)
    coef, *_ = np.linalg.lstsq(A, vals[keep], rcond=None)
    med = float(np.median(vals[keep]))
    plane = coef[0] + coef[1] * (grid[0] - xm) + coef[2] * (grid[1] - ym)
    plane = np.clip(plane, 0.6 * med, 1.4 * med)
    return np.clip((np.maximum(plane, 1.0) / SKIN_REF) ** 0.8, 0.12, 1.1).astype(np.float32)


def _noise_level(gray: np.ndarray, region: np.ndarray) -> float:
    """Robust estimate of the photo's pixel noise, so the mask is not cleaner than the picture around it."""
    resid = gray - cv2.GaussianBlur(gray, (0, 0), 1.0)
    vals = resid[region] if region.sum() >= 12 else resid.ravel()
    return float(np.clip(0.6 * 1.48 * np.median(np.abs(vals)), 0.5, 4.0))


def render_mask(
    crop: np.ndarray, keypoints: np.ndarray, style: MaskStyle, rng: np.random.Generator | None = None
) -> np.ndarray:
    """A copy of ``crop`` (RGB uint8) with ``style`` drawn over the face at ``keypoints`` (6, 2).

    Without ``rng`` the rendering is fixed (the standard enrollment variant); with it, shape, colour,
    pleats, print and loops vary slightly. Pixels on or above the eye line are never changed.
    """
    _check_image(crop)
    varied = rng is not None
    gen = rng if rng is not None else np.random.default_rng(0)
    out = crop.copy()
    h, w = crop.shape[:2]
    geo = _geometry(keypoints, style, rng)
    s = geo.frame.scale
    roi = _roi([geo.outline, *geo.loops], (h, w), 2 + 0.05 * s)
    if roi is None:
        return out
    x0, y0, x1, y1 = roi
    grid = _grid(roi)
    body = _body_alpha(geo, roi, grid)
    patch = crop[y0:y1, x0:x1].astype(np.float32)
    gray = patch @ np.array([0.299, 0.587, 0.114], np.float32)
    region = body > 0.5
    light = _lighting(gray, region, grid)
    below = _below_eye_line(geo.frame, *grid).astype(np.float32)

    color = np.array(style.color, np.float32)
    if varied:
        color = np.clip(color * (1 + gen.normal(0, 0.05)) + gen.normal(0, 6, 3), 0, 255).astype(np.float32)
        style = replace(style, color=tuple(int(c) for c in color))

    # Loops first, so the mask body covers their ends.
    touched = body > 0
    if geo.loops and (not varied or gen.random() < 0.85):
        canvas = np.zeros(body.shape, np.uint8)
        thick = max(1, int(round(0.03 * s)))
        for line in geo.loops:
            cv2.polylines(canvas, [_fixed(line, x0, y0)], False, 255, thick, cv2.LINE_AA, _SHIFT)
        loop_alpha = canvas.astype(np.float32) / 255.0 * below * 0.8
        loop_color = color if style.kind == "cloth" else np.array([225, 225, 222], np.float32)
        if style.kind == "n95":
            loop_color = 0.6 * color + 0.4 * np.array([200, 190, 120], np.float32)
        loop_rgb = loop_color * light[..., None]
        patch = patch * (1 - loop_alpha[..., None]) + loop_rgb * loop_alpha[..., None]
        touched |= loop_alpha > 0

    fx, y, t = _texture_coords(geo, grid)
    hard = (body > 0.5).astype(np.uint8)
    edge = (
        cv2.distanceTransform(hard, cv2.DIST_L2, 3).astype(np.float32) if hard.any() else np.zeros_like(body)
    )
    height_px = max(1.0, float(geo.frame.knots_b[3] - geo.frame.knots_b[1]) * 1.6)
    albedo, shade = _surface(style, fx, y, t, edge, s, 1.0 / height_px, gen, varied)
    mask_rgb = albedo * (shade * light)[..., None]
    mask_rgb += gen.normal(0, _noise_level(gray, region), mask_rgb.shape[:2])[..., None].astype(np.float32)
    a = body[..., None]
    patch = patch * (1 - a) + mask_rgb * a
    blended = np.clip(np.rint(patch), 0, 255).astype(np.uint8)
    out[y0:y1, x0:x1][touched] = blended[touched]
    return out
