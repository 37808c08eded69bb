"""The speedrun preset (experiment=speedrun/cifar10) against airbench94 (airbench==0.1.8) on one GPU, same data.

    python benchmarks/speedrun.py --device cuda --seeds 5            # data: .bench/ or ../shared/ CIFAR-10 copy

Both train on the same decoded CIFAR-10 source: the template's cache of data.source is exported as airbench's
train.pt / test.pt (uint8 N,H,W,C images, labels, classes). The seeds alternate sides (airbench, trickbench, ...)
in this one process after one untimed run of each. Per run: test accuracy (airbench: its TTA evaluation, as its
train94 reports it; trickbench: results.json's test acc), the seconds to a trained model (airbench: train94 from
data already on the GPU; trickbench: results.json's fit_s) and the whole call (airbench: loading train.pt, train94,
evaluation; trickbench: train.run, from the cache to results.json). airbench needs CUDA: on a CPU this script
exports the data and runs the trickbench side only.
"""

import argparse
import contextlib
import tempfile
from pathlib import Path

import torch
from common import (
    add_common_args,
    clock,
    command_line,
    compose_cfg,
    machine,
    print_table,
    run_overrides,
    trickbench_run,
    write_json,
)
from hydra.utils import instantiate

AIRBENCH_FOLDER = "cifar10"  # airbench's train() reads its test set from ./cifar10, whatever loader it is given


def export_for_airbench(cfg, export_dir: Path) -> dict:
    """train.pt / test.pt from the same decoded source (and cache) the template's datamodule reads."""
    dm = instantiate(cfg.data, augment=cfg.augment, seed=cfg.seed)
    dm.prepare_data()
    decoded = dm._data  # every split of the template is cut from these tensors (setup() would split them)
    folder = export_dir / AIRBENCH_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        images = decoded[f"{split}_x"].permute(0, 2, 3, 1).contiguous()  # airbench: N,H,W,C like torchvision's
        labels = decoded[f"{split}_y"].to(torch.int64)
        torch.save({"images": images, "labels": labels, "classes": list(decoded["classes"])}, folder / f"{split}.pt")
    return {"dataset": decoded["label"], "train": len(decoded["train_y"]), "test": len(decoded["test_y"])}


def airbench_run(export_dir: Path, seed: int) -> dict:
    import airbench
    from airbench.lib_airbench94 import hyp

    # as importing airbench94 leaves them; trickbench's runs reset them to their own settings in between
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = True, False
    torch.backends.cudnn.allow_tf32 = True
    torch.set_float32_matmul_precision("highest")
    torch.manual_seed(seed)
    with contextlib.chdir(export_dir):
        start = clock("cuda")
        # the loader train94 builds when given none
        loader = airbench.CifarLoader(
            AIRBENCH_FOLDER, batch_size=hyp["opt"]["batch_size"], aug=hyp["aug"], altflip=True
        )
        train_start = clock("cuda")
        net = airbench.train94(loader, verbose=False)
        train_end = clock("cuda")
        test_loader = airbench.CifarLoader(AIRBENCH_FOLDER, train=False, batch_size=2000)
        acc = airbench.evaluate(net, test_loader, tta_level=hyp["net"]["tta_level"])
        end = clock("cuda")
    return {"acc": acc, "train_s": train_end - train_start, "wall_s": end - start}


def trickbench_side(overrides: list[str], device: str, seed: int) -> dict:
    results = trickbench_run([*overrides, f"seed={seed}"], device)
    return {"acc": results["test"]["acc"], "train_s": results["timing"]["fit_s"], "wall_s": results["run_wall_s"]}


def airbench_missing(device: str) -> str | None:
    """Why airbench94 cannot run here, or None: its net is built with .cuda(), its loader maps data to GPU 0 and
    it times with CUDA events."""
    if device != "cuda" or not torch.cuda.is_available():
        return "it needs CUDA (make_net94 calls .cuda(), CifarLoader loads onto GPU 0, train times with CUDA events)"
    try:
        import airbench  # noqa: F401
    except ImportError:
        return "the airbench package is not installed (bash benchmarks/make-airbench-wheel.sh, then .whl/ -> .site/)"
    return None


def summary(runs: list[dict]) -> tuple[float, float, float] | None:
    if not runs:
        return None
    n = len(runs)
    return tuple(sum(r[k] for r in runs) / n for k in ("acc", "train_s", "wall_s"))


def table_row(device: str, data: dict, seeds: list[int], airbench_runs: list[dict], ours_runs: list[dict]) -> list:
    theirs, ours = summary(airbench_runs), summary(ours_runs)

    def side(s):
        return ["n/a"] * 3 if s is None else [f"{100 * s[0]:.2f}", f"{s[1]:.2f}", f"{s[2]:.2f}"]

    def ratios():
        if theirs is None or ours is None:
            return ["n/a"] * 3
        return [f"{100 * (ours[0] - theirs[0]):+.2f}", f"**{ours[1] / theirs[1]:.2f}**", f"{ours[2] / theirs[2]:.2f}"]

    train_sizes = f"train {data['trickbench_train']:,} / {data['train']:,} images"
    return [
        machine(device),
        f"{data['dataset']}, {train_sizes}",
        str(len(seeds)),
        *side(theirs),
        *side(ours),
        *ratios(),
    ]


HEADER = [
    "machine",
    "data (trickbench / airbench)",
    "seeds",
    "airbench94 acc %",
    "airbench94 train s",
    "airbench94 wall s",
    "trickbench acc %",
    "trickbench fit s",
    "trickbench wall s",
    "acc diff (points)",
    "train time ratio",
    "wall ratio",
]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(parser)
    parser.add_argument("--seeds", type=int, default=5, help="runs per side, seeds 0..N-1 (default 5)")
    parser.add_argument("--experiment", default="speedrun/cifar10", help="the trickbench preset")
    parser.add_argument("--export-dir", help="keep cifar10/{train,test}.pt there (default: a temporary folder)")
    args = parser.parse_args(argv)
    overrides = [f"experiment={args.experiment}", *run_overrides(args, "cifar10")]
    cfg = compose_cfg(overrides)
    temporary = tempfile.TemporaryDirectory(prefix="airbench-") if args.export_dir is None else None
    export_dir = Path(args.export_dir or temporary.name).resolve()
    data = export_for_airbench(cfg, export_dir)
    subset = cfg.data.get("subset") or data["train"]
    data["trickbench_train"] = subset - cfg.data.val_size
    print(f"exported {data['dataset']} to {export_dir / AIRBENCH_FOLDER}: {data['train']} train, {data['test']} test")
    missing = airbench_missing(args.device)
    if missing:
        print(f"airbench94: not run: {missing}", flush=True)

    seeds = list(range(args.seeds))
    for _ in range(args.warmup):  # CUDA context, cuDNN autotuning, torch.compile's caches: not counted
        if not missing:
            airbench_run(export_dir, seeds[0])
        trickbench_side(overrides, args.device, seeds[0])
    airbench_runs, ours_runs = [], []
    for seed in seeds:
        if not missing:
            airbench_runs.append(airbench_run(export_dir, seed))
            print(f"airbench94 seed {seed}: {airbench_runs[-1]}", flush=True)
        ours_runs.append(trickbench_side(overrides, args.device, seed))
        print(f"trickbench seed {seed}: {ours_runs[-1]}", flush=True)
    print_table(command_line(__file__, argv), HEADER, [table_row(args.device, data, seeds, airbench_runs, ours_runs)])
    write_json(
        args.json, {"machine": machine(args.device), "data": data, "airbench": airbench_runs, "trickbench": ours_runs}
    )


if __name__ == "__main__":
    main()
