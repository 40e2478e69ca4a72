"""How much each trick helps, with confidence: the trick-effect report, and comparison studies.

`stats` (paired-seed statistics), `trials` (what the study's trials say), `replay` (early
stopping replayed on full curves), `jobs` (the report's trainings as trials of a companion
Optuna study), `report` (the phases and the table), `plots` and `output` (the files),
`study_step` (the study's `report:` step, handed to `run_study`).
`compare` and `compare_output`: a comparison study (the `compare:` section), its values tuned
alike and re-run on paired seeds, and its table and files.
Built on `trickopt.study`; `python -m trickopt.report` and `python -m trickopt.compare` are
their commands.
"""
