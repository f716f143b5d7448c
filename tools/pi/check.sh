#!/usr/bin/env bash
# The Raspberry Pi path, proven under emulation: a Debian arm64 root run by qemu-user.
#
#   sudo tools/pi/check.sh [--quick] [--rss] [--suite bookworm|trixie]
#                                  (needs debootstrap, qemu-user-static, binfmt_misc)
#
# --suite: the Debian release of the root (Raspberry Pi OS Bookworm, the default, or Trixie). Builds the root
# once (debootstrap; cached in $EDGE_MFR_PI_ROOT, default ~/.cache/edge-mfr/pi-root-SUITE)
# and then, on a fresh copy of this checkout inside it:
#   1. builds stand-in Debian packages for the Raspberry Pi repository's python3-picamera2, -libcamera,
#      -simplejpeg (Cython compiled against the root's numpy, 1.24 on Bookworm, like the real one) and -lgpio
#   2. deploy/install.sh: refused on a 32-bit userland and without the Pi repository (nothing installed),
#      then a real install with the stand-in repository: venv, unit enabled offline (chroot), no root-owned
#      files left in the checkout, picamera2 imports in the venv; on Bookworm: with numpy 2 it fails as on a
#      real Pi and `edge-mfr run` says why in one line (Trixie's apt numpy is 2.x: no numpy pin there)
#   3. the known-answer self-test on a Pi 4 CPU (QEMU_CPU=cortex-a72) and a Pi 5 CPU (cortex-a76); with
#      QEMU_CPU=max (SME, which no Pi has, and which LiteRT mis-handles) `run` refuses and `doctor` fails
#   4. `edge-mfr demo` (its decisions)
#   5. `edge-mfr recognize --json` on the data set's images and the demo's photo, with the demo's gallery,
#      against this host's (x86-64) output: faces, boxes, and the fused embedders' decisions and similarities
#   6. without --quick: a subset of the non-browser tests ($EDGE_MFR_PI_TESTS: the self-test, runtime,
#      detector, embedder, guard and source tests by default)
#   7. with --rss: peak RSS of `edge-mfr bench` and `edge-mfr run`, qemu's own share subtracted
# QEMU needs an ARM-looking /proc/cpuinfo for LiteRT: one is bind-mounted per CPU model.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
DATA="${EDGE_MFR_DATA:-$REPO/../shared/data}"
MIRROR="${EDGE_MFR_PI_MIRROR:-http://deb.debian.org/debian}"
HOST_PY="${EDGE_MFR_HOST_PYTHON:-$REPO/.venv/bin/python}"
# Without --quick: these tests run in the emulated root (all of vision/, identity/ and stream/ take about an
# hour under qemu on two cores; set EDGE_MFR_PI_TESTS to choose).
TESTS="${EDGE_MFR_PI_TESTS:-tests/vision/test_selftest.py tests/vision/test_runtime.py tests/vision/test_detector.py tests/vision/test_embedder.py tests/identity/test_broken_embedder_guard.py tests/stream/test_sources.py}"
QUICK=0
RSS=0
SUITE=bookworm
while [ "$#" -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1 ;;
        --rss) RSS=1 ;;
        --suite) [ "$#" -ge 2 ] || { echo "check.sh: --suite needs bookworm or trixie" >&2; exit 2; }; SUITE="$2"; shift ;;
        --suite=*) SUITE="${1#--suite=}" ;;
        -h|--help) sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "check.sh: unknown option '$1'" >&2; exit 2 ;;
    esac
    shift
done
case "$SUITE" in
    bookworm|trixie) ;;
    *) echo "check.sh: unknown suite '$SUITE' (bookworm or trixie)" >&2; exit 2 ;;
esac
ROOT="${EDGE_MFR_PI_ROOT:-${HOME:-/root}/.cache/edge-mfr/pi-root-$SUITE}"

PASSED=()
FAILED=()
say() { printf '==> %s\n' "$*"; }
pass() { PASSED+=("$1"); printf 'PASS  %s\n' "$1"; }
fail() { FAILED+=("$1"); printf 'FAIL  %s\n' "$1"; }
die() { printf 'check.sh: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root (debootstrap, chroot and mounts need it): sudo $0"
command -v debootstrap >/dev/null || die "debootstrap not found: apt install debootstrap qemu-user-static"
if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
    mountpoint -q /proc/sys/fs/binfmt_misc || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc || true
    update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || true
fi
[ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || die "qemu-aarch64 is not registered with binfmt_misc: apt install qemu-user-static binfmt-support"
[ -d "$DATA" ] || die "$DATA: the face data set is missing (set EDGE_MFR_DATA)"
[ -x "$HOST_PY" ] || die "$HOST_PY: no host venv for the x86-64 reference output (make test, or set EDGE_MFR_HOST_PYTHON)"
T0=$(date +%s)

# --- the root ----------------------------------------------------------------------------------------
PACKAGES=python3,python3-venv,python3-pip,python3-numpy,python3-dev,cython3,gcc,libc6-dev,ca-certificates,systemd,procps
if [ ! -f "$ROOT/.edge-mfr-root" ]; then
    say "building the arm64 root in $ROOT (once; minutes to tens of minutes)"
    rm -rf "$ROOT.tmp"
    mkdir -p "$(dirname "$ROOT")"
    nice debootstrap --arch=arm64 --variant=minbase --include="$PACKAGES" "$SUITE" "$ROOT.tmp" "$MIRROR"
    echo "$SUITE" > "$ROOT.tmp/.edge-mfr-root"
    rm -rf "$ROOT"
    mv "$ROOT.tmp" "$ROOT"
fi

# shellcheck disable=SC1091  # the root's own os-release
root_suite="$(. "$ROOT/etc/os-release" && echo "${VERSION_CODENAME:-}")"
[ "$root_suite" = "$SUITE" ] || die "$ROOT is a '$root_suite' root, not $SUITE (set EDGE_MFR_PI_ROOT per suite)"

MOUNTS=()
cleanup() {
    local i
    for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do
        umount -l "${MOUNTS[$i]}" 2>/dev/null || true
    done
}
trap cleanup EXIT
bind() {  # source, target inside the root, [ro]
    mkdir -p "$ROOT$2"
    mount --bind "$1" "$ROOT$2"
    MOUNTS+=("$ROOT$2")
    if [ "${3:-}" = ro ]; then
        mount -o remount,bind,ro "$ROOT$2"
    fi
}
bind /proc /proc
bind /dev /dev
bind /dev/pts /dev/pts
bind /sys /sys
bind "$(cd "$DATA" && pwd)" /data ro
mkdir -p "$ROOT/run/edge-mfr-check"

cpuinfo() {  # QEMU CPU model -> an ARM /proc/cpuinfo like that Pi's (LiteRT reads it for its kernels)
    local part features
    case "$1" in
        cortex-a72) part=0xd08; features="fp asimd evtstrm crc32 cpuid" ;;
        cortex-a76) part=0xd0b; features="fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp" ;;
        *) part=0xd0b; features="fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp" ;;
    esac
    local n
    for n in 0 1 2 3; do
        printf 'processor\t: %s\nBogoMIPS\t: 108.00\nFeatures\t: %s\nCPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: %s\nCPU revision\t: 1\n\n' \
            "$n" "$features" "$part"
    done
}
CPUINFO="$ROOT/run/edge-mfr-check/cpuinfo"
cpuinfo cortex-a72 > "$CPUINFO"
mount --bind "$CPUINFO" "$ROOT/proc/cpuinfo"
MOUNTS+=("$ROOT/proc/cpuinfo")
set_cpu() { cpuinfo "$1" > "$CPUINFO"; export QEMU_CPU="$1"; }
set_cpu cortex-a72
in_root() { chroot "$ROOT" /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    HOME=/root LANG=C.UTF-8 QEMU_CPU="$QEMU_CPU" PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_DEFAULT_TIMEOUT=180 "$@"; }
as_pi() { in_root setpriv --reuid=1000 --regid=1000 --init-groups env HOME=/home/pi "$@"; }

# The host's pip configuration and CA bundle (a build host may reach PyPI only through them).
for f in /etc/pip.conf /etc/ssl/certs/ca-certificates.crt /etc/resolv.conf; do
    if [ -f "$f" ]; then mkdir -p "$ROOT$(dirname "$f")"; cp -L "$f" "$ROOT$f"; fi
done
if [ -d /etc/xdg/pip ]; then mkdir -p "$ROOT/etc/xdg"; rm -rf "$ROOT/etc/xdg/pip"; cp -r /etc/xdg/pip "$ROOT/etc/xdg/pip"; fi

# A root cached by an older version of this script may lack some of the packages now listed.
if ! in_root sh -c 'command -v cython3 && command -v gcc && command -v systemctl' >/dev/null 2>&1; then
    say "adding packages to the cached root"
    in_root sh -c "apt-get update -qq && apt-get install -y -qq --no-install-recommends ${PACKAGES//,/ }" >/dev/null \
        || die "could not add packages to $ROOT"
fi


# A fresh copy of this checkout (tracked and untracked-but-not-ignored files), owned by an ordinary user.
in_root sh -c 'getent passwd pi >/dev/null || useradd --create-home --uid 1000 --shell /bin/bash pi'
rm -rf "$ROOT/home/pi/edge-mfr"
mkdir -p "$ROOT/home/pi/edge-mfr"
(cd "$REPO" && git ls-files -co --exclude-standard -z | tar --null -T - -cf -) | tar -C "$ROOT/home/pi/edge-mfr" -xf -
chown -R 1000:1000 "$ROOT/home/pi/edge-mfr"
SRC=/home/pi/edge-mfr
# Bookworm's apt packages with compiled numpy code need numpy 1.x in the venv (deploy/constraints-bookworm.txt,
# which deploy/install.sh uses there too); Trixie's are built against numpy 2.
CONSTRAINTS=()
if [ "$SUITE" = bookworm ]; then CONSTRAINTS=(--constraint "$SRC/deploy/constraints-bookworm.txt"); fi

# --- 1. stand-in packages ----------------------------------------------------------------------------
say "stand-in Raspberry Pi packages"
rm -rf "$ROOT/opt/standins"
if in_root bash "$SRC/tools/pi/standins/build-debs.sh" /opt/standins; then
    pass "stand-in python3-picamera2/-libcamera/-simplejpeg/-lgpio built against the root's numpy $(in_root python3 -c 'import numpy; print(numpy.__version__)')"
else
    fail "building the stand-in packages"
fi
RASPI_LIST=/etc/apt/sources.list.d/raspi.list
in_root sh -c "dpkg -l 'python3-picamera2' >/dev/null 2>&1 && apt-get purge -y -qq python3-picamera2 python3-libcamera python3-simplejpeg python3-lgpio >/dev/null || true"
rm -f "$ROOT$RASPI_LIST"

# --- 2. deploy/install.sh ----------------------------------------------------------------------------
say "deploy/install.sh: refusals before any change"
out="$(in_root bash "$SRC/deploy/install.sh" 2>&1)" && rc=0 || rc=$?
if [ "$rc" -ne 0 ] && grep -q "Raspberry Pi apt repository" <<<"$out" && ! in_root dpkg -s python3-picamera2 >/dev/null 2>&1 \
        && ! grep -q '^+ .*apt-get install' <<<"$out"; then
    pass "without the Raspberry Pi repository: stops after apt-get update with the hint, installs nothing"
else
    fail "missing Raspberry Pi repository not explained (rc $rc): $(tail -2 <<<"$out")"
fi
mkdir -p "$ROOT/run/edge-mfr-check/armhf"
# shellcheck disable=SC2016  # the stub's own $1 and $@
printf '#!/bin/sh\n[ "$1" = --print-architecture ] && { echo armhf; exit 0; }\nexec /usr/bin/dpkg "$@"\n' > "$ROOT/run/edge-mfr-check/armhf/dpkg"
chmod +x "$ROOT/run/edge-mfr-check/armhf/dpkg"
out="$(in_root env PATH=/run/edge-mfr-check/armhf:/usr/sbin:/usr/bin:/sbin:/bin bash "$SRC/deploy/install.sh" 2>&1)" && rc=0 || rc=$?
if [ "$rc" -eq 1 ] && grep -q "32-bit userland" <<<"$out" && ! grep -q '^+ ' <<<"$out"; then
    pass "32-bit userland (dpkg says armhf, uname aarch64): refused before any command"
else
    fail "32-bit userland not refused (rc $rc): $(tail -2 <<<"$out")"
fi

say "deploy/install.sh with the stand-in repository (a chroot: no running systemd)"
echo "deb [trusted=yes] file:/opt/standins ./" > "$ROOT$RASPI_LIST"
t=$(date +%s)
if in_root bash "$SRC/deploy/install.sh" > "$ROOT/run/edge-mfr-check/install.log" 2>&1; then
    pass "install.sh completed in $(( $(date +%s) - t )) s"
else
    fail "install.sh failed: $(tail -3 "$ROOT/run/edge-mfr-check/install.log")"
fi
if [ -L "$ROOT/etc/systemd/system/multi-user.target.wants/edge-mfr.service" ] \
        && [ "$(in_root env SYSTEMD_OFFLINE=1 systemctl is-enabled edge-mfr.service 2>/dev/null)" = enabled ]; then
    pass "edge-mfr.service enabled without a running systemd"
else
    fail "edge-mfr.service not enabled"
fi
leftover="$(find "$ROOT$SRC" \( -user root -o -name build -o -name '*.egg-info' \) -print | head -3)"
if [ -z "$leftover" ]; then pass "no root-owned or build files left in the checkout"; else fail "left in the checkout: $leftover"; fi
VENV=/opt/edge-mfr/venv
np="$(in_root $VENV/bin/python -c 'import numpy; print(numpy.__version__)' 2>&1)" || true
if out="$(in_root $VENV/bin/python -c 'import picamera2, simplejpeg; print(simplejpeg.__file__)' 2>&1)"; then
    pass "picamera2 (stand-in, compiled simplejpeg from apt) imports in the installed venv with numpy $np"
else
    fail "picamera2 does not import in the installed venv (numpy $np): $(tail -1 <<<"$out")"
fi

if [ "$SUITE" = bookworm ]; then
    say "the same packages under numpy 2 (what the venv had before the Bookworm constraints)"
    in_root sh -c "rm -rf /tmp/numpy2 && python3 -m venv --system-site-packages /tmp/numpy2 \
        && /tmp/numpy2/bin/pip install -q 'numpy>=2' && echo $VENV/lib/python3.11/site-packages > /tmp/numpy2/lib/python3.11/site-packages/appliance.pth" \
        > /dev/null 2>&1 || fail "could not make the numpy 2 venv"
    out="$(in_root env EDGE_MFR_STATE_DIR=/tmp/numpy2-state EDGE_MFR_GPIO=mock EDGE_MFR_MODELS=$VENV/share/edge-mfr/models \
        /tmp/numpy2/bin/python -m edge_mfr.cli \
        run --source picamera2 --max-frames 1 2>&1)" && rc=0 || rc=$?
    if [ "$rc" -ne 0 ] && grep -q "numpy.dtype size changed" <<<"$out" && grep -q "simplejpeg" <<<"$out" && ! grep -q Traceback <<<"$out"; then
        pass "numpy 2: run refuses in one line naming simplejpeg and 'numpy.dtype size changed'"
    else
        fail "numpy 2 camera failure not reported as one line (rc $rc): $(tail -2 <<<"$out")"
    fi
else
    say "numpy 2 refusal: Bookworm only ($SUITE's apt numpy is $(in_root python3 -c 'import numpy; print(numpy.__version__)'), the venv has no numpy pin)"
fi

# The rest runs the installed venv plus what the demo and tests need (on Bookworm: the same constraints).
say "demo and test extras into the venv"
in_root $VENV/bin/pip install -q "${CONSTRAINTS[@]}" scikit-image pytest hypothesis \
    > "$ROOT/run/edge-mfr-check/extras.log" 2>&1 || fail "installing scikit-image/pytest: $(tail -2 "$ROOT/run/edge-mfr-check/extras.log")"
PY="$VENV/bin/python"

# --- 3. known-answer self-test per CPU ---------------------------------------------------------------
for cpu in cortex-a72 cortex-a76; do
    set_cpu "$cpu"
    if out="$(in_root sh -c "cd $SRC && $PY tools/known_answers.py --check" 2>&1)"; then
        pass "self-test on $cpu: $(grep -c ': OK' <<<"$out") models OK ($(grep -o 'worst cosine [0-9.]*' <<<"$out" | sort -k3 -n | head -1))"
    else
        fail "self-test on $cpu: $(tail -1 <<<"$out")"
    fi
done
set_cpu max
out="$(in_root env EDGE_MFR_STATE_DIR=/tmp/max-state EDGE_MFR_GPIO=mock $VENV/bin/edge-mfr run --source synthetic --max-frames 5 2>&1)" && rc=0 || rc=$?
if [ "$rc" -ne 0 ] && grep -q "known-answer self-test failed" <<<"$out" && ! grep -q Traceback <<<"$out"; then
    pass "QEMU_CPU=max: run refuses: $(grep 'self-test failed' <<<"$out" | head -1 | cut -c1-400)"
else
    fail "QEMU_CPU=max: run did not refuse with one line (rc $rc): $(tail -2 <<<"$out")"
fi
out="$(in_root env EDGE_MFR_STATE_DIR=/tmp/max-state $VENV/bin/edge-mfr doctor 2>&1)" && rc=0 || rc=$?
if [ "$rc" -ne 0 ] && grep -q "^FAIL  models" <<<"$out"; then
    pass "QEMU_CPU=max: doctor fails the models check"
else
    fail "QEMU_CPU=max: doctor did not fail the models (rc $rc): $(grep models <<<"$out" | head -1)"
fi
set_cpu cortex-a72

# --- 4. demo ----------------------------------------------------------------------------------------
say "demo"
if out="$(in_root sh -c "cd /tmp && EDGE_MFR_STATE_DIR=/tmp/demo-state $VENV/bin/edge-mfr demo --out /tmp/demo-out" 2>&1)" \
        && grep -q "^result: OK" <<<"$out"; then
    pass "demo: $(grep '^result' <<<"$out" | cut -c1-120)"
else
    fail "demo: $(tail -2 <<<"$out")"
fi

# --- 5. recognize against x86-64 ---------------------------------------------------------------------
# With the demo's gallery, so the fused embedders' decisions and similarities are compared too (the demo's
# photo of Eileen Collins is the one enrolled face among them).
say "recognize: emulated arm64 against this host"
mapfile -t images < <(cd "$DATA" && find lfw mfr2 -type f \( -name '*.jpg' -o -name '*.png' \) 2>/dev/null | sort | head -12)
GALLERY=/tmp/demo-out/gallery.npz
PHOTO=/tmp/demo-out/eileen_collins.png
(cd "$REPO" && EDGE_MFR_STATE_DIR=/nonexistent "$HOST_PY" -m edge_mfr.cli recognize --json --gallery "$ROOT$GALLERY" \
    "${images[@]/#/$DATA/}" "$ROOT$PHOTO" | sed -e "s#$DATA/##" -e "s#$ROOT/#/#") > "$ROOT/run/edge-mfr-check/recognize-x86.jsonl"
in_root sh -c "cd /data && EDGE_MFR_STATE_DIR=/nonexistent $VENV/bin/edge-mfr recognize --json --gallery $GALLERY ${images[*]} $PHOTO" \
    > "$ROOT/run/edge-mfr-check/recognize-arm64.jsonl" 2>/dev/null || true
n=$(( ${#images[@]} + 1 ))
if cmp -s "$ROOT/run/edge-mfr-check/recognize-x86.jsonl" "$ROOT/run/edge-mfr-check/recognize-arm64.jsonl"; then
    pass "recognize --json on $n images with the demo's gallery: byte-identical to x86-64"
elif out="$("$HOST_PY" "$REPO/tools/pi/compare_recognize.py" "$ROOT/run/edge-mfr-check/recognize-x86.jsonl" \
        "$ROOT/run/edge-mfr-check/recognize-arm64.jsonl" --summary)"; then
    pass "recognize --json with the demo's gallery, same faces and decisions as x86-64: $(tail -1 <<<"$out")"
else
    fail "recognize differs from x86-64: $(head -3 <<<"$out" | tr '\n' ';')"
fi

# --- 6. tests ----------------------------------------------------------------------------------------
if [ "$QUICK" -eq 0 ]; then
    say "tests: $TESTS"
    t=$(date +%s)
    if out="$(as_pi sh -c "cd $SRC && EDGE_MFR_DATA=/data $PY -m pytest -q -p no:cacheprovider $TESTS" 2>&1)"; then
        pass "tests: $(tail -1 <<<"$out") ($(( $(date +%s) - t )) s)"
    else
        fail "tests: $(tail -1 <<<"$out")"
    fi
fi

# --- 7. memory ---------------------------------------------------------------------------------------
if [ "$RSS" -eq 1 ]; then
    say "peak RSS under emulation, qemu's own share subtracted"
    for what in bench run; do
        # bench: the demo's photo, 5 iterations (its peak comes from loading the models and the first faces:
        # 133 MiB after 5 and after 50 on x86-64; the default 50 took over 28 minutes under emulation)
        if [ "$what" = bench ]; then
            cmd=("$VENV/bin/edge-mfr" bench --threads 1 --iterations 5 --image /tmp/demo-out/eileen_collins.png)
        else
            cmd=("$VENV/bin/edge-mfr" run --source /home/pi/edge-mfr-demo.mp4 --max-frames 130); fi
        if [ "$what" = run ]; then  # the demo's clip and gallery: the figure the README gives for x86-64
            cp "$ROOT/tmp/demo-out/door.mp4" "$ROOT/home/pi/edge-mfr-demo.mp4" 2>/dev/null || true
            rm -rf "$ROOT/tmp/rss-state" && mkdir -p "$ROOT/tmp/rss-state"
            cp "$ROOT/tmp/demo-out/gallery.npz" "$ROOT/tmp/rss-state/" 2>/dev/null || true
        fi
        line="$("$HOST_PY" "$REPO/tools/pi/qemu_rss.py" -- chroot "$ROOT" /usr/bin/env -i PATH=/usr/bin:/bin HOME=/root \
            QEMU_CPU="$QEMU_CPU" EDGE_MFR_STATE_DIR=/tmp/rss-state EDGE_MFR_GPIO=mock "${cmd[@]}" 2>&1 | tail -1)"
        pass "peak RSS of edge-mfr $what: $line"
    done
fi

say "done in $(( $(date +%s) - T0 )) s: ${#PASSED[@]} passed, ${#FAILED[@]} failed"
for f in "${FAILED[@]}"; do printf '  FAIL %s\n' "$f"; done
[ "${#FAILED[@]}" -eq 0 ]
