"""NetVLAD's aggregation layers ``layerVLAD`` and ``layerVLADv2`` (MATLAB classdefs).

Both take conv features N x D x H x W (MATLAB H x W x D x N), soft-assign every
local descriptor x_i to K clusters with a softmax over a 1x1 convolution, and sum
the residuals:  V(k, d) = sum_i a_k(x_i) (x_i(d) - c_k(d)).
The output is N x D x 1 x K, the torch image of MATLAB's 1 x K x D x N, so that a
flattened descriptor has element (k, d) at k + K*d (the K values of one dimension
are contiguous), the order the released PCA/whitening matrices expect.
Normalisations (intra, L2) are separate layers, as in the original.
"""
from __future__ import annotations

import numpy as np
import torch

from ..layout import matlab_shape
from .base import Layer, LayerError, as_list, add_epsilon, exporting, register_class
from .normalize import Normalize, channel_sumsq, fused_prenorm

# The MATLAB classdef properties, in declaration order (relja_saveobj writes them all).
VLAD_PROPERTIES = ("type", "name", "K", "D", "vladDim", "weights", "momentum",
                   "learningRate", "weightDecay", "precious")


def _empty() -> np.ndarray:
    return np.zeros((0, 0))


def vlad_aggregate(x: torch.Tensor, assign_w: torch.Tensor, assign_b: torch.Tensor | None,
                   neg_centres: torch.Tensor, prenorm: tuple[float, float, float] | None = None
                   ) -> torch.Tensor:
    """The NetVLAD function on x (N x D x H x W); assign_w and neg_centres are D x K,
    assign_b is K or None.  Returns N x D x 1 x K (MATLAB's 1 x K x D x N).

    Vectorised: V = A X^T + (sum_i A) (-c)^T with one batched matmul, A the K x HW soft
    assignment of each image; no per-cluster loop and no N x K x D x HW residual tensor.
    The gradient is layerVLAD.backward_'s (v1.03), batched.

    ``prenorm`` = (kappa, alpha, beta) applies the all-channel normalize before it (the
    preL2 layer, y = x s with s = (kappa + alpha sum_c x_c^2)^-beta per pixel) without
    forming y: the per-pixel scale s goes into the assignment logits and the aggregation
    weights, and the backward returns dz/dx through the normalisation.
    """
    if assign_b is None:
        assign_b = assign_w.new_zeros(0)
    if exporting() or not torch.is_grad_enabled():  # plain ops: a tracer records them; no backward
        rows = _is_channels_last(x)
        scale = None if prenorm is None else _prenorm_maps(x, prenorm, rows, plain=exporting())[0]
        vlad_t = (_forward_rows if rows else _forward_cols)(x, assign_w, assign_b, neg_centres, scale, False)[0]
        return vlad_t.reshape(x.shape[0], x.shape[1], 1, -1)
    return _VLADFunction.apply(x, assign_w, assign_b, neg_centres, prenorm)


def _prenorm_maps(x, prenorm, rows: bool, plain: bool = False):
    """The prenorm's per-pixel scale s = q^-beta and q = kappa + alpha sum_c x_c^2, as
    N x HW x 1 (rows) or N x 1 x HW maps; ``plain``: with ops any tracer records."""
    kappa, alpha, beta = prenorm
    sumsq = (x * x).sum(1) if plain else channel_sumsq(x)
    q = add_epsilon(sumsq.reshape(x.shape[0], -1).unsqueeze(2 if rows else 1) * alpha, kappa)
    return q.pow(-beta), q


def _is_channels_last(x: torch.Tensor) -> bool:
    return not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)


class _VLADFunction(torch.autograd.Function):
    """Forward and backward of NetVLAD as six matrix products (two forward: assignment
    logits, aggregation; four backward), in the input's layout so that no operand is
    copied: N x D x HW matrices for NCHW input, N x HW x D rows (where the assignment
    conv and its gradients run as oneDNN/cuDNN 1x1 convolutions) for channels_last, the
    layout trainWeakly and serialAllFeats feed.  Saves only x and K x HW maps; the
    backward's extra memory is about the size of dz/dx.

    With a prenorm the per-pixel scale s multiplies the K x HW logits and assignments
    (never the D x HW features); the normalisation's backward, s g - 2 alpha beta (s/q)
    <g, x> x with g the gradient at y, needs <g, x> = sum_k dz/dlogit_k (w_k^T x) +
    a_k (dV_k^T x), again K x HW products, and one pass over dz/dx."""

    @staticmethod
    def forward(ctx, x, assign_w, assign_b, neg_c, prenorm):
        ctx.has_bias = bool(assign_b.numel())
        ctx.rows = _is_channels_last(x)
        scale = q = None
        if prenorm is not None:
            scale, q = _prenorm_maps(x, prenorm, ctx.rows)
            ctx.prenorm_scale = -2.0 * prenorm[1] * prenorm[2]
        vlad_t, assign, raw_logits, weights = (_forward_rows if ctx.rows else _forward_cols)(
            x, assign_w, assign_b, neg_c, scale)
        ctx.save_for_backward(x, assign_w, neg_c, assign, raw_logits, weights, scale, q)
        return vlad_t.reshape(x.shape[0], x.shape[1], 1, -1)

    @staticmethod
    def backward(ctx, dzdy):
        x, assign_w, neg_c, assign, raw_logits, weights, scale, q = ctx.saved_tensors
        need = ctx.needs_input_grad
        dv_t = dzdy.reshape(x.shape[0], x.shape[1], -1)                  # N x D x K = dV^T
        hw_dim = 1 if ctx.rows else 2                                     # of the K x HW maps
        k_dim = 3 - hw_dim
        if ctx.rows:
            m = torch.bmm(_rows(x), dv_t)                                 # N x HW x K
        else:
            m = torch.bmm(dv_t.transpose(1, 2), x.reshape(dv_t.shape[0], dv_t.shape[1], -1))
        # m = dV_k^T x; dz/da_k = s m + dV_k^T (-c_k), then through the softmax (in place)
        dot = scratch = None
        if scale is not None:  # <g, x>'s aggregation part, sum_k a_k m_k, before m is scaled
            scratch = torch.mul(assign, m)
            dot = scratch.sum(k_dim, keepdim=True)
            m.mul_(scale)
        m += (dv_t * neg_c.unsqueeze(0)).sum(1).unsqueeze(hw_dim)
        dzdp = _softmax_grad_(m, assign, k_dim)                           # dz/dlogits
        db = dzdp.sum((0, hw_dim)) if need[2] and ctx.has_bias else None
        if scale is not None:  # <g, x>'s conv part, then dz/d(raw logits) = s dz/dlogits
            dot += torch.mul(dzdp, raw_logits, out=scratch).sum(k_dim, keepdim=True)
            dzdp.mul_(scale)
            coef = dot.mul_(scale).div_(q).mul_(ctx.prenorm_scale)
        else:
            coef = None
        dx, dw = (_backward_rows if ctx.rows else _backward_cols)(
            x, assign_w, assign if weights is None else weights, dv_t, dzdp, need[0], need[1], coef)
        dc = (dv_t * assign.sum(hw_dim).unsqueeze(1)).sum(0) if need[3] else None
        return dx, dw, db, dc, None


def _softmax_grad_(g: torch.Tensor, assign: torch.Tensor, dim: int) -> torch.Tensor:
    """In place: g <- a (g - sum_k a g), the backward of the softmax over K (vl_nnsoftmax)."""
    g *= assign
    return g.addcmul_(assign, g.sum(dim, keepdim=True), value=-1)


def _forward_cols(x, assign_w, assign_b, neg_c, scale, keep=True):
    """NCHW: features as N x D x HW columns; returns V^T (N x D x K), A (N x K x HW) and,
    with a prenorm scale (N x 1 x HW), the unscaled logits W^T x and the aggregation
    weights s A (else None).  ``keep`` False (no backward to come): the K x HW maps are
    scaled in place and only V^T is returned."""
    n, d = x.shape[:2]
    feats = x.reshape(n, d, -1)
    w_t = assign_w.t().unsqueeze(0).expand(n, -1, -1)                     # N x K x D
    raw = None
    if scale is not None:
        raw = torch.bmm(w_t, feats)
        logits = raw * scale if keep else raw.mul_(scale)
        if assign_b.numel():
            logits += assign_b.reshape(1, -1, 1)
    elif assign_b.numel():
        logits = torch.baddbmm(assign_b.reshape(1, -1, 1), w_t, feats)
    else:
        logits = torch.bmm(w_t, feats)                                    # N x K x HW
    assign = torch.softmax(logits, dim=1)
    del logits
    mass = assign.sum(2).unsqueeze(1)
    weights = assign if scale is None else assign * scale if keep else assign.mul_(scale)
    vlad_t = torch.bmm(feats, weights.transpose(1, 2))                    # V^T = X (s A)^T
    vlad_t.addcmul_(neg_c.unsqueeze(0), mass)
    if not keep:
        return vlad_t, None, None, None
    return vlad_t, assign, raw, (None if scale is None else weights)


def _backward_cols(x, assign_w, weights, dv_t, dzdp, need_x, need_w, coef):
    """dz/dx and dz/dW from dz/d(raw logits) ``dzdp`` (N x K x HW); ``coef`` (N x 1 x HW)
    the prenorm's factor of x, or None."""
    n, d = x.shape[:2]
    feats = x.reshape(n, d, -1)
    dx = dw = None
    if need_x:  # via the assignment conv, then via the aggregation
        dx = torch.bmm(assign_w.unsqueeze(0).expand(n, -1, -1), dzdp)
        dx.baddbmm_(dv_t, weights)
        if coef is not None:
            dx.addcmul_(feats, coef)
        dx = dx.reshape(x.shape)
    if need_w:
        dw = torch.bmm(feats, dzdp.transpose(1, 2)).sum(0)
    return dx, dw


def _rows(t: torch.Tensor) -> torch.Tensor:
    """A channels_last N x C x H x W tensor as its N x HW x C rows (a view)."""
    n, c, h, w = t.shape
    return t.permute(0, 2, 3, 1).reshape(n, h * w, c)


def _assign_filters(assign_w: torch.Tensor) -> torch.Tensor:
    """D x K assignment weights as the K x D x 1 x 1 filters of a 1x1 convolution."""
    return assign_w.t().reshape(assign_w.shape[1], assign_w.shape[0], 1, 1)


def _forward_rows(x, assign_w, assign_b, neg_c, scale, keep=True):
    """channels_last: features as N x HW x D rows; returns V^T (N x D x K, a transposed
    view), A (N x HW x K) and, with a prenorm scale (N x HW x 1), the unscaled logits
    and s A (``keep`` as in :func:`_forward_cols`)."""
    bias = assign_b if assign_b.numel() else None
    raw = None
    if scale is not None:
        raw = _rows(torch.nn.functional.conv2d(x, _assign_filters(assign_w)))
        logits = raw * scale if keep else raw.mul_(scale)
        if bias is not None:
            logits += bias
    else:
        logits = _rows(torch.nn.functional.conv2d(x, _assign_filters(assign_w), bias))
    assign = torch.softmax(logits, dim=2)
    del logits
    mass = assign.sum(1).unsqueeze(2)
    weights = assign if scale is None else assign * scale if keep else assign.mul_(scale)
    vlad = torch.bmm(weights.transpose(1, 2), _rows(x))                 # V = (s A)^T X, N x K x D
    vlad.addcmul_(mass, neg_c.t().unsqueeze(0))
    if not keep:
        return vlad.transpose(1, 2), None, None, None
    return vlad.transpose(1, 2), assign, raw, (None if scale is None else weights)


def _backward_rows(x, assign_w, weights, dv_t, dzdp, need_x, need_w, coef):
    """As :func:`_backward_cols` for channels_last: ``dzdp`` N x HW x K, ``coef`` N x HW x 1."""
    n, d, h, w = x.shape
    dx = dw = None
    if need_x or need_w:  # the assignment conv's backward (vl_nnconv's), then the aggregation
        dzdp_map = dzdp.reshape(n, h, w, -1).permute(0, 3, 1, 2)          # channels_last
        dx, dw4, _ = torch.ops.aten.convolution_backward(
            dzdp_map, x, _assign_filters(assign_w), None, [1, 1], [0, 0], [1, 1], False,
            [0, 0], 1, [need_x, need_w, False])
        if need_x:
            dx = dx.contiguous(memory_format=torch.channels_last)  # so that _rows is a view
            dx_rows = _rows(dx)
            dx_rows.baddbmm_(weights, dv_t.transpose(1, 2))
            if coef is not None:
                dx_rows.addcmul_(_rows(x), coef)
        if need_w:
            dw = dw4.reshape(assign_w.shape[1], d).t()
    return dx, dw


class _VLADBase(Layer):
    """Shared property handling of layerVLAD / layerVLADv2 (``type`` 'custom')."""

    type = "custom"
    n_weights = 0

    def __init__(self, name: str = "VLAD", weights=(), **kw):
        super().__init__(name, weights, **kw)
        if len(self.weights):
            self._check_weights()

    @property
    def D(self) -> int:
        return int(self.weights[0].shape[2]) if len(self.weights) else 0

    @property
    def K(self) -> int:
        return int(self.weights[0].shape[3]) if len(self.weights) else 0

    @property
    def vladDim(self) -> int:
        return self.D * self.K

    def _check_weights(self):
        if len(self.weights) != self.n_weights:
            raise self.fail(f"expected {self.n_weights} weights, got {len(self.weights)}")
        for i, wt in enumerate(self.weights):
            if not torch.isfinite(wt).all():
                raise self.fail(f"weights{{{i + 1}}} contain NaN or Inf")
        shape = tuple(self.weights[0].shape)
        for i in self._dk_weights():
            if tuple(self.weights[i].shape) != shape or len(shape) != 4 or shape[:2] != (1, 1):
                raise self.fail(f"weights{{{i + 1}}} has shape {tuple(self.weights[i].shape)}, "
                                f"expected 1x1xDxK = {shape}")

    def _dk_weights(self) -> tuple[int, ...]:
        return tuple(range(self.n_weights))

    def _set_weights(self, ws):
        self.weights = torch.nn.ParameterList(
            [torch.nn.Parameter(torch.as_tensor(np.ascontiguousarray(w, dtype=np.float32))) for w in ws])
        self._check_weights()

    @classmethod
    def _check_constructor_dk(cls, name, *mats) -> list[np.ndarray]:
        out = []
        for i, m in enumerate(mats):
            m = np.asarray(m, dtype=np.float32)
            if m.ndim == 1:
                m = m.reshape(-1, 1)
            if m.ndim != 2:
                raise LayerError(f"layer '{name}' ({cls.class_name}): constructor weight {i + 1} "
                                 f"must be a D x K matrix, got shape {m.shape}")
            out.append(m)
        return out

    @classmethod
    def from_struct(cls, s: dict):
        """From the MATLAB object's properties (relja_saveobj struct): the 1x1xDxK weights
        may come with trailing singletons dropped; K, D, vladDim are checked against them."""
        name = s.get("name", "VLAD")
        ws = as_list(s.get("weights"))
        if ws:
            if len(ws) != cls.n_weights:
                raise LayerError(f"layer '{name}' ({cls.class_name}): expected {cls.n_weights} "
                                 f"weights, got {len(ws)}")
            ws = cls._restore_shapes(name, ws)
        layer = cls(name, ws, **cls.common_kwargs(s, ("K", "D", "vladDim")))
        for prop in ("K", "D", "vladDim"):
            v = np.asarray(s.get(prop, _empty()))
            if v.size and ws and int(v.reshape(-1)[0]) != getattr(layer, prop):
                raise layer.fail(f"property {prop}={int(v.reshape(-1)[0])} does not match the "
                                 f"weights ({prop}={getattr(layer, prop)})")
        return layer

    @classmethod
    def _restore_shapes(cls, name, ws):
        return [matlab_shape(np.asarray(w, dtype=np.float32), 4) for w in ws]

    def to_struct(self) -> dict:
        """The MATLAB object's properties (relja_saveobj field names and order)."""
        def opt(v):
            return _empty() if v is None else np.asarray(v, np.float32).reshape(1, -1)
        s = {"type": self.type, "name": self.name,
             "K": float(self.K) if len(self.weights) else _empty(),
             "D": float(self.D) if len(self.weights) else _empty(),
             "vladDim": float(self.vladDim) if len(self.weights) else _empty(),
             "weights": [wt.detach().cpu().numpy().copy() for wt in self.weights],
             "momentum": _empty() if self.momentum is None else
             [m.detach().cpu().numpy().copy() for m in self.momentum],
             "learningRate": opt(self.learningRate), "weightDecay": opt(self.weightDecay),
             "precious": self.precious}
        return {**{k: s[k] for k in VLAD_PROPERTIES}, **self.extra}

    def _check_input(self, x: torch.Tensor):
        if not len(self.weights):
            raise self.fail("no weights: call constructor(weights) first")
        if x.dim() != 4 or x.shape[1] != self.D:
            raise self.fail(f"input has {x.shape[1] if x.dim() == 4 else tuple(x.shape)} channels "
                            f"(N x D x H x W expected), the layer has D={self.D}")

    def extra_repr(self) -> str:
        return f"name={self.name!r}, K={self.K}, D={self.D}"


@register_class("layerVLAD")
class layerVLAD(_VLADBase):
    """NetVLAD without assignment bias.  weights = {1x1xDxK assignment filters,
    1x1xDxK negated centres}; a_k(x) = softmax_k(w_k^T x)."""

    n_weights = 2

    def constructor(self, weights) -> "layerVLAD":
        """MATLAB's constructor({assign D x K, centres D x K}): stores the centres negated.
        Returns the layer (as MATLAB's ``l= l.constructor(...)``)."""
        if len(weights) != 2:
            raise self.fail(f"constructor takes {{assign DxK, centres DxK}}, got {len(weights)} weights")
        a, c = self._check_constructor_dk(self.name, *weights)
        if a.shape != c.shape:
            raise self.fail(f"assignment weights are {a.shape[0]}x{a.shape[1]} but centres are "
                            f"{c.shape[0]}x{c.shape[1]} (both must be D x K)")
        d, k = a.shape
        self._set_weights([a.reshape(1, 1, d, k), (-c).reshape(1, 1, d, k)])
        return self

    def forward(self, x: torch.Tensor, prenorm: Normalize | None = None) -> torch.Tensor:
        """This layer on x, or with ``prenorm`` (see :func:`~matnet.layers.normalize.fused_prenorm`) on prenorm(x)."""
        self._check_input(x)
        w0, w1 = self.weights[0], self.weights[1]
        return vlad_aggregate(x, w0.reshape(self.D, self.K), None, w1.reshape(self.D, self.K),
                              fused_prenorm(self, prenorm, self.D))


@register_class("layerVLADv2")
class layerVLADv2(_VLADBase):
    """NetVLAD with assignment bias.  weights = {1x1xDxK assignment filters (2 alpha c),
    1xK biases (-alpha ||c||^2), 1x1xDxK negated centres (-c)}."""

    n_weights = 3

    def _dk_weights(self):
        return (0, 2)

    def _check_weights(self):
        super()._check_weights()
        b = self.weights[1]
        if tuple(b.shape) != (1, self.K):
            raise self.fail(f"weights{{2}} (assignment bias) has shape {tuple(b.shape)}, expected 1x{self.K}")

    @classmethod
    def _restore_shapes(cls, name, ws):
        w0 = matlab_shape(np.asarray(ws[0], dtype=np.float32), 4)
        b = np.asarray(ws[1], dtype=np.float32).reshape(1, -1)   # a 1xK row, possibly flattened
        return [w0, b, matlab_shape(np.asarray(ws[2], dtype=np.float32), 4)]

    def constructor(self, weights) -> "layerVLADv2":
        """MATLAB's constructor({2 alpha c (D x K), -alpha ||c||^2 (1 x K), -c (D x K)}).
        Returns the layer."""
        if len(weights) != 3:
            raise self.fail(f"constructor takes {{DxK, 1xK, DxK}}, got {len(weights)} weights")
        a, c = self._check_constructor_dk(self.name, weights[0], weights[2])
        b = np.asarray(weights[1], dtype=np.float32)
        if b.ndim > 2 or (b.ndim == 2 and b.shape[0] != 1):
            raise self.fail(f"assignment bias must be 1 x K, got shape {b.shape}")
        if b.size != a.shape[1] or a.shape != c.shape:
            raise self.fail(f"inconsistent shapes: assignment {a.shape}, bias {b.shape}, "
                            f"offsets {c.shape} (expected D x K, 1 x K, D x K)")
        d, k = a.shape
        self._set_weights([a.reshape(1, 1, d, k), b.reshape(1, k), c.reshape(1, 1, d, k)])
        return self

    def forward(self, x: torch.Tensor, prenorm: Normalize | None = None) -> torch.Tensor:
        """This layer on x, or with ``prenorm`` (see :func:`~matnet.layers.normalize.fused_prenorm`) on prenorm(x)."""
        self._check_input(x)
        w0, b, w2 = self.weights
        return vlad_aggregate(x, w0.reshape(self.D, self.K), b.reshape(-1), w2.reshape(self.D, self.K),
                              fused_prenorm(self, prenorm, self.D))
