"""The report's numbers: per configuration, test acc over seeds, its paired difference to the baseline with a
t-interval, epochs to the target acc, and the order rows are shown in."""

import math
import statistics

from trickbench.report.collect import Job, Row


def mean_std(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def paired_ci(diffs: list[float], level: float = 0.95) -> tuple[float | None, float | None, float | None]:
    """Mean of per-seed differences and its t-interval over seeds; no interval from one pair."""
    if not diffs:
        return None, None, None
    mean = statistics.fmean(diffs)
    if len(diffs) < 2:
        return mean, None, None
    from scipy.stats import t  # imported here: only the report needs scipy

    half = t.ppf(0.5 + level / 2, len(diffs) - 1) * statistics.stdev(diffs) / math.sqrt(len(diffs))
    return mean, mean - half, mean + half


def epochs_to(metrics: list[dict], target: float) -> int | None:
    """1-based count of epochs until val acc first reaches target (None: never)."""
    for row in metrics:
        if row.get("val_acc") is not None and row["val_acc"] >= target:
            return int(row["epoch"]) + 1
    return None


def _test_acc(job: Job):
    return (job.results.get("test") or {}).get("acc")


def compute(rows: list[Row], target_acc: float) -> None:
    base = next(r for r in rows if r.baseline)
    base_by_seed = {j.seed: _test_acc(j) for j in base.jobs if j.ok and _test_acc(j) is not None}
    for r in rows:
        ok = [j for j in r.jobs if j.ok and _test_acc(j) is not None]
        accs = [_test_acc(j) for j in ok]
        mean, std = mean_std(accs)
        diffs = [] if r.baseline else [_test_acc(j) - base_by_seed[j.seed] for j in ok if j.seed in base_by_seed]
        diff, low, high = paired_ci(diffs)
        reached = [e for e in (epochs_to(j.metrics, target_acc) for j in ok) if e is not None]
        params = sorted({j.results.get("params") for j in ok})
        statuses = [j.results.get("status", "?") for j in r.jobs]
        r.stats = {
            "config": r.label,
            "baseline": r.baseline,
            "seeds": " ".join(str(j.seed) for j in sorted(ok, key=lambda j: str(j.seed))),
            "n_ok": len(ok),
            "n_not_ok": len(r.jobs) - len(ok),
            "test_acc_mean": mean,
            "test_acc_std": std,
            "diff_mean": diff,
            "diff_ci_low": low,
            "diff_ci_high": high,
            "diff_pairs": len(diffs),
            "val_acc_best_mean": mean_std(
                [j.results["val"]["acc_best"] for j in ok if j.results["val"]["acc_best"] is not None]
            )[0],
            "train_acc_last_mean": mean_std(
                [j.results["train"]["acc_last"] for j in ok if j.results["train"]["acc_last"] is not None]
            )[0],
            "epochs_to_target_mean": mean_std(reached)[0],
            "target_reached": f"{len(reached)}/{len(ok)}",
            "wall_time_s_mean": mean_std([j.results["wall_time_s"] for j in ok])[0],
            "params": params[0] if len(params) == 1 else " ".join(map(str, params)) or None,
            "precision": " ".join(sorted({str(p) for j in ok if (p := j.results.get("precision"))})) or None,
            "status": ", ".join(f"{statuses.count(s)} {s}" for s in sorted(set(statuses))),
        }


def sorted_rows(rows: list[Row]) -> list[Row]:
    """Best mean test acc first; configurations without a finished run last."""
    return sorted(rows, key=lambda r: (r.stats["test_acc_mean"] is None, -(r.stats["test_acc_mean"] or 0)))
