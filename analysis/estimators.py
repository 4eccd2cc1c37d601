"""Entropy estimators and the cosine baseline, as pure batched tensor functions.

Every function takes hidden states ``x`` of shape [B, T, D] (a batch of B windows of T
tokens each, D hidden dims), computes in float32 on ``x``'s device whatever the input
dtype, and returns a float32 tensor of shape [B]: one value per window (sample). Nothing
loops over tokens or dimensions in Python; the estimators run on every captured hidden
state of a forward pass.

Names, as in the rest of the project: N is the number of windows in a calibration set,
T the tokens per window, B a batch of windows, D the hidden size; ``k`` is only ever the
pruning budget, so the knn neighbour count is ``knn_k``. SPEC.md writes N for the tokens
of one sample; that N is T here.

Positions to leave out (``skip_first``, the attention sink) are the caller's business:
slice ``x[:, skip_first:]`` before calling.

Non-finite input: a sample holding any NaN or +-inf entry gets NaN from every estimator
(and from ``cosine_importance``); the other samples of the batch are unaffected. Use
``nonfinite_count`` to flag such samples (typically fp16 overflow) and say why.

All logarithms are natural. The definitions follow "Entropy estimators" in SPEC.md.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
from torch import Tensor

EstimatorName = Literal["bucket", "knn", "renyi"]
ESTIMATOR_NAMES: tuple[EstimatorName, ...] = ("bucket", "knn", "renyi")

_P_FLOOR = 1e-10
_LOG_EPS = 1e-10
_STD_EPS = 1e-10
_LOG_K_FLOOR = math.log(1e-10)
_COS_EPS = 1e-8
_SNAP_REL = 1e-5
# knn: a knn_k-th neighbour distance^2 below this fraction of the token's |a|^2 is recomputed
# from the difference of the two tokens.
_EXACT_REL = 1e-2


class Workspace:
    """Scratch buffers that repeated ``entropies`` calls reuse.

    On a CPU, every fresh [B, T, D] temporary costs page faults and cache misses: on the
    demo model up to a quarter of the estimators' time. A caller that runs the estimators
    over many same-sized stacks keeps one Workspace and passes it to each call. A buffer
    grows to the largest request; within one call a name is taken again only once its
    previous contents are dead, and no result returned to the caller lives in a buffer.
    """

    def __init__(self) -> None:
        self._flat: dict[tuple[str, torch.dtype, torch.device], Tensor] = {}

    def take(self, name: str, shape: tuple[int, ...], dtype: torch.dtype,
             device: torch.device) -> Tensor:
        """An uninitialised tensor of this shape, reusing the memory last taken under ``name``."""
        numel = math.prod(shape)
        key = (name, dtype, torch.device(device))
        flat = self._flat.get(key)
        if flat is None or flat.numel() < numel:
            flat = self._flat[key] = torch.empty(numel, dtype=dtype, device=device)
        return flat[:numel].view(shape)


class EstimatorInputError(ValueError):
    """Bad input to an estimator; the message names the argument and how to fix it."""


def _as_states(x: Tensor, name: str = "x", min_tokens: int = 1) -> Tensor:
    """Check the [B, T, D] shape and return a detached float32 view/copy."""
    if not isinstance(x, Tensor):
        raise EstimatorInputError(
            f"{name} must be a torch.Tensor of shape [B, T, D]; got {type(x)}"
        )
    if x.dim() != 3:
        raise EstimatorInputError(
            f"{name} must have shape [B, T, D] (samples, tokens, dims); got shape {tuple(x.shape)}"
        )
    if x.is_complex():
        raise EstimatorInputError(f"{name} must be real-valued; got dtype {x.dtype}")
    if x.shape[1] < min_tokens:
        raise EstimatorInputError(
            f"{name} has T={x.shape[1]} tokens per sample; this estimator needs at least "
            f"{min_tokens} (use longer windows or a smaller skip_first)"
        )
    if x.shape[2] < 1:
        raise EstimatorInputError(f"{name} has D=0 dimensions; need at least 1")
    return x.detach().float()


def _bad_samples(x: Tensor) -> Tensor:
    """[B] bool: True where the sample holds any non-finite entry."""
    # A sum over a sample is non-finite iff it holds NaN/inf (or overflows float32, which
    # hidden states never approach); a plain reduction makes no [B, T, D] temporary.
    return ~torch.isfinite(x.sum(dim=(1, 2)))


def _nan_where(bad: Tensor, h: Tensor) -> Tensor:
    return torch.where(bad, torch.full_like(h, float("nan")), h)


def _gram_sq_dists(a: Tensor, snap_rel: float = 0.0) -> tuple[Tensor, Tensor]:
    """Squared L2 distances [B, T, T] between the tokens of each sample, and |a_i|^2 [B, T].

    Uses the Gram-matrix identity |a|^2 + |b|^2 - 2 a.b: one batched matmul, where
    computing the differences directly is ~15x slower on CPU. Its rounding error is about
    1e-6 * (|a|^2 + |b|^2): small for tokens shifted to the bulk (``_shift_to_bulk``),
    except between (near-)duplicates. With ``snap_rel`` > 0, entries below
    snap_rel * (|a|^2 + |b|^2), the rounding noise of exact duplicates, are set to exactly
    0. The diagonal is exactly 0. On CUDA this assumes full-precision float32 matmuls
    (PyTorch's default; TF32 would make the error ~1e-3).
    """
    # vector_norm(...)^2 instead of square().sum(): no [B, T, D] temporary, ~10x faster on CPU.
    norms_sq = torch.linalg.vector_norm(a, dim=-1).square()
    norm_sum = norms_sq.unsqueeze(2) + norms_sq.unsqueeze(1)
    sq = torch.baddbmm(norm_sum, a, a.transpose(1, 2), alpha=-2.0).clamp_min_(0.0)
    if snap_rel > 0.0:
        sq.masked_fill_(sq <= norm_sum.mul_(snap_rel), 0.0)
    sq.diagonal(dim1=1, dim2=2).zero_()
    return sq, norms_sq


def _bucket(x: Tensor, bins: int, ws: Workspace, *, scatter: bool | None = None) -> Tensor:
    """bucket_entropy without validation or the non-finite mask; overwrites ws "work".

    Counts with torch.bincount on a CPU (fastest there). ``scatter`` (the default on other
    devices) adds ones by index instead: bincount reads its largest id back to the host,
    a sync that would stall the side stream the capture runs its estimators on.
    """
    n_samples, n_tokens, n_dims = x.shape
    lo = x.amin(dim=1, keepdim=True)
    span = x.amax(dim=1, keepdim=True) - lo
    # A zero span would divide by zero; any finite scale maps (x - lo) == 0 to bin 0.
    scale = bins / torch.where(span > 0, span, torch.ones_like(span))
    # (x - lo) * scale >= 0, so truncating to an integer is the floor. In a sample that
    # holds NaN/inf the cast yields junk (the sample ends up NaN); the clamp keeps it a
    # valid bin id for bincount.
    size = n_samples * n_dims * bins
    id_type = torch.int32 if size < 2**31 else torch.int64
    pos = torch.sub(x, lo, out=ws.take("work", x.shape, x.dtype, x.device)).mul_(scale)
    idx = ws.take("ids", x.shape, id_type, x.device).copy_(pos).clamp_(0, bins - 1)

    # One flat bincount over (sample, dim, bin) ids counts every histogram at once.
    offsets = torch.arange(0, size, bins, device=x.device, dtype=id_type)
    flat = idx.add_(offsets.view(n_samples, 1, n_dims)).flatten()
    if scatter is None:
        scatter = x.device.type != "cpu"
    if scatter:
        counts = torch.zeros(size, dtype=id_type, device=x.device)
        counts.index_add_(0, flat, torch.ones_like(flat))
    else:
        counts = torch.bincount(flat, minlength=size)
    p = (counts.view(n_samples, n_dims * bins).float() / n_tokens).clamp_min_(_P_FLOOR)
    return -(p * p.log()).sum(dim=1)


def _shift_to_bulk(x: Tensor, out: Tensor | None = None) -> Tensor:
    """x minus, per sample, the token nearest the mean [B, T, D] (written to ``out`` if given).

    Gram-matrix distances are accurate near the origin. The mean itself is a poor origin
    when one huge attention-sink token drags it far from every other token; the token
    nearest the mean sits in the bulk whatever the outliers.
    """
    mean = x.mean(dim=1, keepdim=True)  # [B, 1, D]
    # |x_i - m|^2 = |x_i|^2 - 2 x_i.m + const: only the argmin is needed.
    # (bmm rather than vecdot: a matrix-vector product needs no [B, T, D] temporary.)
    to_mean = torch.linalg.vector_norm(x, dim=-1).square() - 2.0 * torch.bmm(
        x, mean.transpose(1, 2)).squeeze(-1)
    ref = to_mean.argmin(dim=1).view(-1, 1, 1).expand(-1, 1, x.shape[2])
    return torch.sub(x, torch.gather(x, 1, ref), out=out)


def _kth_smallest(t: Tensor, rank: int, *, use_numpy: bool | None = None) -> Tensor:
    """The rank-th smallest value (1-based) along the last dim: [..., M] -> [...].

    On a CPU, numpy's introselect (np.partition) is 3-5x faster than torch.kthvalue,
    which also tracks indices; elsewhere torch.kthvalue runs on the device.
    """
    if use_numpy is None:
        use_numpy = t.device.type == "cpu"
    if use_numpy:
        part = np.partition(t.detach().contiguous().numpy(), rank - 1, axis=-1)
        return torch.from_numpy(part[..., rank - 1].copy())
    return t.kthvalue(rank, dim=-1).values


def _knn(x: Tensor, shifted: Tensor, knn_k: int, *, sparse_fix: bool | None = None) -> Tensor:
    """knn_entropy from x and ``_shift_to_bulk(x)``, without validation or the mask.

    The knn_k-th neighbour distance comes from Gram-matrix distances of the shifted tokens.
    Where that distance is small next to the token's norm (exact or near duplicates,
    where the Gram form's rounding would dominate), r is recomputed from the difference
    of the two tokens, so it keeps full float32 accuracy (an exact duplicate gives
    exactly 0). With r^2 <= tol * |a|^2 as the test, an unflagged distance is accurate to
    ~1e-5 whatever the neighbour's norm: if |b| > 2|a| then r^2 >= |b|^2 / 4 anyway.
    ``sparse_fix`` (the default on CPU) finds the neighbours of only those rows;
    otherwise every row's neighbour is found and recomputed, with no host sync on GPUs.
    """
    n_samples, n_tokens, n_dims = x.shape
    sq, norms_sq = _gram_sq_dists(shifted)
    sq.diagonal(dim1=1, dim2=2).fill_(float("inf"))
    if sparse_fix is None:
        sparse_fix = x.device.type == "cpu"
    if sparse_fix:
        r2 = _kth_smallest(sq, knn_k)  # [B, T]
        r = r2.sqrt()
        b, i = (r2 <= _EXACT_REL * norms_sq).nonzero(as_tuple=True)
        if b.numel():
            nb = sq[b, i].kthvalue(knn_k, dim=-1).indices
            r[b, i] = torch.linalg.vector_norm(x[b, i] - x[b, nb], dim=-1)
    else:
        kth = sq.kthvalue(knn_k, dim=-1)
        neighbour = torch.gather(x, 1, kth.indices.unsqueeze(-1).expand(-1, -1, n_dims))
        exact = torch.linalg.vector_norm(x - neighbour, dim=-1)
        r = torch.where(kth.values <= _EXACT_REL * norms_sq, exact, kth.values.sqrt())

    const = (
        0.5 * n_dims * math.log(math.pi)
        - math.lgamma(0.5 * n_dims + 1.0)
        + math.log(n_tokens)
        - math.log(knn_k)
    )
    return n_dims * (r + _LOG_EPS).log().mean(dim=1) + const


def _renyi(shifted: Tensor, alpha: float, ws: Workspace) -> Tensor:
    """renyi_entropy from ``_shift_to_bulk(x)``, without validation or the mask.

    ``shifted`` is overwritten (scaled in place), and so is ws "square". Distances are
    shift-invariant, so the z-scored tokens' distances are those of shifted / (std + 1e-10),
    whose Gram form stays accurate when an attention sink squeezes every other token into a
    tiny z-space cluster.

    The T*T distance matrix is symmetric with a zero diagonal, so both the median and the
    kernel mean are taken over the T(T-1)/2 pairs above the diagonal: sorted, the T*T
    entries are the T diagonal zeros followed by each pair's value twice, and the mean
    is (T + 2 * sum over pairs of K^(alpha-1)) / T^2 (K = 1 on the diagonal).
    """
    n_samples, n_tokens, _ = shifted.shape
    # The variance from the shifted tokens' moments: the shift is a typical token, so its
    # mean stays comparable to the spread and the subtraction loses no useful precision.
    mean = shifted.mean(dim=1, keepdim=True)
    square = torch.square(shifted, out=ws.take("square", shifted.shape, shifted.dtype,
                                                  shifted.device))
    var = square.mean(dim=1, keepdim=True).sub_(mean.square()).clamp_min_(0.0)
    z = shifted.mul_(1.0 / (var.sqrt_() + _STD_EPS))
    # Snapping duplicates to 0 changes no kernel entry by more than ~1e-5 and makes
    # sigma == 0 (and H = 0 for identical tokens) exact rather than rounding noise.
    sq, _ = _gram_sq_dists(z, snap_rel=_SNAP_REL)
    rows, cols = torch.triu_indices(n_tokens, n_tokens, 1, device=z.device)
    pairs = sq.flatten(1).index_select(1, rows * n_tokens + cols)  # [B, T(T-1)/2]

    middle = (n_tokens * n_tokens - 1) // 2  # torch.median's (lower) middle position
    if middle < n_tokens:  # the middle entry is a diagonal zero
        sigma_sq = torch.zeros(n_samples, 1, device=z.device)
    else:
        sigma_sq = _kth_smallest(pairs, (middle - n_tokens) // 2 + 1).unsqueeze(1)
    positive = sigma_sq > 0
    # K^(alpha-1) = exp((alpha-1) * max(-d^2 / (2 sigma^2), log 1e-10)); for sigma == 0,
    # the limit: 1 where d == 0 and the floor elsewhere.
    log_k = (pairs / (-2.0 * torch.where(positive, sigma_sq, torch.ones_like(sigma_sq))))
    log_k = torch.where(positive, log_k, torch.where(pairs == 0, 0.0, _LOG_K_FLOOR))
    kernel_pow = log_k.clamp_min_(_LOG_K_FLOOR).mul_(alpha - 1.0).exp_()
    mean = (n_tokens + 2.0 * kernel_pow.sum(dim=1)) / (n_tokens * n_tokens)
    return mean.log() / (1.0 - alpha)


def bucket_entropy(x: Tensor, bins: int) -> Tensor:
    """Histogram entropy summed over dimensions.

    For each sample b and dimension d, split [min_t x[b,t,d], max_t x[b,t,d]] into ``bins``
    equal-width bins (a value equal to the max goes into the last bin), count the T tokens
    per bin, p = max(count / T, 1e-10), and

        H_b = sum_d ( -sum_bins p log p ).

    A constant dimension (max == min) puts every token in the first bin: entropy 0 apart
    from the 1e-10 floor of the empty bins (about 2.3e-9 each).

    Shapes: x [B, T, D] -> [B] float32.
    """
    _check_bins(bins)
    x = _as_states(x)
    return _nan_where(_bad_samples(x), _bucket(x, bins, Workspace()))


def knn_entropy(x: Tensor, knn_k: int) -> Tensor:
    """Kozachenko-Leonenko nearest-neighbour entropy, in the research code's form.

    With r_i the L2 distance from token i to its knn_k-th nearest *other* token of the same
    sample (self is excluded; exact duplicates count, at distance 0),

        H_b = D * mean_i log(r_i + 1e-10) + (D/2) log(pi) - lgamma(D/2 + 1) + log T - log knn_k.

    This uses log knn_k where the textbook estimator has digamma(knn_k); the difference,
    log knn_k - digamma(knn_k) ~ 1/(2 knn_k), is a constant offset that cancels in
    H(Y) - H(X).

    Distances come from the Gram matrix of the tokens shifted to the bulk; pairs much
    closer than their norms (duplicates) get their distance recomputed directly, so an
    exact duplicate gives exactly 0.

    Shapes: x [B, T, D] -> [B] float32. Needs 1 <= knn_k <= T - 1.
    """
    _check_knn_k(knn_k)
    x = _as_states(x, min_tokens=2)
    _check_knn_k_below_tokens(knn_k, x.shape[1])
    return _nan_where(_bad_samples(x), _knn(x, _shift_to_bulk(x), knn_k))


def renyi_entropy(x: Tensor, alpha: float) -> Tensor:
    """Renyi entropy of order alpha from a Gaussian kernel matrix.

    Per sample: z-score each dimension over the T tokens, z = (x - mean) / (std + 1e-10)
    with the *biased* std (divide by T). d_ij is the L2 distance between z_i and z_j over
    all T*T pairs, the zero diagonal included; sigma is the median of those T*T entries
    (torch.median: the lower middle value when T*T is even). Then

        K_ij = max(exp(-d_ij^2 / (2 sigma^2)), 1e-10)
        H_b  = log(mean_ij K_ij^(alpha - 1)) / (1 - alpha).

    Biased or unbiased std makes no difference beyond the 1e-10: it rescales every d_ij
    by the same factor, and so sigma too. If sigma == 0 (at least half of the entries are
    zero, e.g. all tokens identical), K takes its sigma -> 0 limit: 1 where d_ij == 0 and
    the 1e-10 floor elsewhere. Identical tokens therefore give H = 0.

    Shapes: x [B, T, D] -> [B] float32. Needs alpha > 0, alpha != 1.
    """
    alpha = _check_alpha(alpha)
    x = _as_states(x)
    return _nan_where(_bad_samples(x), _renyi(_shift_to_bulk(x), alpha, Workspace()))


def entropies(
    x: Tensor, *, bins: int, knn_k: int, renyi_alpha: float, workspace: Workspace | None = None
) -> Tensor:
    """bucket, knn and renyi entropies of the same states, in one call.

    Equal (up to float32 rounding) to stacking ``bucket_entropy(x, bins)``,
    ``knn_entropy(x, knn_k)`` and ``renyi_entropy(x, renyi_alpha)``, but the three share
    the float32 copy, the shift that keeps Gram distances accurate and the non-finite
    check, which makes this the one to call on every captured point. Pass the same
    ``workspace`` to repeated calls to reuse its scratch memory.

    Shapes: x [B, T, D] -> [3, B] float32 (rows in ESTIMATOR_NAMES order).
    """
    _check_bins(bins)
    _check_knn_k(knn_k)
    alpha = _check_alpha(renyi_alpha)
    x = _as_states(x, min_tokens=2)
    _check_knn_k_below_tokens(knn_k, x.shape[1])
    ws = workspace if workspace is not None else Workspace()
    h_bucket = _bucket(x, bins, ws)
    # The bucket's scratch "work" is free again: it takes the shifted tokens.
    shifted = _shift_to_bulk(x, out=ws.take("work", x.shape, x.dtype, x.device))
    h_knn = _knn(x, shifted, knn_k)
    h_renyi = _renyi(shifted, alpha, ws)  # last: it overwrites shifted
    return _nan_where(_bad_samples(x), torch.stack((h_bucket, h_knn, h_renyi)))


def _check_bins(bins) -> None:
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
        raise EstimatorInputError(f"bins must be a positive integer; got {bins!r}")


def _check_knn_k(knn_k) -> None:
    if isinstance(knn_k, bool) or not isinstance(knn_k, int) or knn_k < 1:
        raise EstimatorInputError(f"knn_k must be a positive integer; got {knn_k!r}")


def _check_knn_k_below_tokens(knn_k: int, n_tokens: int) -> None:
    if knn_k >= n_tokens:
        raise EstimatorInputError(
            f"knn_k={knn_k} must be smaller than the tokens per sample (T={n_tokens}); "
            "lower knn_k, use longer windows or a smaller skip_first"
        )


def _check_alpha(alpha) -> float:
    alpha = float(alpha)
    if not math.isfinite(alpha) or alpha <= 0.0 or alpha == 1.0:
        raise EstimatorInputError(f"renyi_alpha must be finite, > 0 and not 1; got {alpha}")
    return alpha


def cosine_importance(x: Tensor, y: Tensor) -> Tensor:
    """Cosine baseline (ShortGPT Block Influence / LLMDrop), not an entropy.

        importance_b = 1 - mean_t cos(x[b,t], y[b,t]),
        cos(u, v) = u.v / (max(|u|, 1e-8) * max(|v|, 1e-8)),

    so a zero vector has cosine 0 with anything. Range [0, 2]; 0 means Y == X up to scale.

    Shapes: x [B, T, D], y [B, T, D] -> [B] float32.
    """
    return cosine_from_parts(*_pair_parts(x, y))


def _pair_parts(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Checked per-token dot products x_t.y_t and norms |x_t|, |y_t| of two points on the
    residual stream: what the cosine and the angular distance are built from.

    Shapes: x [B, T, D], y [B, T, D] -> three [B, T] float32.
    """
    x = _as_states(x, "x")
    y = _as_states(y, "y")
    if x.shape != y.shape:
        raise EstimatorInputError(
            f"x and y must have the same shape [B, T, D]; got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    return (torch.linalg.vecdot(x, y, dim=-1), torch.linalg.vector_norm(x, dim=-1),
            torch.linalg.vector_norm(y, dim=-1))


def cosine_from_parts(dots: Tensor, norm_x: Tensor, norm_y: Tensor) -> Tensor:
    """``cosine_importance`` from per-token dot products x_t.y_t and norms |x_t|, |y_t|.

        importance_b = 1 - mean_t dots[b,t] / (max(norm_x[b,t], 1e-8) * max(norm_y[b,t], 1e-8))

    Lets a caller that needs each point's norms for several pairs compute them once.
    A NaN/inf entry in x or y makes its token's dot product NaN or inf and its norm inf
    or NaN, so the ratio, and the sample's importance, is NaN without a separate check.

    Shapes: dots, norm_x, norm_y [B, T] float32 -> [B] float32.
    """
    # Dividing the [B, T] dot products, not the [B, T, D] vectors, saves two full copies.
    return 1.0 - (dots / (norm_x.clamp_min(_COS_EPS) * norm_y.clamp_min(_COS_EPS))).mean(dim=1)


def angular_distance(x: Tensor, y: Tensor) -> Tensor:
    """Angular distance between two points on the residual stream (Gromov et al., "The
    Unreasonable Ineffectiveness of the Deeper Layers", 2024), not an entropy.

        d_b = (1/T) sum_t arccos(clamp(cos(x[b,t], y[b,t]), -1, 1)) / pi,

    with cos as in `cosine_importance` (a zero vector has cosine 0, so distance 1/2).
    Range [0, 1]: 0 when Y == X up to a positive scale, 1/2 for orthogonal tokens, 1 for
    opposite ones. With x = Z_l and y = Z_{l+n} it scores the span of n layers l..l+n-1.

    Shapes: x [B, T, D], y [B, T, D] -> [B] float32.
    """
    return angular_from_parts(*_pair_parts(x, y))


def angular_from_parts(dots: Tensor, norm_x: Tensor, norm_y: Tensor) -> Tensor:
    """``angular_distance`` from per-token dot products and norms (see `cosine_from_parts`).

    The cosine is clamped to [-1, 1] before arccos: rounding can push |cos| of parallel
    tokens just past 1, where arccos is NaN. NaN/inf inputs still give NaN.

    Shapes: dots, norm_x, norm_y [B, T] float32 -> [B] float32.
    """
    cos = dots / (norm_x.clamp_min(_COS_EPS) * norm_y.clamp_min(_COS_EPS))
    return (torch.arccos(cos.clamp(-1.0, 1.0)) / math.pi).mean(dim=1)


def nonfinite_count(x: Tensor) -> Tensor:
    """Number of NaN / +-inf entries per sample.

    Shapes: x [B, T, D] (any float dtype) -> [B] int64. Counts are integers, so this is
    the one function here that does not return float32.
    """
    if not isinstance(x, Tensor) or x.dim() != 3:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x)
        raise EstimatorInputError(f"x must be a tensor of shape [B, T, D]; got {shape}")
    return (~torch.isfinite(x.detach())).flatten(1).sum(dim=1)


def entropy(
    name: EstimatorName,
    x: Tensor,
    *,
    bins: int = 20,
    knn_k: int = 25,
    renyi_alpha: float = 4.0,
) -> Tensor:
    """Run the estimator called ``name`` ("bucket", "knn" or "renyi") on x [B, T, D] -> [B].

    Only the parameter of the chosen estimator is used; the defaults match
    ``EstimatorSettings``.
    """
    if name == "bucket":
        return bucket_entropy(x, bins)
    if name == "knn":
        return knn_entropy(x, knn_k)
    if name == "renyi":
        return renyi_entropy(x, renyi_alpha)
    raise EstimatorInputError(
        f"unknown entropy estimator {name!r}; choose one of {', '.join(ESTIMATOR_NAMES)}"
    )
