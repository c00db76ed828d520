"""Execution backends shipped with mirrorppr (registered as ``mirrorppr.backends`` entry points)."""
