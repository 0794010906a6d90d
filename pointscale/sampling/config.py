"""What a sampling run computes: :class:`SamplingConfig`.

A configuration is frozen and validated at construction (values that are
wrong whatever the data); :meth:`SamplingConfig.validate_for` adds the checks
that need the dataset (pool size, number of classes, task) and
:meth:`SamplingConfig.resolved` fills in what depends on it (the default
metric). Every entry point of the engine resolves first, so a config with
``metric=None`` and the same config with the metric spelled out produce the
same samples and the same hashes.

Two hashes:

* :meth:`~pointscale.config.StableConfig.stable_hash` -- the whole config,
  sample counts included (names a run).
* :meth:`SamplingConfig.identity_hash` -- only what the *value* of each
  sample depends on (model, settings, metric, size range, seed, block size,
  fast path). Sample counts are left out, so asking for more samples keeps
  every existing sample's identity: a top-up adds rounds, it does not redo
  old ones. This is the ``config_hash`` column of the ledger and part of
  every base id.

``shard_size`` is execution-only (``_unhashed``): it groups blocks into units
of work and never changes a result.

Size range and a finite pool (SPEC §6)
--------------------------------------
A base subset D of size k is drawn without replacement from the pool of n
points (minus the block valued against it). Two bases of size k share on
average k²/n points, and the variance over D of any subset statistic carries
the finite-population factor (n − k)/(n − 1): as k approaches n, D stops
being random and the spread of Δ collapses faster than the k^(−β) the noise
model assumes, so β piles up at its bound. :func:`default_k_range` keeps
``k_max ≤ MAX_POOL_FRACTION · n`` = n / 3 (measured by
``benchmarks/size_range.py`` and the README's table: the shrinkage of Δ's
spread against i.i.d. draws stays within sampling noise up to about a third
of the pool on MAGIC sub-pools, and breast_cancer's default run has 8 % of
points with β at a bound at k_max = 100, 14 % at k_max = 157 = n / 2), and
``k_min = k_max / 10`` (the paper's ratio) on pools too small for the
paper's [100, 1000]. A user range beyond the
fraction is accepted with a :class:`~pointscale.errors.FinitePoolWarning`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping

import numpy as np

from ..config import StableConfig, stable_hash
from ..errors import ConfigError, FinitePoolWarning
from .devices import check_device_name
from .estimators import check_for_task, check_response, is_class_path, is_estimator, normalize
from .metrics import (METRICS, check_metric, check_metric_on, default_metric, is_sklearn_scorer, response_methods,
                      scorer_task)
from .models import (MODELS, check_model_for_task, check_model_params, default_model, make_estimator,
                     validate_estimator_params)

MODES = ("uniform", "staggered")
DEFAULT_N_SIZES = 10

#: The paper's size range, used whenever the pool allows it.
PAPER_K_RANGE = (100, 1000)
#: Largest base size as a share of the pool that keeps D random (benchmarks/size_range.py).
MAX_POOL_FRACTION = 1 / 3
#: k_max / k_min of the default range on pools too small for the paper's range (the paper's ratio).
K_RANGE_RATIO = 10


def default_k_range(n_pool: int, n_classes: int = 0, *, fraction: float = MAX_POOL_FRACTION) -> tuple[int, int]:
    """The default size range [k_min, k_max] for a pool of ``n_pool`` points.

    The paper's [100, 1000] capped so that ``k_max ≤ fraction · n_pool``; when
    capped, ``k_min = max(k_max // 10, n_classes, min(10, k_max // 2))``
    (:func:`default_k_min`).

    Parameters
    ----------
    n_pool : int
        Points in the training pool.
    n_classes : int, default=0
        Classes (0 for regression): every stratified subset holds one of each.
    fraction : float, default=MAX_POOL_FRACTION

    Returns
    -------
    (int, int)

    Examples
    --------
    >>> default_k_range(46842)
    (100, 1000)
    >>> default_k_range(314, 2)
    (10, 104)
    """
    hi = min(PAPER_K_RANGE[1], int(fraction * int(n_pool)))
    lo = default_k_min(hi, n_classes)
    if hi < lo or hi < 2:
        raise ConfigError(f"the pool of {n_pool} points is too small for a size range: "
                          f"{fraction:.0%} of it is {hi} < {lo}")
    return lo, hi


def default_k_min(k_max: int, n_classes: int = 0) -> int:
    """``k_min`` for a given ``k_max``: the paper's 100, or ``k_max / 10`` when that is smaller.

    Never below the number of classes (stratified subsets hold one of each),
    and at least 10 (or half of k_max) so that models with a minimum number
    of rows (k-NN's 5 neighbours, 5-fold Platt scaling) still fit at k_min.
    """
    k_max = int(k_max)
    return min(PAPER_K_RANGE[0], max(k_max // K_RANGE_RATIO, int(n_classes), min(10, k_max // 2), 2))


def finite_pool_message(k_max: int, n_pool: int, what: str = "k_max") -> str | None:
    """Why ``k_max`` is too close to the pool size, or None when it is not."""
    limit = int(MAX_POOL_FRACTION * n_pool)
    if k_max <= limit:
        return None
    return (f"{what}={k_max} is {k_max / n_pool:.0%} of the pool of {n_pool} points: base subsets of that size "
            f"share most of their points, so Δ's spread collapses at large k (β piles up at its bound) and the "
            f"values describe this pool, not random datasets of that size; keep {what} <= {limit} "
            f"({MAX_POOL_FRACTION:.0%} of the pool)")


# Fields left out of identity_hash: how many samples, not what a sample is.
_COUNT_FIELDS = ("samples_per_point", "samples_per_size")


def default_sizes(k_min: int, k_max: int, n: int = DEFAULT_N_SIZES) -> tuple[int, ...]:
    """The staggered grid ``geomspace(k_min, k_max, n).astype(int)``, duplicates dropped.

    For (100, 1000) this is SPEC §2's grid 100, 129, 166, ..., 774, 1000.
    """
    grid = np.geomspace(k_min, k_max, n)
    grid[-1] = k_max  # geomspace may land a hair below the end point
    return tuple(int(v) for v in dict.fromkeys(np.round(grid, 9).astype(int).tolist()))


def _known_scorer(name: str) -> bool:
    from sklearn.metrics import get_scorer_names

    return name in get_scorer_names()


def _positive_int(name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ConfigError(f"{name}={value!r} must be an integer")
    if int(value) < minimum:
        raise ConfigError(f"{name}={value} must be at least {minimum}")
    return int(value)


@dataclass(frozen=True)
class SamplingConfig(StableConfig):
    """How marginal contributions are sampled.

    Parameters
    ----------
    model : str, estimator or None, default=None
        A name in :data:`pointscale.sampling.models.MODELS`, a class path
        ``"module:Class"``, or an unfitted scikit-learn-compatible estimator
        (stored as its class path and ``get_params()``, see
        :mod:`pointscale.sampling.estimators`). None means the task's default
        (``logreg`` or ``ridge``), filled in by :meth:`resolved`.
    model_params : dict, default={}
        Registry models: settings on top of the registry's defaults. Class
        paths and estimators: settings passed to ``set_params``; after
        construction this holds the estimator's full settings.
    metric : str or None, default=None
        A name in :data:`pointscale.sampling.metrics.METRICS` or
        ``"sklearn:NAME"`` (a scikit-learn scorer); None means the task's
        default, filled in by :meth:`resolved`.
    k_min, k_max : int, default=100, 1000
        Size range of the base subsets, both ends included (uniform mode).
        In staggered mode they are the smallest and largest of ``sizes``.
    samples_per_point : int, default=100
        Uniform mode: samples per point (one per round).
    seed : int, default=0
        Root seed of every random draw.
    mode : {"uniform", "staggered"}, default="uniform"
        ``uniform``: k drawn uniformly from [k_min, k_max] per base (fitting
        laws). ``staggered``: a fixed grid of sizes, ``samples_per_size``
        samples of every point at each size (ground truth).
    sizes : tuple of int or None, default=None
        Staggered grid; None means ``geomspace(k_min, k_max, 10).astype(int)``.
    samples_per_size : int, default=10
        Staggered mode: samples per point at each size.
    block_size : int, default=32
        Points valued against one shared base subset (SPEC §2). Changes which
        subsets are drawn, hence is part of the hash.
    fast_path : bool, default=True
        Use the model's batched solver where it has one (:mod:`pointscale.sampling.solvers`:
        logistic, ridge and linear regression, ``mlp_batched``, ``svm``).
    shard_size : int, default=64
        Blocks per shard (the unit of work of a task or worker). Execution
        only: never changes a sample.
    device : {"cpu", "cuda", "auto"}, default="cpu"
        Where the batched solvers compute (:mod:`pointscale.sampling.devices`):
        ``cuda`` fails at once without a GPU, ``auto`` falls back to the CPU
        with a warning. Execution only: a GPU computes the same samples up to
        floating-point rounding.
    """

    model: Any = None
    model_params: Mapping[str, Any] = field(default_factory=dict)
    metric: str | None = None
    k_min: int = 100
    k_max: int = 1000
    samples_per_point: int = 100
    seed: int = 0
    mode: str = "uniform"
    sizes: tuple[int, ...] | None = None
    samples_per_size: int = 10
    block_size: int = 32
    fast_path: bool = True
    shard_size: int = 64
    device: str = "cpu"

    _unhashed: ClassVar[tuple[str, ...]] = ("shard_size", "device")

    # ------------------------------------------------------------------ validation

    def __post_init__(self) -> None:
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731

        if not isinstance(self.model_params, Mapping):
            raise ConfigError(f"model_params={self.model_params!r} must be a mapping of settings")
        custom = is_estimator(self.model) or is_class_path(self.model)
        if custom:
            # Class path + full settings: what hashes, resumes and crosses to workers.
            path, params = normalize(self.model, self.model_params)
            set_("model", path)
            set_("model_params", params)
        elif self.model is not None and (not isinstance(self.model, str) or self.model not in MODELS):
            raise ConfigError(f"unknown model {self.model!r}; valid models: {', '.join(sorted(MODELS))}, "
                              "or a class path module:Class (e.g. sklearn.svm:SVC)")
        set_("model_params", {str(k): self.model_params[k] for k in sorted(self.model_params)})
        if self.metric is not None and self.metric not in METRICS:
            if is_sklearn_scorer(self.metric):
                name = self.metric[len("sklearn:"):]
                check_metric(self.metric, scorer_task(name) if _known_scorer(name) else "classification")
            else:
                raise ConfigError(f"unknown metric {self.metric!r}; valid metrics: {', '.join(sorted(METRICS))}, "
                                  "or sklearn:NAME for a scikit-learn scorer")
        if self.mode not in MODES:
            raise ConfigError(f"mode={self.mode!r} must be one of {', '.join(MODES)}")
        set_("seed", _positive_int("seed", self.seed, 0))
        set_("block_size", _positive_int("block_size", self.block_size))
        set_("shard_size", _positive_int("shard_size", self.shard_size))
        set_("samples_per_point", _positive_int("samples_per_point", self.samples_per_point))
        set_("samples_per_size", _positive_int("samples_per_size", self.samples_per_size))
        if not isinstance(self.fast_path, (bool, np.bool_)):
            raise ConfigError(f"fast_path={self.fast_path!r} must be True or False")
        set_("fast_path", bool(self.fast_path))
        check_device_name(self.device)

        if self.mode == "uniform":
            if self.sizes is not None:
                raise ConfigError("sizes is only used with mode='staggered'; use k_min and k_max")
            set_("k_min", _positive_int("k_min", self.k_min))
            set_("k_max", _positive_int("k_max", self.k_max))
            if self.k_min > self.k_max:
                raise ConfigError(f"k_min={self.k_min} must not exceed k_max={self.k_max}")
        else:
            if self.sizes is None:
                k_min = _positive_int("k_min", self.k_min)
                k_max = _positive_int("k_max", self.k_max)
                if k_min > k_max:
                    raise ConfigError(f"k_min={k_min} must not exceed k_max={k_max}")
                sizes = default_sizes(k_min, k_max)
            else:
                if isinstance(self.sizes, (str, bytes)) or not hasattr(self.sizes, "__iter__"):
                    raise ConfigError(f"sizes={self.sizes!r} must be a sequence of subset sizes")
                sizes = tuple(_positive_int("sizes entry", s) for s in self.sizes)
                if not sizes:
                    raise ConfigError("sizes must hold at least one subset size")
                if len(set(sizes)) != len(sizes):
                    raise ConfigError(f"sizes={list(sizes)} has duplicates")
            set_("sizes", tuple(sorted(sizes)))
            set_("k_min", min(sizes))
            set_("k_max", max(sizes))

        # Unknown setting names fail here, before any compute; values that
        # only the model can judge are checked by validate_for.
        if self.model is not None and not custom:
            check_model_params(self.model, self.model_params)

    # ------------------------------------------------------------------ derived

    @property
    def n_rounds(self) -> int:
        """Rounds of the plan: every point gets one sample per round."""
        if self.mode == "uniform":
            return self.samples_per_point
        return len(self.sizes) * self.samples_per_size  # type: ignore[arg-type]

    def size_of_round(self, round_: int) -> int | None:
        """Staggered mode: the subset size of a round. Uniform mode: None (k is drawn)."""
        if self.mode == "uniform":
            return None
        return int(self.sizes[round_ % len(self.sizes)])  # type: ignore[index]

    def identity_hash(self) -> str:
        """Hash of what each sample's value depends on (counts and execution fields excluded)."""
        d = self.to_dict()
        for name in self._unhashed + _COUNT_FIELDS:
            d.pop(name, None)
        return stable_hash({"type": "SamplingIdentity", "fields": d})

    def replace(self, **changes: Any) -> "SamplingConfig":
        """A copy with some fields changed (validated again)."""
        if self.mode == "staggered" and ("k_min" in changes or "k_max" in changes) and "sizes" not in changes:
            changes["sizes"] = None
        return dataclasses.replace(self, **changes)

    # ------------------------------------------------------------------ data-dependent checks

    def largest_k(self, dataset, n_points: int | None = None) -> int:
        """The largest base size the pool allows.

        A base is drawn from the pool without the block of points valued
        against it, so k can be at most ``n_pool - min(block_size, n_points)``.
        """
        n_points = dataset.n_pool if n_points is None else int(n_points)
        return int(dataset.n_pool - min(self.block_size, max(n_points, 1)))

    def validate_for(self, dataset, n_points: int | None = None, *, warn: bool = True) -> None:
        """Check this config against a dataset before any compute.

        ``warn=False`` skips the :class:`~pointscale.errors.FinitePoolWarning`
        (for layers below the entry point that resolved the config and warned).

        Raises
        ------
        ConfigError
            k larger than the pool allows (naming the largest allowed k),
            k_min below the number of classes (class-stratified subsets need
            one row per class), a metric or model that does not fit the task,
            or model settings the model rejects.
        """
        model = self.model if self.model is not None else default_model(dataset.task)
        metric = self.metric if self.metric is not None else default_metric(dataset.task)
        if is_class_path(model):
            check_for_task(model, self.model_params, dataset.task)
        else:
            check_model_for_task(model, dataset.task)
        check_metric(metric, dataset.task)
        largest = self.largest_k(dataset, n_points)
        what = "the largest size in sizes" if self.mode == "staggered" else "k_max"
        if self.k_max > largest:
            raise ConfigError(
                f"{what}={self.k_max} is larger than the pool allows: the training pool of "
                f"{dataset.name} has {dataset.n_pool} points and each base subset excludes its "
                f"block of up to {min(self.block_size, dataset.n_pool)} points, so the largest k is "
                f"{largest}; lower k_max (or block_size)"
            )
        message = finite_pool_message(self.k_max, dataset.n_pool, what)
        if message is not None and warn:
            import warnings

            warnings.warn(message, FinitePoolWarning, stacklevel=3)
        if dataset.task == "classification" and self.k_min < dataset.n_classes:
            raise ConfigError(
                f"k_min={self.k_min} must be at least the number of classes ({dataset.n_classes}): "
                "every class-stratified subset holds at least one point of each class"
            )
        if self.k_min < 2:
            raise ConfigError(f"k_min={self.k_min} must be at least 2 to fit a model")
        estimator = make_estimator(model, dataset.task, 0, self.model_params)
        validate_estimator_params(estimator, model)
        check_response(estimator, model, response_methods(metric), metric)
        check_metric_on(metric, dataset)

    def resolved(self, dataset, n_points: int | None = None, *, warn: bool = True) -> "SamplingConfig":
        """Validate against ``dataset`` and fill in the task's default model and metric.

        The entry point that takes a user's settings resolves with ``warn=True``
        (the default) and passes the resolved config down; layers below it
        (planning, workers) validate again with ``warn=False``, so a range
        wider than the pool rule gives one :class:`~pointscale.errors.FinitePoolWarning`
        per run, not one per layer and worker.
        """
        self.validate_for(dataset, n_points, warn=warn)
        changes = {}
        if self.model is None:
            changes["model"] = default_model(dataset.task)
        if self.metric is None:
            changes["metric"] = default_metric(dataset.task)
        return dataclasses.replace(self, **changes) if changes else self
