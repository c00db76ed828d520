"""``mirrorppr bench``: load a benchmark in the official layout, score methods, write reports."""
