"""unixcxr: UniX, one chest X-ray model that writes reports and draws images."""

__version__ = "0.1.0"
