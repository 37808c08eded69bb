"""Source resolution: an explicit data.source, the cache, the system copy, torchvision's download; what is
decoded is cached once (cache.load_or_build)."""

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from trickbench.data.cache import load_or_build, sha256_of
from trickbench.data.registry import OFFLINE_HINT, DatasetSpec, dataset_label
from trickbench.data.sources import Decoded
from trickbench.errors import ConfigError, TrickbenchError, first_line

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DatasetStore:
    """One dataset's decoded tensors, cached under root/cache."""

    name: str
    spec: DatasetSpec
    root: Path
    download: bool
    # how torchvision's copy is fetched (sources.load_official): the caller passes it, so a test can go offline
    fetch_official: Callable[[type, Path], Decoded]

    def load(self, source: Path | None) -> tuple[dict, bool]:
        """(the decoded dataset, whether it came from the cache)."""
        return load_or_build(*self.resolve(source))

    def resolve(self, source: Path | None) -> tuple[Path, Callable[[], dict]]:
        """The cache file for this source, and what builds it when absent (load_or_build looks first)."""
        cache_dir = self.root / "cache"
        if source is None:
            return cache_dir / f"{self.name}-official.pt", self._build_official
        if not source.exists():
            raise ConfigError(
                "data.source",
                str(source),
                f"no such file or folder; expected a folder or .tar.gz with {self.spec.mirror_layout}",
            )
        digest = sha256_of(source)
        return cache_dir / f"{self.name}-{digest[:16]}.pt", lambda: self._decode(source, digest)

    def _build_official(self) -> dict:
        for system_copy in map(Path, self.spec.system_dirs):
            if system_copy.is_dir():
                return self._decode(system_copy, sha256_of(system_copy))
        if not self.download:
            raise ConfigError(
                "data.download",
                False,
                f"nothing to decode {self.name} from and no usable cache under {self.root / 'cache'}; "
                f"allow the download or set {OFFLINE_HINT[self.name]}",
            )
        return self._download()

    def _decode(self, path: Path, digest: str) -> dict:
        log.info("decoding %s from %s (once; cached under %s)", self.name, path, self.root / "cache")
        d = self.spec.load_mirror(path)
        self._check_shape(d, path)
        return {**d.__dict__, "source": str(path), "source_sha256": digest, "label": dataset_label(self.name, d.lossy)}

    def _download(self) -> dict:
        raw = self.root / "downloads"
        try:
            d = self.fetch_official(self.spec.official, raw)
        except Exception as e:  # noqa: BLE001  (any network failure: say how to work offline)
            raise TrickbenchError(
                f"could not download {self.name} ({type(e).__name__}: {first_line(e)}); "
                f"point at an offline copy: {OFFLINE_HINT[self.name]}"
            ) from e
        self._check_shape(d, raw)
        return {**d.__dict__, "source": "torchvision", "source_sha256": sha256_of(raw), "label": self.name}

    def _check_shape(self, d: Decoded, path: Path) -> None:
        for split, x in (("train", d.train_x), ("test", d.test_x)):
            if tuple(x.shape[1:]) != self.spec.shape:
                raise ConfigError(
                    "data.source",
                    str(path),
                    f"{self.name} needs {self.spec.shape} images; {split} has {tuple(x.shape[1:])}",
                )
