r"""Many small MLPs trained at once: the paper's MLP for every D ∪ {z} of a block.

The model (the registry's ``mlp``, i.e. scikit-learn's ``MLPClassifier`` /
``MLPRegressor`` with the paper's settings): one hidden layer of h = 32 ReLU
units, output logistic (two classes), softmax (more) or identity
(regression), loss

.. math::  L(θ) = \frac{1}{n}\Big(\sum_i \ell(f_θ(x_i), y_i)
                  + \tfrac{α}{2} (\lVert W_1\rVert^2 + \lVert W_2\rVert^2)\Big),

(log-loss, or half the squared error), minimised by ``max_iter`` = 200
full-batch Adam steps (β₁ 0.9, β₂ 0.999, ε 1e-8, learning rate 0.01, α 0.01)
from scikit-learn's Glorot-uniform initialisation drawn from
``RandomState(seed)``. Every step is deterministic (full batch, no shuffle),
so a model is a function of (D, seed) alone, and a block's base and its
D ∪ {z} models share the seed -- hence their initial weights (common random
numbers: Δ measures the point, not a different initialisation).

Batching a block
----------------
The M = B + 1 models of a block (model 0 on D, model b on D ∪ {z_b}) all
train on the k rows of D plus at most one row of their own. Their first-layer
weights are stored side by side as one d × (M·h) matrix, so the forward pass
over D is *one* matrix product ``X_D W`` (k × d times d × M·h) and the
first-layer gradient another, ``X_Dᵀ Δ₁``; per-model work is O(k·h·K). Each
model's own row enters with weight 0 (model 0) or 1, and its loss is divided
by its own row count. The arithmetic is scikit-learn's step for step (the
same gradient, penalty scaling and bias-corrected Adam), so the models equal
scikit-learn's up to floating-point summation order; the registry's ``mlp``
stays the reference (see ``tests/core/test_batched_models.py``).

Precision: ``dtype="float32"`` (the registry default) computes as the
paper's torch model did and about twice as fast as float64 on a CPU; its
rounding grows over 200 steps to ~1e-3 of U on some subsets, so Δ of float32
and float64 runs correlate at 0.98-0.999 (measured on Adult, k = 100-1000).
``dtype="float64"`` equals scikit-learn's models to ~1e-15. On the CPU, rows
that are mostly zeros (one-hot columns) are multiplied in CSR form
(:data:`SPARSE_DENSITY`), their dense columns and the bias by BLAS
(:data:`DENSE_COLUMN`). With one output (two classes, regression) the
hidden delta of a row is :math:`(δ_2 ∘ \mathrm{relu}'(z)) · W_2` unit by
unit, so :math:`W_2` scales the first layer's (d + 1) × M·h gradient
rather than the k × M·h deltas.

Shared steps (an option that changes the answer)
-------------------------------------------------
``shared_steps=S`` (default 0, off) trains the first S of the ``max_iter``
steps once, on D alone, and branches every D ∪ {z} from those weights and
Adam moments for the remaining steps, with z. A block then costs
S + (max_iter − S)(B + 1) model-steps instead of max_iter·(B + 1). The base
model is the same model (model 0 trains on D throughout; its shared steps are
products of one model's width, which BLAS may sum in another order, so U(D)
can move by rounding: 7e-9 measured once in float32 on adult at k = 672),
but U(D ∪ {z}) is a different model: z enters after
S steps instead of shaping the training from the first one, and the
network's loss is not convex, so the two do not meet. Δ then measures z's
effect on the last steps only. Its agreement with the default's Δ (and the
speed) is measured by ``benchmarks/throughput.py``; it is never a default.
The ledger records it as method ``batched_adam_shared``.

The code is written once against the array API standard
(``array_api_compat``; scikit-learn vendors a copy, used when the package
itself is absent), so the same functions run on numpy arrays on the CPU and
on torch or CuPy arrays on a GPU (:mod:`.devices`).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from ...errors import ConfigError
from ..devices import CPU
from ..estimators import ExplicitParams
from ..metrics import METRICS
from .base import BlockFit, array_namespace, device_of, is_numpy, sigmoid

ADAM_BETA_1 = 0.9
ADAM_BETA_2 = 0.999
ADAM_EPSILON = 1e-8
OUTPUTS = ("logistic", "softmax", "identity")
DTYPES = ("float64", "float32")
#: Below this share of non-zeros the CPU path multiplies by the rows in CSR form. Crossover
#: measured on random sparse matrices of a block's shapes (k = 550, d = 109, 33 models of 32):
#: CSR 1.3-1.5x faster at density 0.13, 1.3x slower at 0.25.
SPARSE_DENSITY = 0.2
#: A column with at least this share of non-zeros is multiplied by BLAS even when the rest is
#: sparse: per non-zero a row, CSR costs ~0.068 ms a step and BLAS ~0.026 ms per column
#: (measured on adult at k = 700, 33 models of 32, float32), so CSR wins below a share of ~0.4.
DENSE_COLUMN = 0.4

try:  # scipy's own kernels, accumulating into a given array
    from scipy.sparse._sparsetools import csc_matvecs as _csc_matvecs, csr_matvecs as _csr_matvecs
    _KERNELS = True
except ImportError:  # pragma: no cover -- a scipy without them: dense products only
    _KERNELS = False


def glorot_init(seed: int, layer_units: Sequence[int]) -> list[np.ndarray]:
    """scikit-learn's MLP initialisation: ``[W1, b1, W2, b2, ...]`` (float64, numpy).

    Each layer's weights and then its biases are drawn uniform in
    ``±sqrt(6 / (fan_in + fan_out))`` from one ``RandomState(seed)``, in
    scikit-learn's order, so a model with the same seed starts where
    ``MLPClassifier(random_state=seed)`` starts.
    """
    state = np.random.RandomState(int(seed))
    params = []
    for fan_in, fan_out in zip(layer_units[:-1], layer_units[1:]):
        bound = math.sqrt(6.0 / (fan_in + fan_out))
        params.append(state.uniform(-bound, bound, (fan_in, fan_out)))
        params.append(state.uniform(-bound, bound, fan_out))
    return params


def _output(xp, z, out: str):
    if out == "logistic":
        return sigmoid(xp, z)
    if out == "softmax":
        e = xp.exp(z - xp.max(z, axis=-1, keepdims=True))
        return e / xp.sum(e, axis=-1, keepdims=True)
    return z


def _with_ones(xp, X):
    """``[X, 1]``: the first layer's bias rides in its matrix product."""
    return xp.concat([X, xp.ones((X.shape[0], 1), dtype=X.dtype, device=device_of(X))], axis=1)


class _SharedRows:
    """The k rows ``[X, 1]`` every model of a block shares, and a step's two products by them.

    ``hidden(A1)`` is ``[X, 1] A1`` (k × M·h, the pre-activations of every model) and
    ``backward(E)`` is ``[X, 1]ᵀ E`` (the first layer's gradient). On the CPU the columns are
    put in one order for the whole training (``order``, rows of ``[W1; b1]``): the dense ones
    and the all-ones column (the bias) first, multiplied by BLAS, then the mostly-zero ones
    (one-hot) in CSR form, which skips their zeros. The trainer keeps its first-layer rows in
    this order, so every slice a step multiplies is contiguous. Measured on adult at k = 700,
    33 models, float32 (6 numeric columns, 102 one-hot, 8 non-zeros a row): all 109 columns in
    CSR 1.05 ms (forward) and 1.12 ms (backward) a step; numeric columns and bias by BLAS plus
    one-hot in CSR 0.85 ms and 0.84 ms. On other devices (or numpy without scipy's kernels) it
    is one dense product each way.
    """

    def __init__(self, xp, X) -> None:
        self.xp = xp
        k, d = X.shape
        self.csr = None
        X1 = _with_ones(xp, X)
        if not is_numpy(xp):
            self.order, self.n_dense = None, d + 1
            self.dense, self.dense_t = X1, xp.asarray(X1.T, copy=True)
            return
        dense = np.count_nonzero(X, axis=0) >= DENSE_COLUMN * k
        sparse = np.flatnonzero(~dense)
        if sparse.size and np.count_nonzero(X[:, sparse]) <= SPARSE_DENSITY * k * sparse.size and _KERNELS:
            from scipy.sparse import csr_array

            self.csr = csr_array(np.ascontiguousarray(X[:, sparse]))
        else:
            sparse = sparse[:0]
            dense[:] = True
        self.order = np.concatenate([np.flatnonzero(dense), [d], sparse])
        self.n_dense = d + 1 - sparse.size
        self.dense = np.ascontiguousarray(X1[:, self.order[:self.n_dense]])
        self.dense_t = np.ascontiguousarray(self.dense.T)

    def hidden(self, A1, out=None):
        """Pre-activations ``[X, 1] A1`` of every model: (k, M, h), into ``out`` (numpy) when given."""
        xp = self.xp
        d1, M, h = A1.shape
        A = xp.reshape(A1, (d1, M * h))
        k = self.dense.shape[0]
        if out is None:
            return xp.reshape(self.dense @ A, (k, M, h))
        Z = out.reshape(k, M * h)
        np.matmul(self.dense, A[:self.n_dense], out=Z)
        if self.csr is not None:  # accumulates into Z
            S = self.csr
            _csr_matvecs(k, S.shape[1], M * h, S.indptr, S.indices, S.data, A[self.n_dense:].ravel(), Z.ravel())
        return out

    def backward(self, E, out=None):
        """``[X, 1]ᵀ E`` for E (k, M·h): (d + 1, M·h), into ``out`` (numpy) when given.

        The CSR rows read as the CSC form of their transpose: one pass over E's rows, each
        added into the (small, cache-resident) result.
        """
        if out is None:
            return self.dense_t @ E
        np.matmul(self.dense_t, E, out=out[:self.n_dense])
        if self.csr is not None:
            S, G = self.csr, out[self.n_dense:]
            G[...] = 0
            _csc_matvecs(S.shape[1], S.shape[0], E.shape[1], S.indptr, S.indices, S.data, E.ravel(), G.ravel())
        return out


def _second_layer(xp, H, W2, b2):
    """``H_m W2_m + b2_m`` for (n, M, h) activations and W2 (M, h, o): (n, M, o).

    One batched product over the models reading H in place (through strides): 0.08 ms at
    k = 700, 33 models, float32, against 0.17 ms for a ``vecdot`` of the one-output case.
    """
    return xp.permute_dims(xp.permute_dims(H, (1, 0, 2)) @ W2, (1, 0, 2)) + b2


def _backprop_hidden(xp, D2, W2, out=None):
    """``D2_m W2_mᵀ``: (n, M, o) output deltas to (n, M, h) (into ``out``, numpy, when given)."""
    o = W2.shape[2]
    if out is not None:
        D1 = np.multiply(D2[:, :, 0:1], W2[None, :, :, 0], out=out)
    else:
        D1 = D2[:, :, 0:1] * W2[None, :, :, 0]
    for c in range(1, o):
        D1 += D2[:, :, c:c + 1] * W2[None, :, :, c]
    return D1


def forward(X, params, out: str):
    """Outputs of M models on shared rows ``X`` (n, d): ``(M, n, n_out)``.

    ``params`` = (A1 (d + 1, M, h) = [W1; b1], W2 (M, h, o), b2 (M, o)).
    """
    xp = array_namespace(X)
    A1, W2, b2 = params
    d1, M, h = A1.shape
    Z = xp.reshape(_with_ones(xp, X) @ xp.reshape(A1, (d1, M * h)), (X.shape[0], M, h))
    H = Z * (Z > 0)
    return xp.permute_dims(_output(xp, _second_layer(xp, H, W2, b2), out), (1, 0, 2))


class _Block:
    """What every step of :func:`train` reads: the shared and own rows, targets, penalty, buffers."""

    def __init__(self, X, Y, X_own, Y_own, own_weight, A1_0, *, alpha: float, out: str) -> None:
        xp = self.xp = array_namespace(X)
        k, d = X.shape
        self.alpha, self.out = alpha, out
        dev = device_of(X)
        self.rows = _SharedRows(xp, X)
        Xo1 = _with_ones(xp, X_own)
        pen1 = xp.concat([xp.full((d, 1, 1), alpha, dtype=X.dtype, device=dev),
                          xp.zeros((1, 1, 1), dtype=X.dtype, device=dev)], axis=0)   # biases unpenalised
        if self.rows.order is not None:  # first-layer rows in the order of the shared rows' columns
            A1_0, Xo1, pen1 = A1_0[self.rows.order], Xo1[:, self.rows.order], pen1[self.rows.order]
        self.A1_0, self.Xo1, self.pen1 = A1_0, Xo1, pen1
        self.Xo1T = Xo1.T[:, :, None]
        self.n = k + own_weight                                  # rows per model, (M,)
        self.Yb = Y[:, None, :]
        self.Y_own = Y_own
        self.w_own = own_weight[:, None]
        self.one_output = Y.shape[1] == 1
        # numpy: the (k, M, h) arrays that dominate a step live in buffers allocated once
        self.buffers = is_numpy(xp)
        M, h = X_own.shape[0], A1_0.shape[1]
        if self.buffers:
            self.Z_buf = np.empty((k, M, h), dtype=X.dtype)
            self.F_buf = np.empty((k, M, h), dtype=X.dtype)
            self.G_buf = np.empty((d + 1, M * h), dtype=X.dtype)
        else:
            self.Z_buf = self.F_buf = self.G_buf = None


def _initial_params(xp, A1_0, W2_0, b2_0, M: int) -> list:
    """Every model starts from the same weights (one seed per block): [A1, W2, b2] per model."""
    d1, h = A1_0.shape
    o = W2_0.shape[1]
    return [xp.asarray(xp.broadcast_to(A1_0[:, None, :], (d1, M, h)), copy=True),
            xp.asarray(xp.broadcast_to(W2_0[None, :, :], (M, h, o)), copy=True),
            xp.asarray(xp.broadcast_to(b2_0[None, :], (M, o)), copy=True)]


def _broadcast_models(xp, arrays, M: int) -> list:
    """[A1 (d+1, 1, h), W2 (1, h, o), b2 (1, o)]-shaped arrays of one model, copied to M models."""
    A1, W2, b2 = arrays
    return [xp.asarray(xp.broadcast_to(A1, (A1.shape[0], M, A1.shape[2])), copy=True),
            xp.asarray(xp.broadcast_to(W2, (M, *W2.shape[1:])), copy=True),
            xp.asarray(xp.broadcast_to(b2, (M, b2.shape[1])), copy=True)]


def _gradients(b: _Block, params) -> tuple:
    """The loss gradients (gA1, gW2, gb2) of every model at ``params``: forward, then backward."""
    xp, rows, out, alpha, buffers = b.xp, b.rows, b.out, b.alpha, b.buffers
    A1, W2, b2 = params
    k = rows.dense.shape[0]
    d1, M, h = A1.shape
    # forward: shared rows (k, M, ·) from one product, own rows (M, ·)
    Z = rows.hidden(A1, b.Z_buf)
    if buffers:
        # ReLU's derivative as 0/1 of the float dtype: multiplying by it is a plain float
        # product, 2-3x faster than by a bool mask (a cast per element).
        F = np.greater(Z, 0, out=b.F_buf, casting="unsafe")
        H = np.multiply(Z, F, out=Z)
    else:
        F = xp.astype(Z > 0, Z.dtype)
        H = Z * F
    P = _output(xp, _second_layer(xp, H, W2, b2), out)   # (k, M, o)
    z1 = (b.Xo1[:, None, :] @ xp.permute_dims(A1, (1, 0, 2)))[:, 0, :]
    h1 = z1 * (z1 > 0)
    p = _output(xp, (h1[:, None, :] @ W2)[:, 0, :] + b2, out)
    # backward: the output delta is p − y for the three canonical loss/link pairs
    D2 = P - b.Yb
    d2 = (p - b.Y_own) * b.w_own
    n = b.n
    # Gradients accumulate in place in the fresh product arrays (the same sums, in the
    # same order, as the expressions written out; fewer temporaries of parameter size).
    gW2 = xp.permute_dims(H, (1, 2, 0)) @ xp.permute_dims(D2, (1, 0, 2))
    gW2 += h1[:, :, None] * d2[:, None, :]
    gW2 += alpha * W2
    gW2 /= n[:, None, None]
    if b.one_output:  # D2 ∘ relu'(Z), in relu's buffer; W2 scales the product below
        E = np.multiply(F, D2, out=F) if buffers else F * D2
    else:             # H is spent: the hidden deltas take its buffer
        E = _backprop_hidden(xp, D2, W2, b.Z_buf)
        E *= F
    gA1 = xp.reshape(rows.backward(xp.reshape(E, (k, M * h)), b.G_buf), (d1, M, h))
    if b.one_output:
        gA1 *= xp.reshape(W2, (1, M, h))
    d1_own = _backprop_hidden(xp, d2[None, ...], W2)[0]
    d1_own *= z1 > 0
    gA1 += b.Xo1T * d1_own[None, :, :]
    gA1 += b.pen1 * A1
    gA1 /= n[None, :, None]
    gb2 = xp.sum(D2, axis=0) + d2
    gb2 /= n[:, None]
    return gA1, gW2, gb2


class _Adam:
    """scikit-learn's Adam, bias-corrected through the learning rate, updating parameters in place."""

    def __init__(self, xp, params, *, learning_rate: float, beta_1: float, beta_2: float, epsilon: float,
                 buffers: bool) -> None:
        self.xp, self.learning_rate, self.beta_1, self.beta_2, self.epsilon = xp, learning_rate, beta_1, beta_2, epsilon
        self.ms = [xp.zeros_like(p) for p in params]
        self.vs = [xp.zeros_like(p) for p in params]
        self.buf = [np.empty_like(p) for p in params] if buffers else None

    def step(self, params, grads, t: int) -> None:
        """Step t (from 1): m ← β₁m + (1−β₁)g, v ← β₂v + (1−β₂)g², θ ← θ − lr_t·m/(√v + ε).

        ``grads`` are overwritten (they serve as temporaries).
        """
        xp, beta_1, beta_2, epsilon = self.xp, self.beta_1, self.beta_2, self.epsilon
        lr_t = self.learning_rate * math.sqrt(1.0 - beta_2 ** t) / (1.0 - beta_1 ** t)
        for i, g in enumerate(grads):
            m, v = self.ms[i], self.vs[i]
            if self.buf is not None:  # the same operations, every temporary in a buffer
                s = self.buf[i]
                m *= beta_1
                m += np.multiply(g, 1.0 - beta_1, out=s)
                g *= g
                v *= beta_2
                v += np.multiply(g, 1.0 - beta_2, out=g)
                np.sqrt(v, out=s)
                s += epsilon
                params[i] -= np.divide(np.multiply(m, lr_t, out=g), s, out=g)
                continue
            m *= beta_1
            m += (1.0 - beta_1) * g
            g *= g
            v *= beta_2
            v += (1.0 - beta_2) * g
            step = xp.sqrt(v)
            step += epsilon
            step = (lr_t * m) / step
            params[i] -= step


def train(X, Y, X_own, Y_own, own_weight, params0, *, alpha: float, learning_rate: float,
          max_iter: int, out: str, beta_1: float = ADAM_BETA_1, beta_2: float = ADAM_BETA_2,
          epsilon: float = ADAM_EPSILON, shared_steps: int = 0):
    """Train M one-hidden-layer MLPs at once by full-batch Adam.

    Model m trains on the shared rows ``X`` (k, d) plus its own row
    ``X_own[m]`` counted with weight ``own_weight[m]`` (0 or 1). Every array
    is of one namespace and floating dtype (that of ``X``).

    Parameters
    ----------
    X : array (k, d)
    Y : array (k, o)
        Targets: 0/1 column (logistic), one-hot (softmax) or values (identity).
    X_own : array (M, d)
    Y_own : array (M, o)
    own_weight : array (M,)
    params0 : sequence of 4 arrays
        Initial (W1 (d, h), b1 (h,), W2 (h, o), b2 (o,)), shared by every model.
    alpha, learning_rate, max_iter, beta_1, beta_2, epsilon
        scikit-learn's names and meanings (``max_iter`` = full-batch steps).
    out : {"logistic", "softmax", "identity"}
    shared_steps : int, default=0
        The first ``shared_steps`` steps are taken once, by a model on the shared rows alone
        (no own row), and every model continues from its weights and Adam moments for the
        remaining ``max_iter − shared_steps`` steps with its own row (module docstring, "Shared steps").
        0: every model trains all steps from ``params0`` with its own row.

    Returns
    -------
    tuple of arrays
        (A1 (d + 1, M, h) = [W1; b1], W2 (M, h, o), b2 (M, o)), for :func:`forward`.

    Notes
    -----
    On the CPU the step's large arrays are written into buffers allocated once: a fresh
    array of a block's size per step costs more than the arithmetic that fills it (measured
    at k = 550, 33 models, float32: the backprop outer product 1.5 ms fresh vs 0.27 ms into
    a buffer). With one output (two classes, regression) the hidden delta
    ``(D2 W2ᵀ) ∘ relu'(Z)`` of every row is ``(D2 ∘ relu'(Z)) · W2`` unit by unit, so the
    first-layer gradient is ``([X, 1]ᵀ (D2 ∘ relu'(Z))) · W2``: W2 scales the (d + 1, M, h)
    gradient instead of taking a pass over the (k, M, h) deltas.
    """
    xp = array_namespace(X)
    W1_0, b1_0, W2_0, b2_0 = params0
    A1_0 = xp.concat([W1_0, b1_0[None, :]], axis=0)
    block = _Block(X, Y, X_own, Y_own, own_weight, A1_0, alpha=alpha, out=out)
    M = X_own.shape[0]
    adam_args = dict(learning_rate=learning_rate, beta_1=beta_1, beta_2=beta_2, epsilon=epsilon,
                     buffers=block.buffers)
    params = _initial_params(xp, block.A1_0, W2_0, b2_0, M)
    adam = _Adam(xp, params, **adam_args)
    first = 1
    if shared_steps:
        # One model on the shared rows alone (own weight 0) takes the shared steps; every model
        # then starts from its weights and Adam moments (model 0 ends where the cold path ends,
        # up to the rounding of one-model products).
        zero = xp.zeros_like(own_weight[:1])
        alone = _Block(X, Y, X_own[:1], Y_own[:1], zero, A1_0, alpha=alpha, out=out)
        shared = _initial_params(xp, alone.A1_0, W2_0, b2_0, 1)
        adam1 = _Adam(xp, shared, **adam_args)
        for t in range(1, shared_steps + 1):
            adam1.step(shared, _gradients(alone, shared), t)
        params = _broadcast_models(xp, shared, M)
        adam.ms, adam.vs = _broadcast_models(xp, adam1.ms, M), _broadcast_models(xp, adam1.vs, M)
        first = shared_steps + 1
    for t in range(first, max_iter + 1):
        adam.step(params, _gradients(block, params), t)
    order = block.rows.order
    if order is not None:  # back to [W1; b1]
        A1 = np.empty_like(params[0])
        A1[order] = params[0]
        params[0] = A1
    return tuple(params)


# --------------------------------------------------------------------------- settings


def check_settings(params: dict[str, Any]) -> dict[str, Any]:
    """The trainer's keyword arguments from scikit-learn-named settings; ConfigError if invalid."""
    hidden = params.get("hidden_layer_sizes", (32,))
    hidden = tuple(hidden) if hasattr(hidden, "__iter__") else (hidden,)
    if len(hidden) != 1 or isinstance(hidden[0], bool) or not isinstance(hidden[0], (int, np.integer)) \
            or hidden[0] < 1:
        raise ConfigError(f"hidden_layer_sizes={hidden!r} must be one positive layer width for "
                          "mlp_batched (the paper's architecture); use model 'mlp' for deeper networks")
    out = {"hidden": int(hidden[0])}
    for name, key in (("alpha", "alpha"), ("learning_rate_init", "learning_rate"), ("beta_1", "beta_1"),
                      ("beta_2", "beta_2"), ("epsilon", "epsilon")):
        value = params.get(name, {"alpha": 0.01, "learning_rate_init": 0.01, "beta_1": ADAM_BETA_1,
                                  "beta_2": ADAM_BETA_2, "epsilon": ADAM_EPSILON}[name])
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise ConfigError(f"{name}={value!r} must be a finite non-negative number")
        out[key] = float(value)
    dtype = params.get("dtype", "float32")
    if dtype not in DTYPES:
        raise ConfigError(f"dtype={dtype!r} must be one of {', '.join(DTYPES)}")
    out["dtype"] = dtype
    steps = params.get("max_iter", 200)
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ConfigError(f"max_iter={steps!r} must be a positive integer (full-batch Adam steps)")
    out["max_iter"] = int(steps)
    shared = params.get("shared_steps", 0)
    if isinstance(shared, bool) or not isinstance(shared, (int, np.integer)) or not 0 <= shared < steps:
        raise ConfigError(f"shared_steps={shared!r} must be an integer in [0, max_iter={steps}) "
                          "(0: every D ∪ {z} trains all steps with z, the exact default)")
    out["shared_steps"] = int(shared)
    return out


def targets(y: np.ndarray, task: str, n_classes: int) -> tuple[np.ndarray, str]:
    """(Y (n, o), output activation) as scikit-learn's MLP encodes targets."""
    if task == "regression":
        return np.asarray(y, dtype=np.float64)[:, None], "identity"
    y = np.asarray(y, dtype=np.intp)
    if n_classes == 2:
        return (y == 1).astype(np.float64)[:, None], "logistic"
    return np.eye(n_classes)[y], "softmax"


def proba_of(outputs, out: str):
    """Class probabilities (…, n, K) from network outputs (…, n, o)."""
    if out == "logistic":
        xp = array_namespace(outputs)
        return xp.concat([1.0 - outputs, outputs], axis=-1)
    return outputs


# --------------------------------------------------------------------------- scikit-learn estimators


class _BatchedMLPBase(ExplicitParams):
    """One model of the batched trainer behind the scikit-learn contract (the engine's generic path)."""

    _PARAMS = ("hidden_layer_sizes", "alpha", "learning_rate_init", "max_iter", "beta_1", "beta_2",
               "epsilon", "dtype", "shared_steps", "random_state")
    _task = "classification"
    # Marks _validate_params as this class's own check (check_settings), as the registry expects.
    _parameter_constraints: dict = {}

    def __init__(self, hidden_layer_sizes=(32,), alpha=0.01, learning_rate_init=0.01, max_iter=200,
                 beta_1=ADAM_BETA_1, beta_2=ADAM_BETA_2, epsilon=ADAM_EPSILON, dtype="float32",
                 shared_steps=0, random_state=None):
        self.hidden_layer_sizes, self.alpha, self.learning_rate_init = hidden_layer_sizes, alpha, learning_rate_init
        self.max_iter, self.beta_1, self.beta_2, self.epsilon = max_iter, beta_1, beta_2, epsilon
        self.dtype, self.shared_steps, self.random_state = dtype, shared_steps, random_state

    def _validate_params(self):
        try:
            check_settings(self.get_params())
        except ConfigError as exc:
            raise ValueError(str(exc)) from None

    def _fit(self, X, y, n_classes):
        settings = check_settings(self.get_params())
        dt = settings.pop("dtype")
        settings.pop("shared_steps")  # one fit has no base to share steps with
        X = np.asarray(X, dtype=dt)
        Y, self.out_ = targets(y, self._task, n_classes)
        seed = 0 if self.random_state is None else int(self.random_state)
        hidden = settings.pop("hidden")
        init = [p.astype(dt) for p in glorot_init(seed, [X.shape[1], hidden, Y.shape[1]])]
        self.params_ = train(X, Y.astype(dt), np.zeros((1, X.shape[1]), dt), np.zeros((1, Y.shape[1]), dt),
                             np.zeros(1, dt), init, out=self.out_, **settings)
        return self

    def _outputs(self, X):
        out = forward(np.asarray(X, dtype=self.params_[0].dtype), self.params_, self.out_)[0]
        return np.asarray(out, dtype=np.float64)


class BatchedMLPClassifier(_BatchedMLPBase):
    """The paper's MLP classifier, trained by :func:`train` (one model)."""

    def fit(self, X, y):
        self.classes_, codes = np.unique(np.asarray(y), return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError("BatchedMLPClassifier needs at least two classes in y")
        return self._fit(X, codes, len(self.classes_))

    def predict_proba(self, X):
        return proba_of(self._outputs(X), self.out_)

    def predict(self, X):
        return self.classes_[np.argmax(self.predict_proba(X), axis=-1)]


class BatchedMLPRegressor(_BatchedMLPBase):
    """The paper's MLP for regression, trained by :func:`train` (one model)."""

    _task = "regression"

    def fit(self, X, y):
        return self._fit(X, y, 0)

    def predict(self, X):
        return self._outputs(X)[:, 0]


# --------------------------------------------------------------------------- the block solver


class MLPBlockSolver:
    """A block's base and every D ∪ {z} trained together (the engine's fast path for ``mlp_batched``).

    Parameters
    ----------
    params : dict
        The model's settings (scikit-learn names, registry defaults filled in).
    task : str
    n_classes : int
    X_val, y_val : arrays
        The validation split the utility is scored on.
    metric : str
    device : Device, default=CPU
    """

    method = "batched_adam"
    #: The same model and arithmetic as the estimator, summed in another order: float32
    #: rounding grows over the steps (equal to ~1e-15 in float64, module docstring).
    exact = False

    def __init__(self, params, task: str, n_classes: int, X_val, y_val, metric: str, device=None) -> None:
        settings = check_settings(params)
        self.hidden = settings.pop("hidden")
        self.dtype = settings.pop("dtype")
        self.settings = settings
        if settings["shared_steps"]:
            self.method = "batched_adam_shared"  # recorded in the ledger: not the cold path
        self.task, self.n_classes = task, int(n_classes)
        self.device = device or CPU
        self.Xv = self.device.asarray(X_val, self.dtype)
        self.y_val = np.asarray(y_val)
        self.metric = METRICS[metric]

    def _score(self, outputs: np.ndarray, out: str) -> np.ndarray:
        if out == "identity":
            return self.metric.from_pred(outputs[..., 0], self.y_val)
        return self.metric.from_proba(proba_of(outputs, out), self.y_val)

    def train_block(self, Xd, yd, Xz, yz, seed: int):
        """The M = 1 + B trained models (device arrays) and the output activation."""
        dev = self.device
        Y, out = targets(yd, self.task, self.n_classes)
        Yz, _ = targets(yz, self.task, self.n_classes)
        d, o = Xd.shape[1], Y.shape[1]
        X_own = np.vstack([np.zeros((1, d)), np.asarray(Xz, dtype=np.float64)])
        Y_own = np.vstack([np.zeros((1, o)), Yz])
        weight = np.ones(len(X_own))
        weight[0] = 0.0                                  # model 0 is the base: D alone
        init = glorot_init(seed, [d, self.hidden, o])
        dt = self.dtype
        params = train(dev.asarray(Xd, dt), dev.asarray(Y, dt), dev.asarray(X_own, dt), dev.asarray(Y_own, dt),
                       dev.asarray(weight, dt), [dev.asarray(p, dt) for p in init], out=out, **self.settings)
        return params, out

    def __call__(self, Xd, yd, Xz, yz, seed: int | None = None):
        if self.task == "classification" and len(np.unique(yd)) < self.n_classes:
            return None  # a class missing from D: the estimator itself decides what D can learn
        params, out = self.train_block(Xd, yd, Xz, yz, 0 if seed is None else int(seed))
        dev, dt = self.device, self.dtype
        outputs = dev.to_numpy(forward(self.Xv, params, out)).astype(np.float64)
        scores = self._score(outputs, out)
        base = [p[:, :1] if i == 0 else p[:1] for i, p in enumerate(params)]   # model 0 of each array

        def predict_base(X):
            """The base model's probabilities (classification) or predictions on rows X."""
            y = dev.to_numpy(forward(dev.asarray(X, dt), base, out))[0].astype(np.float64)
            return y[:, 0] if out == "identity" else proba_of(y, out)

        B = len(Xz)
        return BlockFit(u_base=float(scores[0]), u_with=scores[1:], converged=np.ones(B, dtype=bool),
                        method=self.method, iterations=self.settings["max_iter"], predict_base=predict_base)


def build(params, task: str, n_classes: int, X_val, y_val, metric: str, device=None) -> MLPBlockSolver:
    """The block solver of ``mlp_batched`` (:class:`~.base.SolverBuilder`; it never declines)."""
    return MLPBlockSolver(params, task, n_classes, X_val, y_val, metric, device)
