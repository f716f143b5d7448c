"""Stand-in for python3-simplejpeg (tools/pi/check.sh): the compiled part is what matters."""
from ._jpeg import decode_jpeg, encode_jpeg  # noqa: F401
