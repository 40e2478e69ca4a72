"""The training tricks as plain PyTorch building blocks: no Optuna, no MLflow.

Import them into your own training code:

    from trickopt.tricks import (EarlyStopping, Regularization, create_norm, create_dropout,
                                 create_optimizer, create_scheduler)

`Tricks` hands a configuration's norm, dropout, weight norm and activation to a model you
write yourself (a model factory, as `trickopt.study` calls it).

Input scaling (`scale_splits`) wraps scikit-learn's scalers; everything else needs torch only.
"""

from trickopt.tricks.dropout import DROPOUT_KINDS, check_probability, create_dropout
from trickopt.tricks.early_stopping import (
                                            GL,
                                            PQ,
                                            STOPPER_PARAMS,
                                            STOPPERS,
                                            UP,
                                            EarlyStopping,
                                            NoStopping,
                                            Stopper,
                                            create_stopper,
)
from trickopt.tricks.norm import (
                                            NORM_KINDS,
                                            NORM_POSITIONS,
                                            BatchRenorm1d,
                                            BatchRenorm2d,
                                            apply_weight_norm,
                                            batch_renorm,
                                            create_norm,
                                            normalize_norm_kind,
)
from trickopt.tricks.optim import OPTIMIZERS, create_optimizer
from trickopt.tricks.pieces import ACTIVATIONS, Tricks, create_activation
from trickopt.tricks.regularization import (
                                            L1_MODES,
                                            L2_MODES,
                                            Regularization,
                                            l1_penalty,
                                            l2_penalty,
                                            soft_threshold_,
                                            split_parameters,
                                            weight_sparsity,
)
from trickopt.tricks.scaling import SCALINGS, create_scaler, scale_splits
from trickopt.tricks.schedules import SCHEDULE_PARAMS, SCHEDULES, LRSchedule, create_scheduler

__all__ = [
    "DROPOUT_KINDS", "check_probability", "create_dropout",
    "GL", "PQ", "UP", "STOPPERS", "STOPPER_PARAMS", "EarlyStopping", "NoStopping", "Stopper",
    "create_stopper",
    "NORM_KINDS", "NORM_POSITIONS", "BatchRenorm1d", "BatchRenorm2d", "apply_weight_norm",
    "batch_renorm", "create_norm", "normalize_norm_kind",
    "OPTIMIZERS", "create_optimizer",
    "ACTIVATIONS", "Tricks", "create_activation",
    "L1_MODES", "L2_MODES", "Regularization", "l1_penalty", "l2_penalty", "soft_threshold_",
    "split_parameters", "weight_sparsity",
    "SCALINGS", "create_scaler", "scale_splits",
    "SCHEDULES", "SCHEDULE_PARAMS", "LRSchedule", "create_scheduler",
]
