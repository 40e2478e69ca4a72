"""The README's Python examples run and do what they say."""

from __future__ import annotations

import re
from pathlib import Path

from trickopt.tricks.early_stopping import STOPPERS

README = Path(__file__).parents[1] / "README.md"


def readme_example() -> str:
    text = README.read_text()
    section = text.split("## Use the tricks in your own model", 1)[1]
    section = section.split("\n## ", 1)[0]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match, "no ```python block under the heading"
    return match.group(1)


def test_readme_example_stops_early_and_makes_exact_zeros(capsys):
    example = readme_example()
    exec(compile(example, str(README), "exec"), {"__name__": "readme_example"})  # noqa: S102
    lines = [line for line in capsys.readouterr().out.splitlines() if "stopped at epoch" in line]
    assert len(lines) == 1, lines
    stop = re.search(r"stopped at epoch (\d+) of (\d+) \((\w+)\); best epoch (\d+)", lines[0])
    assert stop, lines[0]
    epoch, max_epochs, reason, best_epoch = stop.groups()
    # The printed maximum is the loop's; "None" would mean the loop ran out, not a stopper.
    assert f"for epoch in range(1, {int(max_epochs) + 1}):" in example, max_epochs
    assert reason in set(STOPPERS) - {"none"}, lines[0]
    assert int(best_epoch) < int(epoch) < int(max_epochs), lines[0]
    zeros = re.search(r"(\d+)% of weights are zero", lines[0])
    assert zeros and int(zeros.group(1)) > 0, lines[0]


def test_readme_python_study_example_runs_as_a_script(tmp_path):
    import subprocess
    import sys

    section = README.read_text().split("## See every trial in MLflow", 1)[1]
    section = section.split("\n## ", 1)[0]
    code = re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)
    study = Path(__file__).parents[1] / "studies" / "quickstart.yaml"
    (tmp_path / "example.py").write_text(code.replace('"studies/quickstart.yaml"',
                                                      repr(str(study))))
    done = subprocess.run([sys.executable, "example.py"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "'mode': 'train_val'" in done.stdout  # the refit ran and was printed
    assert (tmp_path / "mlflow.db").exists() and (tmp_path / "trickopt.journal").exists()


def test_readme_own_model_example_runs_as_a_script(tmp_path):
    import subprocess
    import sys

    section = README.read_text().split("## Your own model and data", 1)[1]
    section = section.split("\n## ", 1)[0]
    code = re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)
    (tmp_path / "example.py").write_text(code)
    done = subprocess.run([sys.executable, "example.py"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    width, scores = done.stdout.strip().splitlines()[-1].split(" ", 1)
    assert int(width) in (8, 32)
    assert "'test_accuracy':" in scores  # the best trial's own model, scored on test
    assert (tmp_path / "mlflow.db").exists()
