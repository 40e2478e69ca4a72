"""The README's "Use the tricks in your own model" example runs and does what it says."""

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
