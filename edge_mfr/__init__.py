"""edge-mfr: masked-face recognition for a Raspberry Pi door lock or kiosk."""

__version__ = "0.1.0"
