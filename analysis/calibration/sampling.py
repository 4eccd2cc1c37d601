"""Windows from documents, as the research code samples them.

A preset with the same tokenizer and seed gives the same windows as the research code:
`rng = random.Random(seed)`; for each of the N windows, draw document indices with
`rng.randint` until one has more than T tokens, then a start with
`rng.randint(0, len - T - 1)`. Documents are tokenized with the tokenizer's default special
tokens (a BOS where the tokenizer adds one), as the research code does. When no document
is longer than T, all documents are joined into one stream with EOS between them, and the
windows are cut from that stream.

Held-out windows come from the same documents, drawn with a second seed derived from
`seed`, and never overlap a ranking window: no held-out token position lies inside a
ranking window of the same document. The ranking windows are the same whether or not
held-out windows are requested.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import torch

from analysis.calibration.base import Calibration, CalibrationError, Source, encode
from analysis.settings import CalibrationSettings

_REJECTS_BEFORE_SCAN = 64


class _NoLongDocument(Exception):
    pass


class _NoRoom(Exception):
    def __init__(self, found: int) -> None:
        self.found = found


class _TokenizedDocs:
    """Documents tokenized on first use (a preset shard is never tokenized in full)."""

    def __init__(self, texts: Sequence[str | None], tokenizer, names: Sequence[str] | None = None,
                 token_lists: list[list[int]] | None = None) -> None:
        self.texts, self.tokenizer = texts, tokenizer
        self.names = names
        self.cache: dict[int, list[int]] = dict(enumerate(token_lists or []))
        self.has_long: dict[int, bool] = {}

    def __len__(self) -> int:
        return len(self.texts) if self.texts is not None else len(self.cache)

    def tokens(self, i: int) -> list[int]:
        if i not in self.cache:
            self.cache[i] = encode(self.tokenizer, self.texts[i])
        return self.cache[i]

    def tokenized_count(self) -> int:
        return len(self.cache)

    def any_longer_than(self, t: int) -> bool:
        if t not in self.has_long:
            self.has_long[t] = any(len(self.tokens(i)) > t for i in range(len(self)))
        return self.has_long[t]

    @classmethod
    def stream_of(cls, docs: _TokenizedDocs, tokenizer, t: int, n: int,
                  source: Source) -> _TokenizedDocs:
        eos = getattr(tokenizer, "eos_token_id", None)
        stream: list[int] = []
        for i in range(len(docs)):
            if stream and eos is not None:
                stream.append(int(eos))
            stream.extend(docs.tokens(i))
        if len(stream) < t + 1:
            raise CalibrationError(
                f"{source.kind}:{source.name} has too little text: {len(stream)} tokens in "
                f"all ({len(docs)} documents joined), but a window of T={t} needs at least "
                f"{t + 1} and N x T = {n} x {t} = {n * t} tokens are requested. Give more "
                "text or use a smaller seqlen."
            )
        return cls(None, tokenizer, names=["stream"], token_lists=[stream])


def _draw(docs: _TokenizedDocs, t: int, count: int, rng: random.Random,
          occupied: dict[int, list[int]], max_attempts: int | None = None) -> list[tuple[int, int]]:
    """`count` (document, start) pairs; records them in `occupied`.

    With `max_attempts`, a window that overlaps one in `occupied` is redrawn; after that
    many placements `_NoRoom` is raised. Without it, windows may repeat (research code).
    """
    out: list[tuple[int, int]] = []
    rejects = attempts = 0
    while len(out) < count:
        i = rng.randint(0, len(docs) - 1)
        ids = docs.tokens(i)
        if len(ids) <= t:
            rejects += 1
            # Rejection sampling never ends if no document is long enough: check once.
            if rejects == _REJECTS_BEFORE_SCAN and not docs.any_longer_than(t):
                raise _NoLongDocument
            continue
        start = rng.randint(0, len(ids) - t - 1)
        if max_attempts is not None:
            attempts += 1
            if attempts > max_attempts:
                raise _NoRoom(len(out))
            if any(start < s + t and s < start + t for s in occupied.get(i, ())):
                continue
        occupied.setdefault(i, []).append(start)
        out.append((i, start))
    return out


def _windows_to_calibration(spec: str, docs: _TokenizedDocs, windows, t: int, source: Source,
                            mode: str, recipe: dict) -> Calibration:
    rows = [docs.tokens(i)[s:s + t] for i, s in windows]
    names = docs.names if mode == "stream" else source.doc_names
    recipe = {**recipe, "samples": len(rows),
              "documents_used": len({i for i, _ in windows}),
              "windows": [[str(names[i]), int(i), int(s)] for i, s in windows]}
    return Calibration(spec, torch.tensor(rows, dtype=torch.long), recipe)


def document_windows(source: Source, settings: CalibrationSettings, tokenizer, held_out: int,
                     base: dict) -> tuple[Calibration, Calibration | None]:
    """The ranking windows of a source's documents and, with `held_out`, the held-out ones."""
    n, t, seed = settings.samples, settings.seqlen, settings.seed
    docs = _TokenizedDocs(source.documents, tokenizer)
    rng = random.Random(seed)
    occupied: dict[int, list[int]] = {}
    try:
        windows = _draw(docs, t, n, rng, occupied)
        mode = "documents"
    except _NoLongDocument:
        tokenized = docs.tokenized_count()
        docs = _TokenizedDocs.stream_of(docs, tokenizer, t, n, source)
        rng = random.Random(seed)
        occupied = {}
        windows = _draw(docs, t, n, rng, occupied)
        mode = "stream"
    else:
        tokenized = docs.tokenized_count()
    base.update(mode=mode, documents_tokenized=tokenized)
    ranking = _windows_to_calibration(settings.spec, docs, windows, t, source, mode,
                                      {**base, "role": "ranking"})
    if not held_out:
        return ranking, None

    held_rng = random.Random(f"entrodrop-heldout:{seed}")
    try:
        held = _draw(docs, t, held_out, held_rng, occupied, max_attempts=200 * held_out + 2000)
    except _NoRoom as err:
        raise CalibrationError(
            f"{settings.spec}: found only {err.found} of {held_out} held-out windows of T={t} "
            f"tokens that do not overlap the N={n} ranking windows. Use a larger source, "
            "fewer samples, fewer held-out windows or a smaller seqlen."
        ) from None
    held_recipe = {**base, "role": "held_out", "samples": held_out,
                   "held_out_seed": f"entrodrop-heldout:{seed}",
                   "ranking_fingerprint": ranking.fingerprint()}
    return ranking, _windows_to_calibration(settings.spec, docs, held, t, source, mode,
                                            held_recipe)
