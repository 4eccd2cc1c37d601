"""Page 1: choose and load the model."""

from __future__ import annotations

import streamlit as st

from analysis.models import DEMO_MODELS
from analysis.settings import DEVICES, DTYPES, LOAD_MODES
from app import state
from entrodrop import service

LOAD_LABELS = {"auto": "auto: stream only if the weights do not fit",
               "memory": "whole model in memory", "stream": "layer streaming"}
SOURCE_LABELS = {"demo": "Bundled demo model", "local": "Local folder or GGUF file",
                 "hub": "Hugging Face hub id"}

ss = st.session_state
st.title("Model")
st.markdown(
    "Pick the causal language model to analyse. Demo models ship with the tool and work "
    "offline; the first load converts the GGUF file once (about 40 s), later loads take "
    "under a second. Nothing is downloaded unless you give a hub id while online."
)

st.radio("Model source", list(SOURCE_LABELS), key="model_source", persist_state="session",
         format_func=SOURCE_LABELS.get, horizontal=True)
if ss["model_source"] == "demo":
    if ss["demo_name"] not in DEMO_MODELS:
        ss["demo_name"] = next(iter(DEMO_MODELS))
    st.selectbox("Demo model", list(DEMO_MODELS), key="demo_name", persist_state="session",
                 format_func=lambda n: f"demo:{n} · {DEMO_MODELS[n].description}")
    ss["model_spec"] = f"demo:{ss['demo_name']}"
elif ss["model_source"] == "local":
    st.text_input("Model folder or .gguf file", key="model_path", persist_state="session",
                  placeholder="/path/to/hf-model-folder or /path/to/model.gguf",
                  help="A Hugging Face folder (config.json + weights + tokenizer) or a GGUF file.")
    ss["model_spec"] = ss["model_path"].strip()
else:
    st.text_input("Hub id", key="hub_id", persist_state="session",
                  placeholder="HuggingFaceTB/SmolLM2-135M-Instruct",
                  help="Read from the local Hugging Face cache; downloaded only when online.")
    st.caption("Offline, a hub id loads only if it is already in the local Hugging Face cache.")
    ss["model_spec"] = ss["hub_id"].strip()

left, right = st.columns(2)
with left:
    st.selectbox("Device", DEVICES, key="device", persist_state="session")
    st.selectbox("Data type", DTYPES, key="dtype", persist_state="session")
with right:
    st.checkbox("Trust remote code", key="trust_remote_code", persist_state="session",
                help="Runs Python code shipped with the model. Leave off unless you trust "
                     "this model's source.")
    st.checkbox("Spread over several GPUs (device_map=auto)", key="device_map_auto",
                persist_state="session")
    st.selectbox("Load", LOAD_MODES, key="load_mode", persist_state="session",
                 format_func=LOAD_LABELS.get,
                 help="Layer streaming reads one decoder layer at a time from the checkpoint, "
                      "so models larger than memory can be analysed.")

devices = state.device_info()
if devices["gpus"]:
    for gpu in devices["gpus"]:
        st.caption(f"Detected GPU {gpu['index']}: **{gpu['name']}**, {gpu['free_gb']:.1f} GB "
                   f"free of {gpu['total_gb']:.1f} GB")
else:
    st.caption("No CUDA GPU detected" + (" (Apple MPS available)" if devices["mps"] else "")
               + "; the model runs on the CPU.")
st.caption(f"`auto` resolves to **{devices['auto_device']}** with "
           f"**{devices['auto_dtype']}** here.")

plan = None
if ss["model_spec"]:
    try:
        plan = state.load_plan()
        st.caption(f"Load: {plan.describe()}.")
    except service.USER_ERRORS:
        pass  # a spec that cannot be read is reported, once, when the model is loaded
if plan is not None and plan.mode == "stream":
    st.info("Layer streaming: the analysis, the quality curves, the neuron scores and the "
            "exports read one decoder layer at a time from the checkpoint, so the whole model "
            "is never in memory. Measuring speed and generating text side by side need the "
            "whole model and are switched off in this mode.", icon=":material/layers:")

if st.button("Load model", key="load_model", type="primary", icon=":material/download:"):
    with state.guard("Loading the model"):
        bar, update = state.progress_bar(f"Loading {ss['model_spec'] or '(empty)'}")
        state.loaded_model(update)
        bar.progress(1.0, text="Model ready")
        st.rerun()  # the sidebar, drawn before this page, now shows the model as loaded

loaded = state.peek_model()
if loaded is not None:
    summary = service.model_summary(loaded)
    st.success(f"Loaded `{loaded.spec}`", icon=":material/check_circle:")
    cols = st.columns([2.2, 1, 1, 1, 1])
    cols[0].metric("Architecture", summary["architecture"])
    cols[1].metric("Layers (L)", summary["num_layers"])
    cols[2].metric("Parameters", f"{summary['parameters'] / 1e6:.1f} M")
    cols[3].metric("Device", summary["device"])
    cols[4].metric("Data type", summary["dtype"])
    st.caption(f"Weights from `{loaded.source_path}` · identity `{loaded.identity[:24]}…`")
else:
    st.info("The model is not loaded yet. Load it here, or run the analysis on the "
            "Calibration page, which loads it when needed.", icon=":material/info:")
