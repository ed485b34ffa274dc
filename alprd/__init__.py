"""alprd: a privacy-first licence-plate-reader daemon for edge devices."""

__version__ = "0.1.0"
