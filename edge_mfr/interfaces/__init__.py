"""Ways people and systems talk to the appliance: the kiosk web server and the MQTT client with its
remote commands. Hardware and OS services (lock, systemd, journal) stay in :mod:`edge_mfr.device`."""
