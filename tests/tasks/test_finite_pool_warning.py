"""One FinitePoolWarning per run (issue 17): the config is resolved at the run's
entry and passed down; the layers below validate silently."""

from __future__ import annotations

import warnings


def test_a_wide_range_warns_once_per_run_not_once_per_layer(tmp_path):
    """The layers of a run in one process: the CLI's pre-flight check, the flow's
    entry (resolve_sampling), planning, and a worker running two shards. Only the
    entry warns; before, each layer resolved the config again and warned again."""
    from flows.cli import _validate
    from flows.options import PipelineOptions
    from pointscale import pipeline
    from pointscale.data import open_dataset
    from pointscale.errors import FinitePoolWarning
    from pointscale.sampling import engine
    from pointscale.sampling.engine import sample_marginals

    options = PipelineOptions(dataset="breast_cancer", k_min=20, k_max=150, samples_per_point=2, points="16",
                              shard_size=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # every call would show, not only the first per line
        _validate(options, 1)  # the CLI, before it starts the flow: silent
        info = pipeline.ingest(options.data_config(), tmp_path / "run")
        ds = open_dataset(info["path"])
        chosen = pipeline.choose_points(ds, options.points, options.seed)
        cfg = pipeline.resolve_sampling(ds, n_points=len(chosen), workers=1, **options.sampling_kwargs())
        pipeline.save_point_groups(info["run_dir"], [chosen])
        plan = pipeline.plan_sampling(info["path"], cfg.to_dict(), [chosen], tmp_path / "run" / "samples")
        engine._RESOLVED.clear()  # a fresh worker process
        for i in range(min(2, plan["n_shards"])):
            pipeline.run_shard(info["path"], cfg.to_dict(), plan["plan"], i, tmp_path / "run" / "samples")
    finite = [w for w in caught if issubclass(w.category, FinitePoolWarning)]
    assert plan["n_shards"] >= 2 and len(finite) == 1, [str(w.message) for w in finite]
    assert "k_max=150" in str(finite[0].message)

    # The core API's own entry (sample_marginals plans, then runs): also once.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        engine._RESOLVED.clear()
        sample_marginals(ds, cfg, chosen[:4])
    assert sum(issubclass(w.category, FinitePoolWarning) for w in caught) == 1
