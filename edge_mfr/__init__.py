"""edge-mfr: masked-face recognition for a Raspberry Pi door lock or kiosk."""

import os

# OpenCV reads its decoder pixel limit once, when cv2 is imported: set it before any edge_mfr module imports
# cv2, as a second line behind the header checks in vision/imageio.py (OpenCV's default is 1 gigapixel).
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(64_000_000))
# A USB camera (V4L2) read that gets no frame gives up after this many seconds (OpenCV's default is 10), so
# a stalled camera becomes a reopen in stream/resilient.py well within the 10 s watchdog; URLs have their
# own read timeout (stream/sources.py).
os.environ.setdefault("OPENCV_VIDEOIO_V4L_SELECT_TIMEOUT", "3")

__version__ = "0.1.0"
