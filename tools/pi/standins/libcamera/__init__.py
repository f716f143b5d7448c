"""Stand-in for python3-libcamera (tools/pi/check.sh)."""
