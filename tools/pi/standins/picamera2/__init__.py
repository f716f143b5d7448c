"""Stand-in for python3-picamera2 (tools/pi/check.sh): imports what the real package imports at the top
(numpy, simplejpeg's compiled module, libcamera) and, like picamera2 without a camera attached, fails to
open one with libcamera's IndexError."""
import libcamera  # noqa: F401
import numpy  # noqa: F401
import simplejpeg  # noqa: F401


class Picamera2:
    def __init__(self, camera_num=0):
        raise IndexError("list index out of range")
