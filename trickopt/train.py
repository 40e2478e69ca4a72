"""The training engine: `fit` one configuration with every trick applied, and `refit`.

Hot-path rules: data that fits stays on the device, and nothing inside an epoch waits for the
host (no per-batch `.item()`, no blocking I/O). So the data set is moved to the device once and
batched by a shuffled index each epoch (a DataLoader over in-memory tensors costs ~1.3x per
epoch here); losses are summed on the device and read once per epoch, together with the
validation metrics.

Order of events per epoch: train all batches (penalty, optimizer step, proximal L1, per-batch
schedules) -> validate -> the stopper decides (level 1) -> the best weights are kept ->
per-epoch schedules step (plateau gets the validation loss) -> `on_epoch_end(epoch, metrics)`
may stop the run (the study's pruner, level 2). When the run ends, the best epoch's weights
are restored, so the model scores what History's best epoch recorded.

The command line is `python -m trickopt.train_cli --help` (`trickopt-train` once installed).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from trickopt.tricks.early_stopping import StopReason, create_stopper
from trickopt.tricks.optim import create_optimizer
from trickopt.tricks.regularization import Regularization, split_parameters, weight_sparsity
from trickopt.tricks.schedules import create_scheduler


def score_name(task: str) -> str:
    """The task's score beside its loss: accuracy (classification) or rmse (regression)."""
    return "accuracy" if task == "classification" else "rmse"


def epoch_metrics(task: str = "classification") -> tuple[str, ...]:
    """The metrics `fit` reports each epoch for a task."""
    return ("train_loss", "val_loss", f"val_{score_name(task)}", "lr", "weight_sparsity",
            "epoch_seconds")


EPOCH_METRICS = epoch_metrics("classification")
_EVAL_CHUNK = 8192  # rows per forward pass when scoring: bounds memory on large sets

EpochCallback = Callable[[int, dict], bool]


@dataclass
class History:
    """Per-epoch metrics of one run and how it ended. Epochs count from 1."""

    epochs: list[dict] = field(default_factory=list)  # one dict per epoch: EPOCH_METRICS
    best_epoch: int = 0  # 0: no finite validation loss was ever seen
    stop_reason: StopReason | None = None  # None while the run goes on

    @property
    def epochs_trained(self) -> int:
        return len(self.epochs)

    def metric(self, name: str) -> list[float]:
        return [row[name] for row in self.epochs]

    @property
    def best(self) -> dict:
        """The best epoch's metrics (the weights the model holds after `fit`)."""
        return self.epochs[self.best_epoch - 1] if self.best_epoch else {}


@dataclass
class RefitResult:
    history: History
    test_loss: float | None  # None when the test split was trained on (train_val_test)
    test_score: float | None  # accuracy or rmse (`score_name(task)`), None as test_loss


def resolve_device(name: str = "auto") -> torch.device:
    """`auto` picks cuda, then mps, then cpu; anything else is taken as given."""
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def fit(model: nn.Module, data, config, *, on_epoch_end: EpochCallback | None = None) -> History:
    """Train `model` on `data` (a `trickopt.data.Splits`) with the tricks in `config`.

    Args:
        model: a classifier producing logits, or a regressor producing (rows, n_outputs);
            moved to the configured device.
        data: train/val splits (CPU tensors) and their `task`; the test split is not touched.
        config: a `TrainConfig`.
        on_epoch_end: called after every epoch with (epoch, metrics), where metrics holds
            `epoch_metrics(data.task)` plus `best_epoch` so far; returning True stops the run
            with reason `StopReason.PRUNED` (ignored on the epoch where the stopper itself
            ends the run).

    Example:
        >>> from trickopt.config import RunConfig
        >>> from trickopt.data import load_data
        >>> from trickopt.models import build_model
        >>> cfg = RunConfig(); cfg.train.max_epochs = 2
        >>> splits = load_data(cfg.data)
        >>> history = fit(build_model(cfg.model, splits.input_shape, splits.n_classes),
        ...               splits, cfg.train)
        >>> history.epochs_trained
        2
    """
    task = data.task
    run = _Run(model, data.x_train, data.y_train, config, epochs=config.max_epochs, task=task)
    x_val, y_val = data.x_val.to(run.device), data.y_val.to(run.device)
    score = f"val_{score_name(task)}"
    stopper = create_stopper(config.stopper, **config.stopper_params)
    history = History()
    best_state = None
    for epoch in range(1, config.max_epochs + 1):
        started = time.perf_counter()
        lr = run.optimizer.param_groups[0]["lr"]
        train_loss = run.train_epoch()
        val_loss, val_correct = evaluate_sums(model, x_val, y_val, task)
        # The one host sync of the epoch: every number the epoch reports, read together.
        train_loss, val_loss, val_correct, zeros = torch.stack(
            [train_loss, val_loss, val_correct, run.zero_weights()]).tolist()
        metrics = {"epoch": epoch, "train_loss": train_loss / run.n_train,
                   "val_loss": val_loss / len(y_val),
                   score: _score(task, val_correct, val_loss, len(y_val)),
                   "lr": lr, "weight_sparsity": zeros / run.n_weights,
                   "epoch_seconds": time.perf_counter() - started}
        history.epochs.append(metrics)
        stop = stopper.step(metrics["val_loss"], metrics["train_loss"])
        if stopper.best_epoch == epoch:
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        history.best_epoch = metrics["best_epoch"] = stopper.best_epoch
        if stop:
            history.stop_reason = stopper.reason
        else:
            run.schedule.after_epoch(metrics["val_loss"])
        # The callback sees every epoch, the last one too; once the stopper has ended the run
        # its answer no longer matters (level 1 wins over level 2 on the same epoch).
        if on_epoch_end is not None and on_epoch_end(epoch, metrics) and not stop:
            history.stop_reason = StopReason.PRUNED
        if history.stop_reason:
            break
    else:
        history.stop_reason = StopReason.MAX_EPOCHS
    if best_state is not None:
        model.load_state_dict(best_state)
    return history


def refit(model: nn.Module, data, config, *, epochs: int,
          include_test: bool = False) -> RefitResult:
    """Train a fresh `model` on train+val for a fixed `epochs`, then score it once on test.

    The seed's "merge the splits" trick: once the study has chosen the configuration and its
    best epoch count, the validation split has done its job and becomes training data. With
    `include_test` the test split is trained on too (a production model): there is then no
    held-out data, and the test score is None.
    """
    x, y = data.train_val()
    if include_test:
        x, y = torch.cat([x, data.x_test]), torch.cat([y, data.y_test])
    run = _Run(model, x, y, config, epochs=epochs, task=data.task)
    history = History(best_epoch=epochs, stop_reason=StopReason.MAX_EPOCHS)
    for epoch in range(1, epochs + 1):
        started = time.perf_counter()
        lr = run.optimizer.param_groups[0]["lr"]
        train_loss = run.train_epoch().item() / run.n_train
        history.epochs.append({"epoch": epoch, "train_loss": train_loss, "lr": lr,
                               "weight_sparsity": weight_sparsity(model),
                               "epoch_seconds": time.perf_counter() - started})
        # Plateau has no validation split to watch here: it follows the training loss.
        run.schedule.after_epoch(train_loss)
    model.eval()  # a finished model predicts: dropout off, running statistics on
    if include_test:
        return RefitResult(history, None, None)
    test_loss, test_score = evaluate(model, data.x_test, data.y_test, data.task)
    return RefitResult(history, test_loss, test_score)


def task_loss(task: str, output: torch.Tensor, y: torch.Tensor,
              reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy on logits (classification); for regression, the squared error averaged
    over the outputs (MSE), summed or averaged over the rows."""
    if task == "classification":
        return F.cross_entropy(output, y, reduction=reduction)
    per_row = (output.reshape(y.shape) - y).pow(2).mean(dim=1)
    return per_row.sum() if reduction == "sum" else per_row.mean()


def _score(task: str, correct: float, loss_sum: float, rows: int) -> float:
    return correct / rows if task == "classification" else math.sqrt(loss_sum / rows)


@torch.no_grad()
def evaluate_sums(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                  task: str = "classification") -> tuple[torch.Tensor, torch.Tensor]:
    """Summed loss (`task_loss`) and count of correct predictions (0 for regression), as
    device tensors (no sync)."""
    model.eval()
    device = next(model.parameters()).device
    loss = torch.zeros((), device=device)
    correct = torch.zeros((), device=device)
    # One pass in the usual case; chunks bound the memory of large sets.
    for start in range(0, len(y), _EVAL_CHUNK):
        xb = x[start:start + _EVAL_CHUNK].to(device, non_blocking=True)
        yb = y[start:start + _EVAL_CHUNK].to(device, non_blocking=True)
        output = model(xb).float()
        loss += task_loss(task, output, yb, reduction="sum")
        if task == "classification":
            correct += (output.argmax(dim=1) == yb).sum()
    return loss, correct


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
             task: str = "classification") -> tuple[float, float]:
    """Mean loss of `model` on (x, y) and its score: accuracy, or rmse for regression."""
    loss, correct = evaluate_sums(model, x, y, task)
    loss, correct = torch.stack([loss, correct]).tolist()
    return loss / len(y), _score(task, correct, loss, len(y))


class _Run:
    """The per-run training state shared by `fit` and `refit`: device, optimizer, schedule."""

    def __init__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, config, *,
                 epochs: int, task: str = "classification"):
        self.task = task
        if config.threads:
            torch.set_num_threads(config.threads)
        torch.manual_seed(config.seed)  # dropout masks and anything else drawn from torch
        self.device = resolve_device(config.device)
        self.model = model.to(self.device)
        self.x, self.y = x.to(self.device), y.to(self.device)
        self.n_train = len(y)
        self.batch_size = min(config.batch_size, self.n_train)
        # A trailing batch of one sample would break batch norm's statistics: fold it away.
        self.steps = max(1, self.n_train // self.batch_size
                         + (1 if self.n_train % self.batch_size > 1 else 0))
        self.generator = torch.Generator(device=self.device).manual_seed(config.seed)
        self.penalised = split_parameters(model)[0]
        self.n_weights = max(1, sum(p.numel() for p in self.penalised))
        self.regularization = Regularization(l1=config.l1, l1_mode=config.l1_mode,
                                             l2=config.l2,
                                             l2_mode=config.resolved_l2_mode)
        self.optimizer = create_optimizer(config.optimizer, model, lr=config.lr,
                                          regularization=self.regularization,
                                          momentum=config.momentum)
        self.schedule = create_scheduler(config.schedule, self.optimizer, epochs=epochs,
                                         steps_per_epoch=self.steps, **config.schedule_params)
        use_bf16 = config.bf16 and self.device.type == "cuda"
        self.autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if use_bf16 \
            else contextlib.nullcontext

    @torch.no_grad()
    def zero_weights(self) -> torch.Tensor:
        """How many penalised weights are exactly zero, as a device tensor (no sync)."""
        if not self.penalised:
            return torch.zeros((), device=self.device)
        return sum((p == 0).sum() for p in self.penalised).float()

    def train_epoch(self) -> torch.Tensor:
        """One pass over the training data; returns the summed data loss as a device tensor."""
        model, optimizer, regularization = self.model, self.optimizer, self.regularization
        per_batch_schedule = self.schedule.per_batch
        model.train()
        order = torch.randperm(self.n_train, device=self.device, generator=self.generator)
        total = torch.zeros((), device=self.device)
        for step in range(self.steps):
            end = self.n_train if step == self.steps - 1 else (step + 1) * self.batch_size
            index = order[step * self.batch_size:end]
            with self.autocast():
                output = model(self.x[index])
                loss = task_loss(self.task, output.float(), self.y[index])
            total.add_(loss.detach(), alpha=len(index))
            penalty = regularization.penalty(model)
            if penalty is not None:
                loss = loss + penalty
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            regularization.before_step(optimizer)
            optimizer.step()
            regularization.after_step(optimizer)
            if per_batch_schedule:
                self.schedule.after_batch()
        return total

