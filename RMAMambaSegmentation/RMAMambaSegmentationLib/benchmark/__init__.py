"""Speed and memory measurements printed by ``rmamamba benchmark``."""
