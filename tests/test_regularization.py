"""L1/L2 penalties and the optimizer factory, checked against hand sums and torch.optim."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from trickopt.tricks.optim import OPTIMIZERS, create_optimizer
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


def _mixed_model() -> nn.Sequential:
    """Biases, BatchNorm, LayerNorm, one weight-normed Linear; norm gains made non-trivial."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(4, 3),
        nn.BatchNorm1d(3),
        nn.LayerNorm(3),
        weight_norm(nn.Linear(3, 5), dim=0),
        nn.Tanh(),
        nn.Linear(5, 2),
    ).double()
    with torch.no_grad():
        for norm in (model[1], model[2]):
            norm.weight.uniform_(-2.0, 2.0)
            norm.bias.uniform_(-2.0, 2.0)
        model[3].parametrizations.weight.original0.uniform_(1.0, 3.0)
    return model


def _weights_by_hand(model: nn.Sequential) -> list[torch.Tensor]:
    return [model[0].weight, model[3].parametrizations.weight.original1, model[5].weight]


def test_split_excludes_bias_norm_and_magnitude_includes_direction():
    model = _mixed_model()
    model[5].bias.requires_grad_(False)  # frozen: in neither list
    penalised, not_penalised = split_parameters(model)
    assert [id(p) for p in penalised] == [id(p) for p in _weights_by_hand(model)]
    expected_others = [
        model[0].bias, model[1].weight, model[1].bias, model[2].weight, model[2].bias,
        model[3].bias, model[3].parametrizations.weight.original0,
    ]
    assert {id(p) for p in not_penalised} == {id(p) for p in expected_others}
    assert len(not_penalised) == len(expected_others)


def test_penalties_equal_hand_sums_over_weights_only():
    model = _mixed_model()
    w0, v3, w5 = _weights_by_hand(model)
    l1_by_hand = w0.abs().sum() + v3.abs().sum() + w5.abs().sum()
    l2_by_hand = 0.5 * ((w0**2).sum() + (v3**2).sum() + (w5**2).sum())
    torch.testing.assert_close(l1_penalty(model), l1_by_hand, rtol=0, atol=1e-12)
    torch.testing.assert_close(l2_penalty(model), l2_by_hand, rtol=0, atol=1e-12)

    # Seed definition: Omega = 1/2 ||w||^2 has gradient w; Omega_1 has gradient sign(w).
    l2_penalty(model).backward()
    torch.testing.assert_close(v3.grad, v3.detach(), rtol=0, atol=1e-12)
    assert model[0].bias.grad is None and model[1].weight.grad is None
    model.zero_grad(set_to_none=True)
    Regularization(l1=0.3, l1_mode="subgradient").penalty(model).backward()
    torch.testing.assert_close(w5.grad, 0.3 * torch.sign(w5.detach()), rtol=0, atol=1e-12)
    assert model[3].parametrizations.weight.original0.grad is None


def test_weight_sparsity_counts_zero_weight_entries_only():
    model = _mixed_model()
    with torch.no_grad():
        model[0].weight[0].zero_()  # 4 of 12
        model[5].weight[:, :2].zero_()  # 4 of 10
        model[0].bias.zero_()  # a bias: not counted
    assert weight_sparsity(model) == pytest.approx(8 / (12 + 15 + 10))


def test_soft_threshold_matches_definition_and_softshrink():
    torch.manual_seed(1)
    tensors = [torch.randn(7, 3, dtype=torch.float64), torch.randn(4, dtype=torch.float64)]
    originals = [t.clone() for t in tensors]
    soft_threshold_(tensors, 0.4)
    for got, original in zip(tensors, originals, strict=True):
        by_definition = torch.sign(original) * torch.clamp(original.abs() - 0.4, min=0)
        assert torch.equal(got, by_definition)
        assert torch.equal(got, nn.functional.softshrink(original, 0.4))
    assert (tensors[0] == 0).any()  # the test exercises the zeroing branch


def test_after_step_thresholds_with_each_groups_lr():
    model = nn.Linear(5, 4).double()
    bias_before = model.bias.detach().clone()
    weight_before = model.weight.detach().clone()
    reg = Regularization(l1=0.2, l1_mode="proximal")
    optimizer = create_optimizer("sgd", model, lr=0.5, regularization=reg)
    reg.after_step(optimizer)
    want = nn.functional.softshrink(weight_before, 0.5 * 0.2)
    assert torch.equal(model.weight.detach(), want)
    assert torch.equal(model.bias.detach(), bias_before)


def _train_logistic(mode: str, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    torch.manual_seed(0)
    model = nn.Linear(30, 2)
    reg = Regularization(l1=0.02, l1_mode=mode)
    optimizer = create_optimizer("sgd", model, lr=0.1, regularization=reg, momentum=0.0)
    for _ in range(300):
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        penalty = reg.penalty(model)
        if penalty is not None:
            loss = loss + penalty
        loss.backward()
        reg.before_step(optimizer)
        optimizer.step()
        reg.after_step(optimizer)
    accuracy = (model(x).argmax(1) == y).double().mean().item()
    return weight_sparsity(model), accuracy


def test_proximal_l1_zeroes_weights_where_subgradient_does_not():
    from sklearn.datasets import load_breast_cancer
    from sklearn.preprocessing import StandardScaler

    features, labels = load_breast_cancer(return_X_y=True)
    x = torch.tensor(StandardScaler().fit_transform(features), dtype=torch.float32)
    y = torch.tensor(labels)
    proximal_sparsity, proximal_accuracy = _train_logistic("proximal", x, y)
    subgradient_sparsity, subgradient_accuracy = _train_logistic("subgradient", x, y)
    assert proximal_sparsity >= 0.3
    assert subgradient_sparsity == 0.0
    assert min(proximal_accuracy, subgradient_accuracy) > 0.95


def _regression_model() -> nn.Sequential:
    torch.manual_seed(2)
    return nn.Sequential(nn.Linear(6, 5), nn.LayerNorm(5), nn.Tanh(), nn.Linear(5, 3)).double()


def _weights_and_others(model: nn.Sequential) -> tuple[list, list]:
    return [model[0].weight, model[3].weight], [model[0].bias, model[1].weight,
                                                 model[1].bias, model[3].bias]


def _loss(model: nn.Module) -> torch.Tensor:
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(16, 6, dtype=torch.float64, generator=generator)
    target = torch.randn(16, 3, dtype=torch.float64, generator=generator)
    return nn.functional.mse_loss(model(x), target)


def _assert_same_trajectory(name: str, reg: Regularization, make_reference, steps: int = 6):
    model = _regression_model()
    reference_model = copy.deepcopy(model)
    optimizer = create_optimizer(name, model, lr=0.05, regularization=reg)
    reference = make_reference(*_weights_and_others(reference_model))
    for _ in range(steps):
        for m, opt in ((model, optimizer), (reference_model, reference)):
            opt.zero_grad()
            _loss(m).backward()
        reg.before_step(optimizer)
        optimizer.step()
        reg.after_step(optimizer)
        reference.step()
        for got, want in zip(model.parameters(), reference_model.parameters(), strict=True):
            torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


def _groups(weights: list, others: list, decay: float) -> list[dict]:
    return [{"params": weights, "weight_decay": decay}, {"params": others, "weight_decay": 0.0}]


def test_adam_coupled_l2_matches_torch_adam_weight_decay():
    reg = Regularization(l2=0.3, l2_mode="coupled")
    _assert_same_trajectory(
        "adam", reg, lambda w, o: torch.optim.Adam(_groups(w, o, 0.3), lr=0.05)
    )


@pytest.mark.parametrize("name", ["adam", "adamw"])
def test_decoupled_l2_matches_torch_adamw(name):
    reg = Regularization(l2=0.3, l2_mode="decoupled")
    _assert_same_trajectory(
        name, reg, lambda w, o: torch.optim.AdamW(_groups(w, o, 0.3), lr=0.05)
    )


def test_adamw_without_l2_has_no_decay():
    # AdamW's own default is weight_decay=0.01; none must leak in.
    _assert_same_trajectory(
        "adamw", Regularization(), lambda w, o: torch.optim.Adam(w + o, lr=0.05)
    )


def test_sgd_coupled_l2_matches_torch_sgd_weight_decay():
    reg = Regularization(l2=0.3, l2_mode="coupled")
    _assert_same_trajectory(
        "sgd", reg, lambda w, o: torch.optim.SGD(_groups(w, o, 0.3), lr=0.05, momentum=0.9)
    )


class _HandSGDW:
    """SGDW by hand: buf <- mu * buf + g; w <- w * (1 - lr * l2) - lr * buf (weights only)."""

    def __init__(self, weights, others, *, lr, momentum, l2):
        self.weights, self.others = weights, others
        self.lr, self.momentum, self.l2 = lr, momentum, l2
        self.buffers: dict[int, torch.Tensor] = {}

    def zero_grad(self):
        for p in self.weights + self.others:
            p.grad = None

    @torch.no_grad()
    def step(self):
        for p in self.weights + self.others:
            previous = self.buffers.get(id(p))
            buf = p.grad.clone() if previous is None else self.momentum * previous + p.grad
            self.buffers[id(p)] = buf
            decay = 1 - self.lr * self.l2 if any(p is w for w in self.weights) else 1.0
            p.copy_(p * decay - self.lr * buf)


def test_sgd_decoupled_l2_matches_hand_written_sgdw():
    reg = Regularization(l2=0.3, l2_mode="decoupled")
    _assert_same_trajectory(
        "sgd", reg, lambda w, o: _HandSGDW(w, o, lr=0.05, momentum=0.9, l2=0.3), steps=3
    )


def test_penalty_is_none_when_nothing_enters_the_loss():
    model = nn.Linear(3, 2)
    assert Regularization().penalty(model) is None
    assert Regularization(l1=0.1, l1_mode="proximal", l2=0.1).penalty(model) is None


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"l1": -0.1}, "l1"),
        ({"l2": float("nan")}, "l2"),
        ({"l2": True}, "l2"),
        ({"l1_mode": "lasso"}, "l1_mode"),
        ({"l2_mode": "adamw"}, "l2_mode"),
    ],
)
def test_regularization_rejects_bad_values(kwargs, field):
    with pytest.raises(ValueError, match=field) as error:
        Regularization(**kwargs)
    allowed = {"l1_mode": str(L1_MODES), "l2_mode": str(L2_MODES)}.get(field, ">= 0")
    assert allowed in str(error.value)


def test_regularization_reports_all_errors_and_is_keyword_only():
    with pytest.raises(ValueError, match=r"l1=-1.*l2_mode='x'"):
        Regularization(l1=-1, l2_mode="x")
    with pytest.raises(TypeError):
        Regularization(0.1)  # type: ignore[misc]


def test_create_optimizer_rejects_bad_settings():
    model = nn.Linear(3, 2)
    with pytest.raises(ValueError, match="rmsprop") as error:
        create_optimizer("rmsprop", model, lr=0.1)
    assert str(OPTIMIZERS) in str(error.value)
    with pytest.raises(ValueError, match=r"adamw.*coupled"):
        create_optimizer("adamw", model, lr=0.1, regularization=Regularization(l2=0.1))
    with pytest.raises(ValueError, match="lr=0"):
        create_optimizer("sgd", model, lr=0)


def test_hooks_need_a_flagged_group():
    model = nn.Linear(3, 2)
    plain = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="penalised"):
        Regularization(l1=0.1).after_step(plain)
