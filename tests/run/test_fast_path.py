"""The GPU fast path, tested on the CPU: splits served as index slices of resident tensors, a training loop that
reads nothing back from the device between logging intervals, and the speed switches with what they record."""

import json
import logging
from types import SimpleNamespace

import pytest
import torch
from conftest import compose_cfg, tiny_run_overrides
from sync_probe import SyncProbe

from trickbench import speed
from trickbench.data import ImageDataModule
from trickbench.data.loader import EpochOrder, resident_device
from trickbench.train import run


def dm_on(source, root, trainer=None, **kw) -> ImageDataModule:
    dm = ImageDataModule("fashion_mnist", source=str(source), root=str(root), download=False, val_size=40, **kw)
    dm.trainer = trainer
    dm.prepare_data()
    dm.setup("fit")
    return dm


def fake_trainer(device: str, rank: int = 0, world_size: int = 1):
    return SimpleNamespace(
        strategy=SimpleNamespace(root_device=torch.device(device)), global_rank=rank, world_size=world_size
    )


# ---- the order of an epoch and the loader -------------------------------------------------------------------
def test_epoch_order_is_a_function_of_seed_and_epoch():
    def order(seed, epoch, n=100):
        o = EpochOrder(n, seed)
        o.set_epoch(epoch)
        return o.indices(torch.device("cpu")).tolist()

    assert order(0, 1) == order(0, 1)  # a resumed run replays its epoch
    assert order(0, 1) != order(0, 2) and order(0, 1) != order(1, 1)
    assert sorted(order(0, 1)) == list(range(100))


def test_ranks_take_disjoint_equal_shares_of_one_permutation():
    shares = []
    for rank in range(3):
        o = EpochOrder(100, seed=5, rank=rank, world_size=3)
        o.set_epoch(2)
        shares.append(o.indices(torch.device("cpu")))
    whole = EpochOrder(100, seed=5)
    whole.set_epoch(2)
    assert [len(s) for s in shares] == [33, 33, 33]
    assert torch.equal(torch.cat(shares), whole.indices(torch.device("cpu"))[:99])


def test_train_batches_are_index_slices_in_the_epochs_order(fmnist_mirror, tmp_path):
    dm = dm_on(fmnist_mirror, tmp_path, batch_size=32)  # 160 train images: 5 batches
    loader = dm.train_dataloader()
    loader.sampler.set_epoch(3)
    batches = list(loader)
    assert len(loader) == len(batches) == 5
    for x, y in batches:
        assert x.dtype == torch.uint8 and x.shape == (32, 1, 28, 28) and y.dtype == torch.int64
    order = loader.sampler.indices(torch.device("cpu"))
    assert torch.equal(torch.cat([x for x, _ in batches]), dm.train_set.x[order])
    assert torch.equal(torch.cat([y for _, y in batches]), dm.train_set.y[order])
    loader.sampler.set_epoch(4)
    assert not torch.equal(next(iter(loader))[1], batches[0][1])


def test_eval_batches_are_views_in_order_with_a_short_last_batch(fmnist_mirror, tmp_path):
    dm = dm_on(fmnist_mirror, tmp_path, eval_batch_size=16)  # 40 val images
    batches = list(dm.val_dataloader())
    assert [len(y) for _, y in batches] == [16, 16, 8] and len(dm.val_dataloader()) == 3
    assert batches[0][0].data_ptr() == dm._served("val").x.data_ptr()  # a slice, not a copy
    assert torch.equal(torch.cat([x for x, _ in batches]), dm.val_set.x)


def test_splits_live_on_the_trainers_device_unless_off(fmnist_mirror, tmp_path):
    # the meta device stands in for an accelerator: the splits move there once, and batches come from there
    on = dm_on(fmnist_mirror, tmp_path, trainer=fake_trainer("meta"), on_device=True)
    x, y = next(iter(on.val_dataloader()))  # (the meta device has no random generator for the train order)
    assert x.device.type == y.device.type == "meta" and on.info["data_device"] == "meta"
    assert on._served("train").x.device.type == on.train_dataloader().x.device.type == "meta"
    off = dm_on(fmnist_mirror, tmp_path, trainer=fake_trainer("meta"), on_device=False)
    assert next(iter(off.train_dataloader()))[0].device.type == "cpu" and off.info["data_device"] == "cpu"
    assert resident_device("auto", torch.device("meta"), 10**12) == torch.device("meta")
    assert resident_device("auto", torch.device("cpu"), 10**12) == torch.device("cpu")


def test_ddp_ranks_get_their_own_share_of_the_train_split(fmnist_mirror, tmp_path):
    seen = []
    for rank in (0, 1):
        dm = dm_on(fmnist_mirror, tmp_path, trainer=fake_trainer("cpu", rank, 2), batch_size=16)
        loader = dm.train_dataloader()
        assert len(loader) == 5  # 80 of the 160 images each
        seen.append(torch.cat([x for x, _ in loader]))
    keys = [{img.numpy().tobytes() for img in s} for s in seen]
    assert len(keys[0] & keys[1]) == 0 and len(keys[0] | keys[1]) == len({i.numpy().tobytes() for i in dm.train_set.x})


def test_bad_on_device_value_is_one_line(fmnist_mirror, tmp_path):
    with pytest.raises(Exception, match=r"^data.on_device='gpu': auto, true or false$"):
        dm_on(fmnist_mirror, tmp_path, on_device="gpu")


# ---- no host sync between logging intervals -------------------------------------------------------------------
def test_training_reads_from_the_device_only_at_logging_steps(fmnist_mirror, tmp_path):
    """A user's run (default callbacks, progress bar, loggers, validation, augmentation, BN, dropout): every call
    that would wait for a GPU happens in the first batch, a logging batch (log_every_n_steps=4: steps 3, 7, 11...)
    or an epoch's last batch (10 a epoch: steps 9, 19), and nowhere else.
    Two epochs: in the second the progress bar has metrics to show."""
    overrides = tiny_run_overrides(fmnist_mirror, root=tmp_path / "data")
    overrides = [o for o in overrides if not o.startswith(("trainer.limit_train", "trainer.enable_progress"))]
    overrides += [
        "data.batch_size=8",
        "trainer.limit_train_batches=10",
        "trainer.max_epochs=2",
        "trainer.log_every_n_steps=4",
        "augment=full",
        "norm=batch",
        "model.dropout=0.2",
        "+callbacks.probe._target_=sync_probe.SyncProbe",
    ]
    results = run(compose_cfg(overrides, tmp_path / "run"))
    assert results["status"] == "ok"
    probe = SyncProbe.last
    assert sorted(probe.calls) == [0, 3, 7, 9, 11, 15, 19], probe.calls  # the checks run there, and only there


# ---- speed switches -------------------------------------------------------------------------------------------
def settings(*overrides: str) -> dict:
    return speed.resolve(compose_cfg(list(overrides)))


def test_cpu_defaults_and_refused_switches(caplog):
    assert settings("trainer.accelerator=cpu") == {
        "precision": "32-true",
        "benchmark": False,
        "matmul_precision": "highest",
        "deterministic": False,
        "compile": None,
        "channels_last": False,
        "sync_batchnorm": False,
        "cpu_native_bf16": False,  # conftest's cpu_without_native_bf16; tests/run/test_cpu_precision.py tries both
    }
    with caplog.at_level(logging.WARNING):
        s = settings(
            "trainer.accelerator=cpu", "trainer.benchmark=true", "matmul_precision=high", "+trainer.sync_batchnorm=true"
        )
    assert (s["benchmark"], s["matmul_precision"], s["sync_batchnorm"]) == (False, "highest", False)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 3 and all("\n" not in w for w in warnings)
    assert warnings[0].startswith("trainer.benchmark=True ignored: cuDNN autotuning needs a CUDA GPU")
    assert warnings[1].startswith("matmul_precision=high ignored")
    assert warnings[2].startswith("trainer.sync_batchnorm=True ignored: torch's SyncBatchNorm runs on CUDA GPUs only")
    assert settings("compile=true", "model.channels_last=true")["compile"] == "inductor"


@pytest.mark.parametrize("bf16", [True, False])
def test_gpu_defaults(monkeypatch, caplog, bf16):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
    s = settings()
    assert s["precision"] == ("bf16-mixed" if bf16 else "32-true")
    assert (s["benchmark"], s["matmul_precision"], s["sync_batchnorm"]) == (True, "high", True)
    assert settings("trainer.deterministic=true")["benchmark"] is False  # determinism is the explicit choice
    with caplog.at_level(logging.WARNING):
        assert settings("trainer.precision=bf16-mixed")["precision"] == ("bf16-mixed" if bf16 else "32-true")
    assert any("this GPU has no bfloat16" in r.getMessage() for r in caplog.records) != bf16
    assert settings("trainer.accelerator=cpu")["precision"] == "32-true"


def test_channels_last_and_compiled_run_record_what_they_used(fmnist_mirror, tmp_path):
    overrides = tiny_run_overrides(fmnist_mirror, root=tmp_path / "data")
    cfg = compose_cfg([*overrides, "model.channels_last=true", "compile=eager"], tmp_path / "run")
    results = run(cfg)
    used = json.loads((tmp_path / "run" / "results.json").read_text())["speed"]
    assert used["channels_last"] is True and used["compile"] == "eager" and used["data_device"] == "cpu"
    assert used["compile_first_batch_s"] > 0
    ckpt = torch.load(results["checkpoints"]["last"], map_location="cpu", weights_only=False)
    assert not any("_orig_mod" in k for k in ckpt["state_dict"])  # compiled in place: the keys a plain net has
    timing = results["timing"]
    assert len(timing["epoch_s"]) == 1 and 0 < timing["train_s"] < timing["epoch_s"][0]
    assert results["images_per_s"] == timing["train_images_per_s"] > 0


def test_channels_last_module_gets_channels_last_weights_and_inputs(fmnist_mirror, tmp_path):
    from trickbench.models import build_model
    from trickbench.module import build_module

    cfg = compose_cfg(["model.channels_last=true"])
    net = speed.prepare_model(
        build_model(cfg.model, cfg.activation, cfg.norm, cfg.init, (1, 28, 28), 10), speed.resolve(cfg)
    )
    conv = next(m for m in net.modules() if isinstance(m, torch.nn.Conv2d) and m.in_channels > 1)
    assert conv.weight.is_contiguous(memory_format=torch.channels_last) and not conv.weight.is_contiguous()
    # the module hands the net its batches in channels_last too (3 channels: 1 would be contiguous either way)
    seen = []
    net = speed.prepare_model(
        build_model(cfg.model, cfg.activation, cfg.norm, cfg.init, (3, 28, 28), 10), speed.resolve(cfg)
    )
    net.register_forward_pre_hook(lambda _, args: seen.append(args[0].is_contiguous(memory_format=torch.channels_last)))
    module = build_module(cfg, net, 10)
    module.training_step((torch.rand(4, 3, 28, 28), torch.arange(4)), 0)
    assert seen == [True]
