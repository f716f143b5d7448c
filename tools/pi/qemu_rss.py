"""Peak RSS of a program run by qemu-user, with qemu's own share subtracted.

    python tools/pi/qemu_rss.py -- chroot ROOT COMMAND...    (prints one line: guest, qemu, total MiB)

Samples /proc/PID/smaps of the emulated process (the qemu process, host side) every 0.1 s. qemu's own
share is what belongs to qemu, not to the guest program: the qemu binary's mappings, qemu's malloc heap
([heap]; the guest's heap is an ordinary anonymous mapping made by qemu's brk emulation) and its
translated-code buffer (the anonymous mapping with execute permission: guest code is never executable on
the host). The rest is the guest's own memory. The peak reported is the largest guest share seen (and
the qemu share and total in the same sample); the emulated program is the process tree's largest.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time


def sample(pid: int) -> tuple[int, int] | None:
    """(total, qemu) resident KiB of one process, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/smaps") as fh:
            lines = fh.readlines()
        exe = os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return None
    total = qemu = 0
    owner_is_qemu = False
    for line in lines:
        head = line.split()
        if not head:
            continue
        if "-" in head[0] and len(head) >= 5 and ":" not in head[0]:  # a mapping header
            perms = head[1]
            path = head[5] if len(head) >= 6 else ""
            owner_is_qemu = path == exe or path == "[heap]" or ("x" in perms and path == "")
        elif head[0] == "Rss:":
            kib = int(head[1])
            total += kib
            if owner_is_qemu:
                qemu += kib
    return total, qemu


def tree(root: int) -> list[int]:
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        try:
            with open(f"/proc/{pid}/task/{pid}/children") as fh:
                todo += [int(c) for c in fh.read().split()]
        except OSError:
            pass
    return out


def main(argv: list[str]) -> int:
    cmd = argv[argv.index("--") + 1 :] if "--" in argv else argv[1:]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    best = (0, 0, 0)  # guest, qemu, total KiB
    while proc.poll() is None:
        for pid in tree(proc.pid):
            if "qemu" not in (os.path.realpath(f"/proc/{pid}/exe") if os.path.exists(f"/proc/{pid}/exe") else ""):
                continue
            s = sample(pid)
            if s is not None and s[0] - s[1] > best[0]:
                best = (s[0] - s[1], s[1], s[0])
        time.sleep(0.1)
    err = proc.stderr.read().decode(errors="replace").strip().splitlines() if proc.stderr else []
    if proc.returncode != 0:
        print(f"exit {proc.returncode}: {err[-1] if err else ''}")
        return 1
    mib = [round(v / 1024, 1) for v in best]
    print(f"guest {mib[0]} MiB (qemu's own {mib[1]} MiB, total {mib[2]} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
