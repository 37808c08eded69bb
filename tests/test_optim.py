"""Optimizers and schedules (optim.py; run_length.py for schedules relative to the run) and the loss tricks set with
them: linear lr scaling, warmup + every schedule (lr per step vs the formula), Nesterov momentum, no-bias-decay param
groups, label smoothing, and all of them combined as tricks; optimizer.norm_lr_scale (the speedrun's norm layers in a
param group of their own, at a multiple of the lr)."""

import math
from types import SimpleNamespace

import pytest
import torch
from conftest import build_speednet as build
from conftest import compose_cfg, composed
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

from trickbench.config.validate import validate
from trickbench.errors import ConfigError
from trickbench.models import build_model
from trickbench.module import build_module
from trickbench.optim import build_optimizer, build_scheduler

EPOCHS, STEPS_PER_EPOCH = 10, 5
TOTAL = EPOCHS * STEPS_PER_EPOCH
LR = 0.1


def lr_per_step(scheduler: dict | None, optimizer) -> list[float]:
    """The lr of each of the TOTAL optimizer steps, stepping the scheduler as Lightning does for its interval."""
    lrs = []
    for step in range(TOTAL):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        if scheduler and (scheduler["interval"] == "step" or (step + 1) % STEPS_PER_EPOCH == 0):
            scheduler["scheduler"].step()
    return lrs


def schedule(overrides: list[str]) -> tuple[dict | None, list[float]]:
    cfg = composed("optimizer=sgd", f"optimizer.lr={LR}", *overrides)
    optimizer = build_optimizer(nn.Linear(2, 1), cfg.optimizer, global_batch=cfg.data.batch_size)
    scheduler = build_scheduler(optimizer, cfg.scheduler, TOTAL, EPOCHS)
    return scheduler, lr_per_step(scheduler, optimizer)


def warmup_then(after, warmup_epochs: int, start_factor: float = 1e-3):
    """lr at step t: linear from start_factor x LR to LR over the warmup steps W, then after(t - W)."""
    w = warmup_epochs * STEPS_PER_EPOCH
    return [LR * (start_factor + (1 - start_factor) * t / w) if t < w else after(t - w) for t in range(TOTAL)]


def cosine(steps: int):
    return lambda t: LR * (1 + math.cos(math.pi * t / steps)) / 2


# scheduler option, extra overrides, lr at step t after warmup (t counted from where the schedule starts)
SCHEDULES = [
    ("none", [], lambda t: LR),
    ("step", ["scheduler.lr_scheduler.step_size=3"], lambda t: LR * 0.1 ** (t // (3 * STEPS_PER_EPOCH))),
    ("multistep", ["scheduler.lr_scheduler.milestones=[2,5]"], lambda t: LR * 0.1 ** ((t >= 10) + (t >= 25))),
    ("exponential", [], lambda t: LR * 0.96 ** (t // STEPS_PER_EPOCH)),
    ("linear", [], None),  # depends on the run length: below
    ("cosine", [], None),
]
RUN_LENGTH_FORMULA = {"cosine": cosine, "linear": lambda steps: lambda t: LR * (1 - t / steps)}


@pytest.mark.parametrize("warmup_epochs", [0, 2])
@pytest.mark.parametrize("name,extra,after", SCHEDULES, ids=[s[0] for s in SCHEDULES])
def test_lr_at_every_step_equals_the_formula(name, extra, after, warmup_epochs):
    overrides = [f"scheduler={name}", *extra, f"scheduler.warmup_epochs={warmup_epochs}"]
    scheduler, lrs = schedule(overrides)
    after = after or RUN_LENGTH_FORMULA[name](TOTAL - warmup_epochs * STEPS_PER_EPOCH)
    expected = warmup_then(after, warmup_epochs) if warmup_epochs else [after(t) for t in range(TOTAL)]
    assert lrs == pytest.approx(expected, rel=1e-6, abs=1e-12)
    if warmup_epochs:
        assert scheduler["interval"] == "step"
    elif name != "none":
        assert scheduler["interval"] == composed(f"scheduler={name}").scheduler.interval


def test_epoch_schedules_under_warmup_change_the_lr_only_at_epoch_ends():
    _, lrs = schedule(["scheduler=exponential", "scheduler.warmup_epochs=1"])
    changes = [t for t in range(STEPS_PER_EPOCH + 1, TOTAL) if lrs[t] != lrs[t - 1]]
    assert changes == list(range(2 * STEPS_PER_EPOCH, TOTAL, STEPS_PER_EPOCH))


def test_warmup_start_factor():
    _, lrs = schedule(["scheduler.warmup_epochs=1", "scheduler.warmup_start_factor=0.5"])
    assert lrs == pytest.approx(warmup_then(lambda t: LR, 1, start_factor=0.5))


def test_optimizer_lr_is_scaled_to_the_global_batch():
    # 48 images per device x 4 devices x 2 accumulated batches = 384 images per optimizer step
    cfg = compose_cfg(["trick=linear_lr_scaling", "data.batch_size=48"])
    module = build_module(cfg, nn.Linear(2, 1), num_classes=10)
    module.trainer = SimpleNamespace(
        world_size=4, accumulate_grad_batches=2, estimated_stepping_batches=TOTAL, max_epochs=EPOCHS
    )
    optimizer = module.configure_optimizers()
    assert cfg.optimizer.scale_lr_to_batch == 256
    assert optimizer.defaults["lr"] == optimizer.param_groups[0]["lr"] == pytest.approx(cfg.optimizer.lr * 384 / 256)


def test_nesterov_momentum_buffer_after_one_step():
    cfg = composed("trick=nesterov")
    layer = nn.Linear(3, 1, bias=False)
    optimizer = build_optimizer(layer, cfg.optimizer, global_batch=128)
    group = optimizer.param_groups[0]
    assert (group["nesterov"], group["momentum"], group["lr"]) == (True, 0.9, 0.1)
    w0 = layer.weight.detach().clone()
    layer(torch.ones(1, 3)).sum().backward()  # gradient: ones
    optimizer.step()
    d_p = torch.ones_like(w0) + group["weight_decay"] * w0  # SGD's gradient with L2 weight decay
    assert torch.allclose(optimizer.state[layer.weight]["momentum_buffer"], d_p)  # first step: buffer = d_p
    # Nesterov steps along d_p + momentum x buffer (classical momentum: along the buffer alone)
    assert torch.allclose(layer.weight, w0 - 0.1 * (d_p + 0.9 * d_p))


@pytest.mark.parametrize("norm", ["batch", "layer"])
def test_no_bias_decay_groups_on_a_real_model(norm):
    cfg = composed("trick=[nesterov,no_bias_decay]", f"norm={norm}")
    net = build_model(cfg.model, cfg.activation, cfg.norm, cfg.init, (1, 28, 28), 10)
    decayed, free = build_optimizer(net, cfg.optimizer, global_batch=128).param_groups
    assert (decayed["weight_decay"], free["weight_decay"]) == (5e-4, 0.0)
    weights = {id(m.weight) for m in net.modules() if isinstance(m, nn.Conv2d | nn.Linear)}
    assert {id(p) for p in decayed["params"]} == weights
    assert {id(p) for p in free["params"]} == {id(p) for p in net.parameters()} - weights
    norm_params = [p for m in net.modules() if isinstance(m, nn.BatchNorm2d | nn.GroupNorm) for p in m.parameters()]
    assert norm_params and {id(p) for p in norm_params} <= {id(p) for p in free["params"]}


def test_no_bias_decay_spares_multi_dimensional_norm_weights():
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.LayerNorm([2, 4, 4]))  # LayerNorm weight: 2x4x4, not a conv weight
    cfg = composed("optimizer=adamw", "optimizer.no_bias_decay=true")
    decayed, free = build_optimizer(net, cfg.optimizer, global_batch=128).param_groups
    assert [p.shape for p in decayed["params"]] == [(2, 1, 3, 3)]
    assert [p.shape for p in free["params"]] == [(2,), (2, 4, 4), (2, 4, 4)]


def test_without_no_bias_decay_one_group_decays_everything():
    cfg = composed("optimizer=adamw")
    net = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    (group,) = build_optimizer(net, cfg.optimizer, global_batch=128).param_groups
    assert group["weight_decay"] == 0.01 and len(group["params"]) == 4


LOGITS = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 0.0]])


def log_softmax_by_hand(row: list[float]) -> list[float]:
    log_z = math.log(sum(math.exp(v) for v in row))
    return [v - log_z for v in row]


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.3])
def test_label_smoothing_loss_equals_the_formula(eps):
    loss_fn = instantiate(composed(f"loss.label_smoothing={eps}").loss)
    logp = [log_softmax_by_hand(r) for r in LOGITS.tolist()]
    hard = [0, 2]
    soft = [[0.7, 0.3, 0.0], [0.0, 0.2, 0.8]]  # probability targets, as mixup produces
    for target, probs in ((torch.tensor(hard), [[float(i == y) for i in range(3)] for y in hard]), (soft, soft)):
        ce = [-sum(p * lp for p, lp in zip(pr, row, strict=True)) for pr, row in zip(probs, logp, strict=True)]
        uniform = [-sum(row) / 3 for row in logp]
        expected = sum((1 - eps) * c + eps * u for c, u in zip(ce, uniform, strict=True)) / 2
        assert loss_fn(LOGITS, torch.as_tensor(target)).item() == pytest.approx(expected, rel=1e-6)


def test_label_smoothing_trick_sets_eps():
    assert composed("trick=label_smoothing").loss.label_smoothing == 0.1


MY_TRICKS = ["warmup", "cosine", "nesterov", "no_bias_decay", "label_smoothing", "linear_lr_scaling"]


def test_the_tricks_combine():
    cfg = composed(f"trick=[{','.join(MY_TRICKS)}]", "norm=batch", "data.batch_size=64")
    validate(cfg)  # no two of them set the same key
    net = build_model(cfg.model, cfg.activation, cfg.norm, cfg.init, (1, 28, 28), 10)
    optimizer = build_optimizer(net, cfg.optimizer, global_batch=cfg.data.batch_size)
    decayed, free = optimizer.param_groups
    assert (decayed["weight_decay"], free["weight_decay"], decayed["nesterov"]) == (5e-4, 0.0, True)
    assert optimizer.defaults["lr"] == pytest.approx(0.1 * 64 / 256)
    assert cfg.loss.label_smoothing == 0.1
    scheduler = build_scheduler(optimizer, cfg.scheduler, TOTAL, EPOCHS)
    lrs = lr_per_step(scheduler, optimizer)
    base = 0.1 * 64 / 256
    expected = [base * f / LR for f in warmup_then(cosine(TOTAL - STEPS_PER_EPOCH), 1)]
    assert lrs == pytest.approx(expected, rel=1e-6, abs=1e-12)


def test_tricks_that_both_choose_a_schedule_are_rejected():
    with pytest.raises(ConfigError, match="cosine and linear_decay both set scheduler"):
        validate(compose_cfg(["trick=[cosine,linear_decay]"]))


BAD = [
    ("scheduler.warmup_epochs", "10", 10, "less than trainer.max_epochs=10"),
    ("scheduler.warmup_epochs", "-1", -1, "an integer >= 0"),
    ("scheduler.warmup_epochs", "1.5", 1.5, "an integer >= 0"),
    ("scheduler.warmup_start_factor", "0", 0, "a number in (0, 1]"),
    ("optimizer.scale_lr_to_batch", "0", 0, "null (off) or the reference batch size"),
    ("optimizer.no_bias_decay", "yes", "yes", "true or false"),
]


@pytest.mark.parametrize("key,text,value,allowed", BAD, ids=[f"{k}={t}" for k, t, _, _ in BAD])
def test_bad_values_fail_with_key_value_allowed(key, text, value, allowed):
    cfg = composed("scheduler=cosine", f"{key}={text}")
    with pytest.raises(ConfigError) as e:
        optimizer = build_optimizer(nn.Linear(2, 1), cfg.optimizer, global_batch=128)
        build_scheduler(optimizer, cfg.scheduler, TOTAL, cfg.trainer.max_epochs)
    assert str(e.value).startswith(f"{key}={value!r}: {allowed}")


def test_epoch_schedule_without_a_per_step_form_is_rejected_under_warmup():
    cfg = composed("scheduler=cosine", "scheduler.interval=epoch", "scheduler.warmup_epochs=1")
    optimizer = build_optimizer(nn.Linear(2, 1), cfg.optimizer, global_batch=128)
    with pytest.raises(ConfigError, match=r"^scheduler.interval='epoch': step for CosineAnnealingLR under warmup"):
        build_scheduler(optimizer, cfg.scheduler, TOTAL, EPOCHS)


# ---- schedules relative to the run (src/trickbench/run_length.py: an integer is epochs, a float in (0, 1) a fraction)
def drops(lrs: list[float]) -> list[int]:
    """The steps at which the lr fell."""
    return [t for t in range(1, len(lrs)) if lrs[t] < lrs[t - 1] - 1e-12]


@pytest.mark.parametrize("warmup", ["0", "0.1", "1"])
def test_fraction_milestones_are_epochs_of_the_whole_run(warmup):
    # 0.5 and 0.75 of 10 epochs: the ends of epochs 5 and 8 (7.5 rounds up), i.e. steps 25 and 40, with or without
    # a warmup (0.1 of the run = 5 steps = 1 epoch); an integer milestone would count from the warmup's end instead
    _, lrs = schedule(
        ["scheduler=multistep", "scheduler.lr_scheduler.milestones=[0.5,0.75]", f"scheduler.warmup_epochs={warmup}"]
    )
    assert drops(lrs) == [25, 40]
    assert lrs[24] == pytest.approx(LR) and lrs[25] == pytest.approx(LR * 0.1) and lrs[40] == pytest.approx(LR * 0.01)


def test_fraction_warmup_is_that_share_of_the_steps():
    _, lrs = schedule(["scheduler=cosine", "scheduler.warmup_epochs=0.15"])  # round(0.15 x 50) = 8 steps
    expected = [LR * (1e-3 + (1 - 1e-3) * t / 8) if t < 8 else cosine(TOTAL - 8)(t - 8) for t in range(TOTAL)]
    assert lrs == pytest.approx(expected, rel=1e-6, abs=1e-12)


def test_fraction_step_size_and_final_lr_factor():
    _, lrs = schedule(["scheduler=step", "scheduler.lr_scheduler.step_size=0.3"])  # every 3 epochs
    assert drops(lrs) == [15, 30, 45]
    # exponential to 1% of the lr at the run's end: gamma = 0.01 ** (1/10) per epoch, whatever gamma says
    _, lrs = schedule(["scheduler=exponential", "scheduler.final_lr_factor=0.01"])
    assert lrs[-1] == pytest.approx(LR * 0.01 ** (9 / 10)) and lrs[5 * STEPS_PER_EPOCH] == pytest.approx(LR * 0.01**0.5)
    _, lrs = schedule(["scheduler=exponential", "scheduler.final_lr_factor=0.01", "scheduler.warmup_epochs=0.2"])
    assert lrs[-1] == pytest.approx(LR * 0.01 ** (7 / 8))  # decays over the 8 epochs after a 2-epoch warmup


FRACTION_BAD = [
    (
        ["scheduler=multistep", "scheduler.lr_scheduler.milestones=[0.1,0.75]", "scheduler.warmup_epochs=0.2"],
        "scheduler.lr_scheduler.milestones",
        [0.1, 0.75],
        "fractions of the run after the warmup's end (2 of",
    ),
    (
        ["scheduler=multistep", "scheduler.lr_scheduler.milestones=[1.5]"],
        "scheduler.lr_scheduler.milestones",
        [1.5],
        "a list of epochs (integers >= 0) or fractions",
    ),
    (
        ["scheduler=step", "scheduler.lr_scheduler.step_size=0"],
        "scheduler.lr_scheduler.step_size",
        0,
        "an integer >= 1",
    ),
    (["scheduler=exponential", "scheduler.final_lr_factor=0"], "scheduler.final_lr_factor", 0, "null (use"),
    (["scheduler.warmup_epochs=1.0"], "scheduler.warmup_epochs", 1.0, "an integer >= 0 (epochs; 0: no warmup) or a"),
]


@pytest.mark.parametrize("overrides,key,value,allowed", FRACTION_BAD, ids=[b[1] for b in FRACTION_BAD])
def test_bad_fractions_fail_in_one_line_before_data(overrides, key, value, allowed):
    with pytest.raises(ConfigError) as e:
        validate(compose_cfg(overrides))
    assert str(e.value).startswith(f"{key}={value!r}: {allowed}")


# every schedule point an epoch schedule has, set at the run's end (refused) and one epoch before it (taken); with a
# 2-epoch warmup the schedule's epochs are 8 of the 10
PAST_THE_RUN = [
    ("step", "step_size", 10, 9, "below 10, the schedule's epochs"),
    ("multistep", "milestones", [2, 10], [2, 9], "below 10, the schedule's epochs"),
    ("cosine", "T_max", 11, 10, "at most 10, the schedule's epochs"),
    ("linear", "total_iters", 11, 10, "at most 10, the schedule's epochs"),
]


@pytest.mark.parametrize("warmup", [0, 2])
@pytest.mark.parametrize("name,key,past,within,allowed", PAST_THE_RUN, ids=[p[0] for p in PAST_THE_RUN])
def test_a_schedule_point_past_the_run_is_refused_before_data(name, key, past, within, allowed, warmup):
    def given(v):  # integer points count from the warmup's end
        return [m - warmup for m in v] if isinstance(v, list) else v - warmup

    base = [f"scheduler={name}", "scheduler.interval=epoch", "trainer.max_epochs=10"]
    base.append(f"scheduler.warmup_epochs={warmup}")
    value = given(past)
    with pytest.raises(ConfigError) as e:
        validate(compose_cfg([*base, f"scheduler.lr_scheduler.{key}={value}".replace(" ", "")]))
    assert str(e.value).startswith(f"scheduler.lr_scheduler.{key}={value!r}: {allowed.replace('10', str(10 - warmup))}")
    validate(compose_cfg([*base, f"scheduler.lr_scheduler.{key}={given(within)}".replace(" ", "")]))


@pytest.mark.parametrize("name,key", [("cosine", "T_max"), ("linear", "total_iters")])
def test_a_step_schedule_longer_than_the_run_is_refused_once_the_steps_are_known(name, key):
    cfg = compose_cfg([f"scheduler={name}", f"scheduler.lr_scheduler.{key}={TOTAL + 1}"])
    validate(cfg)  # in steps: the data's size decides the run's
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=LR)
    with pytest.raises(ConfigError) as e:
        build_scheduler(opt, cfg.scheduler, TOTAL, cfg.trainer.max_epochs)
    assert str(e.value) == (
        f"scheduler.lr_scheduler.{key}={TOTAL + 1}: at most {TOTAL}, the run's steps after the warmup: "
        "the decay would stop short (null: all)"
    )
    assert build_scheduler(opt, OmegaConf.merge(cfg.scheduler, {"lr_scheduler": {key: TOTAL}}), TOTAL, 10)


def test_quick_looks_at_presets_made_for_longer_runs():
    from trickbench.callbacks.lookahead import Lookahead

    # the speedrun's warmup (0.23) and Lookahead start (0.3) are fractions: two epochs are a quick look, not an error
    cfg = compose_cfg(["experiment=speedrun/cifar10", "trainer.max_epochs=2"])
    validate(cfg)
    lookahead = Lookahead(start_epoch=cfg.callbacks.lookahead.start_epoch)
    lookahead.setup(SimpleNamespace(max_epochs=10), None, "fit")
    assert lookahead._first_epoch == 3  # airbench's: the 4th of 10 epochs
    lookahead.setup(SimpleNamespace(max_epochs=2), None, "fit")
    assert lookahead._first_epoch == 1


# ---- optimizer.norm_lr_scale -----------------------------------------------------------------------------------
def norm_param_ids(net: nn.Module) -> set[int]:
    return {id(p) for m in net.modules() if isinstance(m, nn.BatchNorm2d) for p in m.parameters()}


@pytest.mark.parametrize("no_bias_decay", [False, True])
def test_norm_lr_scale_puts_norm_layers_in_their_own_group(no_bias_decay):
    net = build("norm=batch", "model.widths=[4,8,8]")
    overrides = ["optimizer=nesterov", "optimizer.lr=1.5", "optimizer.weight_decay=0.01", "optimizer.norm_lr_scale=64"]
    cfg = composed(*overrides, f"optimizer.no_bias_decay={str(no_bias_decay).lower()}").optimizer
    groups = build_optimizer(net, cfg, global_batch=1024).param_groups
    *others, norm = groups
    assert {id(p) for p in norm["params"]} == norm_param_ids(net)
    assert norm["lr"] == 96.0 and norm["weight_decay"] == (0.0 if no_bias_decay else 0.01 / 64)
    assert all(g["lr"] == 1.5 for g in others) and others[0]["weight_decay"] == 0.01
    assert len(others) == (2 if no_bias_decay else 1)
    if no_bias_decay:  # the whitening bias: not a norm layer's, so no decay but the plain lr
        assert [p.shape for p in others[1]["params"]] == [(24,)]
    # a schedule multiplies every group's lr by the same factor: the ratio holds at every step
    scheduler = build_scheduler(build_optimizer(net, cfg, 1024), composed("scheduler=linear").scheduler, 20, 4)
    for _ in range(20):
        optimizer = scheduler["scheduler"].optimizer
        assert optimizer.param_groups[-1]["lr"] == pytest.approx(64 * optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler["scheduler"].step()


def test_norm_lr_scale_default_keeps_one_group_and_bad_values_fail():
    cfg = composed("optimizer=nesterov")
    assert cfg.optimizer.norm_lr_scale == 1.0
    (group,) = build_optimizer(nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2)), cfg.optimizer, 128).param_groups
    assert len(group["params"]) == 4
    with pytest.raises(ConfigError, match=r"^optimizer.norm_lr_scale=0: a number > 0"):
        validate(compose_cfg(["optimizer.norm_lr_scale=0"]))


# ---- a keyword the torch class does not take ---------------------------------------------------------------------
def test_a_keyword_the_class_lacks_is_named_with_what_its_signature_takes():
    with pytest.raises(ConfigError) as err:
        validate(compose_cfg(["optimizer=adam", "+optimizer.momentum=0.9"]))
    assert str(err.value).startswith(
        "optimizer.momentum=0.9: optimizer=adam takes lr, betas, eps, weight_decay, amsgrad, "
    ) and str(err.value).endswith(
        "; and this project's scale_lr_to_batch, no_bias_decay, norm_lr_scale; momentum is optimizer=nesterov and "
        "optimizer=sgd's"
    )
    assert "params" not in str(err.value)  # the builder passes the parameters itself
    with pytest.raises(ConfigError, match=r"^scheduler\.lr_scheduler\.gama=0\.1: scheduler=step takes step_size, "):
        validate(compose_cfg(["scheduler=step", "+scheduler.lr_scheduler.gama=0.1"]))
    # a builder called on its own checks its node too
    cfg = compose_cfg(["optimizer=sgd", "+optimizer.betas=[0.9,0.99]"])
    with pytest.raises(ConfigError, match=r"^optimizer\.betas=.*: optimizer=sgd takes lr, momentum, dampening"):
        build_optimizer(nn.Linear(2, 2), cfg.optimizer, 32)


@pytest.mark.parametrize("optimizer", ["adam", "adamw", "sgd", "nesterov"])
def test_every_shipped_optimizer_and_schedule_passes_the_keyword_check(optimizer):
    for scheduler in ("cosine", "exponential", "linear", "multistep", "none", "step"):
        validate(compose_cfg([f"optimizer={optimizer}", f"scheduler={scheduler}"]))
