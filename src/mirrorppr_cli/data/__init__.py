"""build-dataset: simulated LLW pairs, self-augmented quadruplets, benchmark sets, shards."""
