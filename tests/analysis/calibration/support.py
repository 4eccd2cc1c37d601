"""Helpers shared by the calibration tests: a one-token-per-character tokenizer, random
text, settings."""

from __future__ import annotations

import random
import string

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

from analysis.settings import CalibrationSettings

SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]  # ids 0..3, as in tests.tiny_models
CHARS = ["\n"] + [chr(c) for c in range(32, 127)]


def make_char_tokenizer():
    """One token per character (100 ids, fits the tiny models' 128), BOS prepended."""
    vocab = {t: i for i, t in enumerate(SPECIALS + CHARS)}
    tok = Tokenizer(models.BPE(vocab, [], unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"\s+"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A",
                                                       special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>", unk_token="<unk>")


def encode(tok, text: str) -> list[int]:
    return tok(text, add_special_tokens=True)["input_ids"]


def words(seed: int, n_chars: int) -> str:
    """Random lowercase words: any 12 characters occur once with overwhelming odds."""
    rng = random.Random(seed)
    return "".join(rng.choice(string.ascii_lowercase + "    ") for _ in range(n_chars))


def settings(spec, n=6, t=20, seed=2024, column=None) -> CalibrationSettings:
    return CalibrationSettings(str(spec), n, t, seed, column)


def assert_windows_from(cal, tok, texts):
    for row in cal.input_ids.tolist():
        assert any(contains(encode(tok, t), row) for t in texts)


def contains(ids, row):
    return any(ids[i:i + len(row)] == row for i in range(len(ids) - len(row) + 1))
