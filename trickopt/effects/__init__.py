"""How much each trick helps, with confidence: paired-seed statistics for the trick-effect
report (`stats.py`). Depends on numpy and scipy only."""
