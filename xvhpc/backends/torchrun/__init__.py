"""torchrun: its launcher (one agent per node) and the RANK/WORLD_SIZE job environment."""
