"""mirrorppr: exemplar-based structural portrait retouching."""

__version__ = "0.1.0"
