"""Build the study's model once, before any trial: a factory that cannot work is refused, and
a searched trick that the model never places is named before trials are spent on it."""

from __future__ import annotations

import torch
from torch import nn

from trickopt.factories import FactoryError
from trickopt.models import model_factory, model_params
from trickopt.study.space import Choice, Range, knobs
from trickopt.train import score_name
from trickopt.tricks.pieces import MODEL_TRICKS, Tricks

# Norm kinds that are layers, in the order a probe prefers them: any makes the model ask.
_LAYER_NORMS = ("batch", "layer", "batch_renorm", "group")


def check_model(config, data) -> list[str]:
    """Build the model with every searched model trick switched on, feed it two samples, and
    return the searched tricks it never asked `tricks` for. Raises FactoryError (naming the
    field) for a factory that raises, returns no `nn.Module`, or gives the wrong output shape,
    and for a metric the data's task does not have."""
    metric, task = config.study.metric, data.task
    if metric != "val_loss" and metric != f"val_{score_name(task)}":
        raise FactoryError(f"study.metric: {metric} does not exist for {task} data; use "
                           f"val_loss or val_{score_name(task)}")
    model_config = config.model
    searched = {name: spec for name, spec in config.search.items()
                if isinstance(spec, (Range, Choice))}
    norm = model_config.norm
    if isinstance(searched.get("norm"), Choice):  # a norm that is a layer, if one is searched
        layers = [k for k in _LAYER_NORMS if k in searched["norm"].choices]
        norm = layers[0] if layers else searched["norm"].choices[0]
    tricks = Tricks(norm=norm, norm_position=model_config.norm_position,
                    dropout=model_config.dropout, dropout_kind=model_config.dropout_kind,
                    activation=model_config.activation)
    params = model_params(model_config)
    table = knobs(config.search, config.run)
    params.update({name: spec.choices[0] if isinstance(spec, Choice) else spec.low
                   for name, spec in searched.items()
                   if table[name].target[:2] == ("model", "params")})
    what = f"model.factory {_name(model_config.factory)}" if model_config.factory \
        else f"model.arch {model_config.arch}"
    try:
        model = model_factory(model_config)(tricks, tuple(data.input_shape), data.n_classes,
                                            **params)
    except Exception as exc:  # noqa: BLE001 - the user's code: its error, in one line
        raise FactoryError(f"{what}: building the model raised {type(exc).__name__}: "
                           f"{exc}") from None
    if not isinstance(model, nn.Module):
        raise FactoryError(f"{what}: returned a {type(model).__name__}; a model factory must "
                           "return a torch.nn.Module")
    _check_output(model, data, what)
    return [name for name in MODEL_TRICKS if name in searched and name not in tricks.asked]


def _check_output(model: nn.Module, data, what: str) -> None:
    model.eval()
    sample = data.x_train[:2]
    try:
        with torch.no_grad():
            output = model(sample)
    except Exception as exc:  # noqa: BLE001
        raise FactoryError(f"{what}: the model fails on a batch of shape "
                           f"{tuple(sample.shape)}: {type(exc).__name__}: {exc}") from None
    wanted = (len(sample), data.n_classes)
    shape = tuple(getattr(output, "shape", ()))
    regression_column = data.task == "regression" and data.n_classes == 1 \
        and shape == (len(sample),)
    if shape != wanted and not regression_column:
        need = "n_classes logits" if data.task == "classification" else "n_outputs values"
        raise FactoryError(f"{what}: the model's output for a batch of {len(sample)} has "
                           f"shape {shape}; the {data.task} task needs {wanted} ({need})")


def _name(factory) -> str:
    return factory if isinstance(factory, str) else getattr(factory, "__qualname__", "?")
