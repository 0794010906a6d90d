"""One options model for every entry point: the CLI, the flows, the deployments.

Pure checks (no server): the command line is generated from the models, ``serve``
takes every option ``run`` takes, the flows declare the models as parameters (so
Prefect validates them and renders a form), and ``deployments/prefect.yaml`` is
exactly what the models generate.
"""

from __future__ import annotations

import argparse

import pytest

from flows.cli import build_parser, main
from flows.deployments import PREFECT_YAML, prefect_yaml_document, render_prefect_yaml
from flows.options import (ExecutionOptions, OptionsError, PipelineOptions, ServeOptions, flag_of,
                           options_from_args, parse_options)


def _subparser(name: str) -> argparse.ArgumentParser:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices[name]


def _flags(name: str) -> set[str]:
    return {s for a in _subparser(name)._actions for s in a.option_strings}


def test_every_option_has_a_flag_on_run_and_serve():
    run, serve = _flags("run"), _flags("serve")
    wanted = {flag_of(PipelineOptions, n) for n in PipelineOptions.model_fields}
    assert wanted <= run and wanted <= serve
    # serve accepts every option run accepts, except where the run folder goes
    # (serve puts runs in --runs-dir/<dataset name>).
    assert run - serve == {"--out", "--wait"}


# A non-default value for every field, as a user types it.
NON_DEFAULT = {
    "dataset": ["--dataset", "digits"], "target": ["--target", "y"], "id_column": ["--id-column", "rid"],
    "task": ["--task", "regression"], "seed": ["--seed", "7"], "model": ["--model", "xgboost"],
    "model_params": ["--model-param", "max_depth=3", "--model-param", "booster=gbtree"],
    "metric": ["--metric", "accuracy"], "points": ["--points", "40"],
    "samples_per_point": ["--samples-per-point", "9"], "k_min": ["--k-min", "20"], "k_max": ["--k-max", "90"],
    "block_size": ["--block-size", "4"], "shard_size": ["--shard-size", "2"], "workers": ["--workers", "3"],
    "dask_address": ["--dask-address", "tcp://127.0.0.1:1"], "amortized": ["--no-amortized"],
    "laws": ["--laws", "shrinkage"], "removal": ["--no-removal"], "select_m": ["--select", "5"], "target_sizes": ["--target-sizes", "10", "20"],
    "device": ["--device", "auto"],
    "valid": ["--valid", "valid.csv"], "test": ["--test", "test.csv"], "split_column": ["--split-column", "part"],
    "coerce_numeric": ["--coerce-numeric"], "encoding": ["--encoding", "latin-1"],
    "keep_columns": ["--keep-columns", "note", "visit"],
    "partition_points": ["--partition-points", "1000"],
    "storage_options": ["--storage-option", "endpoint_url=http://127.0.0.1:9000", "--storage-option",
                        "config_kwargs={\"connect_timeout\": 5}"],
}


def test_the_parser_reaches_every_field_with_its_type():
    assert set(NON_DEFAULT) == set(PipelineOptions.model_fields), "add a case for the new field"
    argv = [x for flags in NON_DEFAULT.values() for x in flags]
    for command, extra in (("run", []), ("serve", ["--data-dir", "d"])):
        args = build_parser().parse_args([command, *argv, *extra])
        options = options_from_args(PipelineOptions, args)
        default = PipelineOptions()
        changed = {n for n in PipelineOptions.model_fields if getattr(options, n) != getattr(default, n)}
        assert changed == set(PipelineOptions.model_fields), command
    assert options.model_params == {"max_depth": 3, "booster": "gbtree"}
    assert options.points == 40 and options.target_sizes == [10, 20] and options.amortized is False


def test_unset_flags_keep_the_model_defaults():
    args = build_parser().parse_args(["run"])
    assert options_from_args(PipelineOptions, args) == PipelineOptions()


@pytest.mark.parametrize("argv, message", [
    (["--points", "abc"], "--points abc: no such file; pass N, all, or a file with one point id per line"),
    (["--points", "0"], "--points 0: input should be greater than 0"),
    (["--seed", "-1"], "--seed -1"),
    (["--workers", "0"], "--workers 0"),
    (["--target-sizes", "10", "x"], "--target-sizes"),
])
def test_a_bad_value_is_one_line_naming_the_flag(argv, message, capsys, tmp_path):
    assert main(["run", *argv, "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"pointscale: error: {message}") and err.count("\n") == 1, err
    assert not (tmp_path / "r").exists()


def test_unknown_fields_are_refused():
    with pytest.raises(OptionsError, match="modle"):
        parse_options(PipelineOptions, {"modle": "knn"})


def test_flows_take_the_models_as_parameters():
    """Prefect validates these and renders them as a form (the parameter schema)."""
    from flows.pipeline import pipeline_flow, revalue_flow
    from flows.watch import on_new_data_flow

    for flow, name, model in ((pipeline_flow, "options", PipelineOptions),
                              (on_new_data_flow, "options", PipelineOptions),
                              (revalue_flow, "execution", ExecutionOptions)):
        schema = flow.parameters.model_dump()
        ref = schema["properties"][name]["allOf"][0]["$ref"] if "allOf" in schema["properties"][name] \
            else schema["properties"][name]["$ref"]
        definition = schema["definitions"][ref.rsplit("/", 1)[1]]
        assert set(definition["properties"]) == set(model.model_fields), flow.name


def test_prefect_yaml_is_generated_from_the_models():
    assert PREFECT_YAML.read_text() == render_prefect_yaml(), \
        "deployments/prefect.yaml is stale: run `python -m flows.deployments --write`"
    doc = prefect_yaml_document()
    params = {d["name"]: d["parameters"] for d in doc["deployments"]}
    for name in ("scheduled", "on-new-data"):
        assert PipelineOptions.model_validate(params[name]["options"])  # valid, every field present
        assert set(params[name]["options"]) == set(PipelineOptions.model_fields)
    watch = ServeOptions(data_dir="data/incoming")
    assert params["watch"]["min_age_seconds"] == watch.min_age_seconds


def test_a_credential_in_storage_options_is_refused_without_being_repeated(tmp_path):
    from tests.conftest import run_cli

    proc = run_cli("run", "--storage-option", "secret=SEKRIT-123", "--out", str(tmp_path / "run"), timeout=120,
                   cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    line = proc.stderr.strip()
    assert line.count("\n") == 0 and "--storage-option" in line and "secret" in line, line
    assert "SEKRIT-123" not in proc.stderr + proc.stdout
    assert not (tmp_path / "run").exists()
