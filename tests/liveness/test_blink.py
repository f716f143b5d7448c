"""The blink detector's state machine on eye-openness series (what the iris model measures, in numbers)."""

from __future__ import annotations

from edge_mfr.liveness.blink import BlinkDetector

FPS = 15.0


def feed(series: list[float], presence: float = 1.0, **kw) -> BlinkDetector:
    det = BlinkDetector(**kw)
    for i, v in enumerate(series):
        det.update(i / FPS, v, presence)
    return det


def test_open_closed_open_is_one_blink_at_its_end():
    det = feed([0.45] * 10 + [0.30, 0.20, 0.25] + [0.44] * 5)
    assert det.blinks == 1
    assert det.blinked_at == 13 / FPS


def test_steady_open_eyes_and_landmark_jitter_are_no_blink():
    jitter = [0.45, 0.43, 0.47, 0.41, 0.46, 0.44, 0.40, 0.45] * 6  # +-10 %: what a still photo gives
    assert feed(jitter).blinks == 0


def test_a_long_closure_is_a_squint_not_a_blink():
    det = feed([0.45] * 10 + [0.2] * 15 + [0.45] * 5)  # 1 s closed
    assert det.blinks == 0


def test_samples_the_landmark_model_distrusts_are_skipped_not_read_as_closed():
    det = BlinkDetector()
    for i, v in enumerate([0.45] * 10 + [0.1, 0.1] + [0.45] * 3):
        det.update(i / FPS, v, presence=0.1 if v < 0.2 else 1.0)
    assert det.blinks == 0


def test_unmeasurable_eyes_never_blink():
    assert feed([0.10] * 10 + [0.02] * 2 + [0.10] * 5).blinks == 0  # open level under min_open


def test_last_blink_within_the_window():
    det = feed([0.45] * 10 + [0.2] + [0.45] * 3)
    end = det.last_blink_at
    assert end is not None
    assert det.last_blink_within(end + 3.9, 4.0)
    assert not det.last_blink_within(end + 4.1, 4.0)
