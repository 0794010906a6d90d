"""Running a plan: fits, utilities and ledger rows.

:func:`run_blocks` is the unit of work: a pure function of (dataset, config,
blocks) that returns the blocks' ledger rows. Prefect tasks, Dask workers
and :func:`sample_marginals` all call it; nothing in it depends on which
process runs it or on what else runs in the same batch, so the samples are
bit-identical whatever the shard size or the number of workers. BLAS is held
to one thread inside (the same arithmetic everywhere; parallelism comes from
workers).

For each block: draw the base subset D (:mod:`.plans`), fit D once, then
D ∪ {z} for every z of the block --

* through the model's batched solver when ``fast_path=True`` (the
  ``solver`` of its :class:`~.models.ModelSpec`, :mod:`.solvers`): exact ones
  for logistic, ridge and linear regression, the paper's MLP trained for the
  whole block at once, the SVM on one precomputed kernel per block, XGBoost
  on cheaper training containers (the same cold fits);
* otherwise with the registry's estimator or the user's own (a class path,
  :mod:`.estimators`): cold fits that share the base (and the model seed)
  for every learner, warm-started from the base solution for registry
  convex models solved to a tight tolerance (logistic regression). A user's
  estimator never takes a fast path, even if it is one of the same classes:
  its settings are the user's, not the ones the solvers are proven for.

A fit that raises, or a utility that is not finite, is recorded as
``failed=True`` with NaN scores and the error text -- never a made-up score.

The ledger rows it returns have the columns of :mod:`.schema`.
"""

from __future__ import annotations

import builtins
import copy
import functools
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import pandas as pd

from ..data import Dataset, open_dataset
from ..errors import LedgerError
from ..storage import is_url
from ..seeding import STREAM_MODEL, combine_ids, int_seed
from .config import SamplingConfig
from .devices import resolve_device
from .metrics import METRICS, full_proba, utility
from .models import MODELS, estimator_factory, make_estimator, spec_of
from .oob import aggregate, oob_cap, oob_subset, score_predictions, size_bucket
from .plans import Block, Shard, draw_subset, encode_block_members, plan_blocks, pool_info, shard_blocks
from .schema import COLUMNS, DTYPES, empty_frame
from .solvers.base import solver_for

_ERROR_CHARS = 300
_WARNED: dict = {}


# --------------------------------------------------------------------------- dataset by reference

_OPENED: dict[str, Dataset] = {}


def as_dataset(dataset: Dataset | str | Path) -> Dataset:
    """A Dataset, or one opened (memory-mapped, cached per process) from a saved version's folder."""
    if isinstance(dataset, Dataset):
        return dataset
    key = str(dataset) if is_url(str(dataset)) else str(Path(dataset).resolve())
    ds = _OPENED.get(key)
    if ds is None:
        if len(_OPENED) > 4:
            _OPENED.clear()
        # Ids stay the stored (memory-mapped) string array: a worker needs only its shards' ids.
        ds = _OPENED[key] = open_dataset(key, object_ids=False)
    return ds


def _dataset_ref(ds: Dataset) -> Dataset | str:
    """What to send to another process: the saved folder when there is one."""
    return str(ds.path) if ds.path is not None else ds


# --------------------------------------------------------------------------- per-process caches

_RESOLVED: dict[tuple[str, str], SamplingConfig] = {}
_CONTROLLERS: dict[str, Any] = {}


def _resolved(config: SamplingConfig, ds: Dataset) -> SamplingConfig:
    """``config.resolved(ds)``, remembered: a worker runs many shards of one config."""
    key = (config.stable_hash(), ds.fingerprint)
    cfg = _RESOLVED.get(key)
    if cfg is None:
        if len(_RESOLVED) > 64:
            _RESOLVED.clear()
        cfg = _RESOLVED[key] = config.resolved(ds, n_points=1, warn=False)  # the plan's entry warned
    return cfg


def _one_thread(model: str):
    """Hold BLAS/OpenMP pools to one thread (same arithmetic everywhere; workers give parallelism).

    threadpoolctl's controller is built once per model (after its libraries
    are loaded): building it scans the process's libraries, which costs ms.
    """
    from threadpoolctl import ThreadpoolController

    controller = _CONTROLLERS.get(model)
    if controller is None:
        controller = _CONTROLLERS[model] = ThreadpoolController()
    return controller.limit(limits=1)


# --------------------------------------------------------------------------- one block


def _error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:_ERROR_CHARS]


class _Fitter:
    """Fits one block with the registry's estimator (the generic path)."""

    def __init__(self, ds: Dataset, config: SamplingConfig) -> None:
        self.ds, self.config = ds, config
        spec = spec_of(config.model)
        self.warm = bool(spec is not None and spec.warm_start_exact) and "warm_start" not in config.model_params
        self.new = estimator_factory(config.model, ds.task, config.model_params)

    def _fit_score(self, est, X, y) -> tuple[float, bool]:
        from sklearn.exceptions import ConvergenceWarning

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            est.fit(X, y)
            u = utility(self.config.metric, est, self.ds.X_val, self.ds.y_val, self.ds.n_classes)
        converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
        for w in caught:  # other warnings pass through, once per place
            if not issubclass(w.category, ConvergenceWarning):
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, registry=_WARNED)
        if not np.isfinite(u):
            raise FloatingPointError(f"utility is not finite ({u})")
        return u, converged

    def _oob(self, est, O: np.ndarray | None):
        """The base model's predictions for the out-of-bag points ``O`` (None: not asked)."""
        if O is None or not O.size:
            return None
        X = self.ds.X_train[O]
        if self.ds.task == "classification":
            if hasattr(est, "predict_proba"):
                return full_proba(est, X, self.ds.n_classes), True
            return np.asarray(est.predict(X)), False
        return np.asarray(est.predict(X), dtype=np.float64), True

    def __call__(self, block: Block, D: np.ndarray, Z: np.ndarray, O: np.ndarray | None = None) -> dict[str, Any]:
        ds, cfg = self.ds, self.config
        B = len(Z)
        u_with = np.full(B, np.nan)
        failed = np.zeros(B, dtype=bool)
        converged = np.zeros(B, dtype=bool)
        errors: list[str | None] = [None] * B
        seed = int_seed(cfg.seed, STREAM_MODEL, block.base_id)
        Xd, yd = ds.X_train[D], ds.y_train[D]
        try:
            base = self.new(seed)
            u_base, base_conv = self._fit_score(base, Xd, yd)
        except Exception as exc:  # noqa: BLE001 -- any fit failure is data, not a crash
            return {"u_base": np.nan, "u_with": u_with, "failed": np.ones(B, dtype=bool),
                    "converged": converged, "errors": [f"base: {_error_text(exc)}"] * B, "method": "cold",
                    "oob": None}
        try:
            oob = self._oob(base, O)
        except Exception:  # noqa: BLE001 -- a model that cannot predict gives no evidence
            oob = None
        method = "warm" if self.warm else "cold"
        # D ∪ {z} in one buffer whose last row changes per z (each fit is scored
        # before the next z overwrites it), instead of a fresh copy of D per sample.
        k = len(D)
        Xz = np.empty((k + 1, Xd.shape[1]), dtype=Xd.dtype)
        Xz[:k] = Xd
        yz = np.empty(k + 1, dtype=yd.dtype)
        yz[:k] = yd
        for j, zi in enumerate(Z):
            Xz[k] = ds.X_train[zi]
            yz[k] = ds.y_train[zi]
            try:
                if self.warm:
                    est = copy.deepcopy(base)
                    est.set_params(warm_start=True)
                else:
                    est = self.new(seed)
                u_with[j], converged[j] = self._fit_score(est, Xz, yz)
                converged[j] &= base_conv
            except Exception as exc:  # noqa: BLE001
                failed[j] = True
                errors[j] = _error_text(exc)
        return {"u_base": u_base, "u_with": u_with, "failed": failed, "converged": converged,
                "errors": errors, "method": method, "oob": oob}


def _fast_block(solver, ds: Dataset, D: np.ndarray, Z: np.ndarray, seed: int, O: np.ndarray | None = None
                ) -> dict[str, Any] | None:
    """The block through a batched solver; None when the solver declines (use the model)."""
    try:
        with np.errstate(all="ignore"):
            fit = solver(ds.X_train[D], ds.y_train[D], ds.X_train[Z], ds.y_train[Z], seed=seed)
    except (ArithmeticError, ValueError, np.linalg.LinAlgError):
        # Numerical trouble in the batched solver: let the model itself fit this
        # block (its failures, if any, are then recorded as such).
        return None
    if fit is None:
        return None
    u_with = np.asarray(fit.u_with, dtype=np.float64)
    failed = ~np.isfinite(u_with) | (not np.isfinite(fit.u_base))
    errors = [("utility is not finite" if f else None) for f in failed]
    # Out-of-bag evidence: the base model (trained on D alone) predicts the
    # pool points outside D -- predictions, not fits.
    oob = None
    predict_base = getattr(fit, "predict_base", None)
    if O is not None and O.size and predict_base is not None:
        try:
            with np.errstate(all="ignore"):
                oob = (np.asarray(predict_base(ds.X_train[O])), True)
        except (ArithmeticError, ValueError):
            oob = None  # no evidence from this base, never a made-up one
    return {"u_base": float(fit.u_base), "u_with": u_with, "failed": failed,
            "converged": np.asarray(fit.converged, dtype=bool), "errors": errors, "method": fit.method,
            "oob": oob}


# --------------------------------------------------------------------------- the unit of work


def _blocks_of(blocks: Shard | Block | Iterable[Block]) -> list[Block]:
    if isinstance(blocks, Shard):
        return list(blocks.blocks)
    if isinstance(blocks, Block):
        return [blocks]
    return list(blocks)


@dataclass(frozen=True)
class ShardResult:
    """What sampling some blocks produced.

    Attributes
    ----------
    samples : DataFrame
        The ledger rows (:data:`COLUMNS`).
    oob : DataFrame
        Out-of-bag evidence (:mod:`.oob`): integer sums per (point, size bucket).
    n_fits : int
        Model fits made: one per base plus one per sample (OOB adds none).
    n_oob_predictions : int
        Points scored by base models (predictions, not fits).
    """

    samples: pd.DataFrame
    oob: pd.DataFrame
    n_fits: int
    n_oob_predictions: int


def run_blocks(dataset: Dataset | str | Path, config: SamplingConfig,
               blocks: Shard | Iterable[Block]) -> pd.DataFrame:
    """Sample every block: the ledger rows of their points (one row per sample).

    Parameters
    ----------
    dataset : Dataset or path
        The dataset, or the folder of a saved version (opened memory-mapped).
    config : SamplingConfig
    blocks : iterable of Block, or a Shard
        From :func:`plan_blocks` with the same dataset and config.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`COLUMNS`, rows in block order then block member order.
        (:func:`sample_blocks` also returns the out-of-bag evidence.)
    """
    return sample_blocks(dataset, config, blocks, oob=False).samples


def batched_solver(ds: Dataset, model: Any, params, X_eval, y_eval, metric: str, device=None):
    """The registry model's batched solver (:mod:`.solvers`) scoring on ``(X_eval, y_eval)``; None where none.

    Its settings are those of the registry's estimator for ``params``
    (:func:`~.models.make_estimator`), so it fits what the estimator fits.
    None for a model outside the registry, a metric that is not built in
    (batched solvers score with the built-in metrics' stacked arithmetic
    only), or settings the solver declines.
    """
    if not (isinstance(model, str) and model in MODELS and metric in METRICS):
        return None
    settings = dict(make_estimator(model, ds.task, 0, params).get_params(deep=False))
    return solver_for(MODELS[model], settings, ds.task, ds.n_classes, X_eval, y_eval, metric, device)


def sample_blocks(dataset: Dataset | str | Path, config: SamplingConfig,
                  blocks: Shard | Iterable[Block], *, oob: bool = True) -> ShardResult:
    """:func:`run_blocks` plus the out-of-bag evidence of every base model.

    Each base model, once fitted on D, scores the pool points outside D (at
    most :func:`~.oob.oob_cap`, see :mod:`.oob`): predictions only, no fit.
    ``oob=False`` skips them (the samples are identical either way).
    """
    ds = as_dataset(dataset)
    blocks = _blocks_of(blocks)
    if not blocks:
        return ShardResult(empty_frame(), aggregate(np.array([]), np.array([], dtype=np.int64),
                                                    np.array([]), np.array([]), np.array([])), 0, 0)
    cfg = _resolved(config, ds)
    identity = cfg.identity_hash()
    info = pool_info(ds)
    solver = None
    device = resolve_device(cfg.device)  # a missing GPU fails here, before any fit
    if cfg.fast_path:
        solver = batched_solver(ds, cfg.model, cfg.model_params, ds.X_val, ds.y_val, cfg.metric, device)
    fitter = _Fitter(ds, cfg)
    y_scale = float(np.std(ds.y_train)) if ds.task == "regression" else 1.0
    o_idx, o_bucket, o_correct, o_score = [], [], [], []
    cap = oob_cap(info.n_pool, cfg.block_size)
    n_fits = 0

    cols: dict[str, list] = {c: [] for c in COLUMNS}
    with _one_thread(cfg.model):
        for block in blocks:
            Z = block.members if block.members is not None else info.indices(block.point_ids)
            D = draw_subset(info, cfg.seed, block.base_id, block.k, Z)
            O = oob_subset(info.n_pool, D, cfg.seed, block.base_id, cap) if oob else None
            # The model seed is the block's, as on the generic path (same initialisation for D and D ∪ {z}).
            seed = cfg.model_params.get("random_state")  # a seed the user set wins, as on the generic path
            seed = int_seed(cfg.seed, STREAM_MODEL, block.base_id) if seed is None else int(seed)
            out = _fast_block(solver, ds, D, Z, seed, O) if solver is not None else None
            if out is None:
                out = fitter(block, D, Z, O)
            B = len(Z)
            n_fits += B + 1
            if out.get("oob") is not None:
                pred, is_proba = out["oob"]
                correct, score = score_predictions(ds.task, ds.y_train[O], pred, y_scale=y_scale,
                                                   is_proba=is_proba)
                o_idx.append(O)
                o_bucket.append(np.full(O.size, size_bucket(block.k, cfg.k_min, cfg.k_max), dtype=np.int64))
                o_correct.append(correct)
                o_score.append(score)
            failed = np.asarray(out["failed"], dtype=bool)
            u_with = np.where(failed, np.nan, out["u_with"])
            u_base = float(out["u_base"]) if np.isfinite(out["u_base"]) else np.nan
            delta = np.where(failed, np.nan, u_with - u_base)
            members = encode_block_members(Z, info.n_pool)
            cols["sample_id"].extend(combine_ids((block.base_id, pid)) for pid in block.point_ids)
            cols["point_id"].extend(block.point_ids)
            cols["k"].extend([block.k] * B)
            cols["delta"].extend(delta.tolist())
            cols["u_base"].extend([u_base] * B)
            cols["u_with"].extend(u_with.tolist())
            cols["failed"].extend(failed.tolist())
            cols["converged"].extend(np.asarray(out["converged"], dtype=bool).tolist())
            cols["error"].extend(out["errors"])
            cols["base_id"].extend([block.base_id] * B)
            cols["plan_key"].extend([block.plan_key] * B)
            cols["round"].extend([block.round] * B)
            cols["block"].extend([block.index] * B)
            cols["block_members"].extend([members] * B)
            cols["model"].extend([cfg.model] * B)
            cols["metric"].extend([cfg.metric] * B)
            cols["method"].extend([out["method"]] * B)
            cols["dataset_fingerprint"].extend([ds.fingerprint] * B)
            cols["config_hash"].extend([identity] * B)
    frame = pd.DataFrame(cols, columns=list(COLUMNS)).astype(DTYPES)
    cat = lambda parts, dtype: np.concatenate(parts) if parts else np.array([], dtype=dtype)  # noqa: E731
    idx = cat(o_idx, np.int64)
    evidence = aggregate(info.ids, idx, cat(o_bucket, np.int64),
                         cat(o_correct, bool), cat(o_score, np.float64))
    return ShardResult(frame, evidence, n_fits, int(idx.size))


def run_shard(dataset: Dataset | str | Path, config: SamplingConfig, shard: Shard) -> pd.DataFrame:
    """:func:`run_blocks` on a shard (module-level, so process pools can pickle it)."""
    return run_blocks(dataset, config, shard.blocks)


def sample_shard(dataset: Dataset | str | Path, config: SamplingConfig, shard: Shard) -> ShardResult:
    """:func:`sample_blocks` on a shard (module-level, so process pools can pickle it)."""
    return sample_blocks(dataset, config, shard.blocks)


# --------------------------------------------------------------------------- in-process driver


def sort_samples(frame: pd.DataFrame) -> pd.DataFrame:
    """The canonical row order: round, plan, block, point id."""
    if frame.empty:
        return frame.reset_index(drop=True)
    return frame.sort_values(["round", "plan_key", "block", "point_id"], kind="mergesort").reset_index(drop=True)


def sample_marginals(dataset: Dataset | str | Path, config: SamplingConfig,
                     points: Iterable[str] | None = None, *, ledger=None,
                     map: Callable = builtins.map,
                     progress: Callable[[int, int], Any] | None = None,
                     columns: list[str] | None = None) -> pd.DataFrame:
    """Sample Δ(z, D) for the planned points: the ledger rows of the whole plan.

    Parameters
    ----------
    dataset : Dataset or path
    config : SamplingConfig
    points : iterable of str, optional
        Point ids to value; None means the whole training pool.
    ledger : Ledger, optional
        Bases already in it are skipped; new shards are written to it as they
        finish (so an interrupted run loses at most the shards in flight).
    map : callable, default=builtins.map
        ``map(fn, shards)`` returning the results in order, like
        ``concurrent.futures.Executor.map`` (for Dask:
        ``lambda f, xs: client.gather(client.map(f, xs))``). The dataset then
        travels by path when it has one (a saved version), else pickled.
    progress : callable, optional
        Called as ``progress(samples_done, samples_total)`` after each shard.
    columns : list of str, optional
        With a ledger: return only these columns (plus ``sample_id`` and
        ``base_id``), read by column projection and left in ledger order
        instead of sorted -- what a caller of 10^7 samples needs (the full,
        sorted rows of the paper-scale ground truth do not fit in 24 GiB).

    Returns
    -------
    pandas.DataFrame
        Every row of the plan (new and previously in the ledger), sorted by
        :func:`sort_samples` unless ``columns`` is given.
    """
    ds = as_dataset(dataset)
    plan = plan_blocks(ds, config, points)  # validates and warns once
    cfg = config.resolved(ds, n_points=1, warn=False)
    done = ledger.completed_base_ids() if ledger is not None else set()
    todo = [b for b in plan if b.base_id not in done]
    shards = shard_blocks(todo, cfg.shard_size)
    total = sum(s.n_samples for s in shards)
    ref = ds if map is builtins.map else _dataset_ref(ds)
    fn = functools.partial(sample_shard, ref, cfg)
    frames = []
    n_done = 0
    if progress is not None:
        progress(0, total)
    for shard, result in zip(shards, map(fn, shards)):
        if ledger is not None:
            ledger.write_shard(shard.name, result.samples, oob=result.oob,
                               counts={"fits": result.n_fits, "oob_predictions": result.n_oob_predictions})
        else:
            frames.append(result.samples)
        n_done += shard.n_samples
        if progress is not None:
            progress(n_done, total)
    if ledger is not None:
        wanted = {b.base_id for b in plan}
        rows = ledger.read(columns=columns)
        rows = rows[rows["base_id"].isin(wanted)]
        missing = wanted - set(rows["base_id"].unique().tolist())
        if missing:
            raise LedgerError(f"{len(missing)} planned bases are still missing from the ledger at "
                              f"{ledger.folder}; rerun to sample them")
        return rows.reset_index(drop=True) if columns is not None else sort_samples(rows)
    if not frames:
        return empty_frame()
    return sort_samples(pd.concat(frames, ignore_index=True))
