"""The pipeline's options, declared once.

Every entry point takes its settings from the typed models here: the flows
(``pipeline_flow``, ``on_new_data_flow``, ``revalue_flow``) take them as a
parameter, so Prefect validates them and shows them as a form in the UI; the
deployments (``pointscale serve`` and ``deployments/prefect.yaml``) store them
as the flows' default parameters; and the ``pointscale`` command line is
generated from them (:func:`add_options`, :func:`options_from_args`).

To add an option, add one field to the model it belongs to, with a
``description`` (it is the ``--help`` text and the UI's label text) and, where
the flag is not ``--field-name``, a :class:`Cli` annotation. Fields of
:class:`DataOptions` reach :class:`pointscale.data.DataConfig` (``dataset`` is
its ``source``) and fields of :class:`SamplingOptions` reach
:func:`pointscale.pipeline.resolve_sampling` by name, so a new field there
needs no change in the flows. ``deployments/prefect.yaml`` is generated from
these models (``python -m flows.deployments --write``); a test checks it.

The hierarchy says which command takes what:

* :class:`DataOptions` (``ingest``): which data, how it is split;
* :class:`SamplingOptions` (``sample``): what is sampled on it;
* :class:`ExecutionOptions` (``revalue``): where the fits run (never a result);
* :class:`PipelineOptions` (``run``, ``serve``, the flows): all of the above
  plus the downstream stages;
* :class:`ServeOptions` (``serve`` only): the watcher and the schedule.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Sequence, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationError, field_validator, model_validator

from pointscale.errors import ConfigError
from pointscale.partitions import PART_POINTS
from pointscale.storage import secret_options


class OptionsError(ConfigError):
    """An option with a value its type or range does not allow."""


@dataclass(frozen=True)
class Cli:
    """Command-line details of a field that the field itself cannot say.

    Parameters
    ----------
    flag : str, optional
        The flag, when it is not ``--field-name`` (booleans that default to
        true get ``--no-field-name``).
    metavar : str, optional
        Shown in ``--help`` for the value.
    """

    flag: Optional[str] = None
    metavar: Optional[str] = None


_FROZEN = ConfigDict(extra="forbid", frozen=True)


def _absolute_if_exists(value: Optional[str]) -> Optional[str]:
    if value is None:
        return None
    path = Path(value).expanduser()
    return str(path.resolve()) if path.exists() else value


class DataOptions(BaseModel):
    """Which data a run values, and how it is split."""

    model_config = _FROZEN

    dataset: str = Field(
        "breast_cancer",
        description="built-in name (breast_cancer, digits, diabetes; after `make data`: adult, magic, "
                    "california) or a CSV/Parquet file or folder")
    target: Optional[str] = Field(None, description="target column (required for files)")
    id_column: Optional[str] = Field(
        None, description="column with stable point ids (default: ids from row content)")
    task: Optional[Literal["classification", "regression"]] = Field(
        None, description="default: inferred from the target")
    seed: Annotated[int, Field(ge=0)] = Field(0, description="root seed of every random draw")
    valid: Annotated[Optional[str], Cli(metavar="FILE")] = Field(
        None, description="your own validation file or folder (same columns); then --dataset is the training "
                          "pool, all of it valued, and nothing is drawn")
    test: Annotated[Optional[str], Cli(metavar="FILE")] = Field(
        None, description="your own test file or folder (with --valid; default: no test split)")
    split_column: Optional[str] = Field(
        None, description="column whose values train/valid/test give each row's split (instead of files)")
    coerce_numeric: bool = Field(
        False, description="read stray non-numbers in numeric columns as missing (counted in run.json) "
                           "instead of stopping")
    encoding: Optional[str] = Field(None, description="text encoding of CSV files (default: utf-8)")
    keep_columns: Annotated[Optional[list[str]], Cli(metavar="COLUMN")] = Field(
        None, description="columns taken as they are: not turned into date features, not dropped as "
                          "near-unique text")

    @field_validator("valid", "test")
    @classmethod
    def _absolute(cls, value: Optional[str]) -> Optional[str]:
        # Served flows run elsewhere: a file given relative to the caller's folder is kept absolute.
        return _absolute_if_exists(value)

    def data_config(self) -> dict[str, Any]:
        """The :class:`pointscale.data.DataConfig` fields (``dataset`` is its ``source``)."""
        fields = self.model_dump(include=set(DataOptions.model_fields))
        return {"source": fields.pop("dataset"), **fields}


class SamplingOptions(DataOptions):
    """What is sampled: the model, the utility, the subset sizes and counts."""

    model: Optional[str] = Field(
        None, description="registry name (logreg, ridge, xgboost, knn, ...) or your own scikit-learn-compatible "
                          "class as module:Class, e.g. sklearn.svm:SVC (default: logreg for classification, ridge "
                          "for regression)")
    model_params: Annotated[dict[str, Any], Cli("--model-param", "NAME=VALUE")] = Field(
        default_factory=dict,
        description="extra model setting, repeatable (e.g. n_estimators=100); values are JSON when they parse")
    metric: Optional[str] = Field(
        None, description="utility: paper_ce (classification default), neg_brier, accuracy, neg_log_loss "
                          "(validation-specific); neg_mse (regression default); or sklearn:NAME for any "
                          "scikit-learn scorer")
    points: Union[PositiveInt, Literal["all"], str] = Field(
        "all", description="N points drawn with the seed, all, or a FILE with one point id per line")

    @field_validator("points", mode="before")
    @classmethod
    def _points(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().isdigit():
            return int(value)  # "100" from the command line is a count, not a file name
        if isinstance(value, str) and value != "all":
            return _absolute_if_exists(value)
        return value
    samples_per_point: Annotated[int, Field(ge=1)] = Field(100, description="samples per valued point")
    k_min: Optional[Annotated[int, Field(ge=1)]] = Field(
        None, description="smallest subset size (default: 100, or less if the data is small)")
    k_max: Optional[Annotated[int, Field(ge=1)]] = Field(
        None, description="largest subset size (default: 1000, or the largest the data allows)")
    block_size: Annotated[int, Field(ge=1)] = Field(32, description="points sharing one base subset")
    shard_size: Optional[Annotated[int, Field(ge=1)]] = Field(
        None, description="blocks per task (default: about 2 s of fits per task, >= 4 tasks per worker)")
    device: Literal["cpu", "cuda", "auto"] = Field(
        "cpu", description="where the batched MLP and logistic solvers compute: cuda fails without a GPU, "
                           "auto falls back to the CPU with a warning (never changes a sample beyond rounding)")

    def sampling_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :func:`pointscale.pipeline.resolve_sampling` (without the data)."""
        own = set(SamplingOptions.model_fields) - set(DataOptions.model_fields) - {"points"}
        return {**self.model_dump(include=own), "seed": self.seed}


class ExecutionOptions(BaseModel):
    """Where the fits run. Never changes a result."""

    model_config = _FROZEN

    workers: Optional[Annotated[int, Field(ge=1)]] = Field(
        None, description="local Dask workers (default: one per core)")
    dask_address: Optional[str] = Field(
        None, description="run on an existing Dask cluster, e.g. tcp://10.0.0.5:8786")
    partition_points: Annotated[int, Field(ge=1)] = Field(
        PART_POINTS, description="points per partition of the stages after sampling (one task each on the "
                                 "cluster; never changes a value)")
    storage_options: Annotated[Optional[dict[str, Any]], Cli(flag="--storage-option")] = Field(
        None, description="fsspec option of the run folder's filesystem, e.g. endpoint_url=http://minio:9000 "
                          "(repeat it; no credentials: those come from the protocol's environment variables "
                          "or a profile)")

    @field_validator("storage_options")
    @classmethod
    def _no_credentials(cls, value: Optional[dict[str, Any]]) -> Optional[dict[str, Any]]:
        secret = secret_options(value)
        if secret:
            raise ValueError(f"{', '.join(secret)} would put a credential in the run's stored parameters; give "
                             "credentials through the protocol's environment variables or a profile")
        return value


class PipelineOptions(ExecutionOptions, SamplingOptions):
    """Every setting of the whole pipeline (``pointscale run`` and the served flows)."""

    amortized: bool = Field(True, description="fit the amortized estimator")
    laws: str = Field(
        "auto", description="the laws behind the values: auto (the estimator with the best held-out likelihood) "
                            "or one estimator by name (mle, shrinkage, shrunk_mean, amortized, ...)")
    removal: bool = Field(True, description="compute the removal curve")
    select_m: Annotated[int, Field(ge=0), Cli("--select")] = Field(50, description="points to select")
    target_sizes: Optional[list[PositiveInt]] = Field(
        None, description="sizes to value at (default: pool size and 10x)")

    @field_validator("laws")
    @classmethod
    def _known_laws(cls, value: str) -> str:
        if value == "auto":  # no import: a bad run folder is reported before scikit-learn or Prefect loads
            return value
        from pointscale.laws.estimators import registered

        if value not in registered():
            raise ValueError(f"{value!r} is not an estimator; use auto or one of {', '.join(registered())}")
        return value

    @model_validator(mode="after")
    def _laws_need_their_inputs(self) -> "PipelineOptions":
        if self.laws == "auto" or self.amortized:
            return self
        from pointscale.laws.estimators import get_estimator

        if "amortized" in (self.laws, *get_estimator(self.laws).requires):
            raise ValueError(f"laws={self.laws} builds on the amortized estimator, which amortized=False turns off; "
                             "drop --no-amortized or choose other laws")
        return self

    def execution(self) -> ExecutionOptions:
        return ExecutionOptions(**self.model_dump(include=set(ExecutionOptions.model_fields)))


class ServeOptions(BaseModel):
    """The watcher and the schedule of ``pointscale serve`` (not pipeline settings)."""

    model_config = _FROZEN

    data_dir: str = Field(..., description="folder watched for new or changed datasets")
    watch_interval: Annotated[float, Field(gt=0)] = Field(60.0, description="seconds between scans")
    watch_run_seconds: Annotated[float, Field(gt=0)] = Field(
        3600.0, description="seconds one watch flow run lasts, scanning all the while (one run per period "
                            "in the run list, not one per scan)")
    cron: str = Field("0 3 * * *", description="schedule of the pipeline deployment (UTC)")
    runs_dir: str = Field("runs", description="run folders <runs-dir>/<dataset name> and the watcher's state")
    min_age_seconds: Annotated[float, Field(ge=0), Cli("--min-age")] = Field(
        1.0, description="seconds a file must be unchanged before the watcher reports it")
    limit: Optional[Annotated[int, Field(ge=1)]] = Field(
        None, description="flow runs served at once (default: Prefect's runner limit)")


# --------------------------------------------------------------------------- the command line


def _cli(field) -> Cli:
    for meta in field.metadata:
        if isinstance(meta, Cli):
            return meta
    return Cli()


def _bare(annotation: Any) -> Any:
    """``Optional[X]`` -> ``X``; ``Annotated[X, ...]`` -> ``X``."""
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin is Union and type(None) in get_args(annotation):
            rest = [a for a in get_args(annotation) if a is not type(None)]
            if len(rest) != 1:
                return annotation
            annotation = rest[0]
        else:
            return annotation


def flag_of(model: type[BaseModel], name: str) -> str:
    """The command-line flag of field ``name``."""
    field = model.model_fields[name]
    cli = _cli(field)
    if cli.flag:
        return cli.flag
    dashed = name.replace("_", "-")
    if _bare(field.annotation) is bool and field.default is True:
        return f"--no-{dashed}"
    return f"--{dashed}"


def _pair(text: str) -> tuple[str, Any]:
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r} must look like name=value")
    try:
        return key, json.loads(raw)
    except json.JSONDecodeError:
        return key, raw


def add_options(parser: argparse.ArgumentParser, model: type[BaseModel], *, title: str | None = None) -> None:
    """Add one flag per field of ``model`` to ``parser``.

    Values stay unset unless given (``argparse.SUPPRESS``), so the model's own
    defaults apply and :func:`options_from_args` sees exactly what the user
    typed. Types and ranges are checked by the model, not by argparse.
    """
    group = parser.add_argument_group(title or model.__name__)
    for name, field in model.model_fields.items():
        cli = _cli(field)
        flag = flag_of(model, name)
        bare = _bare(field.annotation)
        origin = get_origin(bare)
        text = field.description or ""
        kwargs: dict[str, Any] = {"dest": name, "default": argparse.SUPPRESS}
        if bare is bool:
            kwargs["action"] = "store_false" if field.default is True else "store_true"
            if field.default is True:
                text = f"don't {text}"
        elif origin is dict:
            kwargs.update(action="append", type=_pair, metavar=cli.metavar or "NAME=VALUE")
        elif origin is list:
            kwargs.update(nargs="+", metavar=cli.metavar or name.upper().rstrip("S"))
        elif origin is Literal:
            kwargs["choices"] = list(get_args(bare))
        else:
            if cli.metavar:
                kwargs["metavar"] = cli.metavar
            if field.is_required():
                kwargs["required"] = True
        if bare is not bool and not field.is_required() and field.default not in (None, {}, []) \
                and field.default_factory is None:
            text += f" (default: {field.default})"
        group.add_argument(flag, help=text.replace("%", "%%"), **kwargs)


def options_from_args(model: type[BaseModel], args: argparse.Namespace, **overrides: Any):
    """Build ``model`` from the flags the user gave (and ``overrides``).

    Raises
    ------
    OptionsError
        One line naming the flag, the value and what it must be.
    """
    given = {name: getattr(args, name) for name in model.model_fields if hasattr(args, name)}
    for name, value in given.items():
        if get_origin(_bare(model.model_fields[name].annotation)) is dict and isinstance(value, list):
            given[name] = dict(value)
    return parse_options(model, {**given, **overrides})


def parse_options(model: type[BaseModel], values: dict[str, Any]):
    """``model(**values)``, with a validation error turned into one line naming the flag."""
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        raise OptionsError(describe_error(model, exc)) from None


#: Fields whose bad values an error message never repeats.
_NOT_ECHOED = ("storage_options",)


def describe_error(model: type[BaseModel], exc: ValidationError) -> str:
    """One line for the first bad field: ``--flag VALUE: what it must be (option field)``."""
    errors = exc.errors()
    if errors and not errors[0]["loc"]:  # a rule across options: its message says which ones
        return str(errors[0]["msg"]).removeprefix("Value error, ")
    field = str(errors[0]["loc"][0]) if errors and errors[0]["loc"] else ""
    mine = [e for e in errors if e["loc"] and str(e["loc"][0]) == field]
    reasons = list(dict.fromkeys(e["msg"][0].lower() + e["msg"][1:] for e in mine))
    value = mine[0].get("input") if mine else None
    if field in model.model_fields:
        flag = flag_of(model, field)
        shown = value if isinstance(value, (str, int, float)) else json.dumps(value, default=str)
        if field in _NOT_ECHOED:  # it may hold a credential: never repeated in a message or a log
            shown = "..."
        return f"{flag} {shown}: {' or '.join(reasons)} (option {field})"
    return f"{field}: {' or '.join(reasons)}"

