"""Helpers of the reliability tests: CLI subprocesses, and tiny models that misbehave."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from tests.tiny_models import HIDDEN, LAYERS, VOCAB, tiny_model, tiny_tokenizer

REPO = Path(__file__).resolve().parents[2]
# Small enough to be quick, valid for every estimator (knn_k < T - skip_first).
SMALL = ["--samples", "4", "--seqlen", "16", "--bins", "8", "--knn-k", "3",
         "--renyi-alpha", "2", "--device", "cpu"]


def cli_env(cache: Path) -> dict[str, str]:
    """The environment of every CLI subprocess: offline, its own cache and module cache."""
    return {**os.environ, "ENTRODROP_CACHE_DIR": str(cache), "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1", "ENTRODROP_PROGRESS": "0", "OMP_NUM_THREADS": "1",
            # transformers copies trusted remote code here; keep it out of ~/.cache.
            "HF_MODULES_CACHE": str(Path(cache) / "hf_modules")}


def cli_command(args: Sequence[str], quiet: bool = True) -> list[str]:
    return [sys.executable, "-m", "entrodrop.cli", *(["--quiet"] if quiet else []),
            *map(str, args)]


def run_cli(args: Sequence[str], cache: Path, timeout: int = 300,
            quiet: bool = True) -> subprocess.CompletedProcess:
    """`--quiet` keeps stderr to errors and warnings; without it, stderr also says what the
    cache did (ENTRODROP_PROGRESS=0 keeps the progress bar out of a non-terminal stderr)."""
    return subprocess.run(cli_command(args, quiet), capture_output=True, text=True, cwd=REPO,
                          env=cli_env(cache), timeout=timeout)


def run_many(commands: Mapping[str, tuple[Sequence[str], Path]], timeout: int = 300,
             quiet: bool = True) -> dict[str, subprocess.CompletedProcess]:
    """Run several CLI invocations as parallel subprocesses (the start-up dominates)."""
    workers = max(2, min(len(commands), (os.cpu_count() or 2) * 2))
    with ThreadPoolExecutor(workers) as pool:
        futures = {name: pool.submit(run_cli, args, cache, timeout, quiet)
                   for name, (args, cache) in commands.items()}
        return {name: f.result() for name, f in futures.items()}


def assert_user_error(result: subprocess.CompletedProcess, *needles: str) -> str:
    """Exit code 2, exactly one line on stderr naming the problem, no traceback."""
    assert result.returncode == 2, (result.returncode, result.stderr[-3000:])
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, result.stderr[-3000:]
    assert lines[0].startswith("entrodrop "), lines[0]
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def start_paused_cli(args: Sequence[str], cache: Path, *, at: str, nth: int, when: str,
                     flag: Path) -> subprocess.Popen:
    """Start the CLI under `pause_driver`, which stops at the `nth` call of `at`."""
    cmd = [sys.executable, "-m", "tests.reliability.pause_driver", at, str(nth), when,
           str(flag), "--", "--quiet", *map(str, args)]
    return subprocess.Popen(cmd, cwd=REPO, env=cli_env(cache), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_for_flag(proc: subprocess.Popen, flag: Path, timeout: float = 240.0) -> None:
    """Poll until the paused process has written `flag` (fail if it exits first)."""
    deadline = time.monotonic() + timeout
    while not flag.exists():
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"exited with {proc.returncode} before pausing:\n{err[-3000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            proc.communicate()
            raise AssertionError("the process never reached the pause point")
        time.sleep(0.05)


def sigkill(proc: subprocess.Popen) -> None:
    proc.kill()  # SIGKILL on POSIX: no handler, no finally block, no cleanup runs
    proc.communicate(timeout=30)
    assert proc.returncode == -9, proc.returncode


# --------------------------------------------------------------------------- model folders


def copy_folder(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def truncated_safetensors(src: Path, dst: Path) -> Path:
    """A copy of a model folder whose model.safetensors lost its second half."""
    copy_folder(src, dst)
    weights = dst / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    return dst


def unsupported_family(folder: Path) -> Path:
    """A tiny BLOOM model: a causal LM that transformers knows and our table does not."""
    from transformers import BloomConfig, BloomForCausalLM

    torch.manual_seed(0)
    config = BloomConfig(vocab_size=VOCAB, hidden_size=HIDDEN, n_layer=2, n_head=4)
    BloomForCausalLM(config).save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return folder


def remote_code_folder(src: Path, dst: Path, marker: Path) -> Path:
    """A copy of a tiny llama whose config maps AutoModelForCausalLM to a modeling file
    that, when imported, writes `marker` (the proof that remote code ran)."""
    copy_folder(src, dst)
    (dst / "modeling_marked.py").write_text(
        "from pathlib import Path\n"
        f"Path({str(marker)!r}).write_text('remote code ran')\n"
        "from transformers import LlamaForCausalLM\n\n\n"
        "class MarkedLlama(LlamaForCausalLM):\n"
        "    pass\n",
        encoding="utf-8",
    )
    config = json.loads((dst / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_marked.MarkedLlama"}
    (dst / "config.json").write_text(json.dumps(config, indent=2))
    return dst


class _WritesMarker:
    """Unpickling this calls Path.write_text(marker, ...): code execution by pickle."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "pickle ran code"))


def pickle_bin_folder(src: Path, dst: Path, marker: Path | None) -> Path:
    """A model folder whose only weights are a pytorch_model.bin pickle; with `marker`, the
    pickle also holds an object that writes the marker when unpickled."""
    from safetensors.torch import load_file

    dst.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(src / name, dst / name)
    state: dict = dict(load_file(src / "model.safetensors"))
    if marker is not None:
        state["payload"] = _WritesMarker(marker)
    torch.save(state, dst / "pytorch_model.bin")
    return dst


def overflow_folder(folder: Path, layer_idx: int = 1) -> Path:
    """A tiny llama whose MLP in `layer_idx` outputs ~1e6: finite in float32, inf in float16
    (max 65504), so every point from Z_{layer_idx+1} on is non-finite in half precision."""
    model = tiny_model("llama")
    mlp = model.model.layers[layer_idx].mlp
    with torch.no_grad():
        for proj in (mlp.gate_proj, mlp.up_proj, mlp.down_proj):
            proj.weight.mul_(1000.0)
    model.save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return folder


def tiny_gguf(path: Path, seed: int = 0) -> Path:
    """A tiny llama written as an unquantized GGUF file (with a 128-token BPE vocabulary),
    which transformers converts in about a second. Returns the path."""
    import gguf
    import numpy as np

    model = tiny_model("llama", seed=seed)
    cfg = model.config
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny-llama")
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(cfg.num_attention_heads)
    writer.add_head_count_kv(cfg.num_key_value_heads)
    writer.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    writer.add_rope_dimension_count(cfg.head_dim)
    writer.add_rope_freq_base(10000.0)
    writer.add_vocab_size(VOCAB)
    tokens = ["<pad>", "<s>", "</s>", "<unk>", *"abcdefghijklmnopqrstuvwxyz", "Ġ"]
    tokens += [f"t{i}" for i in range(len(tokens), VOCAB)]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types([3] * 4 + [1] * (len(tokens) - 4))
    writer.add_token_scores([0.0] * len(tokens))
    writer.add_token_merges([])
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_pad_token_id(0)
    writer.add_unk_token_id(3)

    def rope_permute(w: np.ndarray, heads: int) -> np.ndarray:
        # llama.cpp stores q/k rows interleaved per head; transformers undoes this on load.
        return w.reshape(heads, 2, w.shape[0] // heads // 2, w.shape[1]).swapaxes(1, 2).reshape(w.shape)

    names = {"model.embed_tokens.weight": "token_embd.weight",
             "model.norm.weight": "output_norm.weight", "lm_head.weight": "output.weight"}
    parts = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
             "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
             "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down",
             "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"}
    for i in range(LAYERS):
        for hf, gg in parts.items():
            names[f"model.layers.{i}.{hf}.weight"] = f"blk.{i}.{gg}.weight"
    for key, tensor in model.state_dict().items():
        w = tensor.numpy().astype(np.float32)
        if "q_proj" in key:
            w = rope_permute(w, cfg.num_attention_heads)
        elif "k_proj" in key:
            w = rope_permute(w, cfg.num_key_value_heads)
        writer.add_tensor(names[key], np.ascontiguousarray(w))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


# --------------------------------------------------------------------------- weights edited in place


def padded_folder(folder: Path) -> Path:
    """A tiny llama whose model.safetensors puts 5 MiB of unused padding before and after
    the real weights (tensors are stored in name order), so that every weight lies where an
    identity made of the file's size and first and last 4 MiB never looked."""
    from safetensors.torch import save_file

    model = tiny_model("llama")
    pad = torch.zeros(5 * 2**20 // 4)
    state = {"aaa.padding": pad, **model.state_dict(), "zzz.padding": pad.clone()}
    folder.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "model.safetensors"),
              metadata={"format": "pt"})
    model.config.save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return folder


def overwrite_tensor(path: Path, name: str, new_values) -> None:
    """Rewrite the float32 tensor `name` of a safetensors file in place, as a tool that merges
    an adapter into the weights does: same size, and mtime put back as it was.
    `new_values(old)` gets the old values (numpy) and returns the new ones."""
    import numpy as np

    st = path.stat()
    with open(path, "r+b") as f:
        header_len = int.from_bytes(f.read(8), "little")
        info = json.loads(f.read(header_len))[name]
        assert info["dtype"] == "F32", info
        start, end = (8 + header_len + offset for offset in info["data_offsets"])
        f.seek(start)
        old = np.frombuffer(f.read(end - start), dtype="<f4")
        new = np.ascontiguousarray(new_values(old), dtype="<f4")
        assert new.nbytes == end - start
        f.seek(start)
        f.write(new.tobytes())
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_size == st.st_size
