"""The sampling phases of a reproduction, each into its own resumable ledger.

Per (dataset, model): ``ground_truth`` (staggered grid, seed ``seed``),
``extrapolation`` (staggered, sizes beyond the fit range), ``uniform`` (k
uniform in the fit range, seed ``seed + 1``, so no subset is shared with the
ground truth), ``uniform_extra`` (more points, amortized training and
point-addition candidates), ``label_noise`` (flipped labels, seed
``seed + 2``) and ``transfer`` (the same fits scored on validation halves and
on the test split). Every phase writes a ledger under
``<out>/ledgers/<dataset>/<model>/<phase>-<identity hash>``: rerunning the
same command skips what is there.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from pointscale.sampling import Ledger, SamplingConfig, default_sizes, sample_marginals
from pointscale.sampling.config import MAX_POOL_FRACTION, default_k_range


def quiet(fn: Callable, *args, **kw):
    """Call ``fn`` with warnings silenced (convergence chatter of tiny subsets)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kw)


def usable(samples: pd.DataFrame) -> pd.DataFrame:
    """Rows whose fit did not fail and whose Δ is finite (failures are counted in the cost table)."""
    ok = ~samples["failed"].to_numpy(dtype=bool) & np.isfinite(samples["delta"].to_numpy(dtype=np.float64))
    return samples[ok]


def first_n(samples: pd.DataFrame, n: int) -> pd.DataFrame:
    """The first ``n`` rounds of every point."""
    return samples[samples["round"] < n]


def size_plan(dataset: Any, max_extrap_size: int) -> dict[str, Any]:
    """Fit range, staggered grid and extrapolation sizes for ``dataset``.

    The fit range is the project's default for the pool
    (:func:`~pointscale.sampling.config.default_k_range`: the paper's
    [100, 1000] where the pool allows, else k_max = a third of the pool and
    k_min = k_max / 10). Extrapolation sizes 2·k_max and 5·k_max are kept
    when they stay within a third of the pool (so D is still random) and within
    ``max_extrap_size``.
    """
    lo, hi = default_k_range(dataset.n_pool, dataset.n_classes)
    limit = int(MAX_POOL_FRACTION * dataset.n_pool)
    extrap = tuple(s for s in (2 * hi, 5 * hi) if s <= min(limit, max_extrap_size))
    return {"lo": lo, "hi": hi, "grid": tuple(default_sizes(lo, hi)), "extrap": extrap, "limit": limit}


class Phases:
    """Runs sampling phases into ledgers and records their cost."""

    def __init__(self, out: Path, map: Callable, log: Callable[[str], Any], block_size: int, shard_size: int) -> None:
        self.out, self.map, self.log = Path(out), map, log
        self.block_size, self.shard_size = block_size, shard_size
        self.cost_rows: list[dict[str, Any]] = []
        self.messages: list[str] = []

    def config(self, model: str, model_params: dict, metric: str | None, block_size: int | None = None,
               **kw: Any) -> SamplingConfig:
        return SamplingConfig(model=model, model_params=dict(model_params), metric=metric,
                              block_size=block_size or self.block_size, shard_size=self.shard_size, **kw)

    def sample(self, ds: Any, cfg: SamplingConfig, points: Sequence[str], phase: str, label: str,
               ledger_name: str | None = None, columns: list[str] | None = None) -> pd.DataFrame:
        """Every planned sample of ``points`` (new and from the ledger); one cost row."""
        folder = self.out / "ledgers" / ds.name / label / (ledger_name or f"{phase}-{cfg.identity_hash()[:10]}")
        ledger = Ledger(folder)
        before = ledger.completed_base_ids() if folder.exists() else set()
        last = [0.0]

        def progress(done: int, total: int) -> None:
            now = time.perf_counter()
            if done == total or now - last[0] > 60:
                last[0] = now
                self.log(f"    {ds.name}/{label}/{phase}: {done}/{total} new samples")

        start = time.perf_counter()
        frame = quiet(sample_marginals, ds, cfg, list(points), ledger=ledger, map=self.map, progress=progress,
                      columns=columns)
        wall = time.perf_counter() - start
        new = ~frame["base_id"].isin(before)
        n_bases = int(frame["base_id"].nunique())
        new_fits = int(new.sum()) + int(frame.loc[new, "base_id"].nunique())
        self.cost_rows.append({
            "dataset": ds.name, "model": label, "phase": phase, "points": len(points),
            "samples": int(len(frame)), "failed": int(frame["failed"].sum()),
            "sizes": f"{int(frame['k'].min())}..{int(frame['k'].max())}" if len(frame) else "",
            "fits": int(len(frame)) + n_bases, "paper_fits": 2 * int(len(frame)),
            "fits_this_run": new_fits, "wall_s": wall,
            "fits_per_s": new_fits / wall if wall > 0 and new_fits else float("nan"),
            "method": ",".join(sorted(frame["method"].unique().tolist())) if len(frame) else "",
        })
        if frame["failed"].any():
            errors = frame.loc[frame["failed"], "error"].astype(str).value_counts().head(2)
            self.messages.append(
                f"{ds.name}/{label}/{phase}: {int(frame['failed'].sum())} of {len(frame)} samples failed and "
                f"were dropped ({'; '.join(f'{e} ×{n}' for e, n in errors.items())})")
        return frame

    def experiment_cost(self, ds_name: str, label: str, phase: str, points: int, fits: int, failed: int,
                        sizes: str, wall: float) -> None:
        """A cost row for an experiment that trains models without sampling Δ (cold fits)."""
        self.cost_rows.append({"dataset": ds_name, "model": label, "phase": phase, "points": points, "samples": 0,
                               "failed": failed, "sizes": sizes, "fits": fits, "paper_fits": fits,
                               "fits_this_run": fits, "wall_s": wall,
                               "fits_per_s": fits / wall if wall > 0 else float("nan"), "method": "cold"})
