"""What a reproduction samples: per-model scales and the named scales (tiny, quick, full).

The models are the paper's classes (Covert et al., ICML 2024, App. C):

* ``logreg`` — L2 logistic regression (the registry's, C = 1);
* ``mlp`` — the paper's scikit-learn ``MLPClassifier``: one hidden layer of
  32, ``alpha`` 0.01, learning rate 0.01, 200 iterations, full batch
  (``batch_size`` above any subset size; scikit-learn clips it to the rows);
  the full scale trains it with ``mlp_batched`` (the same model and
  optimiser, a block's models at once);
* ``svm`` — RBF SVC with Platt probabilities (``SVC(probability=True)``: 5-fold
  sigmoid calibration; the registry's :class:`~pointscale.sampling.solvers.svm.PlattSVC`);
* ``xgboost`` — an *extra*, not in the paper, in a configuration whose ψ_k is
  monotone in k (depth 2, learning rate 0.1, 50 trees): with depth 4 and
  learning rate 0.3 the sign of ψ_k flips between sizes for most points,
  which is a property of that hyperparameter setting, not of the law.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from pointscale.config import StableConfig
from pointscale.errors import ConfigError

#: The paper's headline numbers we compare with.
PAPER = {
    "mean_per_size_r2": 0.987,
    "per_size_r2": (0.97, 1.00),
    "alpha_typical": (1.0, 1.5),
    "setting": "IMDB embeddings + logistic regression, 1000 samples per size, 1000 points",
    "addition_repeats": 1000,
}

PAPER_MLP = {"hidden_layer_sizes": (32,), "alpha": 0.01, "learning_rate_init": 0.01, "max_iter": 200,
             "batch_size": 100_000}
MONOTONE_XGB = {"n_estimators": 50, "max_depth": 2, "learning_rate": 0.1}


@dataclass(frozen=True)
class ModelScale(StableConfig):
    """How much to sample for one model.

    Parameters
    ----------
    model : str
        A model registry name.
    model_params : dict, default={}
        Settings on top of the registry's defaults.
    gt_points : int
        Ground-truth points (capped at what the pool allows).
    gt_per_size : int
        Staggered samples per point at each grid size.
    extrap_per_size : int
        Samples per point at each extrapolation size (0: no extrapolation).
    max_extrap_size : int
        Largest extrapolation size sampled.
    fit_ns : tuple of int, default=(10, 30, 100)
        Samples per point of the per-point fits; the largest is what the
        uniform run draws for every ground-truth point.
    shapley_ns : tuple of int, default=(10, 20, 30, 50, 100)
    amortized_ns : tuple of int, default=(10, 30)
    extra_points, extra_samples : int
        Further points sampled uniformly (amortized training, candidates).
    addition_repeats : int
        Initial sets per regime in point addition (0: skip; the paper: 1000).
    addition_m : int, default=100
    addition_sizes : tuple of int, default=(500, 5000)
        Initial sizes of the point-addition regimes.
    noisy_points, noisy_samples : int
        Planted label-noise check (0 points: skip).
    transfer_points, transfer_samples : int
        Value transfer (validation vs test) check (0 points: skip).
    flip_fraction : float, default=0.1
    gt_block_size : int or None, default=None
        Points per shared base subset in the ground truth (None: the run's
        ``block_size``). Each point's samples stay independent draws whatever
        the block; a larger block spreads one base fit over more samples
        (logistic regression on adult: 2,350 samples/s per core with 32,
        5,080 with 128, measured on this machine).
    datasets : tuple of str or None, default=None
        Run this model only on these datasets (None: every dataset of the run).
    """

    model: str
    model_params: Mapping[str, Any] = field(default_factory=dict)
    gt_points: int = 64
    gt_per_size: int = 20
    extrap_per_size: int = 10
    max_extrap_size: int = 5000
    fit_ns: tuple[int, ...] = (10, 30, 100)
    shapley_ns: tuple[int, ...] = (10, 20, 30, 50, 100)
    amortized_ns: tuple[int, ...] = (10, 30)
    extra_points: int = 128
    extra_samples: int = 30
    addition_repeats: int = 200
    addition_m: int = 100
    addition_sizes: tuple[int, ...] = (500, 5000)
    noisy_points: int = 0
    noisy_samples: int = 30
    transfer_points: int = 0
    transfer_samples: int = 30
    flip_fraction: float = 0.1
    gt_block_size: int | None = None
    datasets: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "model_params", {str(k): self.model_params[k] for k in sorted(self.model_params)})
        for name in ("gt_points", "gt_per_size"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name}={getattr(self, name)} must be at least 1")
        for name in ("fit_ns", "shapley_ns", "amortized_ns", "addition_sizes"):
            object.__setattr__(self, name, tuple(int(n) for n in getattr(self, name)))
        for name in ("fit_ns", "shapley_ns", "amortized_ns"):
            if any(n < 3 for n in getattr(self, name)):
                raise ConfigError(f"{name}={list(getattr(self, name))}: every n must be at least 3 "
                                  "(the MLE needs 3 samples)")
        if not self.fit_ns:
            raise ConfigError("fit_ns must hold at least one sample count")
        if max(self.shapley_ns, default=0) > self.n_uniform:
            raise ConfigError(f"shapley_ns={list(self.shapley_ns)} exceed the {self.n_uniform} uniform samples "
                              "per point (the largest of fit_ns)")
        if max(self.amortized_ns, default=0) > min(self.n_uniform, self.extra_samples or self.n_uniform):
            raise ConfigError(f"amortized_ns={list(self.amortized_ns)} exceed the samples per point "
                              f"({self.n_uniform} ground-truth, {self.extra_samples} extra)")
        if len(self.addition_sizes) != 2 or not 0 < self.addition_sizes[0] < self.addition_sizes[1]:
            raise ConfigError(f"addition_sizes={list(self.addition_sizes)} must be two increasing sizes")
        if not 0.0 < self.flip_fraction < 1.0:
            raise ConfigError(f"flip_fraction={self.flip_fraction} must lie in (0, 1)")

    @property
    def n_uniform(self) -> int:
        return max(self.fit_ns)

    @property
    def label(self) -> str:
        return self.model


@dataclass(frozen=True)
class ReproduceConfig(StableConfig):
    """A whole reproduction: its name, datasets, models, utility and seeds.

    Parameters
    ----------
    name : str
        ``quick``, ``full`` or ``tiny`` (stated in the results page).
    models : tuple of ModelScale
    datasets : tuple of str or None, default=None
        None: adult and magic (when installed), else breast_cancer.
    metric : str or None, default=None
        The sampling utility; None: the task's default.
    transfer_metrics : tuple of str, default=("neg_brier", "neg_log_loss")
        Utilities whose value transfer is shown beside the one used.
    seed : int, default=0
    block_size : int, default=32
    shard_size : int, default=8
        Blocks per unit of work (execution only: never changes a sample).
    """

    name: str
    models: tuple[ModelScale, ...]
    datasets: tuple[str, ...] | None = None
    metric: str | None = None
    transfer_metrics: tuple[str, ...] = ("neg_brier", "neg_log_loss")
    seed: int = 0
    block_size: int = 32
    shard_size: int = 8

    _unhashed = ("shard_size",)

    def __post_init__(self) -> None:
        if not self.models:
            raise ConfigError("a reproduction needs at least one model")
        names = [m.model for m in self.models]
        if len(set(names)) != len(names):
            raise ConfigError(f"models {names} repeat a model")

    def with_gt_per_size(self, model: str, n: int) -> "ReproduceConfig":
        """A copy whose ``model`` ground truth has ``n`` samples per size (e.g. the scale a ledger reached)."""
        import dataclasses

        if model not in {m.model for m in self.models}:
            raise ConfigError(f"--gt-per-size names model {model!r}, not in this scale "
                              f"({', '.join(m.model for m in self.models)})")
        models = tuple(dataclasses.replace(m, gt_per_size=int(n)) if m.model == model else m for m in self.models)
        return dataclasses.replace(self, models=models)


def quick_config() -> ReproduceConfig:
    """``--quick``: every protocol on the paper's models at a small scale."""
    return ReproduceConfig(
        name="quick",
        models=(
            ModelScale("logreg", gt_points=128, gt_per_size=30, extrap_per_size=16, extra_points=384,
                       addition_repeats=200, noisy_points=256, transfer_points=256),
            ModelScale("mlp", dict(PAPER_MLP), gt_points=16, gt_per_size=6, extrap_per_size=0, fit_ns=(10, 20),
                       shapley_ns=(10, 20), amortized_ns=(), extra_points=0, addition_repeats=0),
            ModelScale("svm", gt_points=16, gt_per_size=6, extrap_per_size=0, fit_ns=(10, 20),
                       shapley_ns=(10, 20), amortized_ns=(), extra_points=0, addition_repeats=0),
            ModelScale("xgboost", dict(MONOTONE_XGB), gt_points=16, gt_per_size=10, extrap_per_size=0,
                       fit_ns=(10, 30), shapley_ns=(10, 30), amortized_ns=(), extra_points=0,
                       addition_repeats=0),
        ),
    )


def full_config() -> ReproduceConfig:
    """The paper's scale for logistic regression on adult; the others at the largest scale that fits.

    Logistic regression's ground truth is the paper's: 1,000 points × 1,000
    samples per size × 10 sizes (≈10⁷ fits with the exact batched path). It
    is resumable; ``--gt-per-size`` reads the scale a ledger reached.
    """
    return ReproduceConfig(
        name="full",
        transfer_metrics=("neg_log_loss",),  # neg_brier: benchmarks/utility.py (docs/defaults.md)
        models=(
            # Extrapolation only to 2000: fits at k = 5000 run at ~15 samples/s on the shared machine.
            ModelScale("logreg", gt_points=1000, gt_per_size=1000, gt_block_size=128, extrap_per_size=6,
                       max_extrap_size=2000,
                       # initial sizes 500 and 2000 (the paper: 5000): 2 x 200 repeats x 10 cold fits at
                       # 5,100 rows did not fit the session on the shared machine
                       fit_ns=(10, 30), shapley_ns=(10, 20, 30), extra_points=1000, addition_repeats=200,
                       addition_sizes=(500, 2000),
                       noisy_points=400, transfer_points=300, transfer_samples=20),
            # The other classes at the scale that fits a session on 2 cores (measured per core on adult:
            # mlp_batched ~45 samples/s, svm on precomputed kernels ~35, xgboost ~75): two blocks of 32
            # points, 16 staggered samples per size. The paper's MLP is trained by `mlp_batched` (the same
            # architecture and optimiser as scikit-learn's MLPClassifier, every D ∪ {z} of a block at once;
            # U(D) correlation with MLPClassifier 0.9999, docs/benchmarks.md).
            ModelScale("mlp_batched", gt_points=64, gt_per_size=16, extrap_per_size=0, fit_ns=(10,),
                       shapley_ns=(10,), amortized_ns=(), extra_points=0, addition_repeats=0),
            ModelScale("svm", gt_points=64, gt_per_size=16, extrap_per_size=0, fit_ns=(10,),
                       shapley_ns=(10,), amortized_ns=(), extra_points=0, addition_repeats=0),
            ModelScale("xgboost", dict(MONOTONE_XGB), gt_points=64, gt_per_size=16, extrap_per_size=0,
                       fit_ns=(10,), shapley_ns=(10,), amortized_ns=(), extra_points=0, addition_repeats=0),
        ),
    )


def tiny_config() -> ReproduceConfig:
    """A smoke scale for the (slow) test tier: every code path on breast_cancer."""
    return ReproduceConfig(
        name="tiny",
        datasets=("breast_cancer",),
        models=(
            ModelScale("logreg", gt_points=24, gt_per_size=4, extrap_per_size=3, fit_ns=(5, 12),
                       shapley_ns=(5, 12), amortized_ns=(), extra_points=24, extra_samples=8,
                       addition_repeats=3, addition_m=10, noisy_points=40, noisy_samples=6,
                       transfer_points=24, transfer_samples=6),
            ModelScale("xgboost", {"n_estimators": 3, "max_depth": 2}, gt_points=8, gt_per_size=4,
                       extrap_per_size=0, fit_ns=(4,), shapley_ns=(4,), amortized_ns=(), extra_points=0,
                       extra_samples=4, addition_repeats=0),
        ),
    )


SCALES = {"tiny": tiny_config, "quick": quick_config, "full": full_config}
