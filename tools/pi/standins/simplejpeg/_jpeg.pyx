# cython: language_level=3
# Stand-in for Raspberry Pi OS's python3-simplejpeg: like the real module it is Cython compiled against
# the system's numpy (1.24 on Bookworm) with `cimport numpy`, so under numpy 2 its import fails the same
# way ("numpy.dtype size changed, may indicate binary incompatibility").
cimport numpy as cnp
import numpy as np

cnp.import_array()


def decode_jpeg(data, colorspace="RGB"):
    raise NotImplementedError("simplejpeg stand-in: no JPEG codec")


def encode_jpeg(image, quality=85, colorspace="RGB"):
    cdef cnp.ndarray arr = np.ascontiguousarray(image)
    raise NotImplementedError(f"simplejpeg stand-in: no JPEG codec for a {arr.ndim}-d array")
