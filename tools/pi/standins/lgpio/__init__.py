"""Stand-in for python3-lgpio (tools/pi/check.sh); the venv gets lgpio from PyPI too."""
