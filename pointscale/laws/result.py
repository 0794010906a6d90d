"""The fitted laws of many points: one frozen result object for every estimator.

:class:`FittedScalingLaws` holds, per point, the four parameters of the noise
model of SPEC §1 (ψ_k ≈ c·k^(−α), Var Δ = σ²·k^(−β)), the fit's mean negative
log-likelihood, optional 95 % intervals, boolean diagnostic flags and extra
per-point numbers (R², covariance terms). It is what :func:`~pointscale.laws.fit_mle`,
:func:`~pointscale.laws.fit_log_ols` and the amortized estimator return, and
what valuation and selection consume.

Files: :meth:`FittedScalingLaws.save` writes a Parquet table (one row per
point) and a JSON sidecar named ``<table name>.json`` next to it holding the
estimator, the sampled size range and the metadata. No pickle.

Intervals for ψ_k (:meth:`FittedScalingLaws.predict_interval`) need the
covariance terms ``extra['var_c']``, ``extra['var_alpha']`` and
``extra['cov_c_alpha']`` (the asymptotic covariance of (ĉ, α̂)); an estimator
that cannot provide them leaves them out and the method raises.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from ..errors import DataError, ExtrapolationWarning, PointscaleError
from ..io import atomic_write_json, atomic_write_parquet, read_json

__all__ = ["FittedScalingLaws", "ESTIMATORS", "INTERVAL_FIELDS", "COVARIANCE_KEYS"]

ESTIMATORS = ("mle", "log_ols", "amortized", "shrinkage", "amortized_shrinkage", "shrunk_mean")
INTERVAL_FIELDS = ("alpha_low", "alpha_high", "c_low", "c_high")
#: Keys of ``extra`` that :meth:`FittedScalingLaws.predict_interval` needs.
COVARIANCE_KEYS = ("var_c", "var_alpha", "cov_c_alpha")
_PARAM_FIELDS = ("c", "alpha", "sigma", "beta", "nll")
_FORMAT_VERSION = 1


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def _float_array(name: str, value: Any, n: int) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    if arr.shape != (n,):
        raise PointscaleError(f"{name} has shape {arr.shape}; expected ({n},) like point_ids")
    return arr


@dataclass(frozen=True, eq=False)
class FittedScalingLaws:
    """Per-point scaling laws ψ_k(z) ≈ c(z)·k^(−α(z)) with their noise model.

    Parameters
    ----------
    point_ids : ndarray of shape (n,)
        Identities of the points (strings, or integers as given).
    c, alpha, sigma, beta : ndarray of shape (n,)
        Parameters of Δ ~ Normal(c·k^(−α), σ²·k^(−β)). NaN where a point could
        not be fitted (see ``flags``).
    nll : ndarray of shape (n,)
        Mean Gaussian negative log-likelihood per sample at the fit, including
        the constant 0.5·log(2π). NaN if unknown (e.g. the log-space baseline
        without a noise model).
    n_samples : ndarray of shape (n,)
        Number of usable samples per point.
    estimator : {"mle", "log_ols", "amortized", "shrinkage", "amortized_shrinkage", "shrunk_mean"}
        Which estimator produced the laws (``shrunk_mean`` is law-free: α = 0,
        ``meta["law_free"]``).
    alpha_low, alpha_high, c_low, c_high : ndarray of shape (n,) or None, default=None
        95 % intervals. ``None`` means the estimator gives none.
    flags : mapping of str to bool ndarray of shape (n,), default={}
        Diagnostics such as ``alpha_at_bound``, ``sign_uncertain``,
        ``poor_fit``, ``too_few_samples``.
    extra : mapping of str to ndarray of shape (n,), default={}
        Further per-point numbers, e.g. ``r2`` or the covariance terms of
        :data:`COVARIANCE_KEYS`.
    k_range : tuple of (int, int) or None, default=None
        Range of dataset sizes that was sampled; sizes outside it are
        extrapolations.
    meta : mapping, default={}
        JSON-able description of the fit (settings, counts of dropped rows).
    """

    point_ids: np.ndarray
    c: np.ndarray
    alpha: np.ndarray
    sigma: np.ndarray
    beta: np.ndarray
    nll: np.ndarray
    n_samples: np.ndarray
    estimator: str
    alpha_low: np.ndarray | None = None
    alpha_high: np.ndarray | None = None
    c_low: np.ndarray | None = None
    c_high: np.ndarray | None = None
    flags: Mapping[str, np.ndarray] = field(default_factory=dict)
    extra: Mapping[str, np.ndarray] = field(default_factory=dict)
    k_range: tuple[int, int] | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------------ checks
    def __post_init__(self) -> None:
        set_ = object.__setattr__
        ids = np.asarray(self.point_ids)
        if ids.ndim != 1:
            raise PointscaleError(f"point_ids must be 1-D; got shape {ids.shape}")
        if ids.dtype.kind in "US":
            ids = ids.astype(object)
        set_(self, "point_ids", ids)
        n = ids.shape[0]
        for name in _PARAM_FIELDS:
            set_(self, name, _float_array(name, getattr(self, name), n))
        ns = np.asarray(self.n_samples)
        if ns.shape != (n,):
            raise PointscaleError(f"n_samples has shape {ns.shape}; expected ({n},) like point_ids")
        set_(self, "n_samples", ns.astype(np.int64))
        if self.estimator not in ESTIMATORS:
            raise PointscaleError(f"estimator={self.estimator!r} must be one of {ESTIMATORS}")
        given = [getattr(self, f) is not None for f in INTERVAL_FIELDS]
        if any(given) and not all(given):
            missing = [f for f, g in zip(INTERVAL_FIELDS, given) if not g]
            raise PointscaleError(f"intervals are all-or-nothing; missing {missing}")
        if all(given):
            for f in INTERVAL_FIELDS:
                set_(self, f, _float_array(f, getattr(self, f), n))
        reserved = set(self._base_columns())
        flags: dict[str, np.ndarray] = {}
        for key, value in dict(self.flags).items():
            arr = np.asarray(value)
            if arr.shape != (n,):
                raise PointscaleError(f"flag {key!r} has shape {arr.shape}; expected ({n},)")
            if arr.dtype != bool:
                raise PointscaleError(f"flag {key!r} must be boolean, got dtype {arr.dtype}")
            if key in reserved:
                raise PointscaleError(f"flag name {key!r} clashes with a result column")
            flags[str(key)] = arr
        extra: dict[str, np.ndarray] = {}
        for key, value in dict(self.extra).items():
            arr = np.asarray(value)
            if arr.shape != (n,):
                raise PointscaleError(f"extra {key!r} has shape {arr.shape}; expected ({n},)")
            if key in reserved or key in flags:
                raise PointscaleError(f"extra name {key!r} clashes with a column or a flag")
            extra[str(key)] = arr
        set_(self, "flags", flags)
        set_(self, "extra", extra)
        if self.k_range is not None:
            lo, hi = (int(v) for v in self.k_range)
            if not 0 < lo <= hi:
                raise PointscaleError(f"k_range={self.k_range!r} must satisfy 0 < k_min <= k_max")
            set_(self, "k_range", (lo, hi))
        set_(self, "meta", dict(self.meta))

    @staticmethod
    def _base_columns() -> tuple[str, ...]:
        return ("point_id",) + _PARAM_FIELDS + ("n_samples",) + INTERVAL_FIELDS + ("estimator",)

    # ------------------------------------------------------------- properties
    @property
    def n_points(self) -> int:
        """Number of points."""
        return int(self.point_ids.shape[0])

    @property
    def has_intervals(self) -> bool:
        """Whether 95 % intervals for α and c are available."""
        return self.alpha_low is not None

    @property
    def has_covariance(self) -> bool:
        """Whether ψ_k intervals can be computed (see :data:`COVARIANCE_KEYS`)."""
        return all(k in self.extra for k in COVARIANCE_KEYS)

    def __len__(self) -> int:
        return self.n_points

    def __repr__(self) -> str:
        return (
            f"FittedScalingLaws(estimator={self.estimator!r}, n_points={self.n_points}, "
            f"k_range={self.k_range}, intervals={self.has_intervals}, flags={sorted(self.flags)})"
        )

    # ----------------------------------------------------------------- tables
    def to_frame(self) -> pd.DataFrame:
        """One row per point: parameters, intervals (NaN if unavailable), flags, extras."""
        n = self.n_points
        cols: dict[str, Any] = {"point_id": self.point_ids}
        for name in _PARAM_FIELDS:
            cols[name] = getattr(self, name)
        cols["n_samples"] = self.n_samples
        for name in INTERVAL_FIELDS:
            value = getattr(self, name)
            cols[name] = value if value is not None else np.full(n, np.nan)
        cols["estimator"] = np.full(n, self.estimator, dtype=object)
        cols.update(self.flags)
        cols.update(self.extra)
        return pd.DataFrame(cols)

    def conf_int(self) -> pd.DataFrame:
        """95 % intervals for α and c, indexed by point id.

        Raises
        ------
        PointscaleError
            If the estimator provides no intervals.
        """
        self._require_intervals("conf_int")
        return pd.DataFrame(
            {f: getattr(self, f) for f in INTERVAL_FIELDS},
            index=pd.Index(self.point_ids, name="point_id"),
        )

    def _require_intervals(self, what: str) -> None:
        if not self.has_intervals:
            raise PointscaleError(
                f"{what}: the {self.estimator!r} estimator provided no intervals for these laws"
            )

    # -------------------------------------------------------------- predicting
    def _sizes(self, k: Any, warn: bool) -> np.ndarray:
        ks = np.atleast_1d(np.asarray(k, dtype=np.float64))
        if ks.ndim != 1:
            raise PointscaleError(f"k must be a scalar or 1-D; got shape {ks.shape}")
        if not np.all(np.isfinite(ks)) or np.any(ks <= 0):
            raise PointscaleError(f"sizes k must be finite and > 0; got {ks[~(ks > 0)][:5]}")
        if warn and self.k_range is not None:
            outside = ks[(ks < self.k_range[0]) | (ks > self.k_range[1])]
            if outside.size:
                warnings.warn(
                    f"sizes {outside[:5].tolist()} lie outside the sampled range "
                    f"{self.k_range}; the law is extrapolated there",
                    ExtrapolationWarning,
                    stacklevel=3,
                )
        return ks

    def predict(self, k: Any, *, warn_extrapolation: bool = True) -> np.ndarray:
        """ψ_k = c·k^(−α) for every point at the sizes ``k``.

        Parameters
        ----------
        k : float or array-like of shape (m,)
            Dataset sizes (> 0).
        warn_extrapolation : bool, default=True
            Warn (:class:`~pointscale.errors.ExtrapolationWarning`) for sizes
            outside ``k_range``.

        Returns
        -------
        ndarray of shape (n_points, m)
            A point with c = 0 predicts 0 at every size, even where α is
            undetermined (NaN).
        """
        ks = self._sizes(k, warn_extrapolation)
        with np.errstate(invalid="ignore", over="ignore"):
            psi = self.c[:, None] * ks[None, :] ** (-self.alpha[:, None])
        return np.where(self.c[:, None] == 0.0, 0.0, psi)

    def predict_interval(
        self, k: Any, level: float = 0.95, *, warn_extrapolation: bool = True
    ) -> tuple[np.ndarray, np.ndarray]:
        """Wald interval for ψ_k by the delta method on the covariance of (ĉ, α̂).

        Var ψ̂_k ≈ g'Σg with g = (k^(−α), −c·ln k·k^(−α)) and Σ the covariance
        of (ĉ, α̂) from ``extra``. The interval is symmetric in ψ (not in log
        ψ) so that it can cross zero when the sign of c is uncertain.

        Parameters
        ----------
        k : float or array-like of shape (m,)
            Dataset sizes.
        level : float, default=0.95
            Coverage level in (0, 1).

        Returns
        -------
        low, high : ndarray of shape (n_points, m)

        Raises
        ------
        PointscaleError
            If the estimator provided no covariance for (c, α).
        """
        if not 0.0 < level < 1.0:
            raise PointscaleError(f"level={level} must lie in (0, 1)")
        if not self.has_covariance:
            raise PointscaleError(
                f"predict_interval: the {self.estimator!r} estimator provided no covariance "
                f"of (c, alpha) (extra keys {COVARIANCE_KEYS}); no intervals for psi_k"
            )
        from scipy.stats import norm

        ks = self._sizes(k, warn_extrapolation)
        psi = self.predict(ks, warn_extrapolation=False)
        logk = np.log(ks)[None, :]
        with np.errstate(invalid="ignore", over="ignore"):
            m = ks[None, :] ** (-self.alpha[:, None])
            g_c = m
            g_a = -self.c[:, None] * logk * m
            var = (
                g_c**2 * self.extra["var_c"][:, None]
                + 2.0 * g_c * g_a * self.extra["cov_c_alpha"][:, None]
                + g_a**2 * self.extra["var_alpha"][:, None]
            )
            half = norm.ppf(0.5 + level / 2.0) * np.sqrt(np.maximum(var, 0.0))
        return psi - half, psi + half

    # ---------------------------------------------------------------- summary
    def summary(self) -> str:
        """A short text report: counts, quantiles of α and c, flag counts."""
        n = self.n_points
        fitted = np.isfinite(self.alpha) & np.isfinite(self.c)
        lines = [
            f"Scaling laws ({self.estimator}): {n} points, {int(fitted.sum())} fitted",
            f"  sampled k range: {self.k_range if self.k_range else 'unknown'}",
        ]
        if n:
            lines.append(
                "  samples per point: min {} / median {} / max {}".format(
                    int(self.n_samples.min()),
                    int(np.median(self.n_samples)),
                    int(self.n_samples.max()),
                )
            )
        qs = (0.05, 0.25, 0.5, 0.75, 0.95)
        header = "  " + " " * 8 + "".join(f"{f'q{int(q * 100)}':>11}" for q in qs)
        lines.append(header)
        for name in ("alpha", "c", "sigma", "beta"):
            v = getattr(self, name)
            v = v[np.isfinite(v)]
            cells = "".join(f"{x:>11.4g}" for x in np.quantile(v, qs)) if v.size else "  (none)"
            lines.append(f"  {name:<8}{cells}")
        if fitted.any():
            lines.append(f"  negative c: {int((self.c[fitted] < 0).sum())}")
        if self.has_intervals:
            width = self.alpha_high - self.alpha_low
            width = width[np.isfinite(width)]
            if width.size:
                lines.append(f"  median width of 95% alpha interval: {np.median(width):.4g}")
        if self.flags:
            lines.append("  flags:")
            for key in sorted(self.flags):
                lines.append(f"    {key:<20}{int(self.flags[key].sum()):>8}")
        return "\n".join(lines)

    # ------------------------------------------------------------ selection
    def subset(self, selector: Any) -> "FittedScalingLaws":
        """The laws of some points.

        Parameters
        ----------
        selector : bool array of shape (n,), or sequence of point ids
            A mask, or the ids to keep (in the order given).

        Raises
        ------
        PointscaleError
            If a mask has the wrong length or an id is unknown.
        """
        sel = np.asarray(selector)
        if sel.dtype == bool:
            if sel.shape != (self.n_points,):
                raise PointscaleError(
                    f"mask has shape {sel.shape}; expected ({self.n_points},)"
                )
            index = np.flatnonzero(sel)
        else:
            wanted = np.atleast_1d(sel).astype(object)
            index = pd.Index(self.point_ids.astype(object)).get_indexer(wanted) if wanted.size else \
                np.empty(0, dtype=np.intp)
            if (index < 0).any():
                raise PointscaleError(f"unknown point id(s): {wanted[index < 0][:5].tolist()}")
            index = index.astype(np.intp)
        return self._take(index)

    def _take(self, index: np.ndarray) -> "FittedScalingLaws":
        kwargs: dict[str, Any] = {
            f.name: getattr(self, f.name) for f in dataclasses.fields(self)
        }
        for name in ("point_ids", "n_samples") + _PARAM_FIELDS:
            kwargs[name] = kwargs[name][index]
        if self.has_intervals:
            for name in INTERVAL_FIELDS:
                kwargs[name] = kwargs[name][index]
        kwargs["flags"] = {k: v[index] for k, v in self.flags.items()}
        kwargs["extra"] = {k: v[index] for k, v in self.extra.items()}
        return FittedScalingLaws(**kwargs)

    @classmethod
    def concat(cls, parts: Sequence["FittedScalingLaws"]) -> "FittedScalingLaws":
        """Join the laws of disjoint sets of points fitted by the same estimator.

        Flags and extras present in only some parts are dropped (a flag missing
        from one part cannot be filled in without inventing values); the
        meta of each part is kept under ``meta['parts']``.
        """
        parts = list(parts)
        if not parts:
            raise PointscaleError("concat needs at least one FittedScalingLaws")
        estimators = {p.estimator for p in parts}
        if len(estimators) != 1:
            raise PointscaleError(f"cannot concat laws from different estimators {sorted(estimators)}")
        ids = np.concatenate([p.point_ids for p in parts])
        if len(set(ids.tolist())) != ids.size:
            raise PointscaleError("cannot concat laws whose point ids overlap")
        intervals = all(p.has_intervals for p in parts)
        # Keep the first part's column order.
        flag_keys = [k for k in parts[0].flags if all(k in p.flags for p in parts)]
        extra_keys = [k for k in parts[0].extra if all(k in p.extra for p in parts)]
        ranges = [p.k_range for p in parts if p.k_range is not None]
        k_range = (min(r[0] for r in ranges), max(r[1] for r in ranges)) if ranges else None
        kwargs: dict[str, Any] = {
            "point_ids": ids,
            "estimator": parts[0].estimator,
            "flags": {k: np.concatenate([p.flags[k] for p in parts]) for k in flag_keys},
            "extra": {k: np.concatenate([p.extra[k] for p in parts]) for k in extra_keys},
            "k_range": k_range,
            "meta": {"parts": [dict(p.meta) for p in parts]},
        }
        for name in ("n_samples",) + _PARAM_FIELDS:
            kwargs[name] = np.concatenate([getattr(p, name) for p in parts])
        if intervals:
            for name in INTERVAL_FIELDS:
                kwargs[name] = np.concatenate([getattr(p, name) for p in parts])
        return cls(**kwargs)

    # ------------------------------------------------------------------- files
    def save(self, path: str | Path) -> Path:
        """Write the table to ``path`` (Parquet) and ``<path>.json`` (metadata).

        Both writes are atomic. Returns the table's path.
        """
        path = Path(path)
        frame = self.to_frame()
        sidecar = {
            "format_version": _FORMAT_VERSION,
            "estimator": self.estimator,
            "n_points": self.n_points,
            "k_range": list(self.k_range) if self.k_range is not None else None,
            "has_intervals": self.has_intervals,
            "flags": list(self.flags),
            "extra": list(self.extra),
            "meta": dict(self.meta),
        }
        atomic_write_parquet(path, frame)
        atomic_write_json(_sidecar(path), sidecar)
        return path

    @staticmethod
    def read_meta(path: str | Path) -> dict[str, Any]:
        """The ``meta`` of laws written by :meth:`save`, read from the sidecar alone (not the table)."""
        side_path = _sidecar(Path(path))
        if not side_path.exists():
            raise DataError(f"laws table {path} has no metadata sidecar {side_path.name}")
        return _restore_floats(read_json(side_path).get("meta") or {})

    @classmethod
    def load(cls, path: str | Path) -> "FittedScalingLaws":
        """Read laws written by :meth:`save`.

        Raises
        ------
        DataError
            If the table or its JSON sidecar is missing or they disagree.
        """
        path = Path(path)
        side_path = _sidecar(path)
        if not path.exists():
            raise DataError(f"no laws table at {path}")
        if not side_path.exists():
            raise DataError(f"laws table {path} has no metadata sidecar {side_path.name}")
        side = read_json(side_path)
        if side.get("format_version") != _FORMAT_VERSION:
            raise DataError(
                f"{side_path} has format_version={side.get('format_version')!r}; "
                f"this pointscale reads {_FORMAT_VERSION}"
            )
        frame = pd.read_parquet(path, engine="pyarrow")
        if len(frame) != side["n_points"]:
            raise DataError(
                f"{path} holds {len(frame)} rows but its sidecar says {side['n_points']} "
                "(written by two different saves?)"
            )
        missing = [c for c in cls._base_columns() + tuple(side["flags"]) + tuple(side["extra"])
                   if c not in frame.columns]
        if missing:
            raise DataError(f"{path} lacks column(s) {missing}")
        kwargs: dict[str, Any] = {
            "point_ids": frame["point_id"].to_numpy(),
            "n_samples": frame["n_samples"].to_numpy(),
            "estimator": side["estimator"],
            "flags": {k: frame[k].to_numpy(dtype=bool) for k in side["flags"]},
            "extra": {k: frame[k].to_numpy() for k in side["extra"]},
            "k_range": tuple(side["k_range"]) if side["k_range"] is not None else None,
            "meta": _restore_floats(side["meta"]),
        }
        for name in _PARAM_FIELDS:
            kwargs[name] = frame[name].to_numpy(dtype=np.float64)
        if side["has_intervals"]:
            for name in INTERVAL_FIELDS:
                kwargs[name] = frame[name].to_numpy(dtype=np.float64)
        return cls(**kwargs)


def _restore_floats(value: Any) -> Any:
    # canonical JSON writes non-finite floats as their repr ('nan', 'inf').
    if isinstance(value, dict):
        return {k: _restore_floats(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_restore_floats(v) for v in value]
    if value in ("nan", "inf", "-inf"):
        return float(value)
    return value

