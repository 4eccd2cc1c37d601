"""Closed-form checks of the entropy estimators and the cosine baseline."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from analysis.estimators import (
    EstimatorInputError,
    _knn,
    _kth_smallest,
    _shift_to_bulk,
    angular_distance,
    bucket_entropy,
    cosine_importance,
    entropies,
    entropy,
    knn_entropy,
    nonfinite_count,
    renyi_entropy,
)

# Each empty bin adds -1e-10 * log(1e-10) ~ 2.3e-9 because of the probability floor.
FLOOR_TERM = -1e-10 * math.log(1e-10)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _uniform_levels(
    n_samples: int, levels: int, repeats: int, dims: int, seed: int
) -> torch.Tensor:
    """[n_samples, levels * repeats, dims]: every dim holds 0..levels-1, each `repeats`
    times, shuffled independently per dim."""
    g = _gen(seed)
    base = torch.arange(levels, dtype=torch.float32).repeat(repeats)
    cols = [base[torch.randperm(base.numel(), generator=g)] for _ in range(n_samples * dims)]
    return torch.stack(cols, dim=-1).view(levels * repeats, n_samples, dims).transpose(0, 1)


def _binary_entropy(p: float) -> float:
    return -(p * math.log(p) + (1 - p) * math.log(1 - p))


# ---------------------------------------------------------------- bucket


def test_bucket_uniform_histogram_gives_d_log_b():
    x = _uniform_levels(n_samples=2, levels=8, repeats=5, dims=6, seed=0)
    h = bucket_entropy(x, bins=8)
    assert h.shape == (2,) and h.dtype == torch.float32
    torch.testing.assert_close(h, torch.full((2,), 6 * math.log(8)), rtol=1e-6, atol=1e-5)


def test_bucket_bins_parameter_is_respected():
    # 8 levels 0..7 over [0, 7]: 4 bins hold two levels each; 16 bins hold one level each
    # (8 empty bins per dim add only the floor term).
    x = _uniform_levels(n_samples=1, levels=8, repeats=3, dims=5, seed=1)
    torch.testing.assert_close(bucket_entropy(x, bins=4), torch.tensor([5 * math.log(4)]))
    torch.testing.assert_close(
        bucket_entropy(x, bins=16), torch.tensor([5 * (math.log(8) + 8 * FLOOR_TERM)])
    )
    torch.testing.assert_close(bucket_entropy(x, bins=1), torch.tensor([0.0]))


def test_bucket_constant_data_gives_zero_without_nan():
    x = torch.full((3, 10, 4), 2.5)
    x[1] = -7.0
    x[2] = 0.0
    h = bucket_entropy(x, bins=20)
    assert torch.isfinite(h).all()
    torch.testing.assert_close(h, torch.full((3,), 4 * 19 * FLOOR_TERM), rtol=0, atol=1e-6)


def test_bucket_two_level_and_one_hot_dimensions():
    n_tokens = 10
    x = torch.zeros(1, n_tokens, 3)
    x[0, n_tokens // 2 :, 0] = 1.0  # half 0, half 1: log 2
    x[0, 0, 1] = 5.0  # one-hot over tokens: binary entropy of 1/T
    # dim 2 stays constant: 0
    expected = math.log(2) + _binary_entropy(1 / n_tokens)
    torch.testing.assert_close(
        bucket_entropy(x, bins=20), torch.tensor([expected]), atol=1e-5, rtol=0
    )


def test_bucket_batch_independence():
    g = _gen(2)
    x = torch.randn(3, 40, 7, generator=g) * torch.tensor([1.0, 50.0, 0.01]).view(3, 1, 1)
    x[1, :, 3] = 4.0  # a constant dim in one sample only
    h = bucket_entropy(x, bins=10)
    for b in range(3):
        torch.testing.assert_close(h[b : b + 1], bucket_entropy(x[b : b + 1], bins=10))


def test_bucket_max_value_falls_in_last_bin():
    # Values 0 and 1 with 2 bins: min goes to bin 0 and max must not overflow past bin 1.
    x = torch.tensor([[[0.0], [1.0], [1.0], [1.0]]])
    torch.testing.assert_close(bucket_entropy(x, bins=2), torch.tensor([_binary_entropy(0.25)]))


# ---------------------------------------------------------------- knn


@pytest.mark.parametrize("dims", [2, 4])
def test_knn_gaussian_matches_closed_form(dims):
    n_tokens, knn_k = 2000, 25
    a = torch.randn(dims, dims, generator=_gen(10 + dims), dtype=torch.float64)
    cov = a @ a.T + 0.5 * torch.eye(dims, dtype=torch.float64)
    chol = torch.linalg.cholesky(cov).float()
    x = torch.randn(4, n_tokens, dims, generator=_gen(20 + dims)) @ chol.T
    h_gauss = 0.5 * (dims * math.log(2 * math.pi * math.e) + torch.logdet(cov).item())
    # The estimator uses log knn_k where Kozachenko-Leonenko has digamma(knn_k), so it sits
    # log knn_k - digamma(knn_k) ~ 1/(2 knn_k) ~ 0.02 below the true entropy, whatever D is
    # (log T - digamma(T) ~ 2.5e-4 is negligible). What is left is the finite-sample
    # bias and noise of KL with knn_k=25, T=2000: over 20 seeds, -0.04 +- 0.03 per sample for
    # D=2 and D=4, so the mean of 4 samples stays well within 0.1.
    shift = math.log(knn_k) - torch.special.digamma(torch.tensor(float(knn_k))).item()
    h = knn_entropy(x, knn_k)
    assert h.shape == (4,)
    assert abs(h.mean().item() - (h_gauss - shift)) < 0.1


def test_knn_scaling_adds_d_log_c():
    x = torch.randn(2, 60, 5, generator=_gen(3))
    c = 3.7
    torch.testing.assert_close(
        knn_entropy(c * x, 4), knn_entropy(x, 4) + 5 * math.log(c), rtol=0, atol=1e-4
    )


def _knn_reference(x: torch.Tensor, knn_k: int) -> np.ndarray:
    """Float64 brute force of the SPEC formula, one sample at a time."""
    out = []
    for sample in x.double().numpy():
        n_tokens, d = sample.shape
        dist = np.sqrt(((sample[:, None, :] - sample[None, :, :]) ** 2).sum(-1))
        np.fill_diagonal(dist, np.inf)
        r = np.sort(dist, axis=1)[:, knn_k - 1]
        out.append(
            d * np.mean(np.log(r + 1e-10))
            + d / 2 * math.log(math.pi)
            - math.lgamma(d / 2 + 1)
            + math.log(n_tokens)
            - math.log(knn_k)
        )
    return np.array(out)


def test_knn_matches_brute_force_with_an_attention_sink_outlier():
    x = torch.randn(2, 50, 16, generator=_gen(4)) * 3 + 200.0
    x[:, 0] *= 150.0  # a sink-like token far from everything
    for knn_k in (1, 5, 25):
        expected = torch.from_numpy(_knn_reference(x, knn_k)).float()
        torch.testing.assert_close(knn_entropy(x, knn_k), expected, rtol=1e-5, atol=1e-4)


def test_knn_exact_duplicates_give_zero_distance():
    # Every token appears twice, far from the origin: with knn_k=1, every r_i is exactly 0,
    # so H = D * log(1e-10) + constants. A Gram-only distance would leave rounding noise.
    half = torch.randn(1, 20, 8, generator=_gen(5)) + 1000.0
    x = torch.cat([half, half], dim=1)
    n_tokens, d = 40, 8
    expected = (
        d * math.log(1e-10) + d / 2 * math.log(math.pi) - math.lgamma(d / 2 + 1)
        + math.log(n_tokens)
    )
    torch.testing.assert_close(knn_entropy(x, 1), torch.tensor([expected]), rtol=1e-6, atol=1e-3)


def test_knn_excludes_self():
    # Three points on a line at 0, 1, 3: nearest others are 1, 1, 2.
    x = torch.tensor([[[0.0], [1.0], [3.0]]])
    expected = (
        (math.log(1) + math.log(1) + math.log(2)) / 3
        + 0.5 * math.log(math.pi)
        - math.lgamma(1.5)
        + math.log(3)
    )
    torch.testing.assert_close(knn_entropy(x, 1), torch.tensor([expected]), rtol=1e-6, atol=1e-6)


def test_kth_smallest_numpy_and_torch_paths_agree():
    t = torch.randint(0, 6, (3, 7, 20), generator=_gen(43)).float()  # many ties
    t[:, :, 0] = float("inf")
    for rank in (1, 4, 19, 20):
        expected = torch.sort(t, dim=-1).values[..., rank - 1]
        for use_numpy in (True, False):
            got = _kth_smallest(t, rank, use_numpy=use_numpy)
            assert got.shape == (3, 7) and got.dtype == torch.float32
            torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("sparse_fix", [True, False])
def test_knn_recompute_paths_agree_on_duplicates_and_near_pairs(sparse_fix):
    # Exact duplicates, near duplicates (1e-4 apart on a background of norm ~1e3) and
    # ordinary tokens: the CPU (sparse) and GPU (dense) recomputation give the brute force.
    base = torch.randn(2, 30, 12, generator=_gen(40)) * 5 + 300.0
    base[:, 10:15] = base[:, 0:5]
    base[:, 15:20] = base[:, 5:10] + 1e-4
    for knn_k in (1, 3, 8):
        x = base.clone()
        got = _knn(x, _shift_to_bulk(x), knn_k, sparse_fix=sparse_fix)
        expected = torch.from_numpy(_knn_reference(x, knn_k)).float()
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-3)


# ---------------------------------------------------------------- renyi


def _renyi_reference(sample: np.ndarray, alpha: float) -> float:
    """Float64 numpy version of the SPEC formula for one [T, D] sample."""
    z = (sample - sample.mean(0)) / (sample.std(0) + 1e-10)
    dist = np.sqrt(((z[:, None, :] - z[None, :, :]) ** 2).sum(-1))
    sigma = np.median(dist)  # T*T is odd here, so no lower/upper-middle ambiguity
    kern = np.maximum(np.exp(-(dist**2) / (2 * sigma**2)), 1e-10)
    return float(np.log(np.mean(kern ** (alpha - 1))) / (1 - alpha))


@pytest.mark.parametrize("alpha", [4.0, 2.0, 0.5])
def test_renyi_tiny_case_matches_numpy(alpha):
    sample = np.array([[0.0, 1.0], [2.0, -1.0], [5.0, 0.5]])
    x = torch.tensor(sample, dtype=torch.float32).unsqueeze(0)
    expected = _renyi_reference(sample, alpha)
    torch.testing.assert_close(
        renyi_entropy(x, alpha), torch.tensor([expected], dtype=torch.float32), rtol=1e-5, atol=1e-5
    )


def test_renyi_larger_case_matches_numpy():
    x = torch.randn(2, 31, 6, generator=_gen(6)) * 3 + 200.0  # 31*31 entries: an odd count
    x[:, 0] *= 150.0  # a sink-like outlier token
    expected = [_renyi_reference(s, 4.0) for s in x.double().numpy()]
    torch.testing.assert_close(
        renyi_entropy(x, 4.0), torch.tensor(expected, dtype=torch.float32), rtol=1e-4, atol=1e-5
    )


@pytest.mark.parametrize("n_tokens", [3, 4, 30])  # T = 2: sigma = 0, tested below
def test_renyi_median_is_the_lower_middle_of_all_t_squared_entries(n_tokens):
    # The estimator takes sigma from the pairs above the diagonal; for even T*T it must
    # still be torch.median's lower middle of the full matrix, diagonal zeros included.
    x = torch.randn(3, n_tokens, 5, generator=_gen(41 + n_tokens), dtype=torch.float64)
    z = (x - x.mean(1, keepdim=True)) / (x.std(1, unbiased=False, keepdim=True) + 1e-10)
    d = torch.cdist(z, z)
    sigma = d.flatten(1).median(dim=1).values.view(-1, 1, 1)
    kern = torch.exp(-d.square() / (2 * sigma.square())).clamp_min(1e-10)
    expected = (kern.pow(3.0).flatten(1).mean(1).log() / -3.0).float()
    torch.testing.assert_close(renyi_entropy(x.float(), 4.0), expected, rtol=1e-4, atol=1e-5)


def test_renyi_invariant_to_per_dimension_scale_and_shift():
    x = torch.randn(3, 40, 6, generator=_gen(7))
    scale = torch.tensor([1e-3, 0.5, 2.0, 10.0, 300.0, 1.0])
    shift = torch.tensor([5.0, -2.0, 0.0, 100.0, 1.0, -40.0])
    torch.testing.assert_close(
        renyi_entropy(x * scale + shift, 4.0), renyi_entropy(x, 4.0), rtol=1e-4, atol=1e-5
    )


def test_renyi_identical_tokens_give_zero():
    row = torch.randn(2, 1, 64, generator=_gen(8)) * 10 + 3
    x = row.expand(2, 25, 64).contiguous()
    torch.testing.assert_close(renyi_entropy(x, 4.0), torch.zeros(2), rtol=0, atol=0)


def test_renyi_zero_median_uses_the_sigma_to_zero_limit():
    # Two of three tokens identical: 5 of the 9 pairwise distances are 0, so sigma = 0.
    # In the sigma -> 0 limit K is 1 on the 5 zero distances and the 1e-10 floor on the
    # other 4, so H = log((5 + 4 * 1e-30) / 9) / (1 - 4).
    x = torch.tensor([[[1.0, 2.0], [1.0, 2.0], [4.0, -1.0]]])
    expected = math.log(5 / 9) / -3.0
    h = renyi_entropy(x, 4.0)
    assert torch.isfinite(h).all()
    torch.testing.assert_close(h, torch.tensor([expected]), rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------- cosine


def test_cosine_identical_opposite_orthogonal():
    x = torch.randn(2, 9, 16, generator=_gen(9))
    torch.testing.assert_close(cosine_importance(x, x), torch.zeros(2), rtol=0, atol=1e-6)
    torch.testing.assert_close(cosine_importance(x, -x), torch.full((2,), 2.0), rtol=0, atol=1e-6)
    torch.testing.assert_close(cosine_importance(x, 3.0 * x), torch.zeros(2), rtol=0, atol=1e-6)
    e = torch.eye(4)
    a = e[[0, 1, 2]].unsqueeze(0)
    b = e[[1, 2, 3]].unsqueeze(0)
    torch.testing.assert_close(cosine_importance(a, b), torch.ones(1))


def test_cosine_mixes_tokens_by_mean_and_survives_zero_vectors():
    x = torch.tensor([[[1.0, 0.0], [1.0, 0.0], [0.0, 0.0]]])
    y = torch.tensor([[[1.0, 0.0], [-1.0, 0.0], [1.0, 1.0]]])
    # cosines 1, -1 and 0 (zero vector): 1 - 0 / 3 = 1
    torch.testing.assert_close(cosine_importance(x, y), torch.ones(1))


def test_cosine_shape_mismatch_raises():
    with pytest.raises(EstimatorInputError, match="same shape"):
        cosine_importance(torch.zeros(1, 3, 4), torch.zeros(1, 3, 5))


# ---------------------------------------------------------------- all three at once


@pytest.mark.parametrize("skip_sink", [False, True])
def test_entropies_equal_the_three_estimators(skip_sink):
    x = torch.randn(4, 40, 16, generator=_gen(42)) * 2 + 50.0
    x[:, 10:14] = x[:, 0:4]  # duplicates
    if not skip_sink:
        x[:, 0] *= 200.0  # an attention-sink-like outlier
    x[2, 3, 5] = float("nan")
    got = entropies(x, bins=12, knn_k=4, renyi_alpha=2.5)
    expected = torch.stack((bucket_entropy(x, 12), knn_entropy(x, 4), renyi_entropy(x, 2.5)))
    assert got.shape == (3, 4) and got.dtype == torch.float32
    assert torch.isnan(got[:, 2]).all()
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-5, equal_nan=True)


def test_entropies_validates_every_parameter():
    x = torch.randn(1, 5, 3)
    with pytest.raises(EstimatorInputError, match="bins"):
        entropies(x, bins=0, knn_k=2, renyi_alpha=4.0)
    with pytest.raises(EstimatorInputError, match="knn_k=5 must be smaller"):
        entropies(x, bins=4, knn_k=5, renyi_alpha=4.0)
    with pytest.raises(EstimatorInputError, match="renyi_alpha"):
        entropies(x, bins=4, knn_k=2, renyi_alpha=1.0)


# ---------------------------------------------------------------- non-finite input


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_nonfinite_samples_are_counted_and_give_nan(bad):
    x = torch.randn(3, 30, 8, generator=_gen(11))
    x[1, 4, 2] = bad
    x[1, 7, 0] = bad
    assert nonfinite_count(x).tolist() == [0, 2, 0]
    assert nonfinite_count(x.half()).tolist() == [0, 2, 0]
    clean = x[[0, 2]]
    results = {
        "bucket": (bucket_entropy(x, 10), bucket_entropy(clean, 10)),
        "knn": (knn_entropy(x, 3), knn_entropy(clean, 3)),
        "renyi": (renyi_entropy(x, 4.0), renyi_entropy(clean, 4.0)),
        "cosine": (cosine_importance(x, x + 1.0), cosine_importance(clean, clean + 1.0)),
        "cosine, bad y": (cosine_importance(x + 1.0, x), cosine_importance(clean + 1.0, clean)),
        "cosine, zero y": (cosine_importance(x, torch.zeros_like(x)),
                           cosine_importance(clean, torch.zeros_like(clean))),
    }
    for name, (h, h_clean) in results.items():
        assert torch.isnan(h[1]), name
        torch.testing.assert_close(h[[0, 2]], h_clean, msg=name)


def test_fp16_overflow_is_flagged():
    x = torch.tensor([[[70000.0, 1.0]], [[1.0, 2.0]]]).half()  # 70000 overflows fp16
    assert nonfinite_count(x).tolist() == [1, 0]


# ---------------------------------------------------------------- dtypes and dispatch


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_input_matches_float32_of_same_values(dtype):
    x_low = (torch.randn(2, 40, 12, generator=_gen(12)) * 4).to(dtype)
    y_low = (torch.randn(2, 40, 12, generator=_gen(13)) * 4).to(dtype)
    x32, y32 = x_low.float(), y_low.float()
    pairs = [
        (bucket_entropy(x_low, 20), bucket_entropy(x32, 20)),
        (knn_entropy(x_low, 5), knn_entropy(x32, 5)),
        (renyi_entropy(x_low, 4.0), renyi_entropy(x32, 4.0)),
        (cosine_importance(x_low, y_low), cosine_importance(x32, y32)),
    ]
    for low, ref in pairs:
        assert low.dtype == torch.float32 and low.shape == (2,)
        torch.testing.assert_close(low, ref, rtol=1e-6, atol=1e-6)


def test_dispatcher_routes_to_each_estimator():
    x = torch.randn(2, 30, 5, generator=_gen(14))
    torch.testing.assert_close(entropy("bucket", x, bins=7), bucket_entropy(x, 7))
    torch.testing.assert_close(entropy("knn", x, knn_k=3), knn_entropy(x, 3))
    torch.testing.assert_close(entropy("renyi", x, renyi_alpha=2.0), renyi_entropy(x, 2.0))
    with pytest.raises(EstimatorInputError, match="unknown entropy estimator 'cosine'"):
        entropy("cosine", x)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: bucket_entropy(torch.zeros(4, 5), 10), r"shape \[B, T, D\]"),
        (lambda: bucket_entropy(torch.zeros(1, 5, 2), 0), "bins must be a positive integer"),
        (lambda: knn_entropy(torch.zeros(1, 5, 2), 5), "knn_k=5 must be smaller"),
        (lambda: knn_entropy(torch.zeros(1, 1, 2), 1), "at least 2"),
        (lambda: knn_entropy(torch.zeros(1, 5, 2), 0), "knn_k must be a positive integer"),
        (lambda: renyi_entropy(torch.zeros(1, 5, 2), 1.0), "renyi_alpha"),
        (lambda: renyi_entropy(torch.zeros(1, 5, 2), -2.0), "renyi_alpha"),
        (lambda: nonfinite_count(torch.zeros(5)), r"shape \[B, T, D\]"),
    ],
)
def test_bad_arguments_raise_clear_errors(call, message):
    with pytest.raises(EstimatorInputError, match=message):
        call()


def test_workspace_reuses_memory_and_grows():
    from analysis.estimators import Workspace

    ws = Workspace()
    a = ws.take("work", (2, 3, 4), torch.float32, torch.device("cpu"))
    b = ws.take("work", (2, 3, 4), torch.float32, torch.device("cpu"))
    assert a.data_ptr() == b.data_ptr() and a.shape == (2, 3, 4)
    small = ws.take("work", (1, 3, 4), torch.float32, torch.device("cpu"))
    assert small.data_ptr() == a.data_ptr()  # a smaller request reuses the same memory
    other = ws.take("ids", (2, 3, 4), torch.int32, torch.device("cpu"))
    assert other.data_ptr() != a.data_ptr() and other.dtype == torch.int32
    big = ws.take("work", (4, 3, 4), torch.float32, torch.device("cpu"))
    assert big.shape == (4, 3, 4)


def test_entropies_with_a_reused_workspace_match_fresh_calls():
    from analysis.estimators import Workspace

    ws = Workspace()
    for seed, shape in ((50, (3, 30, 8)), (51, (5, 30, 8)), (52, (2, 30, 8))):
        x = torch.randn(*shape, generator=_gen(seed)) * 3
        fresh = entropies(x, bins=10, knn_k=4, renyi_alpha=4.0)
        reused = entropies(x, bins=10, knn_k=4, renyi_alpha=4.0, workspace=ws)
        torch.testing.assert_close(reused, fresh, rtol=0, atol=0)


def test_bucket_scatter_counts_equal_bincount():
    from analysis.estimators import Workspace, _bucket

    x = torch.randn(3, 50, 7, generator=_gen(53))
    x[1, :, 2] = 4.0  # a constant dimension
    torch.testing.assert_close(_bucket(x, 9, Workspace(), scatter=True),
                               _bucket(x, 9, Workspace(), scatter=False), rtol=0, atol=0)


def test_non_cpu_path_needs_no_data_dependent_host_round_trip():
    # Meta tensors have shapes but no data, so any op that reads values back to the host
    # (.item(), nonzero, bincount's size) raises here; on a GPU such an op would sync the
    # side stream that the capture runs the estimators on.
    x = torch.empty(6, 20, 16, device="meta")
    out = entropies(x, bins=5, knn_k=3, renyi_alpha=4.0)
    assert out.shape == (3, 6) and out.device.type == "meta"
    assert cosine_importance(x, x).shape == (6,)
    assert nonfinite_count(x).shape == (6,)


def test_angular_distance_matches_the_closed_form_on_rotated_tokens():
    # Token t of y is x's token rotated by a known angle theta_t in the plane of the first
    # two axes, and scaled (scale must not matter): d = mean_t theta_t / pi.
    thetas = torch.tensor([[0.0, math.pi / 2, math.pi, math.pi / 3],
                           [math.pi / 4, 0.0, 2 * math.pi / 3, math.pi / 6]])
    x = torch.zeros(2, 4, 5)
    x[..., 0] = 1.0
    y = torch.zeros(2, 4, 5)
    y[..., 0] = 3.0 * torch.cos(thetas)
    y[..., 1] = 3.0 * torch.sin(thetas)
    expected = thetas.mean(dim=1) / math.pi
    torch.testing.assert_close(angular_distance(x, y), expected, atol=1e-6, rtol=0)


def test_angular_distance_is_zero_for_identical_and_one_for_opposite_states():
    x = torch.randn(3, 7, 6, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(angular_distance(x, 2.5 * x), torch.zeros(3), atol=1e-3, rtol=0)
    torch.testing.assert_close(angular_distance(x, -x), torch.ones(3), atol=1e-3, rtol=0)


def test_angular_distance_is_nan_for_non_finite_states_and_rejects_shape_mismatch():
    x = torch.ones(2, 3, 4)
    y = x.clone()
    y[1, 0, 0] = float("nan")
    d = angular_distance(x, y)
    assert d[0] == 0.0 and torch.isnan(d[1])
    with pytest.raises(EstimatorInputError):
        angular_distance(x, torch.ones(2, 3, 5))
