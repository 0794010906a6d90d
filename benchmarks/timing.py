"""Shared by the benchmarks: timers, the k range and config they compare on, the points they value,
and the paper's protocol (two cold fits per sample) timed as the baseline."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from threadpoolctl import threadpool_limits

from pointscale.sampling import SamplingConfig, make_estimator, utility
from pointscale.sampling.plans import draw_subset, pool_info

K_RANGE = (100, 1000)


@dataclass
class Timing:
    """Samples and the wall and CPU seconds they took (CPU time is robust to a shared machine)."""

    samples: int
    wall: float
    cpu: float

    @property
    def per_wall(self) -> float:
        return self.samples / self.wall

    @property
    def per_cpu(self) -> float:
        return self.samples / self.cpu


def clock():
    """(wall, CPU) seconds now, for :func:`since`."""
    return time.perf_counter(), time.process_time()


def since(start, samples) -> Timing:
    """Samples done since ``start`` (:func:`clock`) and the wall and CPU time they took."""
    w0, c0 = start
    return Timing(samples, time.perf_counter() - w0, time.process_time() - c0)


def config_for(ds, model: str, block_size: int = 32, **kw) -> SamplingConfig:
    """The benchmarks' sampling config: the paper's k range [100, 1000], clipped to what the pool allows."""
    largest = SamplingConfig(k_min=2, k_max=2, block_size=block_size).largest_k(ds)
    k_max = min(K_RANGE[1], largest)
    return SamplingConfig(model=model, k_min=min(K_RANGE[0], k_max), k_max=k_max,
                          block_size=block_size, **kw).resolved(ds)


def value_points(ds, n: int) -> list[str]:
    """A fixed, spread-out subset of the pool to value (all of it if small)."""
    ids = np.asarray(ds.point_ids)
    if n >= len(ids):
        return list(ids)
    pick = np.random.default_rng(0).choice(len(ids), size=n, replace=False)
    return list(ids[np.sort(pick)])


# --------------------------------------------------------------------------- the paper's protocol


def paper_protocol(ds, cfg: SamplingConfig, budget_s: float, max_samples: int, paper_default: bool,
                   factory=None, ks=None) -> Timing:
    """Two cold fits per sample, sequential, until the time budget or sample cap is reached.

    ``factory(seed)`` makes the model (default: the registry's ``cfg.model``, or scikit-learn's
    default ``LogisticRegression()`` with ``paper_default``). ``ks``: the sizes to use, one
    per sample, in a fixed shuffled order and cycled (default: k uniform in the range) --
    pass our samples' sizes so both sides fit the same mix of sizes.
    """
    info = pool_info(ds)
    gen = np.random.default_rng(12345)
    if ks is not None:
        ks = np.random.default_rng(54321).permutation(np.asarray(ks, dtype=int))

    def fresh(seed):
        if factory is not None:
            return factory(seed)
        if paper_default:
            from sklearn.linear_model import LogisticRegression

            return LogisticRegression()  # the paper's setting: library defaults
        return make_estimator(cfg.model, ds.task, seed, cfg.model_params)

    n = 0
    with threadpool_limits(limits=1):
        start = clock()
        while n < max_samples and (time.perf_counter() - start[0]) < budget_s:
            z = int(gen.integers(ds.n_pool))
            k = int(gen.integers(cfg.k_min, cfg.k_max + 1)) if ks is None else int(ks[n % len(ks)])
            D = draw_subset(info, 777, n, k, np.array([z]))
            Dz = np.append(D, z)
            u1 = utility(cfg.metric, fresh(n).fit(ds.X_train[D], ds.y_train[D]), ds.X_val, ds.y_val, ds.n_classes)
            u2 = utility(cfg.metric, fresh(n).fit(ds.X_train[Dz], ds.y_train[Dz]), ds.X_val, ds.y_val,
                         ds.n_classes)
            _ = u2 - u1
            n += 1
        return since(start, n)
