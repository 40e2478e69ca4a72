"""No password reaches any output: messages, warnings, MLflow tags and params, artifacts.

The reference for what a URL's password is: SQLAlchemy's own parser (`make_url`), which is
what opens every RDB storage and MLflow store; and for http URLs, the credentials before the
last '@'. Passwords are generated over the whole printable range.
"""

from __future__ import annotations

import os
import string
import subprocess
import sys
from pathlib import Path

import pytest
from cli_helpers import study_cli
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy.engine import make_url

from trickopt.urls import mask_password, mask_passwords_in_text, remember_secrets

PRINTABLE = st.text(alphabet=string.printable.strip() + " ", min_size=3, max_size=24)


def _visible(password: str) -> bool:
    """A password that could only appear in the output by leaking (not a word of ours)."""
    return password.strip() == password and len(password.strip(string.punctuation)) >= 3


@settings(max_examples=300, deadline=None)
@given(password=PRINTABLE)
def test_a_masked_database_url_never_shows_the_password_sqlalchemy_reads(password):
    url = f"postgresql://user:{password}@127.0.0.1:5432/optuna"
    try:
        parsed = make_url(url)
    except Exception:  # noqa: BLE001 - not a URL SQLAlchemy takes: nothing to leak to it
        return
    if parsed.password is None or not _visible(str(parsed.password)):
        return
    assert mask_password(url) == "postgresql://user:***@127.0.0.1:5432/optuna"


@settings(max_examples=300, deadline=None)
@given(password=PRINTABLE)
def test_a_remembered_password_is_masked_in_any_text(password):
    if not _visible(password):
        return
    url = f"postgresql://user:{password}@db:5432/optuna"
    remember_secrets(url)
    message = f"could not connect with {url!r}: password {password} rejected"
    assert password not in mask_passwords_in_text(message)


@pytest.mark.parametrize("url", [
    "postgresql://u:s3cr/etpw@127.0.0.1:1/db",
    "postgresql://u:s3cr#et?pw@127.0.0.1:1/db",
    "postgresql://u:s3cr@etpw@127.0.0.1:1/db",
    "http://u:s3cr/etpw@127.0.0.1:1",
    "postgresql://u@127.0.0.1:1/db?password=s3cretpw",
])
def test_masking_hides_passwords_that_urlsplit_does_not_see(url):
    assert "s3cr" not in mask_password(url) and "etpw" not in mask_password(url)


def _process(cwd, *args):
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    return subprocess.run([sys.executable, "-m", "trickopt.study", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300, env=env)


def _cli(cwd, *args):
    # In this process (tests/cli_helpers.py): it starts and ends with the passwords it found.
    return study_cli(cwd, *args, timeout=300)


@pytest.mark.parametrize("args", [
    ["--storage", "postgresql://u:s3cr/etpw@127.0.0.1:1/db"],
    ["--storage", "postgresql://u:s3cr etpw@127.0.0.1:notaport/db"],
    ["--tracking-uri", "http://u:s3cr/etpw@127.0.0.1:1"],
    ["--tracking-uri", "http://u:s3cretpw@127.0.0.1:1"],
    ["--tracking-uri", "foo://u:s3cretpw@127.0.0.1/x"],
])
def test_refused_urls_are_refused_without_their_password(tmp_path, args):
    done = _cli(tmp_path, "--no-progress", *args)
    assert done.returncode == 2, done.stdout + done.stderr
    for fragment in ("s3cr", "etpw"):
        assert fragment not in done.stdout + done.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.postgres
def test_a_study_on_a_real_database_shows_its_password_nowhere(postgres, tmp_path):
    """A password with '/', '#', '?' and a space, on a working PostgreSQL, for both the Optuna
    storage and the MLflow store: stdout, stderr, every run's tags and params, and every
    artifact are searched for it."""
    from mlflow.tracking import MlflowClient

    password = "s3cr/et#p?w rd"
    postgres.sql(f"CREATE ROLE nasty LOGIN PASSWORD '{password}' CREATEDB")
    urls = []
    for _ in range(2):
        database = postgres.new_database().rsplit("/", 1)[1]
        postgres.sql(f"ALTER DATABASE {database} OWNER TO nasty")
        urls.append(f"postgresql://nasty:{password}@127.0.0.1:{postgres.port}/{database}")
    study_file = tmp_path / "nasty.yaml"
    study_file.write_text(f"study:\n  storage: '{urls[0]}'\n")
    # A process of its own: the tracking process's output is searched too.
    done = _process(tmp_path, str(study_file), "--tracking-uri", urls[1], "--n-trials", "2",
                    "--no-progress", "--study-name", "nasty", "--set", "data.name=digits",
                    "--set", "model.arch=mlp",
                    "--set", "model.width=8", "--set", "train.max_epochs=2")
    assert done.returncode == 0, done.stdout + done.stderr
    seen = [done.stdout, done.stderr]
    from trickopt.urls import with_installed_driver

    client = MlflowClient(with_installed_driver(urls[1]))
    experiment = client.get_experiment_by_name("nasty")
    for run in client.search_runs([experiment.experiment_id]):
        seen += [str(run.data.tags), str(run.data.params)]
        folder = Path(client.download_artifacts(run.info.run_id, "", str(tmp_path / "dl")))
        seen += [p.read_text(errors="replace") for p in folder.rglob("*") if p.is_file()
                 and p.suffix != ".png"]
    for fragment in (password, "s3cr", "p?w rd"):
        assert not [text for text in seen if fragment in text], fragment
