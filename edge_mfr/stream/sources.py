"""Where frames come from: the Pi camera, USB/IP cameras, video files, image folders, a synthetic scene.

Every backend hands out the same :class:`Frame` (RGB uint8, index, timestamp, optional low-resolution
copy) through the small :class:`FrameSource` protocol, so the recognizer and the tests never care which
camera is attached. ``read()`` returns ``None`` only at the end of a finite source (file, folder,
synthetic script); a live source that fails raises :class:`SourceUnavailable`, which
:class:`ResilientSource` turns into retries with exponential back-off instead of a crash.

The shared types live in :mod:`~edge_mfr.stream.frames`, the synthetic scene in
:mod:`~edge_mfr.stream.synthetic` and the retrying wrapper in :mod:`~edge_mfr.stream.resilient`; this module
holds the camera, video and folder backends and :func:`make_source`, and re-exports the rest.

picamera2 comes from apt on Raspberry Pi OS and drags in libcamera, so it is imported inside
:meth:`Picamera2Source.open` only: importing this module works on any machine.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge_mfr.errors import ImageError, InputNotFoundError
from edge_mfr.native_output import native_chatter_to_log
from edge_mfr.stream.frames import (
    CameraImportError,
    Frame,
    FrameSource,
    SourceError,
    SourceUnavailable,
    _Base,
    scale_faces,
)
from edge_mfr.stream.resilient import Backoff, ResilientSource
from edge_mfr.stream.synthetic import Placement, SyntheticSource, approach_script
from edge_mfr.vision.imageio import is_image_path, list_images, read_image

log = logging.getLogger(__name__)

# Every source type and helper can be imported from here, wherever it is defined.
__all__ = ["Backoff", "CameraImportError", "Frame", "FrameSource", "ImageFolderSource", "OpenCVSource",
           "Picamera2Source", "Placement", "ResilientSource", "SourceError", "SourceUnavailable", "SyntheticSource",
           "approach_script", "make_source", "scale_faces", "yuv420_to_rgb"]

URL_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://")
# FFmpeg decoder threads for video files and network streams. OpenCV's default is one per core, and FFmpeg's
# frame threading then holds a frame in flight per thread: each thread's buffers stay resident (3.3 MiB more
# on a 2-core machine for a 640x360 clip, more with 4 cores and larger frames) and a live stream's picture
# arrives that many frames late. The loop consumes one frame at a time and works on 640x480; point it at a
# network camera's smaller substream rather than a 4K main stream that one decoder thread cannot keep up with.
DECODE_THREADS = 1


# --------------------------------------------------------------------------------------------- Pi camera


READ_TIMEOUT_S = 3.0  # a camera read that takes longer is a lost camera (reopened), never a hung loop


class Picamera2Source(_Base):
    """The Raspberry Pi camera through picamera2 (libcamera), main + lores streams.

    The main stream (``size``, default 1280x720) is requested as "BGR888", which in libcamera's naming
    is [R, G, B] byte order, so it arrives RGB without a conversion. The lores stream (``lores_size``,
    default 320x240, YUV420 which every Pi ISP can scale to) is converted to RGB and given as
    ``Frame.lores``: BlazeFace only needs 128x128, so detecting on it is cheap, and face boxes scale back
    to main pixels by (main_w / lores_w, main_h / lores_h), see :meth:`Frame.detection_view`. Keep the
    aspect ratios equal to avoid a squashed lores image, and the lores width a multiple of 64 (YUV420
    rows are not padded then). Pass ``lores_size=None`` to skip the lores stream.
    """

    live = True

    def __init__(self, camera_num: int = 0, size: tuple[int, int] = (1280, 720),
                 lores_size: tuple[int, int] | None = (320, 180), fps: float | None = None,
                 clock: Callable[[], float] = time.monotonic, read_timeout_s: float = READ_TIMEOUT_S):
        self.read_timeout_s = read_timeout_s
        self.camera_num = camera_num
        self.size = size
        self.lores_size = lores_size
        self.fps = fps
        self.clock = clock
        self.name = f"picamera2:{camera_num}"
        self._cam: Any = None
        self._index = 0

    def open(self) -> None:
        if self._cam is not None:
            return
        Picamera2 = import_picamera2(self.name)
        try:
            cam = Picamera2(self.camera_num)
        except Exception as exc:  # libcamera raises IndexError/RuntimeError when no camera is attached
            raise SourceUnavailable(f"{self.name}: no camera found by libcamera ({type(exc).__name__}: {exc})"
                                    ) from None
        try:
            streams: dict[str, Any] = {"main": {"size": tuple(self.size), "format": "BGR888"}}
            if self.lores_size is not None:
                streams["lores"] = {"size": tuple(self.lores_size), "format": "YUV420"}
            if self.fps:
                streams["controls"] = {"FrameRate": float(self.fps)}
            config = cam.create_video_configuration(**streams)
            cam.configure(config)
            cam.start()
        except Exception as exc:
            cam.close()
            raise SourceUnavailable(f"{self.name}: cannot start the camera ({type(exc).__name__}: {exc})"
                                    ) from None
        self._cam = cam
        self._index = 0

    def _capture_request(self) -> Any:
        """capture_request with a timeout (picamera2's ``wait``, TimeoutError when it passes); picamera2
        releases older than 0.3.13 have no ``wait`` and block as before."""
        try:
            return self._cam.capture_request(wait=self.read_timeout_s)
        except TypeError as exc:
            if "wait" not in str(exc):
                raise
            return self._cam.capture_request()

    def read(self) -> Frame | None:
        if self._cam is None:
            self.open()
        try:
            request = self._capture_request()
        except Exception as exc:
            self.close()
            raise SourceUnavailable(f"{self.name}: capture failed ({type(exc).__name__}: {exc})") from None
        try:
            main = np.ascontiguousarray(request.make_array("main")[:, :, :3])
            lores = None
            if self.lores_size is not None:
                lores = yuv420_to_rgb(request.make_array("lores"), self.lores_size)
            metadata = request.get_metadata() or {}
        finally:
            request.release()
        sensor_ns = metadata.get("SensorTimestamp")
        timestamp = sensor_ns / 1e9 if sensor_ns else self.clock()
        frame = Frame(main, self._index, float(timestamp), lores)
        self._index += 1
        return frame

    def close(self) -> None:
        cam, self._cam = self._cam, None
        if cam is None:
            return
        for step in (cam.stop, cam.close):
            try:
                step()
            except Exception as exc:  # closing a camera that vanished must not mask the original error
                log.debug("%s: %s failed: %s", self.name, step.__name__, exc)


def import_picamera2(name: str = "picamera2") -> Any:
    """``picamera2.Picamera2``, or one SourceError line that names the real cause.

    Absent (not a Pi, or no python3-picamera2): say how to get it. Present but failing: usually a
    compiled module from apt built for Bookworm's numpy 1.24 (python3-simplejpeg) meeting numpy 2 from
    pip in the venv ("numpy.dtype size changed"); that raises ValueError, not ImportError, so every
    exception is caught here and the failing module and numpy version are named.
    """
    try:
        from picamera2 import Picamera2  # lazy: only a Pi with python3-picamera2 has it
    except ModuleNotFoundError as exc:
        if exc.name in ("picamera2", None):
            raise SourceError(f"{name}: picamera2 is not available ({exc}); on Raspberry Pi OS install "
                              "python3-picamera2 and create the venv with --system-site-packages, or use a "
                              "USB camera (/dev/video0) or a video file") from None
        raise CameraImportError(f"{name}: picamera2 is installed but its dependency {exc.name!r} is missing "
                                f"({exc}); install it from apt (e.g. python3-{exc.name}) or rerun "
                                "deploy/install.sh") from None
    except Exception as exc:  # ValueError from a numpy ABI mismatch, ImportError of a .so, anything else
        raise CameraImportError(f"{name}: picamera2 cannot be imported: {type(exc).__name__} in "
                                f"{_failing_module(exc)}: {str(exc).splitlines()[0] if str(exc) else ''} "
                                f"(numpy {np.__version__} in {_numpy_home()}); {_import_fix(exc)}") from None
    return Picamera2


def _failing_module(exc: BaseException) -> str:
    """Module and file the exception came from (the innermost frame): which compiled module broke.

    A Cython module's frame names its .pyx source, so the module's own ``__name__`` goes first.
    """
    tb = exc.__traceback__
    last = None
    while tb is not None:
        last = tb.tb_frame
        tb = tb.tb_next
    if last is None:
        return "?"
    return f"{last.f_globals.get('__name__', '?')} ({last.f_code.co_filename})"


def _numpy_home() -> str:
    return str(Path(np.__file__).parent.parent)


def _import_fix(exc: BaseException) -> str:
    text = str(exc)
    if "numpy" in text and ("size changed" in text or "compiled using NumPy" in text
                            or "multiarray" in text or "_ARRAY_API" in text):
        return ("a system package built for the system's numpy meets another numpy from pip in this venv: "
                "reinstall with deploy/install.sh (it keeps numpy < 2 on Bookworm)")
    return "reinstall python3-picamera2 (sudo apt install --reinstall python3-picamera2) and rerun deploy/install.sh"


def yuv420_to_rgb(planar: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """picamera2's YUV420 array ((h * 3 / 2) x w: Y rows, then U, then V) to RGB uint8 h x w."""
    w, h = size
    if planar.shape[0] != h * 3 // 2 or planar.shape[1] < w:
        raise SourceError(f"lores YUV420 buffer is {planar.shape[1]}x{planar.shape[0]}, "
                          f"expected {w}x{h * 3 // 2}")
    if planar.shape[1] != w:
        raise SourceError(f"lores YUV420 rows are padded to {planar.shape[1]} for width {w}; "
                          "use a lores width that is a multiple of 64")
    return cv2.cvtColor(np.ascontiguousarray(planar), cv2.COLOR_YUV2RGB_I420)


# ----------------------------------------------------------------------------------------------- OpenCV


class OpenCVSource(_Base):
    """USB cameras (index or /dev/videoN), network streams (RTSP/HTTP) and video files via OpenCV.

    Files are finite and timestamped by their own stream clock; cameras and URLs are live, timestamped
    with ``clock`` and keep a one-frame buffer where the backend allows, so a slow recognizer sees the
    newest frame rather than a growing queue.
    """

    def __init__(self, target: int | str | Path, live: bool | None = None, width: int | None = None,
                 height: int | None = None, fps: float | None = None, fourcc: str | None = None,
                 timeout_ms: int = 5000, clock: Callable[[], float] = time.monotonic):
        self.target: int | str = target if isinstance(target, int) else str(target)
        is_file = isinstance(self.target, str) and not self.target.startswith(URL_SCHEMES) and \
            not self.target.startswith("/dev/")
        self.live = (not is_file) if live is None else live
        self.width, self.height, self.fps, self.fourcc = width, height, fps, fourcc
        self.timeout_ms = timeout_ms
        self.clock = clock
        self.name = _redact(str(self.target))
        self._cap: cv2.VideoCapture | None = None
        self._index = 0

    def open(self) -> None:
        if self._cap is not None:
            return
        target = self.target
        if not self.live and not Path(str(target)).exists():
            raise InputNotFoundError(f"{self.name}: no such file")
        if not self.live and Path(str(target)).is_dir():
            raise SourceError(f"{self.name}: is a folder; image folders are read by ImageFolderSource")
        if isinstance(target, str) and target.startswith(URL_SCHEMES):
            params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, self.timeout_ms,
                      cv2.CAP_PROP_READ_TIMEOUT_MSEC, self.timeout_ms, cv2.CAP_PROP_N_THREADS, DECODE_THREADS]
            cap = cv2.VideoCapture(target, cv2.CAP_FFMPEG, params)
        elif self.live:
            cap = cv2.VideoCapture(target)
        else:
            with native_chatter_to_log(f"opening {self.name}"):  # FFmpeg's notes on a bad file
                cap = cv2.VideoCapture(target, cv2.CAP_FFMPEG, [cv2.CAP_PROP_N_THREADS, DECODE_THREADS])
                if not cap.isOpened():  # not for FFmpeg after all: let OpenCV pick a backend, as before
                    cap.release()
                    cap = cv2.VideoCapture(target)
        if not cap.isOpened():
            cap.release()
            if self.live:
                raise SourceUnavailable(f"{self.name}: cannot open the camera or stream")
            raise SourceError(f"{self.name}: not a readable video (corrupt or unsupported format)")
        if self.live:
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
            if self.fourcc:
                cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter.fourcc(*self.fourcc[:4].ljust(4)))
            if self.width:
                cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.width)
            if self.height:
                cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.height)
            if self.fps:
                cap.set(cv2.CAP_PROP_FPS, self.fps)
        self._cap = cap
        self._index = 0

    def read(self) -> Frame | None:
        if self._cap is None:
            self.open()
        assert self._cap is not None
        ok, bgr = self._cap.read()
        if not ok or bgr is None:
            if self.live:
                self.close()
                raise SourceUnavailable(f"{self.name}: no frame (camera unplugged or stream dropped)")
            if self._index == 0:
                self.close()
                raise SourceError(f"{self.name}: not a readable video (no frame could be decoded)")
            return None
        if bgr.ndim == 2:
            rgb = cv2.cvtColor(bgr, cv2.COLOR_GRAY2RGB)
        else:
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        if self.live:
            timestamp = self.clock()
        else:
            timestamp = self._cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
        frame = Frame(rgb, self._index, float(timestamp))
        self._index += 1
        return frame

    def close(self) -> None:
        cap, self._cap = self._cap, None
        if cap is not None:
            cap.release()


def _redact(spec: str) -> str:
    """Hide a password in rtsp://user:password@host so it never reaches logs or MQTT."""
    return re.sub(r"(://[^:/@]+:)[^@/]*@", r"\1***@", spec)


# ------------------------------------------------------------------------------------------ image folder


class ImageFolderSource(_Base):
    """The images of a folder (recursive, sorted by path) or a single image file, optionally looped.

    Timestamps are ``index / fps`` so a folder replays like a video. An unreadable image is logged and
    skipped; a folder with no readable image at all is an error.
    """

    def __init__(self, folder: str | Path, loop: bool = False, fps: float = 10.0):
        self.folder = Path(folder)
        self.loop = loop
        self.fps = fps
        self.name = str(folder)
        self.paths: list[Path] = []
        self._pos = 0
        self._index = 0
        self._opened = False

    def open(self) -> None:
        if self._opened:
            return
        if not self.folder.exists():
            raise InputNotFoundError(f"{self.folder}: no such file or folder")
        self.paths = [self.folder] if self.folder.is_file() else list_images(self.folder)
        if not self.paths:
            raise SourceError(f"{self.folder}: no images found (.jpg, .jpeg, .png, .bmp, .webp)")
        self._pos = self._index = 0
        self._opened = True

    def read(self) -> Frame | None:
        if not self._opened:
            self.open()
        failures = 0
        while True:
            if self._pos >= len(self.paths):
                if not self.loop:
                    return None
                self._pos = 0
            path = self.paths[self._pos]
            self._pos += 1
            try:
                image = read_image(path)
            except (ImageError, InputNotFoundError) as exc:
                log.warning("skipping %s", exc)
                failures += 1
                if failures >= len(self.paths):
                    raise SourceError(f"{self.folder}: none of its {len(self.paths)} images is readable"
                                      ) from None
                continue
            frame = Frame(image, self._index, self._index / self.fps)
            self._index += 1
            return frame

    def close(self) -> None:
        self._opened = False


# ---------------------------------------------------------------------------------------------- synthetic


# ----------------------------------------------------------------------------------------------- factory


def make_source(spec: str, resilient: bool = False, **opts: Any) -> FrameSource:
    """A source from its config/CLI spelling.

    ``picamera2`` or ``picamera2:N``; ``0`` (camera index) or ``/dev/videoN``; ``rtsp://``, ``http(s)://``
    and other stream URLs; a video file; an image file or a folder of images; ``synthetic`` or
    ``synthetic:PATH`` (an image or folder of face images; default: scikit-image's astronaut). ``opts``
    go to the backend's constructor. With ``resilient`` a live source is wrapped in
    :class:`ResilientSource` (``backoff``/``on_event`` are taken from ``opts`` for it).
    """
    spec = spec.strip()
    if not spec:
        raise SourceError("empty source spec; use picamera2, /dev/video0, a camera index, a URL, a file "
                          "or a folder")
    wrapper_opts = {k: opts.pop(k) for k in ("backoff", "on_event", "max_attempts", "stop") if k in opts}
    source = _make(spec, opts)
    if resilient and source.live:
        return ResilientSource(source, **wrapper_opts)
    return source


def _make(spec: str, opts: dict[str, Any]) -> FrameSource:
    try:
        if spec == "picamera2" or spec.startswith("picamera2:"):
            num = spec.partition(":")[2]
            if num and not num.isdigit():
                raise SourceError(f"{spec!r}: camera number must be an integer, e.g. picamera2:0")
            return Picamera2Source(int(num or 0), **opts)
        if spec == "synthetic" or spec.startswith("synthetic:"):
            return _make_synthetic(spec.partition(":")[2], opts)
        if spec.isdigit():
            return OpenCVSource(int(spec), live=True, **opts)
        if spec.startswith("/dev/"):
            return OpenCVSource(spec, live=True, **opts)
        if "://" in spec:
            if not spec.startswith(URL_SCHEMES):
                schemes = ", ".join(URL_SCHEMES)
                raise SourceError(f"{_redact(spec)}: unsupported URL scheme; use one of {schemes}")
            return OpenCVSource(spec, live=True, **opts)
        path = Path(spec)
        if not path.exists():
            raise InputNotFoundError(f"{spec}: no such file, folder or camera")
        if path.is_dir() or is_image_path(path):
            return ImageFolderSource(path, **opts)
        return OpenCVSource(path, live=False, **opts)
    except TypeError as exc:  # an option the backend does not take
        raise SourceError(f"{_redact(spec)}: {exc}") from None


def _make_synthetic(arg: str, opts: dict[str, Any]) -> SyntheticSource:
    if "faces" not in opts:
        if arg:
            path = Path(arg)
            if not path.exists():
                raise InputNotFoundError(f"{arg}: no such file or folder")
            files = [path] if path.is_file() else list_images(path)
            if not files:
                raise SourceError(f"{arg}: no images found for the synthetic source")
            opts["faces"] = [read_image(p) for p in files]
        else:
            try:
                from skimage import data as skdata  # the demo extra; public-domain sample photo
            except ImportError:
                raise SourceError("synthetic source without images needs scikit-image (the 'demo' extra); "
                                  "or give synthetic:PATH with face images") from None
            opts["faces"] = np.ascontiguousarray(skdata.astronaut()[0:300, 100:340])
    return SyntheticSource(**opts)
