"""`edge-mfr eval --plots`: score distributions and a DET curve drawn with OpenCV and numpy only.

Why not matplotlib: the plots must work in the environment `make demo` creates (and on a Pi), where
matplotlib is not installed; OpenCV is already there for the camera. The charts are simple on purpose:
axes with grid and ticks, lines, markers, a legend and the sample sizes in the title.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edge_mfr.errors import EdgeMfrError

# BGR colours (cv2 writes BGR).
BLUE, ORANGE, GREEN, GREY, BLACK = (180, 119, 31), (14, 127, 255), (44, 160, 44), (200, 200, 200), (0, 0, 0)
FONT = cv2.FONT_HERSHEY_SIMPLEX


@dataclass
class Axis:
    """One axis: its range and whether it is logarithmic (values <= 0 cannot be drawn on a log axis)."""

    lo: float
    hi: float
    log: bool = False

    def frac(self, v: np.ndarray) -> np.ndarray:
        v = np.asarray(v, dtype=np.float64)
        if self.log:
            return (np.log10(v) - math.log10(self.lo)) / (math.log10(self.hi) - math.log10(self.lo))
        return (v - self.lo) / (self.hi - self.lo)

    def ticks(self) -> list[float]:
        if self.log:
            return [10.0 ** e for e in range(math.ceil(math.log10(self.lo)), math.floor(math.log10(self.hi)) + 1)]
        step = _nice_step((self.hi - self.lo) / 6)
        first = math.ceil(self.lo / step) * step
        return [round(first + i * step, 10) for i in range(int((self.hi - first) / step + 1e-9) + 1)]


def _nice_step(raw: float) -> float:
    mag = 10 ** math.floor(math.log10(raw))
    return next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)


def _tick_label(v: float, log: bool) -> str:
    if log:
        return "1" if v == 1 else f"1e{int(round(math.log10(v)))}"
    return f"{v:g}"


class Chart:
    """A white canvas with one plotting area: map data to pixels, draw the axes, lines, markers and text."""

    def __init__(self, size: tuple[int, int], x: Axis, y: Axis, title: str, xlabel: str, ylabel: str,
                 top: int = 60):
        self.w, self.h = size
        self.x, self.y = x, y
        self.left, self.right, self.top, self.bottom = 80, 20, top, 60
        self.img = np.full((self.h, self.w, 3), 255, np.uint8)
        self._legend: list[tuple[str, tuple[int, int, int]]] = []
        self._axes(title, xlabel, ylabel)

    def px(self, xs, ys) -> np.ndarray:
        """Pixel coordinates (N, 2) of data points."""
        pw, ph = self.w - self.left - self.right, self.h - self.top - self.bottom
        px = self.left + self.x.frac(xs) * pw
        py = self.h - self.bottom - self.y.frac(ys) * ph
        return np.stack([px, py], axis=-1)

    def _axes(self, title: str, xlabel: str, ylabel: str) -> None:
        x0, y0, x1, y1 = self.left, self.top, self.w - self.right, self.h - self.bottom
        for t in self.x.ticks():
            (px, _), = self.px([t], [self.y.lo]).astype(int)
            cv2.line(self.img, (px, y0), (px, y1), GREY, 1)
            label = _tick_label(t, self.x.log)
            (tw, _), _ = cv2.getTextSize(label, FONT, 0.4, 1)
            cv2.putText(self.img, label, (px - tw // 2, y1 + 16), FONT, 0.4, BLACK, 1, cv2.LINE_AA)
        for t in self.y.ticks():
            (_, py), = self.px([self.x.lo], [t]).astype(int)
            cv2.line(self.img, (x0, py), (x1, py), GREY, 1)
            label = _tick_label(t, self.y.log)
            (tw, _), _ = cv2.getTextSize(label, FONT, 0.4, 1)
            cv2.putText(self.img, label, (x0 - tw - 6, py + 4), FONT, 0.4, BLACK, 1, cv2.LINE_AA)
        cv2.rectangle(self.img, (x0, y0), (x1, y1), BLACK, 1)
        self.text(title, (x0, 22), 0.5)
        (tw, _), _ = cv2.getTextSize(xlabel, FONT, 0.45, 1)
        self.text(xlabel, ((x0 + x1 - tw) // 2, self.h - 18), 0.45)
        self._vertical_text(ylabel, 18, (y0 + y1) // 2)

    def _vertical_text(self, text: str, x: int, y_centre: int) -> None:
        (tw, th), _ = cv2.getTextSize(text, FONT, 0.45, 1)
        patch = np.full((th + 8, tw + 4, 3), 255, np.uint8)
        cv2.putText(patch, text, (2, th + 2), FONT, 0.45, BLACK, 1, cv2.LINE_AA)
        patch = cv2.rotate(patch, cv2.ROTATE_90_COUNTERCLOCKWISE)
        top = max(0, y_centre - patch.shape[0] // 2)
        h = min(patch.shape[0], self.h - top)
        self.img[top:top + h, x - patch.shape[1] // 2:x - patch.shape[1] // 2 + patch.shape[1]] = patch[:h]

    def text(self, text: str, org: tuple[int, int], scale: float = 0.4, color=BLACK) -> None:
        cv2.putText(self.img, text, (int(org[0]), int(org[1])), FONT, scale, color, 1, cv2.LINE_AA)

    def line(self, xs, ys, color, label: str | None = None, thickness: int = 2, dashed: bool = False) -> None:
        if label:
            self._legend.append((label, color))
        if len(xs) == 0:
            return
        pts = self.px(xs, ys)
        pts = np.round(pts).astype(np.int32)
        if dashed:
            for a, b in zip(pts[:-1], pts[1:], strict=True):
                _dashed(self.img, tuple(a), tuple(b), color, thickness)
        else:
            cv2.polylines(self.img, [pts.reshape(-1, 1, 2)], False, color, thickness, cv2.LINE_AA)

    def marker(self, x: float, y: float, color, label: str | None = None) -> tuple[int, int]:
        (px, py), = np.round(self.px([x], [y])).astype(int)
        cv2.circle(self.img, (px, py), 6, color, 2, cv2.LINE_AA)
        cv2.circle(self.img, (px, py), 2, color, -1, cv2.LINE_AA)
        if label:
            self.text(label, (px + 9, py - 8), 0.4, color)
        return px, py

    def legend(self, left: bool = False) -> None:
        """The legend box in the top right corner (top left with ``left``)."""
        x, y = self.w - self.right - 10, self.top + 18
        if left and self._legend:
            x = self.left + 50 + max(cv2.getTextSize(t, FONT, 0.4, 1)[0][0] for t, _ in self._legend)
        if not self._legend:
            return
        width = max(cv2.getTextSize(t, FONT, 0.4, 1)[0][0] for t, _ in self._legend)
        cv2.rectangle(self.img, (x - width - 40, y - 14), (x + 4, y + 16 * len(self._legend) - 10), (255, 255, 255),
                      -1)
        cv2.rectangle(self.img, (x - width - 40, y - 14), (x + 4, y + 16 * len(self._legend) - 10), GREY, 1)
        for text, color in self._legend:
            cv2.line(self.img, (x - width - 34, y - 4), (x - width - 12, y - 4), color, 2, cv2.LINE_AA)
            self.text(text, (x - width - 6, y))
            y += 16

    def save(self, path: Path) -> Path:
        if not cv2.imwrite(str(path), self.img):
            raise EdgeMfrError(f"{path}: cannot write the plot there")
        return path


def _dashed(img: np.ndarray, a, b, color, thickness: int, dash: int = 6) -> None:
    a, b = np.array(a, float), np.array(b, float)
    length = float(np.hypot(*(b - a)))
    for s in np.arange(0, length, 2 * dash):
        p = a + (b - a) * (s / max(length, 1e-9))
        q = a + (b - a) * (min(s + dash, length) / max(length, 1e-9))
        cv2.line(img, tuple(np.round(p).astype(int)), tuple(np.round(q).astype(int)), color, thickness, cv2.LINE_AA)


def det_points(genuine: np.ndarray, impostor: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(FAR, FRR) at every distinct score used as the threshold (accept when score >= threshold)."""
    thr = np.unique(np.concatenate([genuine, impostor]))
    imp, gen = np.sort(impostor), np.sort(genuine)
    far = 1.0 - np.searchsorted(imp, thr, side="left") / max(len(imp), 1)
    frr = np.searchsorted(gen, thr, side="left") / max(len(gen), 1)
    return far, frr


def operating_point(genuine: np.ndarray, impostor: np.ndarray, threshold: float) -> tuple[float, float]:
    """(FAR, FRR) at ``threshold``."""
    return float(np.mean(impostor >= threshold)), float(np.mean(genuine < threshold))


def check_plot_dir(out_dir: Path) -> None:
    """Fail before any long work when the plots could not be written (so no finished eval is thrown away)."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EdgeMfrError(f"{out_dir}: cannot create the plot folder ({exc.strerror})") from None
    if not out_dir.is_dir() or not _writable(out_dir):
        raise EdgeMfrError(f"{out_dir}: the plot folder is not writable")


def _writable(path: Path) -> bool:
    import os

    return os.access(path, os.W_OK | os.X_OK)


def write_plots(report: dict, out_dir: Path) -> list[Path]:
    """score_distributions.png and det.png for an eval report (it must still hold its ``_scores``)."""
    check_plot_dir(out_dir)
    s = {k: np.asarray(v, dtype=np.float64) for k, v in report["_scores"].items()}
    t = report["open_set"]["thresholds"]
    kinds = (("genuine_masked", "masked", ORANGE, t["masked"]), ("genuine_unmasked", "unmasked", GREEN,
                                                                  t["unmasked"]))
    return [_score_plot(s, t, kinds, out_dir / "score_distributions.png"),
            _det_plot(s, kinds, out_dir / "det.png")]


def _score_plot(s: dict, t: dict, kinds, path: Path) -> Path:
    bins = np.linspace(-0.3, 1.0, 53)
    centres = (bins[:-1] + bins[1:]) / 2
    series = [("impostor", "impostor", BLUE), *((k, f"genuine {n}", c) for k, n, c, _ in kinds)]
    dens = {k: np.histogram(np.clip(s[k], bins[0], bins[-1]), bins=bins, density=True)[0] if len(s[k]) else
            np.zeros(len(centres)) for k, _, _ in series}
    ymax = max(1.0, max(float(d.max()) for d in dens.values()) * 1.4)  # headroom for the legend
    counts = ", ".join(f"{len(s[k])} {n}" for k, n, _ in series)
    chart = Chart((800, 460), Axis(bins[0], bins[-1]), Axis(0.0, ymax),
                  f"Score distributions ({counts} scores)", "cosine similarity to the identity's templates",
                  "density")
    for key, name, color in series:
        xs = np.repeat(bins, 2)[1:-1]
        ys = np.repeat(dens[key], 2)
        chart.line(xs, ys, color, f"{name} (n={len(s[key])})")
    for _, name, color, threshold in kinds:
        chart.line([threshold, threshold], [0, ymax], color, f"{name} threshold {threshold:.3f}", 1, dashed=True)
    chart.legend(left=True)  # the thresholds and genuine scores are on the right
    return chart.save(path)


def _det_plot(s: dict, kinds, path: Path) -> Path:
    imp = s["impostor"]
    floor_x = 10.0 ** math.floor(math.log10(1.0 / max(len(imp), 1)))
    n_gen = min((len(s[k]) for k, *_ in kinds if len(s[k])), default=1)
    floor_y = 10.0 ** math.floor(math.log10(1.0 / max(n_gen, 1)))
    genuine_counts = ", ".join(f"{len(s[k])} {n}" for k, n, *_ in kinds)
    chart = Chart((640, 600), Axis(floor_x, 1.0, log=True), Axis(floor_y, 1.0, log=True),
                  f"DET: {genuine_counts} genuine probes, {len(imp)} impostor scores",
                  "false accept rate (rates of 0 are not drawn)", "false reject rate", top=80)
    y_note = 42
    for key, name, color, threshold in kinds:
        gen = s[key]
        if not len(gen) or not len(imp):
            continue
        far, frr = det_points(gen, imp)
        keep = (far > 0) & (frr > 0)  # a zero rate has no place on a log axis: left out, not drawn at the floor
        chart.line(far[keep], frr[keep], color, f"{name} (n={len(gen)})" if keep.any() else
                   f"{name} (n={len(gen)}; no threshold with both rates > 0)")
        op_far, op_frr = operating_point(gen, imp, threshold)
        note = (f"{name} operating point (threshold {threshold:.3f}): FAR "
                f"{op_far:.4f}{' (< 1/' + str(len(imp)) + ')' if op_far == 0 else ''}, FRR {op_frr:.3f}")
        chart.marker(max(op_far, floor_x), max(op_frr, floor_y), color)
        chart.text(note, (chart.left, y_note), 0.4, color)
        y_note += 16
    chart.legend()
    return chart.save(path)
