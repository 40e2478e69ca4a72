"""The README's Python examples run and do what they say."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).parents[1] / "README.md"


def readme_example() -> str:
    text = README.read_text()
    section = text.split("## Use the tricks in your own model", 1)[1]
    section = section.split("\n## ", 1)[0]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match, "no ```python block under the heading"
    return match.group(1)


def test_readme_example_stops_early_and_makes_exact_zeros(capsys):
    code = compile(readme_example(), str(README), "exec")
    exec(code, {"__name__": "readme_example"})  # noqa: S102 - our own README, on purpose
    lines = [line for line in capsys.readouterr().out.splitlines() if "stopped at epoch" in line]
    assert len(lines) == 1, lines
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
