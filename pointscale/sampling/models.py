"""The model registry: every learner a utility can be measured with.

Each entry names a scikit-learn-compatible estimator per task, with every
default setting written here (not left to a library default that may change
between versions). All models are single-threaded (``n_jobs=1``,
``nthread=1``): parallelism comes from running many blocks on many workers,
and one thread per fit keeps results independent of the machine's core count.

Settings chosen for valuation, and why:

* ``logreg``: L2, ``C=1`` as the paper. Solved with Newton–Cholesky to a
  tight tolerance (1e-10) because Δ at k = 1000 is ~1e-4 of the log-loss; the
  library default (lbfgs, tol 1e-4) leaves optimisation error of that size.
  The fast path (:mod:`.solvers.logistic`) solves the same objective exactly.
* ``xgboost``, ``hist_gbm``, ``random_forest``: small ensembles (50 trees /
  iterations), no early stopping (an internal validation split would make
  the fitted model depend on a random hold-out of D). ``xgboost``'s fits go
  through :mod:`.solvers.xgb` (the same models on a cheaper container).
* ``mlp``: the paper's MLP -- one hidden layer of 32 ReLU units, L2
  ``alpha=0.01``, Adam with learning rate 0.01 for exactly 200 full-batch
  steps (``batch_size`` = all rows, no shuffling, no early stop: the loss
  plateau test never fires with ``n_iter_no_change`` this large), scikit-learn's
  ``MLPClassifier``/``MLPRegressor`` (:class:`PaperMLPClassifier` only
  silences the two warnings that this protocol triggers by design).
* ``mlp_batched``: the same model and optimiser, every D ∪ {z} of a block
  trained at once (:mod:`.solvers.mlp`; on a GPU with ``device="cuda"``).
* ``svm``: RBF SVC with Platt probabilities (:class:`~.solvers.svm.PlattSVC`, what
  ``SVC(probability=True)`` did before scikit-learn 1.9 deprecated it).

Every fit of one base and of base ∪ {z} gets the same integer seed, so
randomised learners compare like with like (common random numbers).

Besides these names, every function here takes a class path
``"module:Class"`` (see :mod:`.estimators`): the user's own estimator, fitted
with base sharing but no fast path. The default model follows the task
(:func:`default_model`): ``logreg`` for classification, ``ridge`` (exact
rank-one fast path) for regression.

A model family is one :class:`ModelSpec` (here, or :func:`register_model` from
outside the package) and, for a batched fast path, one solver file
(:mod:`.solvers`); ``docs/extending.md`` walks through one.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from ..errors import ConfigError
from .estimators import factory as class_path_factory, is_class_path, normalize
from .metrics import default_metric

TASKS = ("classification", "regression")


@dataclass(frozen=True)
class ModelSpec:
    """A registry entry: estimator factories per task, their default settings, and the fast path.

    Attributes
    ----------
    name : str
    factories : mapping of task to a function returning the estimator class
        (called on first use, so a model's library is imported only when it runs).
    defaults : mapping of task to settings
        Every setting the registry fixes (the class's own defaults fill the rest).
    seed_param : str or None
        The constructor argument that takes the per-base integer seed; None for
        deterministic estimators.
    unseeded_tasks : tuple of str
        Tasks whose estimator has no ``seed_param`` although the others do (SVR).
    open_settings : bool
        The estimator takes any keyword (XGBoost passes them to the booster): setting
        names are not checked against ``get_params``, nor values by ``_validate_params``.
    warm_start_exact : bool
        Fitting base ∪ {z} from the base solution reaches the same optimum (convex
        objective solved to tolerance), so the generic path warm-starts.
    solver : str, callable or None
        The batched fast path: a :class:`~.solvers.base.SolverBuilder`, or its
        ``"module:function"`` path (imported on first use); None: estimator fits only.
    """

    name: str
    factories: Mapping[str, Callable[[], type]]
    defaults: Mapping[str, Mapping[str, Any]]
    seed_param: str | None = "random_state"
    description: str = ""
    warm_start_exact: bool = False
    extra: Mapping[str, Any] = field(default_factory=dict)
    solver: str | Callable[..., Any] | None = None
    unseeded_tasks: tuple[str, ...] = ()
    open_settings: bool = False

    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(t for t in TASKS if t in self.factories)


def _logreg():
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression


def _ridge():
    from sklearn.linear_model import Ridge

    return Ridge


def _linear():
    from sklearn.linear_model import LinearRegression

    return LinearRegression


def _xgb_clf():
    from xgboost import XGBClassifier

    return XGBClassifier


def _xgb_reg():
    from xgboost import XGBRegressor

    return XGBRegressor


def _hgb_clf():
    from sklearn.ensemble import HistGradientBoostingClassifier

    return HistGradientBoostingClassifier


def _hgb_reg():
    from sklearn.ensemble import HistGradientBoostingRegressor

    return HistGradientBoostingRegressor


def _rf_clf():
    from sklearn.ensemble import RandomForestClassifier

    return RandomForestClassifier


def _rf_reg():
    from sklearn.ensemble import RandomForestRegressor

    return RandomForestRegressor


def _dt_clf():
    from sklearn.tree import DecisionTreeClassifier

    return DecisionTreeClassifier


def _dt_reg():
    from sklearn.tree import DecisionTreeRegressor

    return DecisionTreeRegressor


def _knn_clf():
    from sklearn.neighbors import KNeighborsClassifier

    return KNeighborsClassifier


def _knn_reg():
    from sklearn.neighbors import KNeighborsRegressor

    return KNeighborsRegressor


def _svc():
    from .solvers.svm import PlattSVC

    return PlattSVC


def _svr():
    from sklearn.svm import SVR

    return SVR


#: batch_size of the paper's MLP: scikit-learn clips it to the number of rows (one full batch per step).
FULL_BATCH = 2**31 - 1


def _paper_protocol(cls):
    """``cls`` whose fit silences the warnings the fixed full-batch protocol triggers by design."""

    def fit(self, X, y, sample_weight=None):
        import warnings

        from sklearn.exceptions import ConvergenceWarning

        with warnings.catch_warnings():
            # batch_size larger than the data: clipped to one full batch, as intended.
            warnings.filterwarnings("ignore", message="Got `batch_size`", category=UserWarning)
            # max_iter is the protocol's step count, not a budget the optimiser ran out of.
            warnings.filterwarnings("ignore", message="Stochastic Optimizer: Maximum iterations",
                                    category=ConvergenceWarning)
            return cls.fit(self, X, y, sample_weight=sample_weight)

    return type(f"Paper{cls.__name__}", (cls,), {"fit": fit, "__doc__": f"{cls.__name__}, fixed full-batch steps.",
                                                  "__module__": __name__})


@functools.lru_cache(maxsize=None)
def _mlp_clf():
    from sklearn.neural_network import MLPClassifier

    return _paper_protocol(MLPClassifier)


@functools.lru_cache(maxsize=None)
def _mlp_reg():
    from sklearn.neural_network import MLPRegressor

    return _paper_protocol(MLPRegressor)


def __getattr__(name: str):
    # The protocol classes are built on first use (scikit-learn imports lazily);
    # module attributes so that pickle finds them in any process.
    if name == "PaperMLPClassifier":
        return _mlp_clf()
    if name == "PaperMLPRegressor":
        return _mlp_reg()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _mlp_batched_clf():
    from .solvers.mlp import BatchedMLPClassifier

    return BatchedMLPClassifier


def _mlp_batched_reg():
    from .solvers.mlp import BatchedMLPRegressor

    return BatchedMLPRegressor


#: The package of the built-in solvers (a ModelSpec's ``solver`` is ``"module:function"``).
_SOLVERS = "pointscale.sampling.solvers"

_XGB = dict(n_estimators=50, max_depth=4, learning_rate=0.3, tree_method="hist", n_jobs=1,
            verbosity=0)
_HGB = dict(max_iter=50, learning_rate=0.1, max_leaf_nodes=31, min_samples_leaf=20,
            early_stopping=False)
_RF = dict(n_estimators=50, max_depth=None, min_samples_leaf=1, max_features="sqrt", n_jobs=1)
_DT = dict(max_depth=None, min_samples_leaf=1)
_KNN = dict(n_neighbors=5, weights="uniform", n_jobs=1)
_MLP = dict(hidden_layer_sizes=(32,), activation="relu", solver="adam", alpha=0.01,
            learning_rate_init=0.01, max_iter=200, batch_size=FULL_BATCH, shuffle=False,
            n_iter_no_change=FULL_BATCH, early_stopping=False)
# The same settings by the same names (the trainer is relu + Adam + full batch by construction).
# float32 as the paper's torch model computed (and twice the speed of float64 on a CPU);
# dtype="float64" reproduces scikit-learn's models to ~1e-15.
_MLP_BATCHED = dict(hidden_layer_sizes=(32,), alpha=0.01, learning_rate_init=0.01, max_iter=200, dtype="float32")

MODELS: dict[str, ModelSpec] = {
    "logreg": ModelSpec(
        "logreg", {"classification": _logreg},
        {"classification": dict(C=1.0, l1_ratio=0.0, fit_intercept=True, solver="newton-cholesky",
                                tol=1e-10, max_iter=100)},
        description="L2 logistic regression, C=1 (exact batched fast path)",
        warm_start_exact=True, solver=f"{_SOLVERS}.logistic:build",
    ),
    "ridge": ModelSpec(
        "ridge", {"regression": _ridge},
        {"regression": dict(alpha=1.0, fit_intercept=True, solver="cholesky")},
        description="ridge regression, alpha=1 (closed-form fast path)",
        solver=f"{_SOLVERS}.ridge:build",
    ),
    "linear": ModelSpec(
        "linear", {"regression": _linear}, {"regression": dict(fit_intercept=True)},
        seed_param=None, description="ordinary least squares (closed-form fast path)",
        solver=f"{_SOLVERS}.ridge:build_least_squares",
    ),
    "xgboost": ModelSpec(
        "xgboost", {"classification": _xgb_clf, "regression": _xgb_reg},
        {"classification": dict(_XGB), "regression": dict(_XGB)},
        description="XGBoost, hist, 50 trees of depth 4", open_settings=True,
        solver=f"{_SOLVERS}.xgb:build",
    ),
    "hist_gbm": ModelSpec(
        "hist_gbm", {"classification": _hgb_clf, "regression": _hgb_reg},
        {"classification": dict(_HGB), "regression": dict(_HGB)},
        description="scikit-learn histogram gradient boosting, 50 iterations",
    ),
    "random_forest": ModelSpec(
        "random_forest", {"classification": _rf_clf, "regression": _rf_reg},
        {"classification": dict(_RF), "regression": dict(_RF, max_features=1.0)},
        description="random forest, 50 trees",
    ),
    "decision_tree": ModelSpec(
        "decision_tree", {"classification": _dt_clf, "regression": _dt_reg},
        {"classification": dict(_DT), "regression": dict(_DT)},
        description="one fully grown decision tree",
    ),
    "knn": ModelSpec(
        "knn", {"classification": _knn_clf, "regression": _knn_reg},
        {"classification": dict(_KNN), "regression": dict(_KNN)},
        seed_param=None, description="k-nearest neighbours, k=5",
    ),
    "svm": ModelSpec(
        "svm", {"classification": _svc, "regression": _svr},
        {"classification": dict(C=1.0, kernel="rbf", gamma="scale", cv=5),
         "regression": dict(C=1.0, kernel="rbf", gamma="scale")},
        description="RBF support vector machine (Platt probabilities)",
        solver=f"{_SOLVERS}.svm:build", unseeded_tasks=("regression",),  # SVR has no random_state
    ),
    "mlp": ModelSpec(
        "mlp", {"classification": _mlp_clf, "regression": _mlp_reg},
        {"classification": dict(_MLP), "regression": dict(_MLP)},
        description="the paper's MLP: 32 hidden units, 200 full-batch Adam steps (scikit-learn)",
    ),
    "mlp_batched": ModelSpec(
        "mlp_batched", {"classification": _mlp_batched_clf, "regression": _mlp_batched_reg},
        {"classification": dict(_MLP_BATCHED), "regression": dict(_MLP_BATCHED)},
        description="the paper's MLP, a block's models trained together (array API; GPU with device='cuda')",
        solver=f"{_SOLVERS}.mlp:build",
    ),
}


def _spec(name: str) -> ModelSpec:
    try:
        return MODELS[name]
    except (KeyError, TypeError):
        raise ConfigError(f"unknown model {name!r}; valid models: {', '.join(sorted(MODELS))}, "
                          "or a class path module:Class (e.g. sklearn.svm:SVC)") from None


_DEFAULT_MODELS = {"classification": "logreg", "regression": "ridge"}


def default_model(task: str) -> str:
    """The model used when none is given: ``logreg`` (classification), ``ridge`` (regression)."""
    default_metric(task)  # the one check (and message) for an unknown task
    return _DEFAULT_MODELS[task]


def spec_of(name: Any) -> ModelSpec | None:
    """The registry entry of a model name; None for a class path or an estimator (the user's own)."""
    return MODELS.get(name) if isinstance(name, str) else None


def register_model(spec: ModelSpec) -> ModelSpec:
    """Add a model family to the registry (see ``docs/extending.md``); returns ``spec``.

    Every process that runs the model must register it (import the module that
    calls this on its workers too). ConfigError for a name that is taken or not
    a plain name, or for a task other than classification and regression.
    """
    if not isinstance(spec.name, str) or not spec.name or is_class_path(spec.name):
        raise ConfigError(f"model name {spec.name!r} must be a non-empty name without ':' "
                          "(names with ':' are class paths)")
    if spec.name in MODELS:
        raise ConfigError(f"model {spec.name!r} is already registered; choose another name")
    unknown = sorted(set(spec.factories) - set(TASKS))
    if unknown or set(spec.defaults) != set(spec.factories):
        raise ConfigError(f"model {spec.name!r}: factories and defaults must cover the same tasks among "
                          f"{', '.join(TASKS)} (got {sorted(spec.factories)} and {sorted(spec.defaults)})")
    MODELS[spec.name] = spec
    return spec


def check_model_for_task(name: str, task: str) -> ModelSpec:
    """The registry entry of ``name``; ConfigError if it does not fit ``task``."""
    spec = _spec(name)
    if task not in spec.factories:
        valid = sorted(n for n, s in MODELS.items() if task in s.factories)
        raise ConfigError(f"model {name!r} does not fit a {task} task; valid models for {task}: "
                          f"{', '.join(valid)}")
    return spec


def default_params(name: str, task: str) -> dict[str, Any]:
    """The registry's settings of ``name`` for ``task`` (a copy)."""
    return dict(check_model_for_task(name, task).defaults[task])


def check_model_params(name: str, params: Mapping[str, Any]) -> None:
    """ConfigError if a setting name is unknown to every task's estimator of ``name``."""
    if is_class_path(name):
        normalize(name, params)  # the class's own constructor judges the names
        return
    spec = _spec(name)
    if not params:
        return
    unknown_everywhere = None
    for task, factory in spec.factories.items():
        if spec.open_settings:  # e.g. XGBoost takes any keyword and passes it to the booster
            return
        valid = _valid_params(factory())
        unknown = {p for p in params if p not in valid}
        unknown_everywhere = unknown if unknown_everywhere is None else unknown_everywhere & unknown
    if unknown_everywhere:
        raise ConfigError(f"unknown setting(s) {', '.join(sorted(unknown_everywhere))} for model {name!r}")


def validate_estimator_params(estimator, name: str = "") -> None:
    """ConfigError if the estimator rejects one of its setting values (scikit-learn's own check)."""
    check = getattr(estimator, "_validate_params", None)
    # User subclasses of BaseEstimator inherit _validate_params without declaring constraints.
    spec = spec_of(name)
    if check is None or (spec is not None and spec.open_settings) or not hasattr(estimator, "_parameter_constraints"):
        return
    try:
        check()
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"model {name!r}: {exc}") from None


@functools.lru_cache(maxsize=None)
def _valid_params(cls) -> frozenset[str]:
    return frozenset(cls().get_params(deep=False))


def estimator_factory(name: str, task: str, params: Mapping[str, Any] | None = None) -> Callable[[int], Any]:
    """``seed -> unfitted estimator`` with the settings resolved and checked once.

    The engine builds one factory per batch of blocks and calls it for every
    fit, so per-fit overhead stays that of the estimator's constructor.
    """
    if is_class_path(name):
        return class_path_factory(name, params or {})
    spec = check_model_for_task(name, task)
    settings = dict(spec.defaults[task])
    if params:
        settings.update(params)
    cls = spec.factories[task]()
    seed_param = spec.seed_param if task not in spec.unseeded_tasks else None
    if not spec.open_settings:
        valid = _valid_params(cls)
        unknown = sorted(p for p in settings if p not in valid)
        if unknown:
            raise ConfigError(f"unknown setting(s) {', '.join(unknown)} for model {name!r} ({task}); "
                              f"valid: {', '.join(sorted(valid))}")
    if seed_param is None:
        return lambda seed: cls(**settings)
    if seed_param in settings:  # a seed given in the settings wins over the derived one
        return lambda seed: cls(**settings)
    return lambda seed: cls(**settings, **{seed_param: int(seed)})


def make_estimator(name: str, task: str, seed: int, params: Mapping[str, Any] | None = None):
    """An unfitted estimator from the registry.

    Parameters
    ----------
    name : str
        A key of :data:`MODELS`.
    task : {"classification", "regression"}
    seed : int
        Integer seed for randomised learners (ignored by deterministic ones).
    params : mapping, optional
        Settings that override the registry's defaults.

    Raises
    ------
    ConfigError
        Unknown model, a model that does not fit the task, or an unknown setting.
    """
    return estimator_factory(name, task, params)(seed)
