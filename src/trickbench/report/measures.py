"""The figures a verdict reads from run records: a metric per seed, paired differences and their 95% t-interval, in
points with their unit. One rule for every interval (stats.paired_ci); an interval of zero width is flagged, never
printed."""

import statistics

from trickbench.report.stats import paired_ci

METRICS = {
    "train": ("train", "acc_last"),
    "train_clean": ("train_clean", "acc"),  # the training images without augmentation or dropout, after training
    "val": ("val", "acc_best"),
    "test": ("test", "acc"),
    "test_last": ("test_last", "acc"),
}
METRIC_NAMES = {
    "train": "final train accuracy",
    "train_clean": "train accuracy without augmentation or dropout",
    "val": "best val accuracy",
    "test": "test accuracy of the best-val checkpoint",
    "test_last": "last-epoch test accuracy",
}
UNITS = {
    "train": "points of train accuracy",
    "train_clean": "points of train accuracy (clean pass)",
    "val": "points of val accuracy",
    "test": "points of test accuracy (best-val checkpoint)",
    "test_last": "points of test accuracy",
}


def value(job, metric: str):
    part, key = METRICS[metric]
    return (job.results.get(part) or {}).get(key)


def per_seed(row, metric: str) -> dict:
    return {j.seed: v for j in row.jobs if j.ok and (v := value(j, metric)) is not None}


def lacks(row, metric: str) -> bool:
    """Some finished job of row has no figure for metric (records older than the metric)."""
    return any(j.ok and value(j, metric) is None for j in row.jobs)


def gap(row, train_metric: str, test_metric: str) -> dict:
    train, test = per_seed(row, train_metric), per_seed(row, test_metric)
    return {s: train[s] - test[s] for s in train.keys() & test.keys()}


def paired(a: dict, b: dict) -> list[float]:
    """a - b per seed, for the seeds both have, in seed order."""
    return [a[s] - b[s] for s in sorted(a.keys() & b.keys(), key=str)]


def interval_text(diffs: list[float], offset: float = 0.0) -> tuple[str, tuple | None]:
    """ "+1.23 [-0.40, +2.86]" in points and (low, high) - offset, or a flagged text and None (no interval)."""
    if not diffs:
        return "n/a", None
    mean, low, high = paired_ci(diffs)
    if low is None:
        return f"{100 * mean:+.2f} (one seed: no interval)", None
    if statistics.pstdev(diffs) == 0:
        return f"{100 * mean:+.2f} (zero variance: every seed gave the same, no interval)", None
    return f"{100 * mean:+.2f} [{100 * low:+.2f}, {100 * high:+.2f}]", (low - offset, high - offset)


def half_width(bounds: tuple | None) -> float | None:
    """The smallest effect the seeds resolve: half the interval's width (a fraction, like the accuracies)."""
    return None if bounds is None else (bounds[1] - bounds[0]) / 2
