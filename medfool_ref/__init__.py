"""medfool: an executable threat-modelling catalog of ways to fool medical imaging networks."""

__version__ = "0.1.0"
