"""`python -m trickopt.train_cli --sanity`: the seed's dropout debugging tip, made a command.

Dropout makes the cost J ill-defined from batch to batch, so a falling loss curve proves
little while it is on. The tip: switch dropout (and every other source of noise) off, check
that J falls epoch after epoch, then switch the tricks back on. We also check that the model
can overfit one small batch, the quickest test that data, labels, model and optimizer are wired
together correctly. Each check says plainly what failed, before anyone spends hours on a study.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

from trickopt.data import Splits
from trickopt.models import seeded_model
from trickopt.train import evaluate, fit

FALLING_EPOCHS = 20  # long enough to see a trend, short enough to run in seconds
OVERFIT_SAMPLES = 32
OVERFIT_EPOCHS = 300
OVERFIT_ACCURACY = 1.0


@dataclass
class SanityCheck:
    name: str
    passed: bool
    detail: str


def quiet_config(run_config):
    """The run with every random or loss-changing trick off: no dropout, full-batch steps,
    a constant learning rate, no penalties and no early stop."""
    quiet = copy.deepcopy(run_config)
    quiet.model.dropout = 0.0
    quiet.train.l1 = quiet.train.l2 = 0.0
    quiet.train.schedule, quiet.train.schedule_params = "constant", {}
    quiet.train.stopper, quiet.train.stopper_params = "none", {}
    quiet.train.batch_size = 1 << 62  # clipped to the training set: full-batch descent
    return quiet


def check_loss_falls(run_config, data: Splits) -> SanityCheck:
    quiet = quiet_config(run_config)
    quiet.train.max_epochs = FALLING_EPOCHS
    model = seeded_model(quiet.model, data.input_shape, data.n_classes, seed=quiet.train.seed)
    losses = fit(model, data, quiet.train).metric("train_loss")
    rises = [e + 2 for e, (a, b) in enumerate(zip(losses, losses[1:])) if not b < a]
    if not rises:
        return SanityCheck("training loss falls", True,
                           f"{losses[0]:.4f} -> {losses[-1]:.4f} over {len(losses)} epochs "
                           "with dropout off")
    return SanityCheck("training loss falls", False,
                       f"the training loss did not fall at epoch(s) {rises[:5]} "
                       f"({', '.join(f'{v:.4g}' for v in losses[:8])}, ...) with dropout and "
                       "every other noise off: lower train.lr, check the labels and the loss")


def check_overfits_small_batch(run_config, data: Splits) -> SanityCheck:
    quiet = quiet_config(run_config)
    quiet.train.max_epochs = OVERFIT_EPOCHS
    n = min(OVERFIT_SAMPLES, len(data.y_train))
    small = Splits(data.x_train[:n], data.y_train[:n], data.x_train[:n], data.y_train[:n],
                   data.x_train[:n], data.y_train[:n], data.n_classes, data.input_shape)
    model = seeded_model(quiet.model, data.input_shape, data.n_classes, seed=quiet.train.seed)
    fit(model, small, quiet.train)
    loss, accuracy = evaluate(model, small.x_train, small.y_train)
    if accuracy >= OVERFIT_ACCURACY:
        return SanityCheck("overfits a small batch", True,
                           f"{n} samples learned to accuracy {accuracy:.3f} (loss {loss:.4f})")
    return SanityCheck("overfits a small batch", False,
                       f"after {OVERFIT_EPOCHS} full-batch steps on {n} samples the training "
                       f"accuracy is {accuracy:.3f} (loss {loss:.4f}), not {OVERFIT_ACCURACY}: "
                       "the model cannot fit even a handful of examples; check capacity "
                       "(model.width/depth), train.lr and the labels")


def run_sanity_checks(run_config, data: Splits) -> list[SanityCheck]:
    return [check_loss_falls(run_config, data), check_overfits_small_batch(run_config, data)]
