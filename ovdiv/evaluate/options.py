"""Options of an evaluation run, validated once (user errors -> :class:`ConfigError`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ovdiv.errors import ConfigError
from ovdiv.types import AttributionMethod, AttributionNorm, AttributionTarget, Consensus

__all__ = ["EvalOptions", "parse_shard"]


def parse_shard(value: str | tuple[int, int] | None) -> tuple[int, int] | None:
    """``"i/n"`` -> ``(i, n)`` with ``0 <= i < n``; None stays None."""
    if value is None:
        return None
    if isinstance(value, tuple):
        i, n = value
    else:
        try:
            a, b = str(value).split("/")
            i, n = int(a), int(b)
        except ValueError:
            raise ConfigError(f"--shard {value!r} is not of the form i/n", "e.g. --shard 0/2 and --shard 1/2") from None
    if n < 1 or not 0 <= i < n:
        raise ConfigError(f"--shard {i}/{n}: need 0 <= i < n", "e.g. --shard 0/2 and --shard 1/2")
    return (i, n)


def _enum(enum: type[Any], value: Any, option: str) -> Any:
    try:
        return enum(str(value).lower())
    except ValueError:
        raise ConfigError(f"{option} {value!r} is not valid", f"choose one of {[e.value for e in enum]}") from None


def _positive(value: int | None, option: str, *, allow_zero: bool = False) -> int | None:
    if value is None:
        return None
    try:
        v = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{option} must be an integer, got {value!r}") from None
    if v < 0 or (v == 0 and not allow_zero):
        raise ConfigError(f"{option} must be {'>= 0' if allow_zero else '>= 1'}, got {v}")
    return v


_GRADIENT_CHECK_MODES = ("off", "quick", "full")


def _gradient_check(value: str | None) -> str:
    v = "off" if value is None else str(value).lower()
    if v not in _GRADIENT_CHECK_MODES:
        raise ConfigError(f"--gradient-check {value!r} is not valid", f"choose one of {list(_GRADIENT_CHECK_MODES)}")
    return v


@dataclass
class EvalOptions:
    """Everything that shapes an evaluation besides members and datasets.

    Attributes:
        subset_size: Score every k-subset of the pool (None: one ensemble of all members).
        consensus: Consensus rules (metrics of rules other than ``average`` carry a ``:rule`` suffix); the
            first one picks the ensemble prediction used as attribution target.
        attribution: Attribution method (``none`` switches attribution off).
        attribution_target: Class each member's map is computed for: the pool's ensemble prediction
            (first consensus rule), each member's own prediction, or the label.
        attribution_norm: Per-map normalisation of ``|a|`` before attribution diversity.
        attribution_samples: Attribution on the first N samples of each dataset (None: all).
        attribution_params: Extra keyword arguments of the attribution method (e.g. ``n_steps``).
        cka_samples: Features for CKA on the first N samples (0: no CKA).
        limit: Use only the first N images of each dataset.
        batch_size: Images per inference request.
        workers: Data-preparation workers.
        shard: ``(i, n)``: compute only chunks ``c`` with ``c % n == i`` (results when all shards are done).
        seed: Dataset seed (and majority-vote tie-break seed).
        chunk_size: Images per cached chunk (the resume granularity).
        examples: Example attribution maps kept for the report's saliency grids.
        ci_level: Confidence level of every interval (default 0.95).
        bootstrap: Paired-bootstrap resamples over images (default 2000; 0 switches the bootstrap off —
            binomial intervals and McNemar p-values remain). Resampling is seeded with ``seed``.
        ci_method: Bootstrap interval: ``percentile`` (default) or ``bca``.
        binomial: Interval of top-1/top-5 accuracies: ``clopper-pearson`` (exact; default) or ``wilson``.
        gradient_check: ``quick`` (default), ``full`` or ``off``: each member's VJP graph is checked against
            finite differences of its own forward before its attributions are used
            (:func:`ovdiv.attribution.check_gradients`).
        executor: ``local`` (default: this process) or ``ray`` (the same work units on a Ray cluster,
            :mod:`ovdiv.evaluate.executor_ray`). Recorded in ``metadata["executor"]``, not in the options.
        ray_address: Ray cluster of ``executor="ray"`` (None: a running cluster, else a local Ray).
    """

    subset_size: int | None = None
    consensus: tuple[Consensus, ...] = (Consensus.AVERAGE,)
    attribution: AttributionMethod = AttributionMethod.SALIENCY
    attribution_target: AttributionTarget = AttributionTarget.ENSEMBLE
    attribution_norm: AttributionNorm = AttributionNorm.MAX
    attribution_samples: int | None = None
    attribution_params: dict[str, Any] = field(default_factory=dict)
    cka_samples: int = 256
    limit: int | None = None
    batch_size: int = 32
    workers: int | None = None
    shard: tuple[int, int] | None = None
    seed: int = 0
    chunk_size: int = 512
    examples: int = 16
    ci_level: float = 0.95
    bootstrap: int = 2000
    ci_method: str = "percentile"
    binomial: str = "clopper-pearson"
    gradient_check: str = "quick"
    executor: str = "local"
    ray_address: str | None = None

    @classmethod
    def build(
        cls,
        *,
        subset_size: int | None = None,
        consensus: str | Consensus | Sequence[str | Consensus] = "average",
        attribution: str | AttributionMethod | None = "saliency",
        attribution_target: str | AttributionTarget = "ensemble",
        attribution_norm: str | AttributionNorm = "max",
        attribution_samples: int | None = None,
        attribution_params: dict[str, Any] | None = None,
        cka_samples: int = 256,
        limit: int | None = None,
        batch_size: int = 32,
        workers: int | None = None,
        shard: str | tuple[int, int] | None = None,
        seed: int = 0,
        chunk_size: int = 512,
        examples: int = 16,
        ci_level: float = 0.95,
        bootstrap: int = 2000,
        ci_method: str = "percentile",
        binomial: str = "clopper-pearson",
        gradient_check: str = "quick",
        executor: str = "local",
        ray_address: str | None = None,
    ) -> EvalOptions:
        """Validate user-facing values (strings from the CLI or Python) into options."""
        from ovdiv.raycluster import check_executor

        rules = [consensus] if isinstance(consensus, str | Consensus) else list(consensus)
        if not rules:
            rules = ["average"]
        cons = tuple(dict.fromkeys(_enum(Consensus, r, "--consensus") for r in rules))
        try:
            level = float(ci_level)
        except (TypeError, ValueError):
            raise ConfigError(f"--ci-level must be a number, got {ci_level!r}") from None
        if not 0.5 <= level < 1.0:
            raise ConfigError(f"--ci-level {level} is not in [0.5, 1)", "e.g. --ci-level 0.95")
        if str(ci_method).lower() not in ("percentile", "bca"):
            raise ConfigError(f"--ci-method {ci_method!r} is not valid", "choose one of ['percentile', 'bca']")
        if str(binomial).lower() not in ("clopper-pearson", "wilson"):
            raise ConfigError(f"binomial interval {binomial!r} is not valid", "choose 'clopper-pearson' or 'wilson'")
        return cls(
            subset_size=_positive(subset_size, "--size"),
            consensus=cons,
            attribution=_enum(AttributionMethod, attribution or "none", "--attribution"),
            attribution_target=_enum(AttributionTarget, attribution_target, "--attribution-target"),
            attribution_norm=_enum(AttributionNorm, attribution_norm, "--attribution-norm"),
            attribution_samples=_positive(attribution_samples, "--attribution-samples"),
            attribution_params=dict(attribution_params or {}),
            cka_samples=_positive(cka_samples, "--cka-samples", allow_zero=True) or 0,
            limit=_positive(limit, "--limit"),
            batch_size=_positive(batch_size, "--batch-size") or 32,
            workers=_positive(workers, "--workers"),
            shard=parse_shard(shard),
            seed=int(seed),
            chunk_size=_positive(chunk_size, "chunk_size") or 512,
            examples=_positive(examples, "examples", allow_zero=True) or 0,
            ci_level=level,
            bootstrap=_positive(bootstrap, "--bootstrap", allow_zero=True) or 0,
            ci_method=str(ci_method).lower(),
            binomial=str(binomial).lower(),
            gradient_check=_gradient_check(gradient_check),
            executor=check_executor(executor, ray_address),
            ray_address=None if ray_address is None else str(ray_address),
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready options (enums as strings)."""
        d = dataclasses.asdict(self)
        del d["executor"], d["ray_address"]  # where the work ran, not what it computed: metadata["executor"]
        d["consensus"] = [str(c) for c in self.consensus]
        for k in ("attribution", "attribution_target", "attribution_norm"):
            d[k] = str(d[k])
        d["shard"] = None if self.shard is None else f"{self.shard[0]}/{self.shard[1]}"
        return d

    def ci_metadata(self) -> dict[str, Any]:
        """The ``metadata["ci"]`` record of ``results.json``: level, resamples (0 = off), method, seed, binomial."""
        return {
            "level": self.ci_level,
            "bootstrap": self.bootstrap,
            "method": self.ci_method,
            "seed": self.seed,
            "binomial": self.binomial,
        }
