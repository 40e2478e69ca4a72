"""The training engine against independent references.

References: plain `F.cross_entropy` on the returned model (not `trickopt.train.evaluate`),
Keras' and Prechelt's stop rules re-stated over the recorded validation losses, the step
schedule's closed form, a count of exactly-zero weights, and counting wrappers that watch
what the model is fed. Runs use small synthetic data on one CPU thread: each fit takes
milliseconds.
"""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from trickopt.config import DataConfig, ModelConfig, TrainConfig
from trickopt.data import load_data
from trickopt.models import build_model
from trickopt.train import History, fit, refit, resolve_device
from trickopt.tricks.early_stopping import StopReason

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture(scope="module")
def data():
    # 300 rows -> 180 / 60 / 60; 3 classes; a 64-unit MLP overfits it within ~10 epochs.
    return load_data(DataConfig(name="synthetic", n_samples=300, n_features=10, n_classes=3))


def make_model(data, *, seed: int = 0, **model_options) -> nn.Module:
    torch.manual_seed(seed)
    options = {"width": 64, **model_options}
    return build_model(ModelConfig(**options), data.input_shape, data.n_classes)


def train_config(**options) -> TrainConfig:
    defaults = {"max_epochs": 40, "lr": 1e-2, "batch_size": 32, "threads": 1,
                "device": "cpu", "stopper": "none", "stopper_params": {}}
    return TrainConfig(**{**defaults, **options})


def plain_val_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Mean cross-entropy and accuracy, computed here without trickopt.train.evaluate."""
    model.eval()
    with torch.no_grad():
        logits = model(x)
    loss = F.cross_entropy(logits, y).item()
    accuracy = (logits.argmax(dim=1) == y).double().mean().item()
    return loss, accuracy


def without_timing(history: History) -> list[dict]:
    return [{k: v for k, v in row.items() if k != "epoch_seconds"} for row in history.epochs]


class CountRows(nn.Module):
    """Wraps a model; counts the rows it sees in train mode (training batches only)."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner
        self.train_rows = 0

    def forward(self, x):
        if self.training:
            self.train_rows += len(x)
        return self.inner(x)


class NanFromEpoch(nn.Module):
    """Wraps a model; from epoch `first_nan_epoch` on its logits are nan (gradients too).

    `fit` validates once per epoch (one eval-mode forward: the val split is < 8192 rows), so
    the epoch in progress is one more than the number of eval-mode forwards seen so far.
    """

    def __init__(self, inner: nn.Module, first_nan_epoch: int):
        super().__init__()
        self.inner = inner
        self.first_nan_epoch = first_nan_epoch
        self.eval_calls = 0

    def forward(self, x):
        epoch = self.eval_calls + 1
        if not self.training:
            self.eval_calls += 1
        out = self.inner(x)
        return out + float("nan") if epoch >= self.first_nan_epoch else out


# ---------------------------------------------------------------------------------------------
# Determinism


def test_same_seed_gives_the_same_history_and_another_seed_does_not(data):
    config = train_config(max_epochs=5, seed=3)
    runs = [fit(make_model(data, dropout=0.3), data, config) for _ in range(2)]
    assert without_timing(runs[0]) == without_timing(runs[1])
    assert runs[0].best_epoch == runs[1].best_epoch
    assert runs[0].stop_reason == runs[1].stop_reason
    # Not vacuous: the seed does drive shuffling and dropout (same initial weights here).
    other = fit(make_model(data, dropout=0.3), data, train_config(max_epochs=5, seed=4))
    assert without_timing(other) != without_timing(runs[0])


# ---------------------------------------------------------------------------------------------
# Stopping


def test_nan_loss_stops_as_non_finite_and_keeps_the_last_finite_best(data):
    inner = make_model(data)
    model = NanFromEpoch(inner, first_nan_epoch=3)
    history = fit(model, data, train_config(max_epochs=20))
    assert history.stop_reason == StopReason.NON_FINITE
    assert history.epochs_trained == 3
    assert math.isnan(history.epochs[-1]["train_loss"])
    assert all(math.isfinite(row["val_loss"]) for row in history.epochs[:2])
    assert history.best_epoch in (1, 2)
    # The nan step of epoch 3 poisoned the weights; the restored ones are the best epoch's.
    assert all(torch.isfinite(p).all() for p in inner.parameters())
    loss, _ = plain_val_loss(inner, data.x_val, data.y_val)
    assert loss == pytest.approx(history.best["val_loss"], abs=1e-6)


def test_early_stop_restores_the_best_weights_and_stops_patience_epochs_later(data):
    patience = 3
    model = make_model(data)
    history = fit(model, data, train_config(stopper="patience",
                                            stopper_params={"patience": patience}))
    assert history.stop_reason == "patience"
    val = history.metric("val_loss")
    # Keras semantics, min_delta 0: the best epoch is the first strict minimum, and the run
    # stops after `patience` epochs without a strictly lower value.
    best = val.index(min(val)) + 1
    assert history.best_epoch == best
    assert history.best_epoch < history.epochs_trained
    assert history.epochs_trained == history.best_epoch + patience
    loss, accuracy = plain_val_loss(model, data.x_val, data.y_val)
    assert loss == pytest.approx(history.best["val_loss"], abs=1e-6)
    assert accuracy == pytest.approx(history.best["val_accuracy"], abs=1e-9)
    # ...and not the last epoch's weights (the test would be blind if they coincided).
    assert abs(history.epochs[-1]["val_loss"] - loss) > 1e-3


def first_gl_stop(val: list[float], alpha: float) -> int | None:
    """Prechelt: stop at the first t with 100 * (E_va(t) / min_{t'<=t} E_va(t') - 1) > alpha."""
    for t in range(1, len(val) + 1):
        if 100 * (val[t - 1] / min(val[:t]) - 1) > alpha:
            return t
    return None


def first_pq_stop(val: list[float], train: list[float], alpha: float, k: int) -> int | None:
    """Prechelt: at strip ends t, stop when GL(t) / P_k(t) > alpha."""
    for t in range(k, len(val) + 1, k):
        gl = 100 * (val[t - 1] / min(val[:t]) - 1)
        strip = train[t - k:t]
        progress = 1000 * (sum(strip) / (k * min(strip)) - 1)
        if gl / progress > alpha:
            return t
    return None


def first_up1_stop(val: list[float]) -> int | None:
    """Prechelt's UP_1 with strips of one epoch: the first epoch whose val loss rose."""
    for t in range(2, len(val) + 1):
        if val[t - 1] > val[t - 2]:
            return t
    return None


@pytest.mark.parametrize("stopper, params, reference", [
    ("gl", {"alpha": 5.0}, lambda h: first_gl_stop(h.metric("val_loss"), 5.0)),
    ("pq", {"alpha": 0.5, "strip": 2},
     lambda h: first_pq_stop(h.metric("val_loss"), h.metric("train_loss"), 0.5, 2)),
    ("up", {"s": 1, "strip": 1}, lambda h: first_up1_stop(h.metric("val_loss"))),
])
def test_prechelt_stop_reason_and_epoch_reach_the_history(data, stopper, params, reference):
    history = fit(make_model(data), data, train_config(stopper=stopper, stopper_params=params))
    assert history.stop_reason == stopper
    assert history.epochs_trained == reference(history)
    val = history.metric("val_loss")
    assert history.best_epoch == val.index(min(val)) + 1


def test_max_epochs_is_the_reason_when_nothing_stops(data):
    history = fit(make_model(data), data, train_config(max_epochs=4))
    assert (history.stop_reason, history.epochs_trained) == ("max_epochs", 4)


def test_callback_returning_true_stops_with_reason_callback(data):
    seen = []

    def stop_at_three(epoch: int, metrics: dict) -> bool:
        seen.append((epoch, metrics["best_epoch"]))
        return epoch == 3

    history = fit(make_model(data), data, train_config(max_epochs=10),
                  on_epoch_end=stop_at_three)
    assert history.stop_reason == StopReason.PRUNED
    assert history.epochs_trained == 3
    assert [epoch for epoch, _ in seen] == [1, 2, 3]
    assert seen[-1][1] == history.best_epoch


@pytest.mark.parametrize("stopper, params, reason", [
    ("up", {"s": 1, "strip": 1}, "up"),
    ("none", {}, "max_epochs"),
])
def test_callback_sees_every_epoch_including_the_stoppers_last(data, stopper, params, reason):
    seen = []

    def always_stop_late(epoch: int, metrics: dict) -> bool:
        seen.append(epoch)
        return epoch >= 100  # never, within these runs

    config = train_config(max_epochs=8, stopper=stopper, stopper_params=params)
    history = fit(make_model(data), data, config, on_epoch_end=always_stop_late)
    assert history.stop_reason == reason
    assert seen == list(range(1, history.epochs_trained + 1))
    if reason == "up":
        # On the stopper's own epoch, a callback that also says stop does not change the reason.
        stop_epoch = history.epochs_trained
        history = fit(make_model(data), data, config,
                      on_epoch_end=lambda epoch, metrics: epoch == stop_epoch)
        assert (history.stop_reason, history.epochs_trained) == ("up", stop_epoch)


# ---------------------------------------------------------------------------------------------
# The tricks are applied


def count_zero_weights(model: nn.Module) -> float:
    weights = [m.weight for m in model.modules() if isinstance(m, nn.Linear)]
    zeros = sum(int((w == 0).sum()) for w in weights)
    return zeros / sum(w.numel() for w in weights)


def test_proximal_l1_makes_exact_zeros_and_no_l1_makes_none(data):
    model = make_model(data)
    history = fit(model, data, train_config(max_epochs=5, l1=1.0, l1_mode="proximal"))
    assert history.epochs[-1]["weight_sparsity"] > 0.5
    # The restored (best) model's own zeros, counted here, match what history recorded.
    assert count_zero_weights(model) == pytest.approx(history.best["weight_sparsity"])
    assert count_zero_weights(model) > 0.1

    model = make_model(data)
    history = fit(model, data, train_config(max_epochs=5, l1=0.0))
    assert history.metric("weight_sparsity") == [0.0] * 5
    assert count_zero_weights(model) == 0.0


def test_step_schedule_lr_per_epoch_follows_the_closed_form(data):
    lr, gamma, step_size = 0.01, 0.5, 2
    config = train_config(max_epochs=7, lr=lr, schedule="step",
                          schedule_params={"step_size": step_size, "gamma": gamma})
    history = fit(make_model(data), data, config)
    # History records the lr each epoch started with (epochs count from 1).
    expected = [lr * gamma ** ((e - 1) // step_size) for e in range(1, 8)]
    assert history.metric("lr") == pytest.approx(expected, rel=1e-12)


def test_model_with_dropout_is_in_eval_mode_and_deterministic_after_fit(data):
    model = make_model(data, dropout=0.5)
    assert any(isinstance(m, nn.Dropout) for m in model.modules())
    fit(model, data, train_config(max_epochs=2))
    assert not any(m.training for m in model.modules())
    with torch.no_grad():
        assert torch.equal(model(data.x_val), model(data.x_val))


def test_a_trailing_batch_of_one_is_folded_so_batch_norm_trains(data):
    # 180 training rows in batches of 179 would leave a batch of 1, which batch norm refuses
    # in train mode; the trainer folds it into the previous batch and still sees every row.
    assert len(data.y_train) % 179 == 1
    model = CountRows(make_model(data, norm="batch"))
    history = fit(model, data, train_config(max_epochs=2, batch_size=179))
    assert model.train_rows == 2 * len(data.y_train)
    assert history.epochs_trained == 2


# ---------------------------------------------------------------------------------------------
# refit


def test_refit_trains_on_train_plus_val_and_scores_test_independently(data):
    model = CountRows(make_model(data))
    result = refit(model, data, train_config(), epochs=3)
    n_train_val = len(data.y_train) + len(data.y_val)
    assert model.train_rows == 3 * n_train_val
    assert result.history.epochs_trained == 3
    assert result.history.stop_reason == "max_epochs"
    loss, accuracy = plain_val_loss(model, data.x_test, data.y_test)
    assert result.test_loss == pytest.approx(loss, abs=1e-6)
    assert result.test_score == pytest.approx(accuracy, abs=1e-12)


def test_refit_with_include_test_trains_on_everything_and_reports_no_test_score(data):
    model = CountRows(make_model(data))
    result = refit(model, data, train_config(), epochs=2, include_test=True)
    assert model.train_rows == 2 * (len(data.y_train) + len(data.y_val) + len(data.y_test))
    assert result.test_loss is None and result.test_score is None


# ---------------------------------------------------------------------------------------------
# Dependencies point one way


def test_tricks_models_train_and_data_import_neither_optuna_nor_mlflow():
    code = ("import sys, trickopt.tricks, trickopt.models, trickopt.train, trickopt.data; "
            "print(sorted(m for m in ('optuna', 'mlflow') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120)
    assert out.stdout.strip() == "[]"


# ---------------------------------------------------------------------------------------------
# Devices


@pytest.mark.skipif(torch.cuda.is_available(), reason="auto picks cuda on this machine")
@pytest.mark.skipif(getattr(torch.backends, "mps", None) is not None
                    and torch.backends.mps.is_available(), reason="auto picks mps here")
def test_auto_device_is_cpu_without_an_accelerator():
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.cuda
@requires_cuda
def test_fit_on_cuda_moves_the_model_and_gives_a_finite_history(data):
    model = make_model(data)
    history = fit(model, data, train_config(max_epochs=3, device="cuda"))
    assert all(p.device.type == "cuda" for p in model.parameters())
    for row in history.epochs:
        assert all(math.isfinite(v) for v in row.values())
    loss, _ = plain_val_loss(model, data.x_val.cuda(), data.y_val.cuda())
    assert loss == pytest.approx(history.best["val_loss"], abs=1e-5)


@pytest.mark.cuda
@requires_cuda
@pytest.mark.parametrize("bf16, dtype", [(True, torch.bfloat16), (False, torch.float32)])
def test_bf16_autocast_runs_the_training_forward_in_bfloat16(data, bf16, dtype):
    model = make_model(data)
    first_linear = next(m for m in model.modules() if isinstance(m, nn.Linear))
    train_dtypes = set()

    def record(module, inputs, output):
        if module.training:
            train_dtypes.add(output.dtype)

    first_linear.register_forward_hook(record)
    history = fit(model, data, train_config(max_epochs=1, device="cuda", bf16=bf16))
    assert train_dtypes == {dtype}
    assert math.isfinite(history.epochs[0]["train_loss"])
