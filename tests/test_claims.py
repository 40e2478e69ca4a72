"""The claim studies of studies/claims/ (issue 13): each runs at a tiny budget so none rots,
each file's first line is the command that reproduces it, and each has its committed report.
CI does not regenerate the committed figures (`python studies/claims/run_all.py` does)."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest

from trickopt.study.config import load_study_config

CLAIMS = Path(__file__).resolve().parents[1] / "studies" / "claims"
FILES = sorted(CLAIMS.glob("*.yaml"))
TINY = ["compare.trials=1", "compare.seeds=2", "train.max_epochs=1"]


def _run_all():
    spec = importlib.util.spec_from_file_location("run_all", CLAIMS / "run_all.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_there_are_claim_studies():
    assert len(FILES) >= 3, [f.name for f in FILES]


@pytest.mark.parametrize("path", FILES, ids=[f.stem for f in FILES])
def test_a_claim_file_states_its_command_claim_and_baseline(path):
    first = path.read_text().splitlines()[0]
    assert first == (f"# python -m trickopt.compare studies/claims/{path.name} "
                     "--out studies/claims/reports")
    config = load_study_config(str(path), [])
    assert config.compare.claim and config.compare.baseline
    assert not config.tracking.enabled  # a report to commit, not a run to browse


@pytest.mark.parametrize("path", FILES, ids=[f.stem for f in FILES])
def test_a_claim_has_its_committed_report(path):
    name = load_study_config(str(path), []).study.name
    folder = CLAIMS / "reports" / f"compare-{name}"
    report = json.loads((folder / "report.json").read_text())
    assert report["claim"] == load_study_config(str(path), []).compare.claim
    assert report["claim_verdict"]  # it was judged
    assert len(report["seeds"]) >= 6  # the committed one ran at its real budget
    assert (folder / "isolation.png").stat().st_size > 0
    assert "**Verdict:**" in (folder / "report.md").read_text()


def test_every_claim_study_runs_at_a_tiny_budget(tmp_path, capsys):
    sets = [f"--set={o}" for o in TINY]
    assert _run_all().main(["--out", str(tmp_path), *sets]) == 0
    for path in FILES:
        config = load_study_config(str(path), [])
        folder = tmp_path / f"compare-{config.study.name}"
        report = json.loads((folder / "report.json").read_text())
        assert report["claim"] == config.compare.claim
        assert report["baseline"] is True and report["seeds"] == [1, 2]
        assert report["claim_verdict"], path.name
        text = (folder / "report.md").read_text()
        for part in ("**Claim:**", "**Verdict:**", "**Setting:**", "**Cost:**"):
            assert part in text, (path.name, part)
    summary = (tmp_path / "SUMMARY.md").read_text()
    for path in FILES:  # one row per claim, linking its report
        assert f"[{path.stem}](compare-" in summary, path.name
    # the claim a comparison cannot express ran too, at its smallest
    refit = json.loads((tmp_path / "refit-train-val" / "report.json").read_text())
    assert refit["seeds"] == [1, 2] and refit["claim_verdict"]
    assert set(refit["effects"]) == {"own", "train only"}
    assert "[refit_train_val](refit-train-val/report.md)" in summary
    # The hand-written finding goes into a report without training again, once, in place.
    import yaml

    path = FILES[0]
    raw = yaml.safe_load(path.read_text())
    raw["compare"]["finding"] = "It shows this."
    raw.pop("extends")  # not read by refresh_finding
    edited = tmp_path / path.name
    edited.write_text(yaml.safe_dump(raw))
    module = _run_all()
    for _ in range(2):
        module.refresh_finding(edited, tmp_path)
    folder = tmp_path / f"compare-{raw['study']['name']}"
    text = (folder / "report.md").read_text()
    assert text.count("**What this shows**") == 1
    assert text.index("It shows this.") < text.index("```")
    assert json.loads((folder / "report.json").read_text())["finding"] == "It shows this."


def test_the_refit_claim_has_its_committed_report_and_its_row():
    report = json.loads((CLAIMS / "reports" / "refit-train-val" / "report.json").read_text())
    assert len(report["seeds"]) >= 6 and report["claim_verdict"]
    # "train only" replays the trial's own training up to its best epoch: same model
    assert all(row["own"] == row["train only"] for row in report["per_seed"])
    readme = (CLAIMS.parents[1] / "README.md").read_text()
    row = next(line for line in readme.splitlines() if "[refit_train_val]" in line)
    assert "studies/claims/reports/refit-train-val/report.md" in row
    assert f"**{re.split(r'[:;]', report['claim_verdict'])[0]}**" in row


def test_the_readme_sums_up_every_committed_verdict():
    readme = (CLAIMS.parents[1] / "README.md").read_text()
    section = readme[readme.index("## What the tricks did"):]
    for path in FILES:
        name = load_study_config(str(path), []).study.name
        report = json.loads((CLAIMS / "reports" / f"compare-{name}" / "report.json")
                            .read_text())
        verdict = re.split(r"[:;]", report["claim_verdict"])[0]  # supported, ...
        row = next((line for line in section.splitlines() if f"[{path.stem}]" in line), "")
        assert f"studies/claims/reports/compare-{name}/report.md" in row, path.name
        assert f"**{verdict}**" in row, (path.name, verdict)


def test_run_all_refuses_an_unknown_name(capsys):
    with pytest.raises(SystemExit, match="no claim study named nope; allowed: "):
        _run_all().main(["nope"])
