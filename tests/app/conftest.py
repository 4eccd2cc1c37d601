"""Fixtures for the dashboard's AppTest tests: one tiny local model for the whole session,
and the app pointed at it through ENTRODROP_MODEL, with its cache and exports in tmp."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest
import torch
from streamlit.testing.v1 import AppTest
from transformers import AutoModelForCausalLM

from tests.tiny_models import tiny_bpe_tokenizer, tiny_config, tiny_tokenizer

APP = Path(__file__).resolve().parents[2] / "app" / "streamlit_app.py"
NUM_LAYERS = 6
TIMEOUT = 120  # the first run imports transformers; later runs take well under a second


def _tiny_llama(folder: Path, tokenizer) -> Path:
    """A 6-layer random Llama (seed 0) with `tokenizer`, saved as a normal model folder."""
    config = tiny_config("llama")
    config.num_hidden_layers = NUM_LAYERS
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """The tiny Llama with a word-level tokenizer."""
    return _tiny_llama(tmp_path_factory.mktemp("tiny-llama"), tiny_tokenizer())


@pytest.fixture(scope="session")
def bpe_model_dir(tmp_path_factory) -> Path:
    """The tiny Llama with a byte-level BPE tokenizer (what a GGUF file carries)."""
    return _tiny_llama(tmp_path_factory.mktemp("tiny-bpe-llama"), tiny_bpe_tokenizer())


@pytest.fixture(scope="session")
def app_dirs(tmp_path_factory) -> dict[str, Path]:
    return {"cache": tmp_path_factory.mktemp("cache"),
            "exports": tmp_path_factory.mktemp("exports")}


@pytest.fixture(autouse=True)
def app_env(tiny_model_dir, app_dirs, monkeypatch) -> dict[str, str]:
    """ENTRODROP_MODEL -> the tiny model; cache and export root in temporary folders.

    Per test (monkeypatch), so nothing leaks into the other test folders; the folders
    themselves live for the session, so the profile cache is shared between tests.
    """
    values = {
        "ENTRODROP_MODEL": str(tiny_model_dir),
        "ENTRODROP_CACHE_DIR": str(app_dirs["cache"]),
        "ENTRODROP_EXPORT_ROOT": str(app_dirs["exports"]),
    }
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    return values


class UI:
    """Drives AppTest sessions of the dashboard."""

    @staticmethod
    def start(page: str | None = None) -> AppTest:
        """A fresh browser session on the app, optionally switched to `views/<page>.py`."""
        at = AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()
        if page is not None:
            at.switch_page(f"views/{page}.py").run()
        return at

    @classmethod
    def analysed(cls, seed: int = 7, samples: int = 4, seqlen: int = 32,
                 sources: tuple[str, ...] = ("builtin:random",)) -> AppTest:
        """A session that has run the analysis (random tokens, tiny N and T)."""
        at = cls.start("calibration")
        cls.set_calibration(at, seed=seed, samples=samples, seqlen=seqlen, sources=sources)
        at.button(key="run_analysis").click().run()
        cls.assert_clean(at)
        assert "analysis" in at.session_state
        return at

    @staticmethod
    def set_calibration(at: AppTest, *, seed: int, samples: int = 4, seqlen: int = 32,
                        sources: tuple[str, ...] = ("builtin:random",)) -> AppTest:
        at.multiselect(key="cal_sources").set_value(list(sources))
        at.number_input(key="cal_samples").set_value(samples)
        at.number_input(key="cal_seqlen").set_value(seqlen)
        at.number_input(key="cal_seed").set_value(seed)
        at.number_input(key="est_knn_k").set_value(5)
        return at.run()

    @classmethod
    def attn_export_page(cls, seed: int, k: int = 2) -> AppTest:
        """An analysed session on the Export page, K attention sub-blocks chosen."""
        at = cls.analysed(seed=seed)
        at.selectbox(key="granularity").set_value("attn").run()
        at.slider(key="k").set_value(k).run()
        at.switch_page("views/export.py").run()
        return at

    @classmethod
    def export_blocks(cls, at: AppTest, name: str, *, fmt: str = "hf",
                      gguf_type: str | None = None, layout: str | None = None) -> AppTest:
        """On the Export page: name the folder, choose the format (GGUF weights, layout),
        export, and check the page shows no error."""
        at.text_input(key="export_name").set_value(name).run()
        at.radio(key="export_format").set_value(fmt).run()
        if gguf_type is not None:
            at.selectbox(key="export_gguf_type").set_value(gguf_type).run()
        if layout is not None:
            at.radio(key="export_layout").set_value(layout).run()
        at.button(key="run_export").click().run()
        cls.assert_clean(at)
        return at

    @classmethod
    def export_width(cls, at: AppTest, name: str, *, fmt: str = "hf") -> AppTest:
        """On the Width pruning page: score the neurons by magnitude, keep 32 of the 64
        (ratio 1.0 x hidden size), export under `name` in format `fmt`."""
        at.switch_page("views/width.py").run()
        at.multiselect(key="width_criteria").set_value(["magnitude"]).run()
        at.button(key="run_width_scores").click().run()
        cls.assert_clean(at)
        at.radio(key="width_scale").set_value("paper").run()
        at.slider(key="width_ratio").set_value(1.0).run()
        at.text_input(key="width_export_name").set_value(name).run()
        at.radio(key="width_export_format").set_value(fmt).run()
        at.button(key="run_width_export").click().run()
        cls.assert_clean(at)
        return at

    @staticmethod
    def assert_clean(at: AppTest) -> None:
        """No uncaught exception and no st.error on the page."""
        assert not at.exception, [e.value for e in at.exception]
        assert not at.error, [e.value for e in at.error]

    @staticmethod
    def charts(at: AppTest) -> list[dict]:
        """The plotly figures on the page, as their JSON specs."""
        return [json.loads(c.proto.spec) for c in at.get("plotly_chart")]

    @staticmethod
    def vega_charts(at: AppTest) -> list[tuple[str, dict, list[dict]]]:
        """The Vega-Lite charts on the page, as (element id, spec, data rows). Streamlit
        moves a spec's inline data into an Arrow table beside it."""
        out = []
        for c in at.get("vega_lite_chart"):
            raw = c.proto.data.data
            rows = pa.ipc.open_stream(raw).read_all().to_pylist() if raw else []
            out.append((c.proto.id, json.loads(c.proto.spec), rows))
        return out

    @staticmethod
    def texts(at: AppTest) -> str:
        """All markdown and caption text of the page and the sidebar, joined."""
        return "\n".join(str(e.value) for e in (*at.markdown, *at.caption))


@pytest.fixture
def ui() -> type[UI]:
    return UI
