"""build-dataset: simulated and professional-style pairs, self-augmented quadruplets,
benchmark sets, shards."""
