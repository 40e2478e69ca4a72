"""Every schedule's learning rates against its closed form, computed here by hand."""

from __future__ import annotations

import math

import pytest
import torch

from trickopt.tricks.schedules import SCHEDULE_PARAMS, SCHEDULES, create_scheduler

LR0 = 0.1


def _optimizer(momentum: float = 0.0) -> torch.optim.SGD:
    param = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    return torch.optim.SGD([param], lr=LR0, momentum=momentum)


def _run(name, *, epochs, steps_per_epoch, values=None, optimizer=None, **params):
    """Drive the schedule as the training loop does; return the lr of every optimizer step."""
    optimizer = optimizer or _optimizer()
    schedule = create_scheduler(
        name, optimizer, epochs=epochs, steps_per_epoch=steps_per_epoch, **params
    )
    lrs = []
    for epoch in range(epochs):
        for _ in range(steps_per_epoch):
            lrs.append(schedule.current_lr())
            optimizer.step()
            schedule.after_batch()
        schedule.after_epoch(None if values is None else values[epoch])
    return lrs, schedule


def _per_epoch(name, *, epochs, steps_per_epoch=3, **params):
    """Per-epoch lrs, checking the lr never moves inside an epoch (after_batch is a no-op)."""
    lrs, schedule = _run(name, epochs=epochs, steps_per_epoch=steps_per_epoch, **params)
    assert not schedule.per_batch
    by_epoch = [lrs[e * steps_per_epoch : (e + 1) * steps_per_epoch] for e in range(epochs)]
    assert all(len(set(within)) == 1 for within in by_epoch)
    return [within[0] for within in by_epoch]


def _assert_lrs(got, want):
    assert len(got) == len(want)
    for index, (g, w) in enumerate(zip(got, want, strict=True)):
        assert abs(g - w) <= 1e-12, f"step/epoch {index}: got {g!r}, want {w!r}"


def _cosine(start, end, fraction):
    return end + (start - end) * (1 + math.cos(math.pi * fraction)) / 2


def test_schedule_names_and_params_agree():
    assert SCHEDULES == (
        "constant", "step", "multistep", "exponential", "cosine", "cosine_restarts",
        "warmup_cosine", "onecycle", "plateau",
    )
    assert set(SCHEDULE_PARAMS) == set(SCHEDULES)


def test_constant():
    _assert_lrs(_per_epoch("constant", epochs=4), [LR0] * 4)


def test_step():
    got = _per_epoch("step", epochs=10, step_size=3, gamma=0.5)
    _assert_lrs(got, [LR0 * 0.5 ** (e // 3) for e in range(10)])


def test_multistep():
    got = _per_epoch("multistep", epochs=9, milestones=[2, 5, 7], gamma=0.3)
    _assert_lrs(got, [LR0 * 0.3 ** sum(m <= e for m in (2, 5, 7)) for e in range(9)])


def test_exponential_and_its_default_ends_at_one_percent():
    _assert_lrs(_per_epoch("exponential", epochs=8, gamma=0.8), [LR0 * 0.8**e for e in range(8)])
    _, schedule = _run("exponential", epochs=6, steps_per_epoch=1)
    assert schedule.current_lr() == pytest.approx(0.01 * LR0, rel=1e-12)


def test_cosine_default_t_max_is_epochs():
    got = _per_epoch("cosine", epochs=10, eta_min=0.01)
    _assert_lrs(got, [_cosine(LR0, 0.01, e / 10) for e in range(10)])
    got = _per_epoch("cosine", epochs=5, T_max=20)
    _assert_lrs(got, [_cosine(LR0, 0.0, e / 20) for e in range(5)])


@pytest.mark.parametrize(("t_0", "t_mult"), [(3, 1), (2, 2), (3, 3)])
def test_cosine_restarts(t_0, t_mult):
    epochs = 20
    want, start, length = [], 0, t_0
    for epoch in range(epochs):
        if epoch - start >= length:  # a new cycle starts at this epoch
            start, length = start + length, length * t_mult
        want.append(_cosine(LR0, 0.001, (epoch - start) / length))
    got = _per_epoch("cosine_restarts", epochs=epochs, T_0=t_0, T_mult=t_mult, eta_min=0.001)
    _assert_lrs(got, want)


def test_warmup_cosine_per_step():
    epochs, steps, eta_min = 5, 4, 0.002
    lrs, schedule = _run(
        "warmup_cosine", epochs=epochs, steps_per_epoch=steps, warmup_epochs=1.5,
        eta_min=eta_min,
    )
    assert schedule.per_batch
    warmup, total = 6, 20  # 1.5 epochs x 4 steps
    want = [
        LR0 * (t + 1) / (warmup + 1) if t < warmup
        else _cosine(LR0, eta_min, (t - warmup) / (total - warmup))
        for t in range(total)
    ]
    _assert_lrs(lrs, want)
    assert schedule.current_lr() == pytest.approx(eta_min, rel=1e-12)  # after the last step


def test_warmup_cosine_without_warmup_is_per_step_cosine():
    lrs, _ = _run("warmup_cosine", epochs=3, steps_per_epoch=5, warmup_epochs=0)
    _assert_lrs(lrs, [_cosine(LR0, 0.0, t / 15) for t in range(15)])


def _onecycle_by_hand(total, *, max_lr, pct_start, div_factor, final_div_factor, cos=True):
    """torch's documented OneCycleLR, three_phase=False: warm up to max_lr, anneal down."""
    initial = max_lr / div_factor
    minimum = initial / final_div_factor
    peak = pct_start * total - 1

    def anneal(start, end, fraction):
        return _cosine(start, end, fraction) if cos else start + (end - start) * fraction

    return [
        anneal(initial, max_lr, t / peak) if t <= peak
        else anneal(max_lr, minimum, (t - peak) / (total - 1 - peak))
        for t in range(total)
    ]


def test_onecycle_defaults_per_step_and_keeps_momentum():
    optimizer = _optimizer(momentum=0.9)
    lrs, schedule = _run("onecycle", epochs=3, steps_per_epoch=5, optimizer=optimizer)
    assert schedule.per_batch
    want = _onecycle_by_hand(
        15, max_lr=LR0, pct_start=0.3, div_factor=25.0, final_div_factor=1e4
    )
    _assert_lrs(lrs, want)
    assert optimizer.param_groups[0]["momentum"] == 0.9  # cycle_momentum off by default


def test_onecycle_with_every_parameter():
    lrs, _ = _run(
        "onecycle", epochs=4, steps_per_epoch=6, max_lr=0.5, pct_start=0.25,
        anneal_strategy="linear", div_factor=10.0, final_div_factor=100.0,
    )
    want = _onecycle_by_hand(
        24, max_lr=0.5, pct_start=0.25, div_factor=10.0, final_div_factor=100.0, cos=False
    )
    _assert_lrs(lrs, want)


def test_plateau_drops_after_patience_epochs_without_relative_improvement():
    # mode min, threshold 0.05 relative: an epoch improves if value < best * 0.95.
    # 1.0 best | 0.97 no (> 0.95) | 0.96 no | 0.94 yes | 0.94, 0.93 no, no | 0.94 no: third
    # bad epoch > patience 2, so the lr halves after epoch 6; counting restarts.
    values = [1.0, 0.97, 0.96, 0.94, 0.94, 0.93, 0.94, 0.5, 0.6, 0.6, 0.6, 0.6, 0.6]
    got = _per_epoch(
        "plateau", epochs=len(values), values=values, factor=0.5, patience=2, threshold=0.05,
        mode="min", min_lr=0.03,
    )
    halved, floor = LR0 * 0.5, 0.03  # the second drop (0.025, after epoch 10) stops at min_lr
    want = [LR0] * 7 + [halved] * 4 + [floor] * 2
    _assert_lrs(got, want)


def test_plateau_mode_max_and_needs_a_value():
    got = _per_epoch("plateau", epochs=4, values=[0.5, 0.4, 0.4, 0.4], patience=1, mode="max")
    _assert_lrs(got, [LR0, LR0, LR0, LR0 * 0.1])
    with pytest.raises(ValueError, match="plateau"):
        _run("plateau", epochs=1, steps_per_epoch=1)


@pytest.mark.parametrize(
    ("name", "params", "needles"),
    [
        ("linear_decay", {}, ["linear_decay", "cosine_restarts"]),
        ("step", {"milestones": [2]}, ["'step'", "'milestones'", "step_size"]),
        ("step", {"gamma": 0.0}, ["'step'", "'gamma'", "(0, 1]"]),
        ("exponential", {"gamma": -0.5}, ["'exponential'", "gamma=-0.5"]),
        ("step", {"step_size": 0}, ["'step_size'", ">= 1"]),
        ("multistep", {"milestones": [5, 2]}, ["'milestones'", "increasing"]),
        ("onecycle", {"pct_start": 1.0}, ["'pct_start'", "(0, 1)"]),
        ("onecycle", {"anneal_strategy": "cosine"}, ["'anneal_strategy'", "'linear'"]),
        ("plateau", {"mode": "auto"}, ["'mode'", "'min' or 'max'"]),
        ("plateau", {"patience": 1.5}, ["'patience'", ">= 0"]),
        ("warmup_cosine", {"warmup_epochs": 3}, ["'warmup_epochs'", "epochs=3"]),
    ],
)
def test_bad_names_and_parameters_are_named(name, params, needles):
    with pytest.raises(ValueError) as error:
        create_scheduler(name, _optimizer(), epochs=3, steps_per_epoch=2, **params)
    for needle in needles:
        assert needle in str(error.value)


def test_all_errors_are_reported_together():
    with pytest.raises(ValueError, match=r"epochs=0.*'gamma'.*'eta_min'"):
        create_scheduler("step", _optimizer(), epochs=0, steps_per_epoch=1, gamma=2, eta_min=0)
