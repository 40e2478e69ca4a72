"""How much each trick helps, with confidence: the trick-effect report.

`stats` (paired-seed statistics), `trials` (what the study's trials say), `replay` (early
stopping replayed on full curves), `jobs` (the report's trainings as trials of a companion
Optuna study), `report` (the phases and the table), `plots` and `output` (the files).
Built on `trickopt.study`; `python -m trickopt.report` is its command.
"""
