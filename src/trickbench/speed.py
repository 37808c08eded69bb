"""Speed switches: mixed precision, cuDNN autotuning, TF32, channels_last and torch.compile, and every torch backend
flag, set here only (apply_backend_flags, reset_backend_flags). Each switch resolves to what the run's device can
use; an explicit switch the device cannot use is dropped with a one-line warning. What a run used goes to
results.json ("speed"), determinism included: it is an explicit choice (trainer.deterministic), never a side effect
of another switch."""

import logging
import platform

import torch
from omegaconf import DictConfig
from torch import nn

from trickbench.errors import is_int
from trickbench.rules import Rule, boolean, one_of, optional

log = logging.getLogger(__name__)
MATMUL_PRECISIONS = ("highest", "high", "medium")
# Lightning's (without transformer-engine, a package of its own); 64, 32 and 16 also as integers
PRECISIONS = ("32-true", "bf16-mixed", "16-mixed", "bf16-true", "16-true", "64-true", "32", "bf16", "16", "64")
ALIASES = {"32": "32-true", "16": "16-mixed", "bf16": "bf16-mixed", "64": "64-true"}  # Lightning's own reading
RULES = [
    Rule(
        "trainer.precision",
        optional(lambda v: (isinstance(v, str) or is_int(v)) and str(v) in PRECISIONS),
        f"null (auto) or one of {list(PRECISIONS)}",
    ),
    Rule("trainer.benchmark", optional(boolean), "null (auto), true or false"),
    Rule("trainer.sync_batchnorm", optional(boolean), "null (auto), true or false"),
    Rule("matmul_precision", optional(one_of(MATMUL_PRECISIONS)), f"null or one of {list(MATMUL_PRECISIONS)}"),
    Rule("compile", lambda v: isinstance(v, bool) or (isinstance(v, str) and v != ""), "false, true or a backend name"),
    Rule("model.channels_last", boolean, "true or false"),
]


def on_gpu(trainer_cfg: DictConfig) -> bool:
    """Whether the Trainer this config builds runs on a CUDA GPU (accelerator auto picks one when there is one)."""
    return torch.cuda.is_available() and str(trainer_cfg.get("accelerator", "auto")) in ("auto", "gpu", "cuda")


def cpu_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 in hardware: AVX512_BF16 or AMX on x86 (the probes inductor's CPU code
    picks its bf16 kernels by), the bf16 extension on Arm (oneDNN's check there). oneDNN's x86 check is not used: it
    says yes on any AVX-512 CPU, where bf16 is emulated and runs slower than float32."""
    if platform.machine().lower() in ("x86_64", "amd64", "i386", "i686"):
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def _refuse(key: str, value, why: str, instead):
    log.warning("%s=%s ignored: %s; using %s", key, value, why, instead)
    return instead


def resolve(cfg: DictConfig, precision=None) -> dict:
    """The speed settings this run uses: trainer.precision, trainer.benchmark, matmul_precision, compile,
    model.channels_last and trainer.sync_batchnorm, with null meaning the device's best (bf16-mixed, autotuning,
    TF32 and synced BatchNorm statistics on a GPU; bf16-mixed where the CPU has native bfloat16, else 32-true, and
    per-rank statistics on a CPU). precision: the one asked for in place of trainer.precision (a continued run's,
    checkpoints.continued_precision)."""
    gpu = on_gpu(cfg.trainer)
    native_cpu_bf16 = None if gpu else cpu_native_bf16()
    bf16 = torch.cuda.is_bf16_supported() if gpu else native_cpu_bf16
    deterministic = cfg.trainer.get("deterministic") in (True, "warn")

    precision = cfg.trainer.get("precision") if precision is None else precision
    if precision is None:
        precision = "bf16-mixed" if bf16 else "32-true"
        device, has = ("GPU" if gpu else "CPU"), ("has" if bf16 else "lacks")
        log.info("precision %s (trainer.precision=null: this %s %s native bfloat16)", precision, device, has)
    else:  # recorded as what runs: Lightning's names, and the switch Lightning would make on a CPU, said here
        precision = ALIASES.get(str(precision), str(precision))
    if "bf16" in precision and gpu and not bf16:
        precision = _refuse("trainer.precision", precision, "this GPU has no bfloat16", "32-true")
    elif precision == "16-mixed" and not gpu:
        precision = _refuse("trainer.precision", precision, "float16 autocast runs on a GPU only", "bf16-mixed")

    benchmark = cfg.trainer.get("benchmark")
    if benchmark is None:
        benchmark = gpu and not deterministic
    elif benchmark and not gpu:
        benchmark = _refuse("trainer.benchmark", True, "cuDNN autotuning needs a CUDA GPU", False)
    elif benchmark and deterministic:
        benchmark = _refuse("trainer.benchmark", True, "autotuning picks non-deterministic kernels", False)

    matmul = cfg.get("matmul_precision")
    if matmul is None:
        matmul = "high" if gpu else "highest"
    elif matmul != "highest" and not gpu:
        matmul = _refuse("matmul_precision", matmul, "TF32 and reduced float32 matmuls need a CUDA GPU", "highest")

    sync_bn = cfg.trainer.get("sync_batchnorm")
    if sync_bn is None:
        sync_bn = gpu
    elif sync_bn and not gpu:
        sync_bn = _refuse("trainer.sync_batchnorm", True, "torch's SyncBatchNorm runs on CUDA GPUs only", False)

    backend = cfg.get("compile") or None
    return {
        "precision": str(precision),
        "benchmark": bool(benchmark),
        "matmul_precision": matmul,
        "deterministic": deterministic,
        "compile": "inductor" if backend is True else backend,
        "channels_last": bool(cfg.model.get("channels_last", False)),
        "sync_batchnorm": bool(sync_bn),
        "cpu_native_bf16": native_cpu_bf16,  # null on a GPU
    }


def reset_backend_flags(threads: int) -> None:
    """torch's process-wide state back to its defaults (and `threads` threads): parallel launchers reuse worker
    processes, and a job must not inherit an earlier job's flags."""
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(False)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = False
    apply_backend_flags({"matmul_precision": "highest"})


def apply_backend_flags(settings: dict) -> None:
    """Global torch flags for float32 math; the Trainer sets cudnn.benchmark and determinism from its arguments."""
    torch.set_float32_matmul_precision(settings["matmul_precision"])
    torch.backends.cudnn.allow_tf32 = settings["matmul_precision"] != "highest"  # torch's default is True


def prepare_model(net: nn.Module, settings: dict) -> nn.Module:
    """channels_last weights, and torch.compile in place (nn.Module.compile), so state_dict keys stay clean."""
    if settings["channels_last"]:
        net = net.to(memory_format=torch.channels_last)
    if settings["compile"]:
        net.compile(backend=settings["compile"])
    return net
