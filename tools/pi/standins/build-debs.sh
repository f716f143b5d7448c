#!/usr/bin/env bash
# Run inside the arm64 root (tools/pi/check.sh): build the stand-in Debian packages python3-simplejpeg,
# python3-picamera2, python3-libcamera and python3-lgpio into a local apt repository at $1, compiled
# against the root's python3-numpy exactly as Raspberry Pi OS builds them.
set -euo pipefail
SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$1"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
ARCH="$(dpkg --print-architecture)"
SITE=usr/lib/python3/dist-packages

package() {  # name, depends, folders...
    local name="$1" depends="$2"
    shift 2
    local dir="$WORK/$name"
    mkdir -p "$dir/DEBIAN" "$dir/$SITE"
    for folder in "$@"; do
        cp -r "$WORK/build/$folder" "$dir/$SITE/"
    done
    cat > "$dir/DEBIAN/control" <<CONTROL
Package: $name
Version: 0.0.1-standin
Architecture: $ARCH
Maintainer: edge-mfr check <nobody@localhost>
Depends: $depends
Description: stand-in for the Raspberry Pi OS package (tools/pi/check.sh)
CONTROL
    dpkg-deb --root-owner-group --build "$dir" "$REPO/${name}_0.0.1_${ARCH}.deb" >/dev/null
}

mkdir -p "$WORK/build" "$REPO"
cp -r "$SRC/simplejpeg" "$SRC/picamera2" "$SRC/libcamera" "$SRC/lgpio" "$WORK/build/"
# shellcheck disable=SC2046  # python3-config --includes is a list of -I options
(cd "$WORK/build/simplejpeg" && cython3 -3 _jpeg.pyx -o _jpeg.c && \
    gcc -shared -fPIC -O1 $(python3-config --includes) -I"$(python3 -c 'import numpy; print(numpy.get_include())')" \
        _jpeg.c -o "_jpeg$(python3-config --extension-suffix)" && rm -f _jpeg.c _jpeg.pyx)
package python3-simplejpeg "python3-numpy" simplejpeg
package python3-libcamera "python3" libcamera
package python3-picamera2 "python3-simplejpeg, python3-libcamera, python3-numpy" picamera2
package python3-lgpio "python3" lgpio
(cd "$REPO" && for deb in *.deb; do
    dpkg-deb -f "$deb"
    echo "Filename: ./$deb"
    echo "Size: $(stat -c %s "$deb")"
    echo "SHA256: $(sha256sum "$deb" | cut -d' ' -f1)"
    echo
done > Packages)
echo "stand-in packages in $REPO: $(cd "$REPO" && echo ./*.deb)"
