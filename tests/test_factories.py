"""Your own model and data in a study: model and data factories, end to end and refused.

The factories live in modules written next to each test's study file (so the study must find
them there), or in `tests/factory_helpers.py` (importable by name, for spawned workers).
"""

from __future__ import annotations

import itertools
import textwrap

import numpy as np
import optuna
import pytest
import torch
from cli_helpers import study_cli

from trickopt.config import DataConfig
from trickopt.data import load_data, splits_from_arrays
from trickopt.study.config import load_study_config
from trickopt.study.runner import run_study
from trickopt.study.storage import DEFAULT_JOURNAL, open_storage

_names = itertools.count()

# A small classification task (the model must learn a linear rule) and a tiny MLP factory.
DATA = """
import numpy as np
from trickopt.data import splits_from_arrays

def load(config):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 6)).astype("float32")
    y = (x[:, 0] + x[:, 1] > 0).astype(int)
    return splits_from_arrays(x, y, config)
"""
MODEL = """
from torch import nn

def build(tricks, input_shape, n_classes, *, width=8, depth=1):
    layers, features = [nn.Flatten()], input_shape[0]
    for _ in range(depth):
        layers += tricks.block(nn.Linear(features, width), width)
        features = width
    return nn.Sequential(*layers, nn.Linear(features, n_classes))
"""
STUDY = """
data: {{factory: "{data}:load"}}
model:
  factory: "{model}:build"
  params: {params}
train: {{max_epochs: 6}}  # > the warm-up range of all_tricks (up to 5 epochs)
study: {{name: own, n_trials: {n_trials}}}
tracking: {{enabled: false}}
refit: none
"""


def write_study(folder, *, model: str = MODEL, data: str = DATA, params: str = "{width: 8}",
                n_trials: int = 3, extra: str = "") -> str:
    """A study file and its two factory modules (under fresh module names) in `folder`."""
    index = next(_names)
    model_module, data_module = f"user_models_{index}", f"user_data_{index}"
    (folder / f"{model_module}.py").write_text(textwrap.dedent(model))
    (folder / f"{data_module}.py").write_text(textwrap.dedent(data))
    study = STUDY.format(data=data_module, model=model_module, params=params,
                         n_trials=n_trials) + extra
    (folder / "study.yaml").write_text(study)
    return "study.yaml"


def trials_of(folder, name: str = "own") -> list[optuna.trial.FrozenTrial]:
    storage = open_storage(str(folder / DEFAULT_JOURNAL))
    return optuna.load_study(study_name=name, storage=storage).trials


def test_a_study_file_trains_its_own_model_factory_and_searches_its_params(tmp_path):
    study = write_study(tmp_path, params="{width: {choices: [4, 16]}, depth: {low: 1, high: 2}}",
                        n_trials=4)
    done = study_cli(tmp_path, study, "--no-progress")
    assert done.returncode == 0, done.stderr
    trials = trials_of(tmp_path)
    assert len(trials) == 4
    for trial in trials:
        assert trial.params["width"] in (4, 16) and trial.params["depth"] in (1, 2)
        # The width the trial searched is the width its model was built with.
        assert trial.user_attrs["params"]["width"] == trial.params["width"]
    assert "searched but ignored" not in done.stdout
    assert "test accuracy, best trial's own model" in done.stdout


def test_the_trials_model_is_the_factorys_model_with_the_trials_tricks(tmp_path):
    # The factory records what it was given; a trial with norm=batch must get BatchNorm.
    model = MODEL + textwrap.dedent("""
        import json, os
        _build = build
        def build(tricks, input_shape, n_classes, **params):
            model = _build(tricks, input_shape, n_classes, **params)
            with open("built.jsonl", "a") as log:
                log.write(json.dumps([tricks.norm_kind, tricks.dropout_rate,
                                      [type(m).__name__ for m in model]]) + "\\n")
            return model
    """)
    study = write_study(tmp_path, model=model, n_trials=3)
    done = study_cli(tmp_path, study, "--no-progress", "--set", "search.norm=batch",
                     "--set", "search.dropout=0.25")
    assert done.returncode == 0, done.stderr
    import json

    built = [json.loads(line) for line in (tmp_path / "built.jsonl").read_text().splitlines()]
    # The check before the trials, one model per trial, then the best trial's model, rebuilt
    # to be scored on test.
    assert len(built) == 1 + 3 + 1
    for norm, dropout, layers in built[1:]:
        assert (norm, dropout) == ("batch", 0.25)
        assert layers in (["Flatten", "Linear", "BatchNorm1d", "ReLU", "Dropout", "Linear"],
                          ["Flatten", "Linear", "ReLU", "BatchNorm1d", "Dropout", "Linear"])


def test_a_searched_trick_the_model_never_asks_for_is_named_before_the_trials(tmp_path):
    blind = """
        from torch import nn
        def build(tricks, input_shape, n_classes, *, width=8):
            return nn.Sequential(nn.Linear(input_shape[0], width), nn.ReLU(),
                                 nn.Linear(width, n_classes))
    """
    study = write_study(tmp_path, model=blind, n_trials=2)
    done = study_cli(tmp_path, study, "--no-progress")
    assert done.returncode == 0, done.stderr
    warned = [line for line in done.stderr.splitlines() if line.startswith("warning: search.")]
    assert {line.split()[1] for line in warned} == {"search.norm", "search.norm_position",
                                                    "search.dropout"}
    assert "searched but ignored by the model (no effect, whatever their importance): " \
           "norm, norm_position, dropout" in done.stdout


def test_a_factory_that_raises_in_one_trial_fails_that_trial_alone(tmp_path):
    fragile = MODEL.replace("    layers, features", "    if width == 13:\n"
                            "        raise RuntimeError('width 13 is cursed')\n"
                            "    layers, features")
    study = write_study(tmp_path, model=fragile, params="{width: {choices: [8, 13]}}",
                        n_trials=4)
    done = study_cli(tmp_path, study, "--no-progress", "--set", "study.sampler=random",
                     "--set", "study.seed=3")
    assert done.returncode == 0, done.stderr
    trials = trials_of(tmp_path)
    failed = [t for t in trials if t.state == optuna.trial.TrialState.FAIL]
    others = [t for t in trials if t.state != optuna.trial.TrialState.FAIL]
    assert failed and others, [t.params for t in trials]
    assert all(t.params["width"] == 13 for t in failed)
    assert all(t.user_attrs["error"] == "RuntimeError: width 13 is cursed" for t in failed)
    assert all(t.params["width"] == 8 for t in others)


@pytest.mark.parametrize("model, params, expected", [
    ("", "{width: 8}", "model.factory: module 'MODULE' has no 'build'"),
    ("build = 3\n", "{width: 8}", "model.factory: MODULE:build is a int, not a function"),
    ("import no_such_module_anywhere\n", "{width: 8}",
     "model.factory: cannot import module 'MODULE' (No module named 'no_such_module_anywhere'); "
     "put it next to the study file or on PYTHONPATH"),
    (MODEL, "{widht: 8}", "model.params: model.factory MODULE:build takes no 'widht'; it "
                          "takes: width, depth"),
    (MODEL.replace("*, width=8", "*, width"), "{depth: 1}",
     "model.params: model.factory MODULE:build requires 'width'; declare it under params"),
    ("def build():\n    pass\n", "{}", "model: model.factory MODULE:build must take 3 "
                                       "positional arguments; its signature is ()"),
    ("def build(tricks, shape, n):\n    return 'a model'\n", "{}",
     "model.factory MODULE:build: returned a str; a model factory must return a "
     "torch.nn.Module"),
    ("from torch import nn\ndef build(tricks, shape, n):\n    return nn.Linear(shape[0], 3)\n",
     "{}", "model.factory MODULE:build: the model's output for a batch of 2 has shape (2, 3); "
           "the classification task needs (2, 2) (n_classes logits)"),
    ("def build(tricks, shape, n):\n    raise KeyError('oops')\n", "{}",
     "model.factory MODULE:build: building the model raised KeyError: 'oops'"),
    (MODEL, "{dropout: 0.5}", "model.params.dropout: is trickopt's own knob (search.dropout); "
                              "the model takes it from `tricks`, the study searches it"),
])
def test_a_model_factory_that_cannot_work_is_one_line_exit_2_and_nothing_created(
        tmp_path, model, params, expected):
    study = write_study(tmp_path, model=model, params=params)
    module = next(p.stem for p in tmp_path.glob("user_models_*.py"))
    before = sorted(p.name for p in tmp_path.iterdir())
    done = study_cli(tmp_path, study, "--no-progress", "--set", "tracking.enabled=true")
    assert done.returncode == 2
    assert done.stderr.strip() == "error: " + expected.replace("MODULE", module)
    assert sorted(p.name for p in tmp_path.iterdir()) == before


@pytest.mark.parametrize("data, expected", [
    ("def load(config):\n    return [1, 2, 3]\n",
     "error: data.factory MODULE:load: returned list; expected trickopt.data.Splits (build it "
     "with trickopt.data.splits_from_arrays) or a tuple (x, y) of arrays"),
    ("def load(config):\n    raise OSError('the bucket is gone')\n",
     "error: data.factory MODULE:load raised OSError: the bucket is gone"),
    ("import torch\nfrom trickopt.data import Splits\ndef load(config):\n"
     "    e, x, y = torch.zeros(0, 3), torch.zeros(8, 3), torch.zeros(8, dtype=torch.long)\n"
     "    return Splits(x, y, e, y[:0], x, y, n_classes=2, input_shape=(3,))\n",
     "error: data.factory MODULE:load: Splits.x_val is empty; every split needs a tensor with "
     "at least one row"),
    ("def load():\n    pass\n", "error: data: data.factory MODULE:load must take 1 positional "
                                 "arguments; its signature is ()"),
])
def test_a_data_factory_that_cannot_work_is_one_line_exit_2_and_nothing_created(
        tmp_path, data, expected):
    study = write_study(tmp_path, data=data)
    module = next(p.stem for p in tmp_path.glob("user_data_*.py"))
    before = sorted(p.name for p in tmp_path.iterdir())
    done = study_cli(tmp_path, study, "--no-progress", "--set", "tracking.enabled=true")
    assert done.returncode == 2
    assert done.stderr.strip() == expected.replace("MODULE", module)
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_regression_end_to_end_reports_rmse(tmp_path):
    data = """
        import numpy as np
        from trickopt.data import splits_from_arrays

        def load(config):
            rng = np.random.default_rng(1)
            x = rng.normal(size=(400, 5))
            y = x @ np.array([1.0, -2.0, 0.5, 0.0, 3.0]) + 0.1 * rng.normal(size=400)
            return splits_from_arrays(x, y, config, task="regression")
    """
    model = MODEL  # n_classes is the number of outputs: one here
    study = write_study(tmp_path, model=model, data=data, n_trials=3,
                        extra="refit: train_val\n")
    done = study_cli(tmp_path, study, "--no-progress", "--set", "study.metric=val_rmse",
                     "--set", "search.stopper=none")
    assert done.returncode == 0, done.stderr
    trials = trials_of(tmp_path)
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert complete and all(t.value > 0 for t in complete)
    assert "test rmse, best trial's own model:" in done.stdout
    assert "test rmse, refit on train+val" in done.stdout
    assert "accuracy" not in done.stdout


def test_a_classification_metric_on_regression_data_is_refused(tmp_path):
    data = DATA.replace("return splits_from_arrays(x, y, config)",
                        "return splits_from_arrays(x, x[:, 0], config, task='regression')")
    study = write_study(tmp_path, data=data)
    done = study_cli(tmp_path, study, "--no-progress", "--set", "study.metric=val_accuracy")
    assert done.returncode == 2
    assert done.stderr.strip() == ("error: study.metric: val_accuracy does not exist for "
                                   "regression data; use val_loss or val_rmse")


def test_python_api_with_two_spawned_workers_imports_the_factories_by_name(tmp_path,
                                                                           monkeypatch):
    import factory_helpers

    monkeypatch.chdir(tmp_path)
    config = load_study_config(None, ["study.name=api", "study.n_trials=4", "study.workers=2",
                                      "train.max_epochs=2", "tracking.enabled=false",
                                      "refit=none", "model.params={width: {choices: [4, 8]}}"],
                               model=factory_helpers.build, data=factory_helpers.load)
    assert config.model.factory == "factory_helpers:build"
    result = run_study(config, progress=False)
    trials = result.study.trials
    assert len(trials) == 4
    assert {t.state for t in trials} == {optuna.trial.TrialState.COMPLETE} | (
        {optuna.trial.TrialState.PRUNED} & {t.state for t in trials})
    # Both workers trained: each records its own process as the trial's worker.
    assert len({t.user_attrs["worker"] for t in trials}) == 2


def test_python_api_refuses_a_factory_spawned_workers_cannot_import(tmp_path):
    def local_build(tricks, input_shape, n_classes):  # nested: no import name
        raise AssertionError("never built")

    from trickopt.config import ConfigError

    with pytest.raises(ConfigError, match=r"model.factory: '.*local_build' cannot be imported "
                                          r"by name, and study.workers=2"):
        load_study_config(None, ["study.workers=2"], model=local_build)


def test_run_study_takes_the_factories_as_arguments(tmp_path, monkeypatch):
    import factory_helpers

    monkeypatch.chdir(tmp_path)
    config = load_study_config(None, ["study.name=args", "study.n_trials=2",
                                      "train.max_epochs=2", "tracking.enabled=false",
                                      "refit=none"])
    result = run_study(config, model=factory_helpers.build, data=factory_helpers.load,
                       progress=False)
    assert len(result.study.trials) == 2
    assert result.study.trials[0].user_attrs["params"]  # trained, with its parameters


# --- MNIST-1D --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mnist1d_reference():
    from mnist1d.data import get_dataset_args, make_dataset

    return make_dataset(get_dataset_args())


def test_mnist1d_keeps_the_canonical_test_split_and_carves_val_from_train(mnist1d_reference,
                                                                          tmp_path):
    ref = mnist1d_reference
    splits = load_data(DataConfig(name="mnist1d", scaling="none", root=str(tmp_path)))
    assert splits.input_shape == (1, 40) and splits.n_classes == 10
    assert len(splits.y_test) == len(ref["y_test"]) == 1000
    torch.testing.assert_close(splits.x_test[:, 0].numpy(), ref["x_test"].astype(np.float32))
    assert np.array_equal(splits.y_test.numpy(), ref["y_test"])
    assert len(splits.y_train) + len(splits.y_val) == len(ref["y"]) == 4000
    assert len(splits.y_val) == 800
    # val and train together are exactly the package's training rows.
    pooled = np.concatenate([splits.x_train[:, 0].numpy(), splits.x_val[:, 0].numpy()])
    assert sorted(map(tuple, pooled.round(5))) == \
        sorted(map(tuple, ref["x"].astype(np.float32).round(5)))


def test_mnist1d_is_deterministic_and_cached(tmp_path, monkeypatch):
    first = load_data(DataConfig(name="mnist1d", root=str(tmp_path)))
    assert list(tmp_path.glob("mnist1d-*.npz"))

    import mnist1d.data

    def no_generation(*args, **kwargs):
        raise AssertionError("generated again despite the cache")

    monkeypatch.setattr(mnist1d.data, "make_dataset", no_generation)
    second = load_data(DataConfig(name="mnist1d", root=str(tmp_path)))
    for name in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
        assert torch.equal(getattr(first, name), getattr(second, name)), name


def test_mnist1d_generation_leaves_the_global_random_state_alone(tmp_path):
    np.random.seed(123)
    expected = np.random.rand()
    np.random.seed(123)
    load_data(DataConfig(name="mnist1d", root=str(tmp_path)))  # generates: no cache here
    assert np.random.rand() == expected


def test_splits_from_arrays_regression_has_one_output_column_and_no_stratification():
    x = np.arange(200, dtype=float).reshape(100, 2)
    y = np.arange(100, dtype=float)
    splits = splits_from_arrays(x, y, DataConfig(scaling="none"), task="regression")
    assert splits.task == "regression" and splits.n_classes == 1
    assert splits.y_train.shape == (60, 1) and splits.y_train.dtype == torch.float32
    # Rows stay paired: each x row is (2k, 2k+1) and its target k.
    for xs, ys in ((splits.x_train, splits.y_train), (splits.x_test, splits.y_test)):
        assert torch.equal(xs[:, 0] / 2, ys[:, 0])
    pooled = torch.cat([splits.y_train, splits.y_val, splits.y_test])[:, 0]
    assert sorted(pooled.tolist()) == list(range(100))
