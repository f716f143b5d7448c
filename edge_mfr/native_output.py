"""Native libraries' chatter goes to the debug log, not the user's terminal.

LiteRT prints "INFO: Created TensorFlow Lite XNNPACK delegate for CPU." and FFmpeg prints notes such as
"[mov,mp4,... @ 0x...] moov atom not found" straight to file descriptor 2, below Python's logging; on a
terminal they read as warnings before every result (or before the clean one-line error for a bad video).
While a native call runs, descriptor 2 is pointed at a temporary file; afterwards the lines known to be
chatter go to the debug log (`-v` shows them) and every other line is written to stderr as it was, so
nothing else is lost (it only appears when the call returns).
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger(__name__)

CHATTER = re.compile(r"^(INFO: (Created|Initialized) TensorFlow Lite\b|\[[^\]]+ @ 0x[0-9a-fA-F]+\] )")
_lock = threading.RLock()
_depth = 0


@contextmanager
def native_chatter_to_log(what: str) -> Iterator[None]:
    """Run the block with descriptor 2 captured; ``what`` names the call in the debug log."""
    global _depth
    with _lock:
        if _depth:  # already captured by an outer block
            yield
            return
        try:
            saved = os.dup(2)
        except OSError:  # no descriptor 2 at all: nothing to keep clean
            yield
            return
        _depth += 1
        with tempfile.TemporaryFile() as capture:
            os.dup2(capture.fileno(), 2)
            try:
                yield
            finally:
                os.dup2(saved, 2)
                os.close(saved)
                _depth -= 1
                capture.seek(0)
                _replay(what, capture.read().decode(errors="replace"))


def _replay(what: str, text: str) -> None:
    for line in text.splitlines():
        if CHATTER.match(line):
            log.debug("%s: %s", what, line)
        elif line.strip():
            os.write(2, (line + "\n").encode())
