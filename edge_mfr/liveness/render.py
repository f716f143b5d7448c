"""Clips for measuring liveness, rendered from real stills and real footage (seeded, written to a temp folder).

Attacks (ISO/IEC 30107-3 presentation attack instruments, simulated):

* ``print``: the photo on paper held in a hand: a slowly drifting perspective (the hand tilts the
  sheet), a small shake, paper grain and uneven lighting that flickers, slight defocus blur.
* ``screen``: the photo on a phone or monitor: a dark bezel round it, a bluish white point and lifted
  blacks, moire from the pixel grid beating with the camera's, a drifting perspective and glare.

Live clips with a blink: real footage whose eyelids are closed for a few frames by painting the eye
(MediaPipe's eye contour, enlarged) with the median colour of the skin round it, slightly darker,
feathered, with a dark lash line where the lids meet. What is rendered is only the lids; the face, its
motion and the camera are real.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import cv2
import numpy as np

ATTACK_KINDS = ("print", "screen")
CLIP_SIZE = (640, 480)

RIGHT_EYE_CONTOUR = (33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246)
LEFT_EYE_CONTOUR = (263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466)
BLINK_PROFILE = (0.5, 1.0, 1.0, 0.5)  # lid closure per frame at 15 fps: a 270 ms blink


def write_clip(path: Path, frames: Iterable[np.ndarray], fps: float) -> Path:
    """Write RGB frames as an mp4 (mp4v); returns ``path``."""
    writer: cv2.VideoWriter | None = None
    try:
        for frame in frames:
            if writer is None:
                h, w = frame.shape[:2]
                writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), fps, (w, h))
                if not writer.isOpened():
                    raise OSError(f"{path}: OpenCV cannot write mp4 video here")
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    finally:
        if writer is not None:
            writer.release()
    return path


# ------------------------------------------------------------------------------------------- attacks


def _background(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    w, h = size
    base = rng.uniform(60, 200, 3)
    grad = np.linspace(0.7, 1.2, w)[None, :, None] * np.linspace(1.1, 0.8, h)[:, None, None]
    noise = cv2.GaussianBlur(rng.normal(0, 25, (h, w, 3)).astype(np.float32), (0, 0), 9)
    return np.clip(base * grad + noise, 0, 255).astype(np.float32)


def _drift(rng: np.random.Generator, n: int, fps: float) -> np.ndarray:
    """(n, 4) slow tilt x, tilt y, rotation, scale paths plus (n, 2) shake, as one array of 6 columns."""
    t = np.arange(n) / fps
    cols = []
    for amp, lo, hi in ((0.08, 0.1, 0.4), (0.08, 0.1, 0.4), (0.05, 0.1, 0.3), (0.06, 0.05, 0.2)):
        f, ph = rng.uniform(lo, hi), rng.uniform(0, 2 * np.pi)
        cols.append(amp * rng.uniform(0.4, 1.0) * np.sin(2 * np.pi * f * t + ph))
    shake = np.cumsum(rng.normal(0, 0.6, (n, 2)), axis=0)
    shake -= np.linspace(0, 1, n)[:, None] * shake[-1:]  # a shake, not a walk away
    return np.column_stack(cols + [shake])


def _homography(w: int, h: int, size: tuple[int, int], face_px: float, d: np.ndarray) -> np.ndarray:
    """Map the photo (w x h) onto the clip: scaled to ``face_px`` wide-ish, tilted by ``d``'s drift."""
    cw, ch = size
    s = face_px / max(w, h) * (1 + d[3])
    src = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
    c = np.float32([cw / 2 + d[4], ch / 2 + d[5]])
    half = np.float32([[-w, -h], [w, -h], [w, h], [-w, h]]) * s / 2
    rot = np.float32([[np.cos(d[2]), -np.sin(d[2])], [np.sin(d[2]), np.cos(d[2])]])
    pts = half @ rot.T
    # Perspective tilt: the far edge of the sheet shrinks.
    pts[:, 0] *= 1 + d[1] * np.sign(pts[:, 1]) * 0.8
    pts[:, 1] *= 1 + d[0] * np.sign(pts[:, 0]) * 0.8
    return cv2.getPerspectiveTransform(src, (pts + c).astype(np.float32))


def attack_frames(photo: np.ndarray, kind: str, seed: int, frames: int = 45, fps: float = 15.0,
                  size: tuple[int, int] = CLIP_SIZE) -> list[np.ndarray]:
    """A simulated presentation of the RGB ``photo`` (``kind`` in ATTACK_KINDS) as RGB frames."""
    if kind not in ATTACK_KINDS:
        raise ValueError(f"unknown attack kind {kind!r}; choose one of {', '.join(ATTACK_KINDS)}")
    rng = np.random.default_rng(seed)
    cw, ch = size
    img = photo.astype(np.float32)
    h, w = img.shape[:2]
    if kind == "screen":
        img = img * np.float32([0.88, 0.95, 1.08]) * 0.85 + 25  # white point shifted blue, blacks lifted
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        f1, f2, a = rng.uniform(0.3, 0.6), rng.uniform(0.3, 0.6), rng.uniform(0, np.pi)
        moire = np.sin(f1 * (xx * np.cos(a) + yy * np.sin(a))) * np.sin(f2 * (xx * np.sin(a) - yy * np.cos(a)))
        img = img * (1 + 0.08 * moire[..., None])
        border = max(4, int(0.06 * max(h, w)))
        img = cv2.copyMakeBorder(img, border, border * 2, border, border, cv2.BORDER_CONSTANT, value=(12, 12, 14))
    else:
        grain = rng.normal(0, 6, img.shape[:2]).astype(np.float32)
        fibres = cv2.GaussianBlur(rng.normal(0, 12, img.shape[:2]).astype(np.float32), (0, 0), 3)
        img = img * 0.92 + 10 + (grain + fibres)[..., None]  # paper: duller, grainy
    img = np.clip(img, 0, 255)
    h, w = img.shape[:2]
    bg = _background(rng, size)
    paths = _drift(rng, frames, fps)
    face_px = rng.uniform(0.45, 0.7) * ch
    light_f, light_ph = rng.uniform(0.5, 2.0), rng.uniform(0, 2 * np.pi)
    gy, gx = np.mgrid[0:ch, 0:cw].astype(np.float32)
    out = []
    for i in range(frames):
        hm = _homography(w, h, size, face_px, paths[i])
        warped = cv2.warpPerspective(img, hm, size, flags=cv2.INTER_LINEAR, borderValue=(0, 0, 0))
        mask = cv2.warpPerspective(np.ones((h, w), np.float32), hm, size)
        frame = bg * (1 - mask[..., None]) + warped * mask[..., None]
        gain = 1 + 0.06 * np.sin(2 * np.pi * light_f * i / fps + light_ph) + rng.normal(0, 0.015)
        light = 1 + 0.15 * ((gx / cw - 0.5) * np.cos(light_ph) + (gy / ch - 0.5) * np.sin(light_ph))
        frame = frame * gain * light[..., None]
        if kind == "screen":
            glare = np.exp(-(((gx - cw * 0.7) / (cw * 0.25)) ** 2 + ((gy - ch * 0.3) / (ch * 0.25)) ** 2))
            frame = frame + 35 * glare[..., None] * mask[..., None]
        frame = cv2.GaussianBlur(frame, (0, 0), rng.uniform(0.6, 1.4))
        frame = frame + rng.normal(0, 2.5, frame.shape)
        out.append(np.clip(frame, 0, 255).astype(np.uint8))
    return out


# -------------------------------------------------------------------------------------------- blinks


def close_eyes(image: np.ndarray, landmarks: np.ndarray, amount: float) -> np.ndarray:
    """``image`` (RGB) with both upper lids lowered by ``amount`` (0 open .. 1 closed) of each eye's height."""
    if amount <= 0:
        return image
    out = image.astype(np.float32)
    h, w = image.shape[:2]
    for contour in (RIGHT_EYE_CONTOUR, LEFT_EYE_CONTOUR):
        pts = landmarks[list(contour), :2].astype(np.float32)
        y0 = float(pts[:, 1].min())
        eye_h = max(float(np.ptp(pts[:, 1])), 2.0)
        eye_w = max(float(np.ptp(pts[:, 0])), 2.0)
        centre = pts.mean(axis=0)
        poly = centre + (pts - centre) * np.float32([1.35, 2.0])
        eye = np.zeros((h, w), np.uint8)
        cv2.fillPoly(eye, [np.round(poly).astype(np.int32)], 1)
        # The lid's colour: the skin in a ring round the eye (lids, under-eye), the eye itself left out.
        ring = cv2.dilate(eye, np.ones((3, 3), np.uint8), iterations=max(2, int(eye_h))) & (1 - eye)
        if not ring.any():
            continue
        skin = np.median(out[ring.astype(bool)], axis=0)
        lid = np.zeros((h, w), np.float32)
        lid[eye.astype(bool)] = 1.0
        top = y0 - 0.3 * eye_h
        lid[int(max(top + amount * 1.6 * eye_h, 0)):, :] = 0
        soft = cv2.GaussianBlur(lid, (0, 0), max(1.0, 0.12 * eye_h))[..., None]
        shading = 1 - 0.15 * soft  # a closed lid is a little darker than the skin round it
        out = out * (1 - soft) + skin * shading * soft
        if amount >= 0.9:  # lashes: a dark line along the lower lid, where the closed lids meet
            seam = pts[[0, 1, 2, 3, 4, 5, 6, 7, 8]]  # a closed upper lid meets the lower one
            cv2.polylines(out, [np.round(seam).astype(np.int32)], False, (45, 35, 35),
                          max(1, int(round(eye_w / 12))), cv2.LINE_AA)
    return np.clip(out, 0, 255).astype(np.uint8)
