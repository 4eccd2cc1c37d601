"""Entropy estimators and the cosine baseline, as pure batched tensor functions.

Every function takes hidden states ``x`` of shape [B, N, D] (B samples, N tokens, D dims),
computes in float32 on ``x``'s device whatever the input dtype, and returns a float32
tensor of shape [B]: one value per sample. Nothing loops over tokens or dimensions in
Python; the estimators run on every captured hidden state of a forward pass.

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

import torch
from torch import Tensor

EstimatorName = Literal["bucket", "knn", "renyi"]
ESTIMATOR_NAMES: tuple[EstimatorName, ...] = ("bucket", "knn", "renyi")

_P_FLOOR = 1e-10
_LOG_EPS = 1e-10
_STD_EPS = 1e-10
_K_FLOOR = 1e-10
_COS_EPS = 1e-8
_SNAP_REL = 1e-5


class EstimatorInputError(ValueError):
    """Bad input to an estimator; the message names the argument and how to fix it."""


def _as_states(x: Tensor, name: str = "x", min_tokens: int = 1) -> Tensor:
    """Check the [B, N, D] shape and return a detached float32 view/copy."""
    if not isinstance(x, Tensor):
        raise EstimatorInputError(
            f"{name} must be a torch.Tensor of shape [B, N, D]; got {type(x)}"
        )
    if x.dim() != 3:
        raise EstimatorInputError(
            f"{name} must have shape [B, N, D] (samples, tokens, dims); got shape {tuple(x.shape)}"
        )
    if x.is_complex():
        raise EstimatorInputError(f"{name} must be real-valued; got dtype {x.dtype}")
    if x.shape[1] < min_tokens:
        raise EstimatorInputError(
            f"{name} has N={x.shape[1]} tokens per sample; this estimator needs at least "
            f"{min_tokens} (use longer windows or a smaller skip_first)"
        )
    if x.shape[2] < 1:
        raise EstimatorInputError(f"{name} has D=0 dimensions; need at least 1")
    return x.detach().float()


def _bad_samples(x: Tensor) -> Tensor:
    """[B] bool: True where the sample holds any non-finite entry."""
    # A sum over a sample is non-finite iff it holds NaN/inf (or overflows float32, which
    # hidden states never approach); a plain reduction makes no [B, N, D] temporary.
    return ~torch.isfinite(x.sum(dim=(1, 2)))


def _nan_where(bad: Tensor, h: Tensor) -> Tensor:
    return torch.where(bad, torch.full_like(h, float("nan")), h)


def _pairwise_sq_dists(x: Tensor, snap_rel: float = 0.0) -> Tensor:
    """Squared L2 distances [B, N, N] between the tokens of each sample, in float32.

    Uses the Gram-matrix identity |a|^2 + |b|^2 - 2 a.b: one batched matmul, where
    computing the differences directly is ~15x slower on CPU. Its rounding error is about
    1e-6 * (|a|^2 + |b|^2), so the tokens are first shifted so that the bulk of them sits
    near the origin: the reference is the token nearest the mean, not the mean itself,
    which one huge attention-sink token drags far from every other token. The diagonal
    is exactly 0. With ``snap_rel`` > 0, entries below snap_rel * (|a|^2 + |b|^2) (the
    rounding noise of exact duplicates) are set to exactly 0. On CUDA this assumes
    full-precision float32 matmuls (PyTorch's default; TF32 would make the error ~1e-3).
    """
    # |x_i - m|^2 = |x_i|^2 - 2 x_i.m + const: only the argmin is needed, and this form
    # avoids two [B, N, D] temporaries.
    mean = x.mean(dim=1, keepdim=True)  # [B, 1, D]
    # vector_norm(...)^2 instead of square().sum(): no [B, N, D] temporary, ~10x faster on CPU.
    norms_sq = torch.linalg.vector_norm(x, dim=-1).square()
    to_mean = norms_sq - 2.0 * torch.bmm(x, mean.transpose(1, 2)).squeeze(-1)
    ref = to_mean.argmin(dim=1).view(-1, 1, 1).expand(-1, 1, x.shape[2])
    xc = x - torch.gather(x, 1, ref)
    sq_norm = torch.linalg.vector_norm(xc, dim=-1).square()
    norm_sum = sq_norm.unsqueeze(2) + sq_norm.unsqueeze(1)
    sq = torch.baddbmm(norm_sum, xc, xc.transpose(1, 2), alpha=-2.0).clamp_min_(0.0)
    if snap_rel > 0.0:
        sq = sq.masked_fill_(sq <= snap_rel * norm_sum, 0.0)
    sq.diagonal(dim1=1, dim2=2).zero_()
    return sq


def bucket_entropy(x: Tensor, bins: int) -> Tensor:
    """Histogram entropy summed over dimensions.

    For each sample b and dimension d, split [min_t x[b,t,d], max_t x[b,t,d]] into ``bins``
    equal-width bins (a value equal to the max goes into the last bin), count the N tokens
    per bin, p = max(count / N, 1e-10), and

        H_b = sum_d ( -sum_bins p log p ).

    A constant dimension (max == min) puts every token in the first bin: entropy 0 apart
    from the 1e-10 floor of the empty bins (about 2.3e-9 each).

    Shapes: x [B, N, D] -> [B] float32.
    """
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
        raise EstimatorInputError(f"bins must be a positive integer; got {bins!r}")
    x = _as_states(x)
    bad = _bad_samples(x)
    n_samples, n_tokens, n_dims = x.shape

    lo = x.amin(dim=1, keepdim=True)
    span = x.amax(dim=1, keepdim=True) - lo
    # A zero span would divide by zero; any finite scale maps (x - lo) == 0 to bin 0.
    scale = bins / torch.where(span > 0, span, torch.ones_like(span))
    # Non-finite positions only occur in samples that end up NaN; 0 keeps indices valid.
    pos = (x - lo).mul_(scale).nan_to_num_(nan=0.0, posinf=0.0, neginf=0.0)
    # int32 ids halve the memory traffic of the cast and of bincount when they fit.
    id_type = torch.int32 if n_samples * n_dims * bins < 2**31 else torch.int64
    idx = pos.floor_().clamp_(0, bins - 1).to(id_type)

    # One flat bincount over (sample, dim, bin) ids counts every histogram at once.
    offsets = torch.arange(0, n_samples * n_dims * bins, bins, device=x.device, dtype=id_type)
    flat = idx.add_(offsets.view(n_samples, 1, n_dims)).flatten()
    counts = torch.bincount(flat, minlength=n_samples * n_dims * bins)
    p = (counts.view(n_samples, n_dims * bins).float() / n_tokens).clamp_min_(_P_FLOOR)
    h = -(p * p.log()).sum(dim=1)
    return _nan_where(bad, h)


def knn_entropy(x: Tensor, k: int) -> Tensor:
    """Kozachenko-Leonenko k-nearest-neighbour entropy, in the research code's form.

    With r_i the L2 distance from token i to its k-th nearest *other* token of the same
    sample (self is excluded; exact duplicates count, at distance 0),

        H_b = D * mean_i log(r_i + 1e-10) + (D/2) log(pi) - lgamma(D/2 + 1) + log N - log k.

    This uses log k where the textbook estimator has digamma(k); the difference,
    log k - digamma(k) ~ 1/(2k), is a constant offset that cancels in H(Y) - H(X).

    The neighbour is chosen from Gram-matrix distances and its distance is then recomputed
    directly from the difference of the two tokens, so r_i keeps full float32 accuracy
    (an exact duplicate gives exactly 0).

    Shapes: x [B, N, D] -> [B] float32. Needs 1 <= k <= N - 1.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise EstimatorInputError(f"knn_k must be a positive integer; got {k!r}")
    x = _as_states(x, min_tokens=2)
    n_samples, n_tokens, n_dims = x.shape
    if k >= n_tokens:
        raise EstimatorInputError(
            f"knn_k={k} must be smaller than the tokens per sample (N={n_tokens}); "
            "lower knn_k, use longer windows or a smaller skip_first"
        )
    bad = _bad_samples(x)

    sq = _pairwise_sq_dists(x)
    sq.diagonal(dim1=1, dim2=2).fill_(float("inf"))
    nb = sq.kthvalue(k, dim=-1).indices  # [B, N]
    neighbour = torch.gather(x, 1, nb.unsqueeze(-1).expand(-1, -1, n_dims))
    r = torch.linalg.vector_norm(x - neighbour, dim=-1)  # [B, N]

    const = (
        0.5 * n_dims * math.log(math.pi)
        - math.lgamma(0.5 * n_dims + 1.0)
        + math.log(n_tokens)
        - math.log(k)
    )
    h = n_dims * (r + _LOG_EPS).log().mean(dim=1) + const
    return _nan_where(bad, h)


def renyi_entropy(x: Tensor, alpha: float) -> Tensor:
    """Renyi entropy of order alpha from a Gaussian kernel matrix.

    Per sample: z-score each dimension over the N tokens, z = (x - mean) / (std + 1e-10)
    with the *biased* std (divide by N). d_ij is the L2 distance between z_i and z_j over
    all N*N pairs, the zero diagonal included; sigma is the median of those N*N entries
    (torch.median: the lower middle value when N*N is even). Then

        K_ij = max(exp(-d_ij^2 / (2 sigma^2)), 1e-10)
        H_b  = log(mean_ij K_ij^(alpha - 1)) / (1 - alpha).

    Biased or unbiased std makes no difference beyond the 1e-10: it rescales every d_ij
    by the same factor, and so sigma too. If sigma == 0 (at least half of the entries are
    zero, e.g. all tokens identical), K takes its sigma -> 0 limit: 1 where d_ij == 0 and
    the 1e-10 floor elsewhere. Identical tokens therefore give H = 0.

    Shapes: x [B, N, D] -> [B] float32. Needs alpha > 0, alpha != 1.
    """
    alpha = float(alpha)
    if not math.isfinite(alpha) or alpha <= 0.0 or alpha == 1.0:
        raise EstimatorInputError(f"renyi_alpha must be finite, > 0 and not 1; got {alpha}")
    x = _as_states(x)
    bad = _bad_samples(x)

    centred = x - x.mean(dim=1, keepdim=True)
    # Spelled out: torch.std over the token dim is ~6x slower on CPU than this.
    std = torch.linalg.vector_norm(centred, dim=1, keepdim=True) / math.sqrt(centred.shape[1])
    z = centred / (std + _STD_EPS)

    # Snapping duplicates to 0 changes no kernel entry by more than ~1e-5 and makes
    # sigma == 0 (and H = 0 for identical tokens) exact rather than rounding noise.
    sq = _pairwise_sq_dists(z, snap_rel=_SNAP_REL)
    sigma = sq.flatten(1).median(dim=1).values.sqrt().view(-1, 1, 1)
    positive = sigma > 0
    safe_sigma = torch.where(positive, sigma, torch.ones_like(sigma))
    kernel = torch.exp(-sq / (2.0 * safe_sigma.square()))
    kernel = torch.where(positive, kernel, (sq == 0).float()).clamp_min_(_K_FLOOR)

    h = kernel.pow_(alpha - 1.0).flatten(1).mean(dim=1).log() / (1.0 - alpha)
    return _nan_where(bad, h)


def cosine_importance(x: Tensor, y: Tensor) -> Tensor:
    """Cosine baseline (ShortGPT Block Influence / LLMDrop), not an entropy.

        importance_b = 1 - mean_t cos(x[b,t], y[b,t]),
        cos(u, v) = u.v / (max(|u|, 1e-8) * max(|v|, 1e-8)),

    so a zero vector has cosine 0 with anything. Range [0, 2]; 0 means Y == X up to scale.

    Shapes: x [B, N, D], y [B, N, D] -> [B] float32.
    """
    x = _as_states(x, "x")
    y = _as_states(y, "y")
    if x.shape != y.shape:
        raise EstimatorInputError(
            f"x and y must have the same shape [B, N, D]; got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    bad = _bad_samples(x) | _bad_samples(y)
    # Dividing the [B, N] dot products, not the [B, N, D] vectors, saves two full copies.
    dots = torch.einsum("bnd,bnd->bn", x, y)
    norms = (torch.linalg.vector_norm(x, dim=-1).clamp_min(_COS_EPS)
             * torch.linalg.vector_norm(y, dim=-1).clamp_min(_COS_EPS))
    return _nan_where(bad, 1.0 - (dots / norms).mean(dim=1))


def nonfinite_count(x: Tensor) -> Tensor:
    """Number of NaN / +-inf entries per sample.

    Shapes: x [B, N, D] (any float dtype) -> [B] int64. Counts are integers, so this is
    the one function here that does not return float32.
    """
    if not isinstance(x, Tensor) or x.dim() != 3:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x)
        raise EstimatorInputError(f"x must be a tensor of shape [B, N, D]; got {shape}")
    return (~torch.isfinite(x.detach())).flatten(1).sum(dim=1)


def entropy(
    name: EstimatorName,
    x: Tensor,
    *,
    bins: int = 20,
    knn_k: int = 25,
    renyi_alpha: float = 4.0,
) -> Tensor:
    """Run the estimator called ``name`` ("bucket", "knn" or "renyi") on x [B, N, D] -> [B].

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
