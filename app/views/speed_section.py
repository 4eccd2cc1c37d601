"""The Budget page's speed figures: transformers (in memory) and llama.cpp (GGUF files of
the unpruned and the pruned model), each as ratios to the unpruned model in the same engine."""

from __future__ import annotations

from collections.abc import Mapping

import streamlit as st

from analysis.settings import speed_prompt_len
from app import state
from entrodrop import service
from pruning.gguf_export import GGUF_TYPES
from pruning.llamacpp import engine_available

ss = st.session_state


def show_speed(speed: Mapping, engine: str) -> None:
    """Absolute figures first (tokens/s, ms/token), the ratio and the unpruned figure below."""
    s1, s2 = st.columns(2)
    s1.metric(f"Prefill, pruned ({engine})",
              f"{speed['prefill_tokens_per_s_pruned']:.0f} tokens/s",
              f"speed-up {speed['prefill_ratio']:.2f}× · unpruned "
              f"{speed['prefill_tokens_per_s_base']:.0f} tokens/s", delta_color="off")
    s2.metric(f"Decode, pruned ({engine})", f"{speed['decode_ms_per_token_pruned']:.1f} ms/token",
              f"speed-up {speed['decode_ratio']:.2f}× · unpruned "
              f"{speed['decode_ms_per_token_base']:.1f} ms/token", delta_color="off")
    st.caption(f"Median of {speed['repeats']} runs on {speed['device']}; prefill of a "
               f"{speed.get('prompt_len', speed_prompt_len(ss['cal_seqlen']))}-token prompt, "
               "decode of 16 new tokens.")


def engine_speed_section(loaded, view, speed_key: str, stamp: Mapping) -> None:
    """Speed where the model will run: llama.cpp, when its binding is installed."""
    st.markdown("**In llama.cpp**")
    if not engine_available():
        st.caption("llama.cpp's Python binding is not installed, so its speed is not measured "
                   "here (`bash scripts/setup.sh --with-engines` builds it once).")
        return
    ss.setdefault("engine_gguf_type", "f16")
    c1, c2 = st.columns([1, 2])
    c1.selectbox("GGUF weights", GGUF_TYPES, key="engine_gguf_type",
                 help="The weight type of both GGUF files that are timed.")
    key = f"{speed_key}|{ss['engine_gguf_type']}"
    if c2.button("Time in llama.cpp", key="run_engine_speed", icon=":material/timer:",
                 help="Writes the pruned model as a GGUF file (deleted afterwards) and the "
                      "unpruned one (kept in the cache while its weights and settings are "
                      "unchanged) and times both in llama.cpp, interleaved."):
        ss.pop("engine_speed_result", None)
        with state.guard("Measuring speed in llama.cpp"):
            bar, update = state.progress_bar("llama.cpp speed")
            prompt_len = speed_prompt_len(ss["cal_seqlen"])
            result = service.engine_speed(loaded, view.granularity, view.blocks,
                                          gguf_type=ss["engine_gguf_type"],
                                          prompt_len=prompt_len, new_tokens=16, progress=update)
            bar.empty()
            ss["engine_speed_result"] = {"key": key, "stamp": stamp, "prompt_len": prompt_len,
                                         **result}
    speed = ss.get("engine_speed_result")
    if speed and speed.get("key") == key:
        show_speed(speed, "llama.cpp")
