"""Typed settings shared by the library, the CLI and the dashboard.

Every field is documented; the UI and the CLI build the same objects.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

from analysis.errors import EntroDropError

Device = Literal["auto", "cpu", "cuda", "mps"]
DType = Literal["auto", "float32", "bfloat16", "float16"]
Granularity = Literal["layer", "attn"]
"""The two kinds of block every analysis measures (SPEC: blocks and the residual stream)."""
LoadMode = Literal["auto", "memory", "stream"]
"""memory: the whole model in memory; stream: one decoder layer at a time (models larger
than memory); auto: stream only when the weights do not fit in the free memory."""
Estimator = Literal["bucket", "knn", "renyi"]
Score = Literal["bucket", "knn", "renyi", "cosine", "angular"]
"""A per-block score held by a profile: an estimator's delta_h, the cosine importance, or
the angular distance between a block's input and output."""

DEVICES: tuple[Device, ...] = ("auto", "cpu", "cuda", "mps")
DTYPES: tuple[DType, ...] = ("auto", "float32", "bfloat16", "float16")
LOAD_MODES: tuple[LoadMode, ...] = ("auto", "memory", "stream")
ESTIMATORS: tuple[Estimator, ...] = ("bucket", "knn", "renyi")
SCORES: tuple[Score, ...] = (*ESTIMATORS, "cosine", "angular")
GRANULARITIES: tuple[Granularity, ...] = ("layer", "attn")

# Defaults, defined once: the CLI, the dashboard and the library read them from here.
DEFAULT_MODEL = "demo:smollm2-135m"
DEFAULT_CALIBRATION = "builtin:licenses"
DEFAULT_SEED = 2024
"""The research code's sampler seed."""
DEFAULT_BINS = 20
"""Histogram bins of the research code for Llama (its Mistral variant uses 80)."""
DEFAULT_KNN_K = 25
DEFAULT_RENYI_ALPHA = 4.0
DEFAULT_SKIP_FIRST = 1
DEFAULT_BATCH_SIZE = 4
# N windows of T tokens. A GPU affords the research code's 128 x 256; a CPU gets a set
# that analyses SmolLM2-135M in seconds.
DEFAULT_SAMPLES = {"cpu": 32, "gpu": 128}
MAX_SEED = 2**63 - 1
"""Seeds become signed 64-bit integers (torch generators); larger ones overflow."""
MAX_TOKENS = 2**31 - 1
"""Most N x T tokens in one calibration set: beyond it 32-bit token counts overflow."""
RENYI_ALPHA_MIN_GAP = 1e-3
"""|alpha - 1| below this makes the Renyi entropy 0/0 in floating point."""
DEFAULT_SEQLEN = {"cpu": 128, "gpu": 256}


def default_samples(on_gpu: bool) -> int:
    """N, the default number of calibration windows on this kind of device."""
    return DEFAULT_SAMPLES["gpu" if on_gpu else "cpu"]


def default_seqlen(on_gpu: bool) -> int:
    """T, the default tokens per calibration window on this kind of device."""
    return DEFAULT_SEQLEN["gpu" if on_gpu else "cpu"]


SPEED_PROMPT_LEN = 128
"""Tokens of the random prompt a speed timing prefills (transformers and llama.cpp)."""


def speed_prompt_len(seqlen: int) -> int:
    """The prompt a speed timing prefills when the calibration windows hold `seqlen` (T)
    tokens: SPEED_PROMPT_LEN, or T when shorter, so a timing asks for no longer a context
    than the analysis ran."""
    return min(SPEED_PROMPT_LEN, int(seqlen))


class SettingsError(EntroDropError):
    """A setting is out of range; the message names the field and the allowed range."""


@dataclass(frozen=True)
class ModelSettings:
    spec: str = DEFAULT_MODEL
    """`demo:<name>`, a local HF folder, a local `.gguf` file, or a hub id."""
    device: Device = "auto"
    """`auto` picks cuda, then mps, then cpu."""
    dtype: DType = "auto"
    """`auto`: bf16 on GPUs that support it, fp16 on other GPUs, fp32 on CPU."""
    trust_remote_code: bool = False
    """Run a model's own Python code. Off unless the user asks for it, per model."""
    device_map_auto: bool = False
    """Spread a model larger than one GPU with accelerate's `device_map="auto"`."""
    load: LoadMode = "auto"
    """Whole model in memory, or layer streaming; `auto` streams when it would not fit."""

    def validate(self) -> ModelSettings:
        if not self.spec or not self.spec.strip():
            raise SettingsError("model spec is empty")
        _choice("device", self.device, DEVICES)
        _choice("dtype", self.dtype, DTYPES)
        _choice("load", self.load, LOAD_MODES)
        return self


@dataclass(frozen=True)
class CalibrationSettings:
    spec: str = DEFAULT_CALIBRATION
    """`builtin:<name>`, `preset:<c4|wikitext2|law|medicine>`, or a file path
    (.txt, .jsonl, .csv, .parquet, .npy)."""
    samples: int | None = None
    """N, the number of windows. None: 32 on CPU, 128 on GPU."""
    seqlen: int | None = None
    """T, tokens per window. None: 128 on CPU, 256 on GPU."""
    seed: int = DEFAULT_SEED
    """Seed of the window sampler (the research code uses 2024)."""
    text_column: str | None = None
    """Column holding the text in .jsonl/.csv/.parquet files. None: guess (`text`, ...)."""

    def resolved(self, on_gpu: bool) -> CalibrationSettings:
        """Fill N and T with the device defaults."""
        n = self.samples if self.samples is not None else default_samples(on_gpu)
        t = self.seqlen if self.seqlen is not None else default_seqlen(on_gpu)
        return CalibrationSettings(self.spec, n, t, self.seed, self.text_column).validate()

    def validate(self) -> CalibrationSettings:
        if not self.spec or not self.spec.strip():
            raise SettingsError("calibration spec is empty")
        if self.samples is not None:
            _int_range("samples (N)", self.samples, 1, 100_000)
        if self.seqlen is not None:
            _int_range("seqlen (T)", self.seqlen, 2, 131_072)
        _int_range("seed", self.seed, 0, MAX_SEED)
        if self.samples is not None and self.seqlen is not None \
                and self.samples * self.seqlen > MAX_TOKENS:
            raise SettingsError(
                f"N x T = {self.samples} x {self.seqlen} = {self.samples * self.seqlen} tokens "
                f"is over the {MAX_TOKENS} that one calibration set may hold (token indices "
                "are 32-bit in places); lower samples (N) or seqlen (T)")
        return self


@dataclass(frozen=True)
class EstimatorSettings:
    bins: int = DEFAULT_BINS
    """B, histogram bins per dimension for `bucket` (research code: 20 Llama, 80 Mistral)."""
    knn_k: int = DEFAULT_KNN_K
    """The neighbour used by the `knn` estimator (the k-th nearest other token)."""
    renyi_alpha: float = DEFAULT_RENYI_ALPHA
    """alpha of the Renyi entropy (must not be 1)."""
    skip_first: int = DEFAULT_SKIP_FIRST
    """Positions left out of every statistic (attention sink). 0 reproduces the research code."""
    batch_size: int = DEFAULT_BATCH_SIZE
    """Calibration windows per forward pass."""

    def validate(self, seqlen: int | None = None) -> EstimatorSettings:
        _int_range("bins", self.bins, 2, 10_000)
        _int_range("knn_k", self.knn_k, 1, 10_000)
        if isinstance(self.renyi_alpha, bool) or not isinstance(self.renyi_alpha, (int, float)):
            raise SettingsError(f"renyi_alpha must be a number; got {self.renyi_alpha!r}")
        if not (0.0 < float(self.renyi_alpha) < 1000.0) or float(self.renyi_alpha) == 1.0:
            raise SettingsError(
                f"renyi_alpha must be > 0, < 1000 and not 1; got {self.renyi_alpha}"
            )
        # The tolerance lets the alphas the message suggests (1 +- the gap) through.
        if abs(float(self.renyi_alpha) - 1.0) < RENYI_ALPHA_MIN_GAP * (1 - 1e-9):
            raise SettingsError(
                f"renyi_alpha={self.renyi_alpha} is within {RENYI_ALPHA_MIN_GAP:g} of 1, where "
                "the Renyi entropy 1/(1-alpha) log sum p^alpha degenerates (0/0: every block "
                f"would score 0); use alpha <= {1 - RENYI_ALPHA_MIN_GAP:g} or >= "
                f"{1 + RENYI_ALPHA_MIN_GAP:g}"
            )
        _int_range("skip_first", self.skip_first, 0, 100_000)
        _int_range("batch_size", self.batch_size, 1, 4096)
        if seqlen is not None:
            used = seqlen - self.skip_first
            if used < 2:
                raise SettingsError(
                    f"skip_first={self.skip_first} leaves {used} tokens of T={seqlen}; need >= 2"
                )
            if self.knn_k >= used:
                raise SettingsError(
                    f"knn_k={self.knn_k} must be smaller than the tokens used per sample "
                    f"(T - skip_first = {used})"
                )
        return self

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class AnalysisRequest:
    """Everything that defines one analysis; its fields make up the results-cache key."""

    model: ModelSettings = field(default_factory=ModelSettings)
    calibrations: tuple[CalibrationSettings, ...] = (CalibrationSettings(),)
    estimators: EstimatorSettings = field(default_factory=EstimatorSettings)
    use_cache: bool = True
    """Read and write `cache/profiles/`."""


def _choice(name: str, value: object, allowed: tuple) -> None:
    if value not in allowed:
        raise SettingsError(f"{name} must be one of {', '.join(map(str, allowed))}; got {value!r}")


def _int_range(name: str, value: object, lo: int, hi: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SettingsError(f"{name} must be an integer; got {value!r}")
    if not lo <= value <= hi:
        raise SettingsError(f"{name} must be between {lo} and {hi}; got {value}")
