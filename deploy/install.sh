#!/usr/bin/env bash
# Install edge-mfr as a systemd service on Raspberry Pi OS Bookworm or Trixie (64-bit).
#
#   sudo deploy/install.sh             install or upgrade from this checkout (safe to run again)
#   deploy/install.sh --dry-run        print every command instead of running it (no root needed)
#   sudo deploy/install.sh --image     image builds (pi-gen, a chroot): enable the unit without a running systemd
#
# What it does:
#   1. apt: python3-venv, python3-picamera2 and python3-libcamera (the camera stack only ships as Debian
#      packages), python3-lgpio (GPIO on every Pi model, the Pi 5 included)
#   2. a venv at /opt/edge-mfr/venv made by /usr/bin/python3 with --system-site-packages (so picamera2,
#      libcamera and lgpio from apt are visible in it), and this checkout installed into it (as .[pi], which
#      adds lgpio from PyPI, only when apt's lgpio does not import there)
#      (from a copy in a temporary folder, so no root-owned build/ is left in the checkout); on Bookworm
#      with deploy/constraints-bookworm.txt, which keeps numpy < 2: apt's python3-simplejpeg (imported by
#      picamera2) is built for Bookworm's numpy 1.24 and fails under numpy 2 ("numpy.dtype size changed")
#   3. the models/ folder copied to /opt/edge-mfr/venv/share/edge-mfr/models (where the package looks)
#   4. the system user edge-mfr, in the gpio and video groups
#   5. /etc/edge-mfr/config.toml from deploy/config.example.toml (root:edge-mfr 0640); an existing one is
#      never overwritten
#   6. /var/lib/edge-mfr (state: gallery, journal), owned by edge-mfr, mode 0700
#   7. systemd/edge-mfr.service installed and enabled (not started: edit the config and enroll first);
#      without a running systemd (a chroot, an image build, or --image) it is enabled offline
#
# Before changing anything it refuses a 32-bit userland (armhf Raspberry Pi OS boots a 64-bit kernel on a
# Pi 4/5, so `uname -m` says aarch64 but `dpkg --print-architecture` says armhf) and, after `apt-get update`,
# stops with a hint when the Raspberry Pi apt repository (python3-picamera2 and friends) is missing.
#
# Environment, for testing: EDGE_MFR_INSTALL_ARCH overrides `uname -m` (e.g. armv7l to see the refusal);
# EDGE_MFR_INSTALL_SYSTEMD=running|offline overrides the check for a running systemd (/run/systemd/system).
set -euo pipefail

VENV=/opt/edge-mfr/venv
CONF_DIR=/etc/edge-mfr
STATE_DIR=/var/lib/edge-mfr
UNIT_DIR=/etc/systemd/system
SERVICE_USER=edge-mfr
SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

DRY_RUN=0
IMAGE=0
usage() {
    sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//'
}
for arg in "$@"; do
    case "$arg" in
        --dry-run) DRY_RUN=1 ;;
        --image) IMAGE=1 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "install.sh: unknown option '$arg'" >&2; usage >&2; exit 2 ;;
    esac
done

# Every command that changes the system goes through run(): printed, and executed unless --dry-run.
run() {
    printf '+'
    printf ' %q' "$@"
    printf '\n'
    if [ "$DRY_RUN" -eq 0 ]; then
        "$@"
    fi
}

say() {
    printf '==> %s\n' "$*"
}

die() {
    printf 'install.sh: %s\n' "$*" >&2
    exit 1
}

# --- checks ----------------------------------------------------------------------------------------------
ARCH="${EDGE_MFR_INSTALL_ARCH:-$(uname -m)}"
case "$ARCH" in
    aarch64|arm64) PI_PACKAGES=(python3-picamera2 python3-libcamera python3-lgpio) ;;
    armv7l|armv6l|armhf)
        die "this is a 32-bit ARM system ($ARCH). edge-mfr needs Raspberry Pi OS (64-bit): the TFLite runtime (ai-edge-litert) has no 32-bit ARM builds. Flash the 64-bit image with Raspberry Pi Imager (a Pi 3, 4, 5 or Zero 2 W runs it) and run this script again." ;;
    x86_64)
        say "warning: $ARCH is not a Raspberry Pi; installing without the Pi camera and GPIO packages"
        PI_PACKAGES=() ;;
    *) die "unsupported architecture '$ARCH': edge-mfr is installed on 64-bit Raspberry Pi OS (aarch64)" ;;
esac
# The kernel can be 64-bit under a 32-bit userland (Raspberry Pi OS 32-bit on a Pi 4/5): pip would then
# fail on ai-edge-litert halfway through. The userland is what matters.
USERLAND="$(dpkg --print-architecture 2>/dev/null || true)"
LONG_BIT="$(getconf LONG_BIT 2>/dev/null || true)"
case "$USERLAND" in
    armhf|armel|i386)
        die "this is a 32-bit userland (dpkg architecture $USERLAND, kernel $ARCH): edge-mfr needs Raspberry Pi OS (64-bit), because the TFLite runtime (ai-edge-litert) has no 32-bit ARM builds. Flash the 64-bit image with Raspberry Pi Imager and run this script again; nothing was changed." ;;
esac
if [ "$LONG_BIT" = "32" ]; then
    die "this is a 32-bit userland (getconf LONG_BIT = 32, kernel $ARCH): edge-mfr needs Raspberry Pi OS (64-bit); nothing was changed."
fi

if [ -r /etc/os-release ]; then
    # shellcheck disable=SC1091
    . /etc/os-release
    case "${VERSION_CODENAME:-}" in
        bookworm|trixie) ;;
        *) say "warning: tested on Raspberry Pi OS Bookworm and Trixie, this is '${PRETTY_NAME:-unknown}'" ;;
    esac
fi
command -v apt-get >/dev/null || die "apt-get not found: this script is for Raspberry Pi OS / Debian"
if [ "$DRY_RUN" -eq 0 ] && [ "$(id -u)" -ne 0 ]; then
    die "run as root: sudo $0 (or $0 --dry-run to see what it would do)"
fi
for needed in pyproject.toml systemd/edge-mfr.service deploy/config.example.toml models/manifest.json; do
    if [ ! -f "$SRC/$needed" ]; then
        die "$SRC/$needed is missing: run this script from an edge-mfr checkout (with its models/)"
    fi
done
if [ "$DRY_RUN" -eq 1 ]; then
    say "dry run: printing the commands, changing nothing"
fi
# pip constraints per release: Bookworm's apt packages with compiled numpy code need numpy 1.x.
CONSTRAINTS=()
if [ "${VERSION_CODENAME:-}" = "bookworm" ]; then
    CONSTRAINTS=(--constraint "$SRC/deploy/constraints-bookworm.txt")
fi
# A running systemd can be told to reload; in a chroot or image build the unit is enabled offline.
SYSTEMD_STATE="${EDGE_MFR_INSTALL_SYSTEMD:-$([ -d /run/systemd/system ] && echo running || echo offline)}"
if [ "$IMAGE" -eq 0 ] && [ "$SYSTEMD_STATE" != running ]; then
    say "no running systemd (a chroot or an image build): the unit will be enabled offline"
    IMAGE=1
fi

# --- 1. system packages ----------------------------------------------------------------------------------
say "system packages"
run env DEBIAN_FRONTEND=noninteractive apt-get update
missing=()
for package in "${PI_PACKAGES[@]}"; do
    if ! apt-cache show "$package" >/dev/null 2>&1; then
        missing+=("$package")
    fi
done
if [ "${#missing[@]}" -gt 0 ]; then
    hint="apt does not know ${missing[*]}: they come from the Raspberry Pi apt repository (http://archive.raspberrypi.com/debian/, in /etc/apt/sources.list.d/raspi.list or raspi.sources on Raspberry Pi OS), which this system lacks. Install Raspberry Pi OS (64-bit), or add that repository with its key (the raspberrypi-archive-keyring package) and run this script again"
    if [ "$DRY_RUN" -eq 1 ]; then
        say "warning: $hint (a real run stops here)"
    else
        die "$hint; nothing else was changed."
    fi
fi
run env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
    python3 python3-venv python3-pip "${PI_PACKAGES[@]}"

# --- 2. virtual environment and the package --------------------------------------------------------------
say "virtual environment $VENV"
NEW_VENV=0
if [ ! -x "$VENV/bin/python" ]; then
    run install -d -m 0755 "$(dirname "$VENV")"
    run /usr/bin/python3 -m venv --system-site-packages "$VENV"
    NEW_VENV=1
else
    echo "    $VENV exists: upgrading the package in it"
fi
# pip builds a local project inside it (build/, *.egg-info): build a copy, so the user's checkout gets
# no root-owned files.
STAGE="$SRC"
if [ "$DRY_RUN" -eq 0 ]; then
    STAGE="$(mktemp -d /tmp/edge-mfr-src.XXXXXX)"
    trap 'rm -rf "$STAGE"' EXIT
    tar -C "$SRC" -cf - pyproject.toml README.md edge_mfr | tar -C "$STAGE" -xf -
fi
# The pin driver: apt's python3-lgpio (step 1) is visible in the venv; only where it is not does pip fetch
# lgpio (the [pi] extra). PyPI has no lgpio wheel for every Python (none for 3.13, Trixie's), and building it
# needs a compiler and the C library's headers.
EXTRA="[pi]"
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c 'import lgpio' >/dev/null 2>&1; then
    EXTRA=""
fi
if ! run "$VENV/bin/python" -m pip install --disable-pip-version-check --upgrade "${CONSTRAINTS[@]}" \
        "${STAGE}${EXTRA}"; then
    if [ "$NEW_VENV" -eq 1 ]; then
        rm -rf "$VENV"  # made by this run a moment ago: leave nothing half-installed behind
    fi
    die "pip could not install edge-mfr into $VENV (see above)"
fi

# --- 3. models -------------------------------------------------------------------------------------------
say "models"
run install -d -m 0755 "$VENV/share/edge-mfr/models"
for model in "$SRC"/models/*; do
    if [ -f "$model" ]; then
        run install -m 0644 "$model" "$VENV/share/edge-mfr/models/"
    fi
done

# --- 4. service user -------------------------------------------------------------------------------------
say "service user $SERVICE_USER"
for group in gpio video; do
    if ! getent group "$group" >/dev/null; then
        run groupadd --system "$group"
    fi
done
if ! getent passwd "$SERVICE_USER" >/dev/null; then
    run useradd --system --user-group --no-create-home --home-dir "$STATE_DIR" \
        --shell /usr/sbin/nologin "$SERVICE_USER"
else
    echo "    user $SERVICE_USER exists"
fi
run usermod --append --groups gpio,video "$SERVICE_USER"

# --- 5. configuration ------------------------------------------------------------------------------------
say "configuration $CONF_DIR/config.toml"
run install -d -m 0755 -o root -g root "$CONF_DIR"
if [ -e "$CONF_DIR/config.toml" ]; then
    echo "    $CONF_DIR/config.toml exists: left as it is (the new example is $SRC/deploy/config.example.toml)"
else
    run install -m 0640 -o root -g "$SERVICE_USER" "$SRC/deploy/config.example.toml" "$CONF_DIR/config.toml"
fi

# --- 6. state --------------------------------------------------------------------------------------------
say "state folder $STATE_DIR"
run install -d -m 0700 -o "$SERVICE_USER" -g "$SERVICE_USER" "$STATE_DIR"

# --- 7. systemd ------------------------------------------------------------------------------------------
say "systemd unit"
run install -m 0644 "$SRC/systemd/edge-mfr.service" "$UNIT_DIR/edge-mfr.service"
if [ "$IMAGE" -eq 1 ]; then
    run env SYSTEMD_OFFLINE=1 systemctl enable edge-mfr.service
else
    run systemctl daemon-reload
    run systemctl enable edge-mfr.service
fi

say "done. Next:"
cat <<EOF
    sudo nano $CONF_DIR/config.toml                  # camera, doors (check relay polarity!), MQTT
    sudo -u $SERVICE_USER $VENV/bin/edge-mfr doctor
    sudo -u $SERVICE_USER $VENV/bin/edge-mfr enroll "Jane Doe" photos/
    sudo systemctl start edge-mfr && journalctl -u edge-mfr -f
EOF
