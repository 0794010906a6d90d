"""The user's own estimators: any scikit-learn-compatible class, by class path.

(Also :class:`ExplicitParams`, the parameter protocol of the registry's own estimators.)

A model is either a registry name (:data:`pointscale.sampling.models.MODELS`)
or a class path ``"module:Class"`` (``"sklearn.svm:SVC"``,
``"lightgbm:LGBMClassifier"``). :class:`~pointscale.sampling.SamplingConfig`
also takes an unfitted estimator object and stores it as its class path plus
``get_params(deep=False)``:

* **Hashing and resume.** The class path and the *full* settings (every
  ``get_params`` entry, defaults included) are plain JSON, so the config's
  hash is the same in every process, ``SVC()`` and ``"sklearn.svm:SVC"``
  hash alike, and a rerun finds its samples in the ledger.
* **No pickles.** Workers rebuild the estimator from the class path and the
  settings (:func:`build`); a user's object never crosses a process boundary.
  Nested estimators (a ``Pipeline``'s steps, a bagging ensemble's base) are
  encoded the same way, recursively.
* **Checked before any compute**: :func:`normalize` (at construction of
  the config) -- the class imports (and is importable under its path, so not
  defined in ``__main__``), has ``fit``/``get_params``/``set_params``, and
  accepts its settings; then, with the data, :func:`check_for_task` (a
  classifier is not used for a regression) and :func:`check_response` (it
  offers what the metric scores: ``predict_proba``, ``decision_function`` or
  ``predict``), and scikit-learn's own parameter checks.

Seeds: an estimator with a ``random_state`` setting left at None gets the
per-base integer seed (common random numbers across the fits of a block, as
for registry models); a ``random_state`` the user set is kept.
"""

from __future__ import annotations

import functools
import importlib
from typing import Any, Callable, Mapping

import numpy as np

from ..errors import ConfigError

_EST = "__estimator__"
_TUPLE = "__tuple__"


def is_class_path(model: Any) -> bool:
    """True for a ``"module:Class"`` model name."""
    return isinstance(model, str) and ":" in model


def is_estimator(obj: Any) -> bool:
    """An estimator *object* (not a class): has ``fit`` and ``get_params``."""
    return not isinstance(obj, type) and hasattr(obj, "fit") and hasattr(obj, "get_params")


def class_path(obj: Any) -> str:
    """``"module:QualName"`` of an estimator object or class, by its shortest public module.

    ``LogisticRegression`` lives in ``sklearn.linear_model._logistic`` but is
    exported by ``sklearn.linear_model``; the shortest parent package that
    exports the very same class names it, so an object and the path a user
    types give one name (and one hash).
    """
    import sys

    cls = obj if isinstance(obj, type) else type(obj)
    parts = cls.__module__.split(".")
    if "." not in cls.__qualname__:
        for i in range(1, len(parts)):
            module = sys.modules.get(".".join(parts[:i]))
            if module is not None and getattr(module, cls.__qualname__, None) is cls:
                return f"{'.'.join(parts[:i])}:{cls.__qualname__}"
    return f"{cls.__module__}:{cls.__qualname__}"


def _where_defined(module_name: str, qualname: str) -> str:
    """The fix for a class not found: scikit-learn's classes live in its submodules."""
    if module_name.split(".")[0] == "sklearn":
        from sklearn.utils import all_estimators

        found = [f"{cls.__module__.rsplit('._', 1)[0]}:{name}" for name, cls in all_estimators()
                 if name.lower() == qualname.lower()]
        if found:
            return f"did you mean {found[0]}?"
        return ("scikit-learn's classes live in its submodules: give the module that defines the class, "
                "e.g. sklearn.svm:SVC or sklearn.ensemble:RandomForestClassifier")
    return "give the module that defines the class, as module:Class"


@functools.lru_cache(maxsize=256)
def import_class(path: str) -> type:
    """The class named by ``"module:Class"``; ConfigError naming what failed."""
    module_name, _, qualname = path.partition(":")
    if not module_name or not qualname:
        raise ConfigError(f"model {path!r} must look like module:Class, e.g. sklearn.svm:SVC")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"cannot import module {module_name!r} for model {path!r} ({exc}); install it, "
                          "or check the spelling") from None
    obj: Any = module
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise ConfigError(f"module {module_name!r} has no {qualname!r} (model {path!r}); "
                              f"{_where_defined(module_name, qualname)}")
    if not isinstance(obj, type):
        raise ConfigError(f"model {path!r} is not a class")
    missing = [m for m in ("fit", "get_params", "set_params") if not hasattr(obj, m)]
    if missing:
        raise ConfigError(f"model {path!r} has no {', '.join(missing)}: it must follow the scikit-learn "
                          "estimator contract (fit, get_params, set_params)")
    return obj


# --------------------------------------------------------------------------- settings as JSON


def encode(value: Any, where: str = "") -> Any:
    """Settings as plain JSON: estimators as ``{"__estimator__": path, "params": ...}``.

    Raises ConfigError for a value that has no plain form (a function, an
    array): it could not be hashed stably nor rebuilt on a worker.
    """
    if is_estimator(value):
        path = class_path(value)
        _check_importable(value, path)
        return {_EST: path, "params": encode(value.get_params(deep=False), f"{where}{path}.")}
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, tuple):
        return {_TUPLE: [encode(v, where) for v in value]}
    if isinstance(value, list):
        return [encode(v, where) for v in value]
    if isinstance(value, Mapping) and all(isinstance(k, str) for k in value):
        return {k: encode(v, f"{where}{k}.") for k, v in sorted(value.items())}
    raise ConfigError(f"model setting {where.rstrip('.') or '?'}={value!r} cannot be stored as plain data "
                      "(numbers, strings, lists, string-keyed dicts, estimators); pass it in that form")


def decode(value: Any) -> Any:
    """Inverse of :func:`encode`: nested estimators rebuilt from their class paths."""
    if isinstance(value, list):
        return [decode(v) for v in value]
    if isinstance(value, Mapping):
        if _EST in value:
            cls = import_class(value[_EST])
            return cls(**{k: decode(v) for k, v in dict(value.get("params") or {}).items()})
        if _TUPLE in value:
            return tuple(decode(v) for v in value[_TUPLE])
        return {k: decode(v) for k, v in value.items()}
    return value


def _check_importable(obj: Any, path: str) -> None:
    if type(obj).__module__ == "__main__":
        raise ConfigError(f"model class {path} is defined in __main__; workers rebuild models by class "
                          "path, so move it into an importable module")
    try:
        same = import_class(path) is type(obj)
    except ConfigError:
        same = False
    if not same:
        raise ConfigError(f"model class {path} cannot be imported under that name; workers rebuild "
                          "models by class path, so define it at the top level of an importable module")


# --------------------------------------------------------------------------- checks and building


def normalize(model: Any, params: Mapping[str, Any] | None) -> tuple[str, dict[str, Any]]:
    """``(class path, full encoded settings)`` of an estimator object or a ``"module:Class"`` name.

    ``params`` override the object's settings (or the class defaults). The
    result is canonical: ``SVC(C=2)`` and ``("sklearn.svm:SVC", {"C": 2})``
    give the same pair.
    """
    params = {k: decode(v) for k, v in dict(params or {}).items()}  # stored configs hold encoded JSON
    if is_estimator(model):
        path = class_path(model)
        _check_importable(model, path)
        try:
            est = type(model)(**model.get_params(deep=False))
        except Exception as exc:  # noqa: BLE001 -- a constructor that fails is the user's to fix
            raise ConfigError(f"model {path!r} cannot be rebuilt from get_params(): "
                              f"{type(exc).__name__}: {exc}") from None
        _set_params(est, params, path)
    else:
        cls = import_class(str(model))
        path = class_path(cls)
        try:
            est = cls(**params)
        except TypeError as exc:
            raise ConfigError(f"model {path!r} does not accept its settings ({exc}); pass each as "
                              "--model-param NAME=VALUE with a name from the class's parameters") from None
        except Exception as exc:  # noqa: BLE001
            raise ConfigError(f"model {path!r} cannot be constructed: {type(exc).__name__}: {exc}") from None
    return path, encode(est.get_params(deep=False))


def _set_params(est: Any, params: Mapping[str, Any], path: str) -> None:
    if not params:
        return
    try:
        est.set_params(**params)
    except (ValueError, TypeError) as exc:
        valid = sorted(est.get_params(deep=False))
        raise ConfigError(f"model {path!r} does not accept setting(s) {', '.join(sorted(params))}: {exc} "
                          f"(valid: {', '.join(valid)})") from None


def build(path: str, params: Mapping[str, Any], seed: int | None) -> Any:
    """An unfitted estimator: class path + encoded settings (+ the derived seed if unset)."""
    return factory(path, params)(seed)


def factory(path: str, params: Mapping[str, Any]) -> Callable[[int | None], Any]:
    """``seed -> unfitted estimator``, the class resolved once.

    ``random_state`` left at None receives ``seed`` (an int), so the fits of
    one block share their randomness and reruns are bit-identical.
    """
    cls = import_class(path)
    settings = dict(params)  # full settings (see normalize), so an unset random_state is present as None
    seeded = "random_state" in settings and settings["random_state"] is None

    def make(seed: int | None) -> Any:
        values = {k: decode(v) for k, v in settings.items()}
        if seeded and seed is not None:
            values["random_state"] = int(seed)
        try:
            return cls(**values)
        except TypeError as exc:
            raise ConfigError(f"model {path!r} rejects its settings: {exc}") from None

    return make


def task_of(est: Any) -> str | None:
    """``classification``/``regression`` from the estimator's own tags, or None if it does not say."""
    from sklearn.base import is_classifier, is_regressor

    try:
        if is_classifier(est):
            return "classification"
        if is_regressor(est):
            return "regression"
    except Exception:  # noqa: BLE001 -- third-party estimators without tags
        return None
    return None


def check_for_task(path: str, params: Mapping[str, Any], task: str) -> None:
    """ConfigError if the estimator declares itself for the other task."""
    declared = task_of(build(path, params, seed=None))
    if declared is not None and declared != task:
        kind = "a classifier" if declared == "classification" else "a regressor"
        raise ConfigError(f"model {path!r} is {kind}; it does not fit a {task} task")


def check_response(est: Any, name: str, methods: tuple[str, ...], metric: str) -> None:
    """ConfigError unless the unfitted estimator offers one of ``methods`` (what the metric scores)."""
    if not any(hasattr(est, m) for m in methods):
        need = " or ".join(methods)
        hint = ("use a metric that scores predictions (e.g. --metric accuracy), or a model with "
                "predict_proba") if "predict_proba" in methods else "use another model"
        raise ConfigError(f"model {name!r} has no {need}, which metric {metric!r} needs; {hint}")


# --------------------------------------------------------------------------- the registry's own estimators


class ExplicitParams:
    """``get_params``/``set_params`` over the names in ``_PARAMS`` (scikit-learn's estimator protocol).

    For the registry's own estimators that are not ``BaseEstimator`` subclasses: ``clone`` and
    the stored model (class path plus ``get_params()``) need exactly these two methods.
    """

    _PARAMS: tuple[str, ...] = ()

    def get_params(self, deep=True):
        return {p: getattr(self, p) for p in self._PARAMS}

    def set_params(self, **params):
        for key, value in params.items():
            if key not in self._PARAMS:
                raise ValueError(f"Invalid parameter {key!r} for estimator {type(self).__name__}")
            setattr(self, key, value)
        return self
