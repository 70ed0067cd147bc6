"""Deliberately plain numpy implementations of MatConvNet's layer formulas, written
from the MatConvNet documentation, in MATLAB layout (H x W x C x N).  Tests compare
the fast torch layers against these."""
import numpy as np


def conv(x, w, b, stride=(1, 1), pad=(0, 0, 0, 0), dilate=(1, 1)):
    H, W, C, N = x.shape
    fh, fw, cin, cout = w.shape
    groups = C // cin
    per_group = cout // groups
    t, bo, l, r = pad
    xp = np.zeros((H + t + bo, W + l + r, C, N), x.dtype)
    xp[t:t + H, l:l + W] = x
    eh, ew = dilate[0] * (fh - 1) + 1, dilate[1] * (fw - 1) + 1
    oh = (H + t + bo - eh) // stride[0] + 1
    ow = (W + l + r - ew) // stride[1] + 1
    y = np.zeros((oh, ow, cout, N))
    for n in range(N):
        for k in range(cout):
            g = k // per_group
            for i in range(oh):
                for j in range(ow):
                    acc = 0.0 if b is None else float(b[k])
                    for u in range(fh):
                        for v in range(fw):
                            for d in range(cin):
                                acc += w[u, v, d, k] * xp[i * stride[0] + u * dilate[0],
                                                          j * stride[1] + v * dilate[1], g * cin + d, n]
                    y[i, j, k, n] = acc
    return y


def pool(x, size, stride=(1, 1), pad=(0, 0, 0, 0), method="max"):
    H, W, C, N = x.shape
    ph, pw = size
    t, bo, l, r = pad
    oh = (H + t + bo - ph) // stride[0] + 1
    ow = (W + l + r - pw) // stride[1] + 1
    y = np.zeros((oh, ow, C, N))
    for i in range(oh):
        for j in range(ow):
            y1, x1 = i * stride[0] - t, j * stride[1] - l
            y2, x2 = min(y1 + ph, H), min(x1 + pw, W)
            y1, x1 = max(y1, 0), max(x1, 0)
            win = x[y1:y2, x1:x2]
            y[i, j] = win.max(axis=(0, 1)) if method == "max" else win.mean(axis=(0, 1))
    return y


def normalize(x, n, kappa, alpha, beta):
    H, W, C, N = x.shape
    lo_off, hi_off = (n - 1) // 2, n - 1 - (n - 1) // 2
    y = np.zeros_like(x, dtype=np.float64)
    for c in range(C):
        lo, hi = max(0, c - lo_off), min(C - 1, c + hi_off)
        s = (x[:, :, lo:hi + 1].astype(np.float64) ** 2).sum(axis=2)
        y[:, :, c] = x[:, :, c] * (kappa + alpha * s) ** (-beta)
    return y


def relu(x, leak=0.0):
    return np.where(x > 0, x, leak * x)


def softmax(x):
    e = np.exp(x - x.max(axis=2, keepdims=True))
    return e / e.sum(axis=2, keepdims=True)


def ref_softmax(p):
    """vl_nnsoftmax over the 3rd (channel) dim of H x W x K x N."""
    e = np.exp(p - p.max(axis=2, keepdims=True))
    return e / e.sum(axis=2, keepdims=True)


def ref_conv1x1(x, w, b=None):
    """x H x W x D x N, w D x K -> H x W x K x N."""
    h, wd, d, n = x.shape
    out = np.zeros((h, wd, w.shape[1], n))
    for k in range(w.shape[1]):
        out[:, :, k, :] = np.einsum("hwdn,d->hwn", x, w[:, k]) + (0 if b is None else b[k])
    return out


def ref_forward(x, assign_w, assign_b, offsets):
    """MATLAB forward_: y(1,k,d,n) = sum_{h,w} a(h,w,k,n) (x(h,w,d,n) + offset(d,k))."""
    h, wd, d, n = x.shape
    k_ = assign_w.shape[1]
    a = ref_softmax(ref_conv1x1(x, assign_w, assign_b))
    y = np.zeros((1, k_, d, n))
    for k in range(k_):
        for i in range(n):
            resid = x[:, :, :, i] + offsets[:, k][None, None, :]
            y[0, k, :, i] = (a[:, :, k, i][:, :, None] * resid).sum(axis=(0, 1))
    return y


def ref_backward(x, assign_w, assign_b, offsets, dzdy):
    """MATLAB backward_ (v1.03): returns dzdx (HxWxDxN), dz/d assign_w (DxK),
    dz/d bias (K) and dz/d offsets (DxK)."""
    h, wd, d, n = x.shape
    k_ = assign_w.shape[1]
    a = ref_softmax(ref_conv1x1(x, assign_w, assign_b))
    dzda = np.zeros_like(a)
    for k in range(k_):
        resid = x + offsets[:, k][None, None, :, None]
        dzda[:, :, k, :] = (dzdy[0, k, :, :][None, None, :, :] * resid).sum(axis=2)
    # softmax backward: Y .* (dzdY - sum(dzdY .* Y, 3))
    dzdp = a * (dzda - (dzda * a).sum(axis=2, keepdims=True))
    # vl_nnconv backward (1x1 filters)
    dzdx = np.einsum("hwkn,dk->hwdn", dzdp, assign_w)
    dw = np.einsum("hwdn,hwkn->dk", x, dzdp)
    db = dzdp.sum(axis=(0, 1, 3))
    dzdy_ = dzdy.reshape(k_, d, n, order="F")
    a_ = a.reshape(h * wd, k_, n, order="F")
    for i in range(n):
        dzdx[:, :, :, i] += (a_[:, :, i] @ dzdy_[:, :, i]).reshape(h, wd, d, order="F")
    mass = a.sum(axis=(0, 1)).reshape(k_, 1, n)
    doff = (dzdy_ * mass).sum(axis=2).T
    return dzdx, dw, db, doff
