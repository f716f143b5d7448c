#!/usr/bin/env bash
# Install edge-mfr as a systemd service on Raspberry Pi OS Bookworm or Trixie (64-bit).
#
#   sudo deploy/install.sh             install or upgrade from this checkout (safe to run again)
#   deploy/install.sh --dry-run        print every command instead of running it (no root needed)
#
# What it does:
#   1. apt: python3-venv, python3-picamera2 and python3-libcamera (the camera stack only ships as Debian
#      packages), python3-lgpio (GPIO on every Pi model, the Pi 5 included)
#   2. a venv at /opt/edge-mfr/venv made by /usr/bin/python3 with --system-site-packages (so picamera2,
#      libcamera and lgpio from apt are visible in it), and this checkout installed into it as .[pi]
#   3. the models/ folder copied to /opt/edge-mfr/venv/share/edge-mfr/models (where the package looks)
#   4. the system user edge-mfr, in the gpio and video groups
#   5. /etc/edge-mfr/config.toml from deploy/config.example.toml (root:edge-mfr 0640); an existing one is
#      never overwritten
#   6. /var/lib/edge-mfr (state: gallery, journal), owned by edge-mfr, mode 0700
#   7. systemd/edge-mfr.service installed and enabled (not started: edit the config and enroll first)
#
# Environment, for testing: EDGE_MFR_INSTALL_ARCH overrides `uname -m` (e.g. armv7l to see the refusal).
set -euo pipefail

VENV=/opt/edge-mfr/venv
CONF_DIR=/etc/edge-mfr
STATE_DIR=/var/lib/edge-mfr
UNIT_DIR=/etc/systemd/system
SERVICE_USER=edge-mfr
SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

DRY_RUN=0
usage() {
    sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//'
}
for arg in "$@"; do
    case "$arg" in
        --dry-run) DRY_RUN=1 ;;
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

# --- 1. system packages ----------------------------------------------------------------------------------
say "system packages"
run env DEBIAN_FRONTEND=noninteractive apt-get update
run env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
    python3 python3-venv python3-pip "${PI_PACKAGES[@]}"

# --- 2. virtual environment and the package --------------------------------------------------------------
say "virtual environment $VENV"
if [ ! -x "$VENV/bin/python" ]; then
    run install -d -m 0755 "$(dirname "$VENV")"
    run /usr/bin/python3 -m venv --system-site-packages "$VENV"
else
    echo "    $VENV exists: upgrading the package in it"
fi
run "$VENV/bin/python" -m pip install --disable-pip-version-check --upgrade "${SRC}[pi]"

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
run systemctl daemon-reload
run systemctl enable edge-mfr.service

say "done. Next:"
cat <<EOF
    sudo nano $CONF_DIR/config.toml                  # camera, doors (check relay polarity!), MQTT
    sudo -u $SERVICE_USER $VENV/bin/edge-mfr doctor
    sudo -u $SERVICE_USER $VENV/bin/edge-mfr enroll "Jane Doe" photos/
    sudo systemctl start edge-mfr && journalctl -u edge-mfr -f
EOF
