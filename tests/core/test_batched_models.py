"""Batched models (issue 16): the batched MLP against scikit-learn's, devices, out-of-bag hooks."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from pointscale.data import load_dataset
from pointscale.errors import ConfigError
from pointscale.sampling import SamplingConfig, plan_blocks, run_blocks, sample_marginals, subset_for, utility
from pointscale.sampling.solvers.mlp import BatchedMLPClassifier, BatchedMLPRegressor, MLPBlockSolver, _SharedRows
from pointscale.sampling.devices import Device, DeviceError, DeviceWarning, resolve_device
from pointscale.sampling.models import default_params, make_estimator

F64 = {"dtype": "float64"}


@pytest.fixture(scope="module")
def three_classes():
    rng = np.random.default_rng(5)
    n = 360
    y = rng.integers(0, 3, n)
    X = rng.normal(size=(n, 5)) + 1.2 * np.eye(5)[y]
    return load_dataset("three", frame=pd.DataFrame(X, columns=list("abcde")).assign(y=y), target="y",
                        task="classification")


def _one_hot(n_classes):
    """Two numeric columns and two categorical ones (12 and 8 levels): one-hot columns, mostly zeros."""
    rng = np.random.default_rng(7 + n_classes)
    n = 400
    a, b = rng.integers(0, 12, n), rng.integers(0, 8, n)
    x = rng.normal(size=(n, 2))
    score = x[:, 0] + 0.3 * a - 0.4 * b + rng.normal(size=n)
    y = np.digitize(score, np.quantile(score, np.linspace(0, 1, n_classes + 1)[1:-1]))
    frame = pd.DataFrame({"x0": x[:, 0], "x1": x[:, 1], "a": [f"a{v}" for v in a], "b": [f"b{v}" for v in b],
                          "y": y})
    return load_dataset(f"one_hot{n_classes}", frame=frame, target="y", task="classification")


@pytest.fixture(scope="module")
def one_hot():
    return _one_hot(2)


@pytest.fixture(scope="module")
def one_hot3():
    return _one_hot(3)


def test_one_hot_rows_take_the_split_product(one_hot):
    """The fixtures below exercise the CPU's split product: numeric columns and bias by BLAS, one-hot in CSR."""
    rows = _SharedRows(np, one_hot.X_train[:120])
    assert rows.csr is not None and rows.n_dense == 3 and rows.csr.shape[1] == one_hot.X_train.shape[1] - 2


@pytest.fixture(scope="module")
def regression():
    rng = np.random.default_rng(6)
    X = rng.normal(size=(300, 4))
    y = np.tanh(X @ [1.0, -1.0, 0.5, 0.0]) + 0.1 * rng.normal(size=300)
    return load_dataset("reg", frame=pd.DataFrame(X, columns=list("abcd")).assign(y=y), target="y",
                        task="regression")


def test_registry_mlp_is_the_papers():
    """The reference model has the paper's settings: 32 hidden, alpha 0.01, lr 0.01, 200 full-batch steps."""
    for task in ("classification", "regression"):
        p = default_params("mlp", task)
        assert p["hidden_layer_sizes"] == (32,) and p["alpha"] == 0.01 and p["learning_rate_init"] == 0.01
        assert p["max_iter"] == 200 and p["solver"] == "adam" and p["shuffle"] is False
        assert p["batch_size"] >= 2**31 - 1 and not p["early_stopping"]
        q = default_params("mlp_batched", task)
        assert all(q[key] == p[key] for key in ("hidden_layer_sizes", "alpha", "learning_rate_init", "max_iter"))
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(60, 3)), rng.integers(0, 2, 60)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the protocol's by-design warnings are silenced, nothing else
        est = make_estimator("mlp", "classification", 1).fit(X, y)
    assert est.n_iter_ == 200  # no early stop: exactly the protocol's steps


@pytest.mark.parametrize("data", ["cancer", "three_classes", "regression", "one_hot", "one_hot3"])
def test_one_batched_mlp_equals_scikit_learns(data, request):
    """float64: the same initialisation and arithmetic as MLPClassifier/MLPRegressor, to rounding."""
    ds = request.getfixturevalue(data)
    rows = np.arange(120)
    X, y = ds.X_train[rows], ds.y_train[rows]
    ref = make_estimator("mlp", ds.task, 11).fit(X, y)
    ours = make_estimator("mlp_batched", ds.task, 11, F64).fit(X, y)
    if ds.task == "classification":
        np.testing.assert_allclose(ours.predict_proba(ds.X_val), ref.predict_proba(ds.X_val), rtol=0, atol=1e-9)
    else:
        np.testing.assert_allclose(ours.predict(ds.X_val), ref.predict(ds.X_val), rtol=0, atol=1e-9)
    # Another seed is another initialisation: the agreement above is not a coincidence of the data.
    other = make_estimator("mlp", ds.task, 12).fit(X, y)
    pred = (lambda e: e.predict_proba(ds.X_val)) if ds.task == "classification" else (lambda e: e.predict(ds.X_val))
    assert np.abs(pred(other) - pred(ref)).max() > 1e-4


@pytest.mark.parametrize("data", ["cancer", "three_classes", "regression", "one_hot", "one_hot3"])
def test_block_models_equal_separate_fits(data, request):
    """Model b of a block is the model trained on D ∪ {z_b} alone; model 0 the one on D."""
    ds = request.getfixturevalue(data)
    metric = "neg_log_loss" if ds.task == "classification" else "neg_mse"
    D, Z = np.arange(80), np.arange(150, 156)
    solver = MLPBlockSolver(default_params("mlp_batched", ds.task) | F64, ds.task, ds.n_classes, ds.X_val, ds.y_val,
                            metric)
    fit = solver(ds.X_train[D], ds.y_train[D], ds.X_train[Z], ds.y_train[Z], seed=4)

    def u(rows):
        est = make_estimator("mlp", ds.task, 4).fit(ds.X_train[rows], ds.y_train[rows])
        return utility(metric, est, ds.X_val, ds.y_val, ds.n_classes)

    assert fit.u_base == pytest.approx(u(D), abs=1e-9)
    for j, z in enumerate(Z):
        assert fit.u_with[j] == pytest.approx(u(np.append(D, z)), abs=1e-9)
    # The base model is exposed for out-of-bag scoring: its predictions give back U(D).
    pred = fit.predict_base(ds.X_val)
    if ds.task == "classification":
        from pointscale.sampling.metrics import METRICS

        assert METRICS[metric].from_proba(pred, ds.y_val) == pytest.approx(fit.u_base, abs=1e-12)
    else:
        assert -np.mean((pred - ds.y_val) ** 2) == pytest.approx(fit.u_base, abs=1e-12)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("data", ["cancer", "one_hot3"])
def test_a_models_delta_does_not_depend_on_the_models_beside_it(data, dtype, request):
    """How many models one call trains (a block's width) changes no model beyond float rounding.

    ``benchmarks/throughput.py`` times calls of 8 to 64 models on the same D as "wider batches" and
    reports their Δ agreement; this is that claim. Same D, seed and points, trained 12 at once and in
    calls of 1, 5 and 6 models (widths that leave partial tiles in the products).

    In float64 Δ is bit-identical. In float32 it is not on every machine: OpenBLAS's sgemm rounds a
    column differently by the product's width (on the AMD EPYC (Zen 3) machine that replaced the
    development machine, ``X @ A[:, :32]`` differs from the first 32 columns of ``X @ A`` by up
    to 4e-5 relative, no model involved), and the 40 training steps carry that into Δ: 1.6e-5
    relative measured here; bit-identical on the previous machine. A model that read another's
    rows or weights would move its Δ by the order of Δ itself, so float32 is held to 1e-4 of
    the block's largest |Δ|.
    """
    ds = request.getfixturevalue(data)
    solver = MLPBlockSolver(default_params("mlp_batched", ds.task) | {"dtype": dtype, "max_iter": 40}, ds.task,
                            ds.n_classes, ds.X_val, ds.y_val, "paper_ce")
    D, Z = np.arange(90), np.arange(150, 162)

    def deltas(width):
        out = []
        for s in range(0, len(Z), width):
            fit = solver(ds.X_train[D], ds.y_train[D], ds.X_train[Z[s:s + width]], ds.y_train[Z[s:s + width]], seed=3)
            out.append(fit.u_with - fit.u_base)
        return np.concatenate(out)

    wide = deltas(len(Z))
    assert np.all(np.isfinite(wide)) and np.ptp(wide) > 0
    for width in (1, 5, 6):
        if dtype == "float64":
            np.testing.assert_array_equal(deltas(width), wide)
        else:
            np.testing.assert_allclose(deltas(width), wide, rtol=0, atol=1e-4 * np.abs(wide).max())


@pytest.mark.parametrize("data", ["cancer", "three_classes"])
def test_shared_steps_branch_every_point_from_the_base(data, request):
    """``shared_steps=S``: model b is the MLP trained S steps on D, then the rest on D ∪ {z_b}.

    Checked against scikit-learn's own MLP stepped by ``partial_fit`` (one full-batch Adam step
    per call, its optimiser state kept): S calls on D, then max_iter − S on D ∪ {z}. The base
    model is the default's (to rounding: its shared steps are one model's products); U(D ∪ {z})
    is not (the option changes the answer).
    """
    ds = request.getfixturevalue(data)
    metric, S, T = "neg_log_loss", 30, 40
    D, Z = np.arange(80), np.arange(150, 153)
    params = default_params("mlp_batched", ds.task) | F64 | {"max_iter": T}
    shared = MLPBlockSolver(params | {"shared_steps": S}, ds.task, ds.n_classes, ds.X_val, ds.y_val, metric)
    cold = MLPBlockSolver(params, ds.task, ds.n_classes, ds.X_val, ds.y_val, metric)
    fit = shared(ds.X_train[D], ds.y_train[D], ds.X_train[Z], ds.y_train[Z], seed=4)
    ref = cold(ds.X_train[D], ds.y_train[D], ds.X_train[Z], ds.y_train[Z], seed=4)
    assert shared.method == "batched_adam_shared" and cold.method == "batched_adam"
    assert fit.u_base == pytest.approx(ref.u_base, abs=1e-12)
    assert np.abs(fit.u_with - ref.u_with).max() > 1e-6

    def stepped(z):
        est = make_estimator("mlp", ds.task, 4)
        classes = np.arange(ds.n_classes)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for _ in range(S):
                est.partial_fit(ds.X_train[D], ds.y_train[D], classes=classes)
            rows = np.append(D, z)
            for _ in range(T - S):
                est.partial_fit(ds.X_train[rows], ds.y_train[rows], classes=classes)
        return utility(metric, est, ds.X_val, ds.y_val, ds.n_classes)

    for j, z in enumerate(Z):
        assert fit.u_with[j] == pytest.approx(stepped(z), abs=1e-9)


def test_shared_steps_must_leave_steps_with_the_point(cancer):
    for bad in (-1, 200, 1.5, True):
        with pytest.raises(ConfigError, match="shared_steps"):
            MLPBlockSolver(default_params("mlp_batched", "classification") | {"shared_steps": bad}, "classification",
                           2, cancer.X_val, cancer.y_val, "paper_ce")


def test_float32_default_tracks_float64(cancer):
    """The default float32 path (the paper's torch precision) stays close to the float64 one."""
    D, Z = np.arange(150), np.arange(200, 232)
    fits = {}
    for dtype in ("float32", "float64"):
        solver = MLPBlockSolver({"dtype": dtype}, "classification", 2, cancer.X_val, cancer.y_val, "neg_log_loss")
        fits[dtype] = solver(cancer.X_train[D], cancer.y_train[D], cancer.X_train[Z], cancer.y_train[Z], seed=9)
    a, b = fits["float32"], fits["float64"]
    assert a.u_base == pytest.approx(b.u_base, rel=1e-2)  # rounding grows over 200 steps, stays small
    assert np.corrcoef(a.u_with - a.u_base, b.u_with - b.u_base)[0, 1] > 0.95


def test_engine_mlp_batched_fast_and_generic_paths_agree(cancer):
    cfg = SamplingConfig(model="mlp_batched", model_params=F64, k_min=40, k_max=90, samples_per_point=1,
                         block_size=6).resolved(cancer)
    blocks = plan_blocks(cancer, cfg)[:2]
    fast = run_blocks(cancer, cfg, blocks)
    assert (fast["method"] == "batched_adam").all() and not fast["failed"].any()
    slow = run_blocks(cancer, cfg.replace(fast_path=False), blocks)
    assert (slow["method"] == "cold").all()
    np.testing.assert_allclose(fast["delta"], slow["delta"], rtol=0, atol=1e-9)
    row = fast.iloc[0]
    assert cancer.index_of([row.point_id])[0] not in subset_for(row, cancer, cfg)


def test_mlp_batched_samples_bit_identical_across_shard_sizes(cancer):
    cfg = SamplingConfig(model="mlp_batched", k_min=30, k_max=60, samples_per_point=1, block_size=4)
    points = list(cancer.point_ids[:16])
    frames = [sample_marginals(cancer, cfg.replace(shard_size=s), points) for s in (1, 3, 64)]
    for other in frames[1:]:
        pd.testing.assert_frame_equal(frames[0], other, check_exact=True)


def test_torch_backend_matches_numpy(cancer):
    torch = pytest.importorskip("torch")
    D, Z = np.arange(90), np.arange(100, 104)
    fits = []
    for device in (Device(), Device("torch", "cpu")):
        solver = MLPBlockSolver(F64, "classification", 2, cancer.X_val, cancer.y_val, "neg_log_loss", device)
        fits.append(solver(cancer.X_train[D], cancer.y_train[D], cancer.X_train[Z], cancer.y_train[Z], seed=2))
    assert torch.is_tensor(Device("torch", "cpu").asarray(np.zeros(2)))
    assert fits[1].u_base == pytest.approx(fits[0].u_base, abs=1e-10)
    np.testing.assert_allclose(fits[1].u_with, fits[0].u_with, rtol=0, atol=1e-10)


def test_bad_mlp_batched_settings_fail_with_the_fix(cancer):
    cfg = SamplingConfig(model="mlp_batched", model_params={"hidden_layer_sizes": (16, 16)}, k_min=20, k_max=40)
    with pytest.raises(ConfigError, match="one positive layer width"):
        cfg.resolved(cancer)
    with pytest.raises(ConfigError, match="dtype"):
        SamplingConfig(model="mlp_batched", model_params={"dtype": "float16"}, k_min=20, k_max=40).resolved(cancer)


def _has_gpu() -> bool:
    from pointscale.sampling.devices import _gpu

    return _gpu() is not None


def test_device_choice():
    with pytest.raises(ConfigError, match="device='tpu' must be one of"):
        SamplingConfig(device="tpu")
    assert resolve_device("cpu").backend == "numpy"
    # The device is an execution setting: it does not change a sample's identity.
    assert SamplingConfig(device="auto").identity_hash() == SamplingConfig().identity_hash()
    if _has_gpu():
        assert resolve_device("cuda").is_gpu
        return
    with pytest.raises(DeviceError, match="needs a CUDA GPU"):
        resolve_device("cuda")
    with pytest.warns(DeviceWarning, match="computing on the CPU"):
        assert resolve_device("auto").backend == "numpy"


def test_cuda_without_gpu_fails_before_any_fit(cancer):
    if _has_gpu():
        pytest.skip("a GPU is present")
    cfg = SamplingConfig(model="mlp_batched", k_min=30, k_max=60, samples_per_point=1, block_size=4, device="cuda")
    with pytest.raises(DeviceError):
        run_blocks(cancer, cfg, plan_blocks(cancer, cfg)[:1])


def test_batched_estimator_follows_the_sklearn_contract():
    est = BatchedMLPClassifier(max_iter=5)
    assert est.get_params()["max_iter"] == 5 and not hasattr(est, "params_")
    with pytest.raises(ValueError, match="Invalid parameter"):
        est.set_params(bogus=1)
    rng = np.random.default_rng(1)
    X, y = rng.normal(size=(40, 3)), np.array(["a", "b"] * 20)
    assert set(est.fit(X, y).predict(X)) <= {"a", "b"}
    assert BatchedMLPRegressor(max_iter=3).fit(X, rng.normal(size=40)).predict(X).shape == (40,)


def test_core_imports_without_gpu_libraries():
    """torch and CuPy are optional: importing every core module and running the CPU path loads neither."""
    import subprocess
    import sys

    code = (
        "import importlib, pkgutil, sys, pointscale\n"
        "for m in pkgutil.walk_packages(pointscale.__path__, 'pointscale.'):\n"
        "    importlib.import_module(m.name)\n"
        "from pointscale.sampling.devices import resolve_device\n"
        "resolve_device('cpu')\n"
        "print(','.join(sorted({n.split('.')[0] for n in sys.modules} & {'torch', 'cupy', 'jax'})))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


# --------------------------------------------------------------------------- SVM on precomputed kernels


@pytest.mark.parametrize("data", ["cancer", "three_classes"])
def test_precomputed_kernel_svm_equals_the_registry_svm(data, request):
    """U(D) and U(D ∪ {z}) of the block solver are the registry SVM's, bit for bit.

    Same folds, seeds, kernel values and sigmoid; the block calls libsvm directly with its
    own table slices, the registry goes through CalibratedClassifierCV and SVC.
    """
    from pointscale.sampling.solvers.svm import SVMBlockSolver

    ds = request.getfixturevalue(data)
    D, Z = np.arange(90), np.arange(150, 156)
    solver = SVMBlockSolver(default_params("svm", "classification"), ds.n_classes, ds.X_val, ds.y_val,
                            "neg_log_loss")
    fit = solver(ds.X_train[D], ds.y_train[D], ds.X_train[Z], ds.y_train[Z], seed=8)

    def u(rows):
        est = make_estimator("svm", "classification", 8).fit(ds.X_train[rows], ds.y_train[rows])
        return utility("neg_log_loss", est, ds.X_val, ds.y_val, ds.n_classes)

    ours = np.array([fit.u_base, *fit.u_with])
    registry = np.array([u(D)] + [u(np.append(D, z)) for z in Z])
    np.testing.assert_array_equal(ours, registry)
    assert np.ptp(ours[1:] - ours[0]) > 0  # the points change U, differently: equality is not trivial
    # Out-of-bag hook: the base model's probabilities on other rows, from distances computed there.
    proba = fit.predict_base(ds.X_val)
    base = make_estimator("svm", "classification", 8).fit(ds.X_train[D], ds.y_train[D])
    np.testing.assert_array_equal(proba, base.predict_proba(ds.X_val))


def test_svm_distances_depend_on_the_two_rows_only():
    """Each squared distance is a function of its two rows: the same in any table, and accurate."""
    import math

    from pointscale.sampling.solvers.svm import gram, squared_distances

    rng = np.random.default_rng(3)
    # Continuous columns of very different scales, a one-hot block and an all-zero row.
    X = np.hstack([rng.normal(size=(300, 20)) * np.exp(3 * rng.normal(size=20)),
                   np.eye(7)[rng.integers(0, 7, 300)]])
    X[5] = 0.0
    S = squared_distances(X)
    rows, cols = rng.permutation(300)[:120], rng.permutation(300)[:45]
    np.testing.assert_array_equal(squared_distances(X[rows], X[cols]), S[np.ix_(rows, cols)])
    np.testing.assert_array_equal(squared_distances(X[rows]), S[np.ix_(rows, rows)])
    np.testing.assert_array_equal(gram(X[rows]), gram(X[rows], X[rows]))  # symmetric shortcut, same values
    assert np.all(np.diag(S) == 0) and np.array_equal(S, S.T)
    # Accurate to a few roundings of the norms (what any x·x + x'·x' − 2x·x' can reach), against
    # exactly rounded sums; |x|·|x'| bounds every dot product's size.
    norms = np.sqrt(np.sum(X[:40] ** 2, 1))
    scale = np.maximum(np.outer(norms, norms), 1e-300)
    exact = np.array([[math.fsum(X[i] * X[j]) for j in range(40)] for i in range(40)])
    assert np.max(np.abs(gram(X[:40]) - exact) / scale) < 1e-15
    d2 = np.array([[math.fsum((X[i] - X[j]) ** 2) for j in range(40)] for i in range(40)])
    assert np.max(np.abs(S[:40, :40] - d2) / np.maximum(np.add.outer(norms**2, norms**2), 1e-300)) < 2e-15


def test_registry_svm_is_libsvms_rbf_svm(cancer):
    """The registry's kernel computed outside libsvm gives libsvm's own RBF model, to its tolerance."""
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.svm import SVC

    from pointscale.sampling.solvers.svm import platt_folds

    D = np.arange(200)
    X, y = cancer.X_train[D], cancer.y_train[D]
    ours = make_estimator("svm", "classification", 4).fit(X, y)
    libsvm = CalibratedClassifierCV(SVC(kernel="rbf", gamma="scale", random_state=4), method="sigmoid",
                                    cv=platt_folds(y, 5, 4), ensemble=False).fit(X, y)
    svc, ref = ours.calibrated_.calibrated_classifiers_[0].estimator, libsvm.calibrated_classifiers_[0].estimator
    # Within SMO's tolerance (tol=1e-3 on the dual), not bit for bit: libsvm's own kernel rounds differently.
    np.testing.assert_allclose(svc.decision_function(np.arange(200)[:, None]), ref.decision_function(X), atol=1e-3)
    np.testing.assert_allclose(ours.predict_proba(cancer.X_val), libsvm.predict_proba(cancer.X_val), atol=1e-3)
    assert np.mean(ours.predict(cancer.X_val) == libsvm.predict(cancer.X_val)) >= 0.99
    # Another C is another model, well outside that tolerance: the comparison can tell models apart.
    other = make_estimator("svm", "classification", 4, {"C": 0.3}).fit(X, y)
    assert np.abs(other.predict_proba(cancer.X_val) - libsvm.predict_proba(cancer.X_val)).max() > 1e-2


def test_engine_svm_fast_and_generic_paths_agree(cancer):
    cfg = SamplingConfig(model="svm", k_min=40, k_max=90, samples_per_point=1, block_size=6).resolved(cancer)
    blocks = plan_blocks(cancer, cfg)[:2]
    fast = run_blocks(cancer, cfg, blocks)
    assert (fast["method"] == "precomputed_kernel").all() and not fast["failed"].any()
    slow = run_blocks(cancer, cfg.replace(fast_path=False), blocks)
    np.testing.assert_array_equal(fast["delta"], slow["delta"])
    # Another kernel is another model: the solver declines it.
    other = cfg.replace(model_params={"kernel": "poly"})
    assert (run_blocks(cancer, other, plan_blocks(cancer, other)[:1])["method"] == "cold").all()


# --------------------------------------------------------------------------- logistic regression on a device


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_device_logistic_solver_equals_the_cpu_solver(cancer, backend):
    from pointscale.sampling.solvers.device_logistic import DeviceLogisticSolver
    from pointscale.sampling.solvers.logistic import LogisticBinarySolver

    if backend == "torch":
        pytest.importorskip("torch")
    D, Z = np.arange(120), np.arange(150, 170)
    args = (cancer.X_train[D], cancer.y_train[D], cancer.X_train[Z], cancer.y_train[Z])
    cpu = LogisticBinarySolver(1.0, True, cancer.X_val, cancer.y_val, "neg_log_loss")(*args)
    dev = DeviceLogisticSolver(1.0, True, cancer.X_val, cancer.y_val, "neg_log_loss",
                               Device(backend, "cpu"))(*args)
    assert dev.converged.all()
    assert dev.u_base == pytest.approx(cpu.u_base, abs=1e-12)
    np.testing.assert_allclose(dev.u_with - dev.u_base, cpu.u_with - cpu.u_base, rtol=1e-8, atol=1e-13)
    np.testing.assert_allclose(dev.predict_base(cancer.X_val), cpu.predict_base(cancer.X_val), atol=1e-12)


def test_gpu_benchmark_needs_no_orchestration_or_xgboost():
    """benchmarks.gpu runs on the GPU machine, which has no Prefect, Dask or XGBoost."""
    import subprocess
    import sys

    from tests.conftest import REPO

    code = ("import sys, benchmarks.gpu\n"
            "print(','.join(sorted({n.split('.')[0] for n in sys.modules}"
            " & {'prefect', 'prefect_dask', 'dask', 'distributed', 'xgboost'})))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == ""
