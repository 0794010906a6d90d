"""A small numpy MLP trained with Adam on the per-point likelihood.

Like the paper's network (d -> hidden -> hidden -> outputs per class, the
label picking its class's outputs), with our parametrisation of the outputs
(see :mod:`._amortized_core`) and tanh units: bounded units keep the
predicted exponents sane for points outside the training cloud, where ReLU
nets extrapolate linearly (with ReLU the held-out NLL blew up in about half
of our runs). Minibatches are sets of *points*; a point's gradient is the sum
of its samples' gradients, divided by the number of samples in the batch.
"""

from __future__ import annotations

import numpy as np

from . import _amortized_core as core


class MLP:
    """Weights and the forward/backward pass; plain arrays so it saves as ``.npz``."""

    def __init__(self, weights: list[np.ndarray], n_heads: int, activation: str = "tanh",
                 out_scale: np.ndarray | None = None):
        self.weights = weights  # [W1, b1, W2, b2, ..., Wout, bout]
        self.n_heads = n_heads
        self.activation = activation
        self.n_out = weights[-1].size // n_heads
        # Fixed multipliers of the outputs, i.e. per-output learning speeds
        # under Adam (see _MLP_OUT_SCALE in amortized.py).
        self.out_scale = np.ones(self.n_out) if out_scale is None else np.asarray(out_scale, float)
        self._scale = np.tile(self.out_scale, n_heads)

    @classmethod
    def init(cls, n_in: int, hidden: tuple[int, ...], n_heads: int, u0: np.ndarray,
             rng: np.random.Generator, activation: str = "tanh",
             out_scale: np.ndarray | None = None) -> "MLP":
        weights = []
        sizes = (n_in, *hidden)
        for a, b in zip(sizes[:-1], sizes[1:]):
            weights.append(rng.normal(0.0, np.sqrt(2.0 / a), size=(a, b)))
            weights.append(np.zeros(b))
        last = sizes[-1]
        # Small output weights: every point starts near the pooled law u0.
        weights.append(rng.normal(0.0, 0.01 / np.sqrt(last), size=(last, u0.size * n_heads)))
        scale = np.ones(u0.size) if out_scale is None else np.asarray(out_scale, float)
        weights.append(np.tile(u0 / scale, n_heads).astype(float))
        return cls(weights, n_heads, activation, scale)

    def forward(self, Z: np.ndarray, head: np.ndarray, keep: bool = False):
        acts = [Z]
        h = Z
        n_hidden = len(self.weights) // 2 - 1
        for j in range(n_hidden):
            h = h @ self.weights[2 * j] + self.weights[2 * j + 1]
            if self.activation == "relu":
                np.maximum(h, 0.0, out=h)
            else:
                np.tanh(h, out=h)
            acts.append(h)
        out = (h @ self.weights[-2] + self.weights[-1]) * self._scale
        out = out.reshape(Z.shape[0], self.n_heads, self.n_out)
        u = out[np.arange(Z.shape[0]), head]
        return (u, acts) if keep else u

    def backward(self, acts, head: np.ndarray, G: np.ndarray) -> list[np.ndarray]:
        n = G.shape[0]
        dout = np.zeros((n, self.n_heads, self.n_out))
        dout[np.arange(n), head] = G
        dout = dout.reshape(n, -1) * self._scale
        grads = [None] * len(self.weights)
        grads[-2] = acts[-1].T @ dout
        grads[-1] = dout.sum(0)
        dh = dout @ self.weights[-2].T
        n_hidden = len(self.weights) // 2 - 1
        for j in range(n_hidden - 1, -1, -1):
            if self.activation == "relu":
                dh = dh * (acts[j + 1] > 0.0)
            else:
                dh = dh * (1.0 - acts[j + 1] ** 2)
            grads[2 * j] = acts[j].T @ dh
            grads[2 * j + 1] = dh.sum(0)
            if j:
                dh = dh @ self.weights[2 * j].T
        return grads

    def copy(self) -> "MLP":
        return MLP([w.copy() for w in self.weights], self.n_heads, self.activation, self.out_scale)


def predict(net: MLP, Z: np.ndarray, head: np.ndarray, chunk: int = 65536) -> np.ndarray:
    out = np.empty((Z.shape[0], net.n_out))
    for s in range(0, Z.shape[0], chunk):
        out[s:s + chunk] = net.forward(Z[s:s + chunk], head[s:s + chunk])
    return out


def train(Z_tr, head_tr, packed_tr, Z_va, head_va, packed_va, link, u0, *, n_heads, hidden,
          max_epochs, learning_rate, batch_size, n_iter_no_change, tol, rng, out_scale,
          alpha_prior=0.0, activation="tanh", ema=0.99, n_decays=3, verbose=0):
    """Adam on minibatches of points, evaluated through an exponential moving
    average of the weights (Polyak averaging: the held-out NLL of the raw
    iterates jumps by ~0.03 nats between epochs, which made early stopping a
    lottery). When the held-out NLL has not improved by ``tol`` for
    ``n_iter_no_change`` epochs the learning rate halves; after ``n_decays``
    halvings training stops. The averaged weights of the best epoch are kept.

    Returns ``(net, best_epoch, val_curve, train_curve)``.
    """
    net = MLP.init(Z_tr.shape[1], tuple(hidden), n_heads, u0, rng, activation, out_scale)
    avg = net.copy()
    m_ = [np.zeros_like(w) for w in net.weights]
    v_ = [np.zeros_like(w) for w in net.weights]
    b1, b2, eps = 0.9, 0.999, 1e-8
    t = 0
    n = Z_tr.shape[0]
    lr = learning_rate
    best, best_net, best_epoch = np.inf, avg.copy(), 0
    ref, bad, decays = np.inf, 0, 0  # ref: the last value that counted as progress
    val_curve: list[float] = []
    train_curve: list[float] = []
    for epoch in range(1, max_epochs + 1):
        order = rng.permutation(n)
        tot, cnt = 0.0, 0
        for s in range(0, n, batch_size):
            pts = order[s:s + batch_size]
            sub = packed_tr.subset(pts)
            if sub.n_samples == 0:
                continue
            u, acts = net.forward(Z_tr[pts], head_tr[pts], keep=True)
            loss, G, _ = core.point_terms(u, sub, link)
            if alpha_prior:
                G += core.alpha_prior_terms(u, link, alpha_prior)[1]
            tot += float(loss.sum())
            cnt += sub.n_samples
            G /= sub.n_samples
            grads = net.backward(acts, head_tr[pts], G)
            t += 1
            c1 = 1.0 - b1 ** t
            c2 = 1.0 - b2 ** t
            d = min(ema, (1.0 + t) / (10.0 + t))  # short memory at the start
            for j, (w, gr) in enumerate(zip(net.weights, grads)):
                m_[j] *= b1
                m_[j] += (1.0 - b1) * gr
                v_[j] *= b2
                v_[j] += (1.0 - b2) * gr * gr
                w -= lr * (m_[j] / c1) / (np.sqrt(v_[j] / c2) + eps)
                avg.weights[j] *= d
                avg.weights[j] += (1.0 - d) * w
        train_curve.append(tot / max(cnt, 1))
        val = core.mean_nll(predict(avg, Z_va, head_va), packed_va, link)
        val_curve.append(val)
        if verbose:
            print(f"epoch {epoch}: lr {lr:.2g} train {train_curve[-1]:.5f} held-out {val:.5f}")
        if val < best:
            best, best_net, best_epoch = val, avg.copy(), epoch
        if not np.isfinite(ref) or val < ref - tol:
            ref, bad = val, 0
            continue
        bad += 1
        if bad >= n_iter_no_change:
            if decays >= n_decays:
                break
            decays, bad, lr = decays + 1, 0, lr * 0.5
    return best_net, best_epoch, val_curve, train_curve
