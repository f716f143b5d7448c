"""Stand-in for python3-lgpio (tools/pi/check.sh): importable, as apt's is, so the installer uses it and pip
fetches no lgpio."""
