"""Frame sources: the real video, folders, the synthetic scene, reconnects with back-off, the Pi camera
backend off a Pi (and with a stand-in picamera2 module that follows its documented API)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import types
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_mfr.errors import EdgeMfrError, InputNotFoundError
from edge_mfr.stream.sources import (
    Backoff,
    CameraImportError,
    Frame,
    FrameSource,
    ImageFolderSource,
    OpenCVSource,
    Picamera2Source,
    Placement,
    ResilientSource,
    SourceError,
    SourceUnavailable,
    SyntheticSource,
    make_source,
    scale_faces,
    yuv420_to_rgb,
)
from edge_mfr.vision.types import Face

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def video(data_dir: Path) -> Path:
    path = data_dir / "video" / "short_hamilton_clip.mp4"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    return path


# ------------------------------------------------------------------------------------------- video file


@pytest.mark.data
def test_real_video_frames_size_order_and_timestamps(video):
    src = make_source(str(video))
    assert isinstance(src, OpenCVSource) and not src.live
    assert isinstance(src, FrameSource)
    cap = cv2.VideoCapture(str(video))
    count, stamps, indices = 0, [], []
    with src:
        for frame in src:
            assert frame.image.shape == (360, 640, 3) and frame.image.dtype == np.uint8
            if count in (0, 100):  # RGB: the package's frame is OpenCV's BGR frame reversed
                cap.set(cv2.CAP_PROP_POS_FRAMES, count)
                ok, bgr = cap.read()
                assert ok and np.array_equal(frame.image, bgr[:, :, ::-1])
                assert not np.array_equal(frame.image, bgr)
            stamps.append(frame.timestamp)
            indices.append(frame.index)
            count += 1
        assert src.read() is None  # stays at the end
    cap.release()
    assert abs(count - 275) <= 2
    assert indices == list(range(count))
    assert all(b > a for a, b in zip(stamps, stamps[1:], strict=False))
    assert stamps[-1] == pytest.approx(count / 29.97, abs=0.1)  # its own clock, not the wall clock


@pytest.mark.data
def test_video_is_decoded_by_one_ffmpeg_thread_with_the_same_frames(video):
    # OpenCV's default (a decoder thread per core) keeps a frame's buffers per thread resident and delays a
    # live stream by as many frames; one thread must give exactly the frames the default decoder gives.
    src = OpenCVSource(str(video))
    default = cv2.VideoCapture(str(video))
    with src:
        assert src._cap is not None and src._cap.get(cv2.CAP_PROP_N_THREADS) == 1
        for _ in range(30):
            frame = src.read()
            ok, bgr = default.read()
            assert frame is not None and ok and np.array_equal(frame.image, bgr[:, :, ::-1])
    default.release()


def test_corrupt_and_missing_video_give_clear_errors(tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 20)
    with pytest.raises(SourceError, match=r"broken\.mp4: not a readable video"):
        make_source(str(bad)).open()
    with pytest.raises(InputNotFoundError, match="no such file"):
        make_source(str(tmp_path / "absent.mp4"))
    with pytest.raises(InputNotFoundError, match="no such file"):
        OpenCVSource(tmp_path / "absent.mp4").open()


@pytest.mark.data
def test_truncated_real_video_is_an_error_not_a_hang(video, tmp_path):
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(video.read_bytes()[: 20_000])
    with pytest.raises(SourceError, match="cut.mp4"):
        with make_source(str(cut)) as src:
            while src.read() is not None:
                pass


# ----------------------------------------------------------------------------------------- image folder


def _write(path: Path, colour: tuple[int, int, int]) -> None:
    img = np.zeros((40, 50, 3), np.uint8)
    img[:] = colour
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), img[:, :, ::-1])  # write BGR so the RGB read back equals `colour`


def test_folder_source_sorted_rgb_loop_and_skips_unreadable(tmp_path):
    _write(tmp_path / "b.png", (0, 255, 0))
    _write(tmp_path / "a.png", (255, 0, 0))
    _write(tmp_path / "sub" / "c.png", (0, 0, 255))
    (tmp_path / "d.jpg").write_bytes(b"not a jpeg")
    (tmp_path / "notes.txt").write_text("ignored")
    src = make_source(str(tmp_path), fps=5)
    assert isinstance(src, ImageFolderSource)
    with src:
        frames = list(src)
    assert [tuple(f.image[0, 0]) for f in frames] == [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    assert [f.timestamp for f in frames] == [0.0, 0.2, 0.4]
    looped = ImageFolderSource(tmp_path, loop=True)
    with looped:
        colours = [tuple(looped.read().image[0, 0]) for _ in range(7)]
    assert colours[3:6] == colours[0:3] and colours[6] == colours[0]


def test_folder_source_errors(tmp_path):
    with pytest.raises(SourceError, match="no images found"):
        ImageFolderSource(tmp_path).open()
    (tmp_path / "x.jpg").write_bytes(b"junk")
    with pytest.raises(SourceError, match="none of its 1 images is readable"):
        ImageFolderSource(tmp_path, loop=True).read()


# -------------------------------------------------------------------------------------------- synthetic


def test_synthetic_source_is_deterministic_and_follows_its_script():
    face = np.full((60, 50, 3), 200, np.uint8)
    face[20:30, 10:40] = (255, 0, 0)
    script = [None, Placement(10, 20), Placement(100, 50, 2.0), [Placement(0, 0), Placement(300, 200, 0.5)]]
    a = list(SyntheticSource(face, script, size=(320, 240)))
    b = list(SyntheticSource(face, script, size=(320, 240)))
    assert len(a) == 4 and all(np.array_equal(x.image, y.image) for x, y in zip(a, b, strict=True))
    assert [f.timestamp for f in a] == pytest.approx([0, 1 / 15, 2 / 15, 3 / 15])
    src = SyntheticSource(face, script, size=(320, 240))
    bg = src.background
    assert np.array_equal(a[0].image, bg)  # empty frame
    assert np.array_equal(a[1].image[20:80, 10:60], face)
    assert np.array_equal(a[1].image[:20], bg[:20])
    doubled = cv2.resize(face, (100, 120), interpolation=cv2.INTER_LINEAR)
    assert np.array_equal(a[2].image[50:170, 100:200], doubled)
    assert np.allclose(src.boxes(2)[0], [100, 50, 200, 170])
    assert np.allclose(src.boxes(3)[1], [300, 200, 320, 230])  # clipped at the frame's right edge
    other_seed = SyntheticSource(face, script, size=(320, 240), seed=1)
    assert not np.array_equal(other_seed.render(0), a[0].image)


def test_synthetic_default_script_walks_up_and_leaves():
    face = np.full((100, 80, 3), 128, np.uint8)
    src = SyntheticSource(face, size=(640, 480))
    assert src.boxes(0) == [] and src.boxes(len(src) - 1) == []
    widths = [b[0][2] - b[0][0] for i in range(len(src)) if (b := src.boxes(i))]
    assert widths[0] < widths[len(widths) // 2]  # comes closer
    with pytest.raises(SourceError, match="RGB uint8"):
        SyntheticSource(np.zeros((10, 10), np.uint8))


def test_make_source_specs(tmp_path):
    assert isinstance(make_source("picamera2"), Picamera2Source)
    assert make_source("picamera2:1").camera_num == 1
    cam = make_source("0")
    assert isinstance(cam, OpenCVSource) and cam.live and cam.target == 0
    assert make_source("/dev/video2").live
    url = make_source("rtsp://admin:secret@10.0.0.5/stream1")
    assert url.live and "secret" not in url.name and "10.0.0.5" in url.name
    assert isinstance(make_source("synthetic", faces=np.zeros((20, 20, 3), np.uint8)), SyntheticSource)
    _write(tmp_path / "one.png", (1, 2, 3))
    single = make_source(str(tmp_path / "one.png"))
    assert isinstance(single, ImageFolderSource) and len(list(single)) == 1
    for bad, err in (("", SourceError), ("ftp://x/y", SourceError), ("picamera2:x", SourceError),
                     (str(tmp_path / "nope"), InputNotFoundError)):
        with pytest.raises(err):
            make_source(bad)
    with pytest.raises(SourceError, match="unexpected keyword"):
        make_source(str(tmp_path), colour="red")
    assert isinstance(make_source("/dev/video9", resilient=True), ResilientSource)


def test_scale_faces_maps_lores_to_main():
    face = Face(np.array([10, 20, 30, 40], np.float32), 0.9, np.tile(np.array([[5, 6]], np.float32), (6, 1)))
    frame = Frame(np.zeros((720, 1280, 3), np.uint8), 0, 0.0, lores=np.zeros((180, 320, 3), np.uint8))
    image, sx, sy = frame.detection_view()
    assert image.shape == (180, 320, 3) and (sx, sy) == (4.0, 4.0)
    (big,) = scale_faces([face], sx, sy)
    assert np.allclose(big.box, [40, 80, 120, 160]) and np.allclose(big.keypoints[0], [20, 24])
    assert Frame(np.zeros((8, 8, 3), np.uint8), 0, 0.0).detection_view()[1:] == (1.0, 1.0)


# ------------------------------------------------------------------------------------------- resilience


class FlakyCamera:
    """A live source whose first ``fail_opens`` opens fail, then reads fail ``fail_reads`` times midway."""

    name = "flaky"
    live = True

    def __init__(self, fail_opens: int, fail_reads_at: int = -1, fail_reads: int = 0):
        self.fail_opens, self.fail_reads_at, self.fail_reads = fail_opens, fail_reads_at, fail_reads
        self.opens = self.closes = self.reads = 0
        self.is_open = False

    def open(self):
        self.opens += 1
        if self.fail_opens > 0:
            self.fail_opens -= 1
            raise SourceUnavailable("flaky: cannot open the camera")
        self.is_open = True

    def read(self):
        assert self.is_open, "read before open"
        self.reads += 1
        if self.reads == self.fail_reads_at and self.fail_reads > 0:
            self.fail_reads -= 1
            self.fail_reads_at += 1
            self.is_open = False
            raise SourceUnavailable("flaky: no frame")
        return Frame(np.zeros((4, 4, 3), np.uint8), 0, 0.0)  # index restarts like a reopened camera

    def close(self):
        self.closes += 1
        self.is_open = False

    def __enter__(self):
        self.open()
        return self

    def __exit__(self, *exc):
        self.close()


class FakeTime:
    def __init__(self):
        self.t = 100.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.sleeps.append(s)
        self.t += s


def test_resilient_source_backs_off_exponentially_and_reports():
    cam = FlakyCamera(fail_opens=6)
    fake = FakeTime()
    events: list[tuple[str, dict]] = []
    src = ResilientSource(cam, Backoff(min_seconds=0.5, max_seconds=4.0),
                          on_event=lambda k, p: events.append((k, p)), clock=fake.clock, sleep=fake.sleep)
    frame = src.read()
    assert frame is not None and frame.index == 0
    assert fake.sleeps == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    lost = [p for k, p in events if k == "source_lost"]
    assert [p["attempt"] for p in lost] == [1, 2, 3, 4, 5, 6] and lost[0]["retry_in"] == 0.5
    assert "cannot open the camera" in lost[0]["error"]
    assert events[-1] == ("source_restored", {"source": "flaky", "attempts": 6, "downtime": 15.5})
    assert src.outages == 1 and src.failures == 0


def test_resilient_source_survives_a_mid_stream_outage_and_keeps_counting():
    cam = FlakyCamera(fail_opens=0, fail_reads_at=3, fail_reads=2)
    fake = FakeTime()
    kinds: list[str] = []
    src = ResilientSource(cam, Backoff(1.0, 10.0), on_event=lambda k, p: kinds.append(k), clock=fake.clock,
                          sleep=fake.sleep)
    indices = [src.read().index for _ in range(5)]
    assert indices == [0, 1, 2, 3, 4]
    assert fake.sleeps == [1.0, 2.0]  # two failed reads, then the back-off resets
    assert kinds == ["source_lost", "source_lost", "source_restored"]
    assert cam.opens == 3 and cam.closes >= 2
    # A later outage starts again from the minimum delay.
    cam.fail_reads_at, cam.fail_reads = cam.reads + 1, 1
    src.read()
    assert fake.sleeps[-1] == 1.0 and src.outages == 2


def test_resilient_source_gives_up_when_asked_and_never_retries_finite_sources(tmp_path):
    fake = FakeTime()
    src = ResilientSource(FlakyCamera(fail_opens=10), Backoff(1, 1), max_attempts=3, clock=fake.clock,
                          sleep=fake.sleep)
    with pytest.raises(SourceUnavailable, match="gave up after 3 retries"):
        src.read()
    assert len(fake.sleeps) == 3
    missing = ResilientSource(ImageFolderSource(tmp_path / "none"), clock=fake.clock, sleep=fake.sleep)
    with pytest.raises(InputNotFoundError):
        missing.read()
    _write(tmp_path / "f" / "a.png", (9, 9, 9))
    finite = ResilientSource(ImageFolderSource(tmp_path / "f"), clock=fake.clock, sleep=fake.sleep)
    assert finite.read() is not None and finite.read() is None


def test_resilient_source_stops_waiting_when_stopped():
    import threading

    stop = threading.Event()
    waits: list[float] = []

    def sleep(s: float) -> None:  # the app sets stop (SIGTERM) while we wait
        waits.append(s)
        stop.set()

    src = ResilientSource(FlakyCamera(fail_opens=100), Backoff(5, 5), stop=stop, sleep=sleep)
    assert src.read() is None and waits == [5]


def test_backoff_validation():
    assert [Backoff(0.25, 2).delay(i) for i in range(1, 6)] == [0.25, 0.5, 1.0, 2.0, 2.0]
    with pytest.raises(ValueError):
        Backoff(5, 1)


# ------------------------------------------------------------------------------------------- Pi camera


def test_importing_sources_does_not_import_picamera2():
    code = "import sys, edge_mfr.stream.sources; assert 'picamera2' not in sys.modules, 'imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_picamera2_off_a_pi_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "picamera2", None)  # import fails as where python3-picamera2 is absent
    with pytest.raises(SourceError, match="picamera2 is not available.*python3-picamera2") as info:
        Picamera2Source().open()
    assert isinstance(info.value, EdgeMfrError) and not isinstance(info.value, SourceUnavailable)
    # Installed but no camera attached: libcamera's own error, wrapped and retryable.
    fake = types.ModuleType("picamera2")

    def no_camera(num):
        raise IndexError("list index out of range")

    fake.Picamera2 = no_camera
    monkeypatch.setitem(sys.modules, "picamera2", fake)
    with pytest.raises(SourceUnavailable, match="no camera found by libcamera"):
        Picamera2Source().open()


def _rgb_to_i420(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420)


class _FakeRequest:
    def __init__(self, cam):
        self.cam = cam

    def make_array(self, stream):
        return self.cam.arrays[stream]

    def get_metadata(self):
        return {"SensorTimestamp": 5_000_000_000 + 33_000_000 * self.cam.captures}

    def release(self):
        self.cam.released += 1


class _FakePicamera2:
    """Follows picamera2's documented calls: configuration dicts, capture_request/make_array/release."""

    instances: list[_FakePicamera2] = []

    def __init__(self, num=0):
        self.num, self.captures, self.released, self.started, self.closed = num, 0, 0, False, False
        main_rgb = np.zeros((720, 1280, 3), np.uint8)
        main_rgb[..., 0] = 200  # red scene
        lores_rgb = np.zeros((180, 320, 3), np.uint8)
        lores_rgb[..., 0] = 200
        self.arrays = {"main": main_rgb, "lores": _rgb_to_i420(lores_rgb)}
        _FakePicamera2.instances.append(self)

    def create_video_configuration(self, main=None, lores=None, **kwargs):
        return {"main": main, "lores": lores, **kwargs}

    def configure(self, config):
        self.config = config

    def start(self):
        self.started = True

    def capture_request(self):
        self.captures += 1
        if self.captures > 2:
            raise RuntimeError("camera frontend timeout")
        return _FakeRequest(self)

    def stop(self):
        self.started = False

    def close(self):
        self.closed = True


def test_picamera2_backend_with_a_stand_in_module(monkeypatch):
    fake = types.ModuleType("picamera2")
    fake.Picamera2 = _FakePicamera2
    monkeypatch.setitem(sys.modules, "picamera2", fake)
    src = Picamera2Source(camera_num=0, size=(1280, 720), lores_size=(320, 180), fps=20)
    with src:
        cam = _FakePicamera2.instances[-1]
        assert cam.config["main"] == {"size": (1280, 720), "format": "BGR888"}  # [R, G, B] bytes
        assert cam.config["lores"] == {"size": (320, 180), "format": "YUV420"}
        assert cam.config["controls"] == {"FrameRate": 20.0}
        f0, f1 = src.read(), src.read()
        assert f0.image.shape == (720, 1280, 3) and f0.lores.shape == (180, 320, 3)
        assert abs(int(f0.lores[..., 0].mean()) - 200) <= 3 and f0.lores[..., 2].mean() < 5  # red stays red
        assert (f0.index, f1.index) == (0, 1) and f1.timestamp - f0.timestamp == pytest.approx(0.033)
        assert cam.released == 2
        with pytest.raises(SourceUnavailable, match="capture failed"):
            src.read()
        assert cam.closed  # the camera is released so a retry can open it again


def test_yuv420_conversion_checks_its_buffer():
    blocks = np.random.default_rng(0).integers(0, 256, (8, 16, 3), dtype=np.uint8)
    rgb = np.repeat(np.repeat(blocks, 8, axis=0), 8, axis=1)  # 8x8 blocks survive 4:2:0 chroma subsampling
    out = yuv420_to_rgb(_rgb_to_i420(rgb), (128, 64))
    assert out.shape == rgb.shape
    inner = (slice(2, None, 8), slice(2, None, 8))  # block centres, away from chroma edges
    assert np.abs(out[inner].astype(int) - rgb[inner]).max() <= 6
    swapped = cv2.cvtColor(_rgb_to_i420(rgb), cv2.COLOR_YUV2BGR_I420)
    assert np.abs(swapped[inner].astype(int) - rgb[inner]).max() > 50  # channel order matters
    with pytest.raises(SourceError, match="multiple of 64"):
        yuv420_to_rgb(np.zeros((96, 192), np.uint8), (160, 64))


def test_missing_usb_camera_is_retryable_and_retried(tmp_path):
    absent = "/dev/video63"
    if Path(absent).exists():
        pytest.skip(f"{absent} exists here")
    with pytest.raises(SourceUnavailable, match="cannot open the camera"):
        make_source(absent).open()
    fake = FakeTime()
    kinds: list[str] = []
    src = make_source(absent, resilient=True, backoff=Backoff(1, 8), max_attempts=4,
                      on_event=lambda k, p: kinds.append(k))
    src.clock, src.sleep = fake.clock, fake.sleep
    with pytest.raises(SourceUnavailable, match="gave up after 4 retries"):
        src.read()
    assert fake.sleeps == [1, 2, 4, 8] and kinds == ["source_lost"] * 4


class _StalledPicamera2(_FakePicamera2):
    """A camera whose frames stop: capture_request waits forever unless given picamera2's ``wait``."""

    gate = threading.Event()

    def capture_request(self, wait=None):
        if wait is None:
            self.gate.wait()
            raise RuntimeError("released by the test")
        raise TimeoutError(f"no frame within {wait} s")


def test_a_stalled_pi_camera_read_times_out(monkeypatch):
    """Issue 16 item 8: camera reads need a timeout, so a stalled camera is reopened, not waited on."""
    fake = types.ModuleType("picamera2")
    fake.Picamera2 = _StalledPicamera2
    monkeypatch.setitem(sys.modules, "picamera2", fake)
    src = Picamera2Source(camera_num=0, size=(1280, 720), lores_size=(320, 180))
    outcome: list[BaseException] = []

    def read() -> None:
        try:
            src.read()
        except BaseException as exc:
            outcome.append(exc)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(30)
    _StalledPicamera2.gate.set()  # frees the old code's blocked read
    assert outcome and isinstance(outcome[0], SourceUnavailable) and "no frame within" in str(outcome[0])
    assert _StalledPicamera2.instances[-1].closed


def test_edge_mfr_bounds_opencv_reads_before_cv2_loads():
    code = ("import sys, edge_mfr, os; assert 'cv2' not in sys.modules; "
            "print(os.environ['OPENCV_VIDEOIO_V4L_SELECT_TIMEOUT'], os.environ['OPENCV_IO_MAX_IMAGE_PIXELS'])")
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENCV_")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["3", "64000000"]


def _broken_picamera2(root: Path) -> Path:
    """picamera2 and a simplejpeg that fails as Bookworm's (built for numpy 1.24) does under numpy 2."""
    (root / "picamera2").mkdir(parents=True)
    (root / "picamera2" / "__init__.py").write_text("import simplejpeg  # noqa\n\nclass Picamera2:\n    pass\n")
    (root / "simplejpeg").mkdir()
    (root / "simplejpeg" / "__init__.py").write_text(
        'raise ValueError("numpy.dtype size changed, may indicate binary incompatibility. '
        'Expected 96 from C header, got 88 from PyObject")\n')
    return root


def test_picamera2_that_cannot_import_names_the_real_cause(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(_broken_picamera2(tmp_path)))
    for name in ("picamera2", "simplejpeg"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    with pytest.raises(CameraImportError) as info:
        Picamera2Source().open()
    text = str(info.value)
    assert "picamera2 cannot be imported: ValueError in simplejpeg (" in text
    assert str(tmp_path / "simplejpeg" / "__init__.py") in text  # the module that broke
    assert "numpy.dtype size changed" in text and f"numpy {np.__version__}" in text
    assert "keeps numpy < 2 on Bookworm" in text and "\n" not in text


def test_run_with_a_broken_picamera2_is_one_line_and_no_traceback(tmp_path):
    env = {**os.environ, "PYTHONPATH": f"{_broken_picamera2(tmp_path / 'site')}{os.pathsep}{REPO}",
           "EDGE_MFR_STATE_DIR": str(tmp_path / "state"), "EDGE_MFR_GPIO": "mock"}
    config = tmp_path / "config.toml"  # not /etc/edge-mfr/config.toml, which an installed device has
    config.write_text("")
    done = subprocess.run([sys.executable, "-m", "edge_mfr.cli", "--config", str(config), "run", "--source",
                           "picamera2", "--max-frames", "1"], capture_output=True, text=True, cwd=REPO, env=env,
                          timeout=300)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    assert "picamera2 cannot be imported: ValueError" in done.stderr, done.stderr
