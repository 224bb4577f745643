"""Tokenizer and batching: texts -> token ids once, then padded, length-bucketed batches.

A tokenizer is either pretrained (a local directory or a name) or WordPiece trained here on the
training texts, offline and deterministically (same texts, same ``tokenizer.json``). Either way it is a fast HF tokenizer that saves with ``save_pretrained``
and reloads with :func:`load_tokenizer`, so a served model tokenises as it was trained.
Each split is tokenised once (:func:`encode`); batches pad only to their longest member and
group similar lengths (:class:`LengthBucketSampler`), which is most of the speed on short texts.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch
from tokenizers import (
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
    trainers,
)
from torch.utils.data import DataLoader, Dataset, Sampler
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from raydistill.platform.config import TokenizerConfig
from raydistill.platform.data import Split
from raydistill.platform.errors import CheckpointError, DataError

PAD, UNK, CLS, SEP, MASK = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"
SPECIAL_TOKENS = [PAD, UNK, CLS, SEP, MASK]  # ids 0..4, in this order
MODEL_INPUT_NAMES = ["input_ids", "token_type_ids", "attention_mask"]
BATCH_KEYS = ("input_ids", "attention_mask", "token_type_ids", "labels", "index")
_ENCODE_CHUNK = 8192  # rows per tokenizer call: bounds the memory of HF's per-row Encoding objects
_BUCKET_BATCHES = 50  # batches per length-sorted chunk: homogeneous lengths, still shuffled


def build_tokenizer(cfg: TokenizerConfig, train_texts: Sequence[str]) -> PreTrainedTokenizerFast:
    """``cfg.pretrained`` loaded, or a BERT-style WordPiece tokenizer trained on ``train_texts``.

    Training is deterministic: the same texts and config give the same vocabulary and a
    byte-identical ``tokenizer.json`` in any process (see :func:`_train_wordpiece_vocab`).
    Raises CheckpointError if a pretrained one cannot be loaded, DataError if there is no text.
    """
    if cfg.pretrained is not None:
        return load_tokenizer(cfg.pretrained)
    if not train_texts:
        raise DataError("cannot train a tokenizer on no texts")
    normalizer = normalizers.BertNormalizer(lowercase=cfg.lowercase)
    pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    learned = _train_wordpiece_vocab(normalizer, pre_tokenizer, train_texts, cfg.vocab_size)
    # Numbered specials first, then sorted: equal vocabularies give byte-identical files.
    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS + sorted(learned))}
    tok = Tokenizer(models.WordPiece(vocab=vocab, unk_token=UNK))
    tok.normalizer, tok.pre_tokenizer = normalizer, pre_tokenizer
    tok.add_special_tokens(SPECIAL_TOKENS)
    tok.decoder = decoders.WordPiece()
    tok.post_processor = processors.TemplateProcessing(
        single=f"{CLS} $A {SEP}",
        pair=f"{CLS} $A {SEP} $B:1 {SEP}:1",  # second sentence and its [SEP] get type id 1
        special_tokens=[(CLS, vocab[CLS]), (SEP, vocab[SEP])],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token=UNK,
        pad_token=PAD,
        cls_token=CLS,
        sep_token=SEP,
        mask_token=MASK,
        model_max_length=cfg.max_length,
        model_input_names=MODEL_INPUT_NAMES,
    )


def _train_wordpiece_vocab(
    normalizer: normalizers.Normalizer,
    pre_tokenizer: pre_tokenizers.PreTokenizer,
    texts: Sequence[str],
    vocab_size: int,
) -> set[str]:
    """The learned tokens (specials excluded) of a WordPiece trained on ``texts``, deterministically.

    The ``tokenizers`` trainer (0.23; huggingface/tokenizers#1794) breaks ties between equally
    frequent merges by the ids of the pair's symbols, and numbers continuing-subword symbols
    (``##e``) as it meets them while iterating a hash map of words — an order that changes with
    every trainer instance and process — so one set of texts gave several vocabularies (2000
    texts at 2000 tokens: 4 different ones in 8 runs). The trainer numbers its special tokens
    first, so the texts' symbols are passed as ones, in the order it would give them at best:
    the alphabet by code point (as the trainer sorts it), then the ``##`` symbols sorted. All
    starting ids, hence all tie-breaks and merges, then depend on the texts alone; the symbols
    are ones the trainer adds anyway, so the vocabulary is one a plain training can give.
    """
    alphabet: set[str] = set()
    continuing: set[str] = set()
    for text in texts:
        for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text)):
            alphabet.update(word)
            continuing.update(word[1:])
    fixed = SPECIAL_TOKENS + sorted(alphabet) + sorted(f"##{char}" for char in continuing)
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=fixed, show_progress=False)
    scratch = Tokenizer(models.WordPiece(unk_token=UNK))
    scratch.normalizer, scratch.pre_tokenizer = normalizer, pre_tokenizer
    scratch.train_from_iterator(texts, trainer, length=len(texts))
    # The scratch tokenizer holds the symbols as special added tokens: only its vocab is kept.
    return set(scratch.get_vocab()) - set(SPECIAL_TOKENS)


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerFast:
    """A fast tokenizer from a ``save_pretrained`` directory (or a hub name, if cached).
    Raises CheckpointError when it is missing or not a fast tokenizer."""
    from raydistill.platform.models import resolve_pretrained

    path = resolve_pretrained(path)
    local = Path(path).expanduser()
    # A path that cannot be a hub name fails here, before HF spends a minute retrying the hub.
    if (local.is_absolute() or str(path).startswith(".")) and not local.is_dir():
        raise CheckpointError(f"tokenizer directory not found: {local}")
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(local))
    except (OSError, ValueError) as err:
        raise CheckpointError(f"cannot load a tokenizer from {path}: {err}") from None
    if not tokenizer.is_fast:
        raise CheckpointError(f"tokenizer at {path} is not a fast (Rust) tokenizer")
    return tokenizer


def _row_offsets(lengths: Sequence[int] | np.ndarray) -> np.ndarray:
    """Row starts plus the total, (N + 1,) int64, from N row lengths."""
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return offsets


@dataclass(frozen=True)
class Encoded:
    """A tokenised split, unpadded, as flat arrays: row i is ``ids[offsets[i]:offsets[i + 1]]``.

    Flat arrays rather than a list per row: 4 bytes a token instead of a Python int each, pickled
    as buffers that Ray's object store hands to readers on a node without a copy, and
    memory-mappable from the run's cache (:func:`raydistill.platform.prepared.load_encoded`), so
    a reader of a few rows pages in only those rows, however large the pool.
    """

    ids: np.ndarray  # (T,) int32: every row's token ids, one after another
    type_ids: np.ndarray  # (T,) int8: segment ids (0 first text, 1 pair text)
    offsets: np.ndarray  # (N + 1,) int64: row starts, offsets[-1] == T
    labels: np.ndarray  # (N,)

    @classmethod
    def from_rows(cls, input_ids: Sequence[Sequence[int]], token_type_ids: Sequence[Sequence[int]],
                  labels: Sequence[int] | np.ndarray) -> "Encoded":
        offsets = _row_offsets([len(row) for row in input_ids])

        def flat(rows: Sequence[Sequence[int]], dtype: type) -> np.ndarray:
            return np.fromiter((t for row in rows for t in row), dtype=dtype, count=int(offsets[-1]))

        return cls(flat(input_ids, np.int32), flat(token_type_ids, np.int8), offsets, np.asarray(labels))

    @classmethod
    def concat(cls, parts: Sequence["Encoded"]) -> "Encoded":
        """The rows of ``parts``, one part after another."""
        starts = np.cumsum([0] + [len(p.ids) for p in parts[:-1]])
        offsets = np.concatenate([[0]] + [p.offsets[1:] + s for p, s in zip(parts, starts)]).astype(np.int64)
        return cls(np.concatenate([p.ids for p in parts]), np.concatenate([p.type_ids for p in parts]),
                   offsets, np.concatenate([p.labels for p in parts]))

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __reduce__(self) -> tuple:
        # Pickled as plain arrays, never as memmaps (which pickle a copy): Ray then stores the
        # buffers out of band, and every reader on the node maps them without a copy.
        return type(self), tuple(np.asarray(getattr(self, f.name)) for f in fields(self))

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def row(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Row ``i``'s (token ids, segment ids)."""
        start, stop = self.offsets[i], self.offsets[i + 1]
        return self.ids[start:stop], self.type_ids[start:stop]

    def subset(self, indices: Sequence[int] | np.ndarray) -> "Encoded":
        """The rows at ``indices``, in that order (row i of the subset is ``indices[i]``), copied
        out: a subset of a memory-mapped split holds only its own rows."""
        indices = np.asarray(indices, dtype=np.int64)
        # Only the asked rows' offsets are read: a memory-mapped pool's other rows stay on disk.
        starts = np.asarray(self.offsets[indices])
        lengths = np.asarray(self.offsets[indices + 1]) - starts
        offsets = _row_offsets(lengths)
        # token j of the subset comes from token (start of its row - start of its new row) + j
        gather = np.repeat(starts - offsets[:-1], lengths) + np.arange(offsets[-1])
        return Encoded(np.asarray(self.ids[gather]), np.asarray(self.type_ids[gather]), offsets,
                       np.asarray(self.labels[indices]))


def encode(tokenizer: PreTrainedTokenizerFast, split: Split, max_length: int) -> Encoded:
    """Tokenise a split once (batched, truncated to ``max_length``, not padded), chunk by chunk
    into flat arrays: the ids of a large split never sit in memory as Python lists."""
    parts = [Encoded.from_rows([], [], split.labels[:0])]
    for start in range(0, len(split), _ENCODE_CHUNK):
        stop = start + _ENCODE_CHUNK
        pairs = None if split.text_pairs is None else split.text_pairs[start:stop]
        enc = tokenizer(
            split.texts[start:stop],
            pairs,
            truncation=True,
            max_length=max_length,
            return_token_type_ids=True,
            return_attention_mask=False,
        )
        parts.append(Encoded.from_rows(enc["input_ids"], enc["token_type_ids"], split.labels[start:stop]))
    return Encoded.concat(parts)


class EncodedDataset(Dataset):
    """Item i: its ids, type ids, label and ``index`` i (so scores map back to pool rows)."""

    def __init__(self, encoded: Encoded) -> None:
        self.encoded = encoded

    def __len__(self) -> int:
        return len(self.encoded)

    def __getitem__(self, i: int) -> dict:
        e = self.encoded
        ids, type_ids = e.row(i)
        return {"input_ids": ids, "token_type_ids": type_ids, "label": int(e.labels[i]), "index": i}


def collate(items: list[dict], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Pad to the longest item in the batch; keys ``BATCH_KEYS``, all LongTensor."""
    width = max(len(it["input_ids"]) for it in items)
    ids = np.full((len(items), width), pad_token_id, dtype=np.int64)
    types = np.zeros((len(items), width), dtype=np.int64)
    mask = np.zeros((len(items), width), dtype=np.int64)
    for row, it in enumerate(items):
        n = len(it["input_ids"])
        ids[row, :n] = it["input_ids"]
        types[row, :n] = it["token_type_ids"]
        mask[row, :n] = 1
    return {
        "input_ids": torch.from_numpy(ids),  # (B, L)
        "attention_mask": torch.from_numpy(mask),  # (B, L)
        "token_type_ids": torch.from_numpy(types),  # (B, L)
        "labels": torch.tensor([it["label"] for it in items], dtype=torch.long),  # (B,)
        "index": torch.tensor([it["index"] for it in items], dtype=torch.long),  # (B,)
    }


class LengthBucketSampler(Sampler[list[int]]):
    """Batches of dataset indices with similar lengths, rank-aware.

    ``shuffle=True``: indices shuffled (``seed + epoch``), sorted by length inside chunks of
    ~50 batches, cut into batches, batch order shuffled. ``shuffle=False``: sorted by length,
    then index — a fixed order for scoring and evaluation. With ``num_replicas`` > 1, rank r
    takes every num_replicas-th batch and the list is padded by cycling through it from the
    start, so every rank runs the same number of steps (collective ops never wait forever);
    the repeated rows carry their ``index``, so evaluation can drop them.
    """

    def __init__(
        self,
        lengths: np.ndarray,
        batch_size: int,
        indices: Sequence[int] | None = None,
        shuffle: bool = True,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is outside 0..{num_replicas - 1}")
        self.lengths = np.asarray(lengths, dtype=np.int64)
        n = len(self.lengths)
        self.indices = np.arange(n) if indices is None else np.asarray(indices, dtype=np.int64)
        if len(self.indices) and (self.indices.min() < 0 or self.indices.max() >= n):
            raise ValueError(f"indices must lie in 0..{n - 1}")
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.num_replicas, self.rank = num_replicas, rank
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        batches = -(-len(self.indices) // self.batch_size)
        return -(-batches // self.num_replicas)

    def __iter__(self) -> Iterator[list[int]]:
        batches = self.batches()
        total = len(self) * self.num_replicas  # pad cyclically: fewer batches than ranks too
        for i in range(self.rank, total, self.num_replicas):
            yield batches[i % len(batches)].tolist()

    def batches(self) -> list[np.ndarray]:
        """This epoch's batches for every rank, as index arrays (compact for a large pool)."""
        return self._shuffled_batches() if self.shuffle else self._sorted_batches()

    def _sorted_batches(self) -> list[np.ndarray]:
        order = self.indices[np.lexsort((self.indices, self.lengths[self.indices]))]
        return self._cut(order)

    def _shuffled_batches(self) -> list[np.ndarray]:
        rng = np.random.default_rng(self.seed + self.epoch)
        order = rng.permutation(self.indices)
        chunk = self.batch_size * _BUCKET_BATCHES
        batches = []
        for start in range(0, len(order), chunk):
            part = order[start : start + chunk]
            batches += self._cut(part[np.argsort(self.lengths[part], kind="stable")])
        return [batches[i] for i in rng.permutation(len(batches))]

    def _cut(self, order: np.ndarray) -> list[np.ndarray]:
        return [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]


def make_loader(
    encoded: Encoded,
    batch_size: int,
    indices: Sequence[int] | None = None,
    shuffle: bool = False,
    seed: int = 0,
    num_replicas: int = 1,
    rank: int = 0,
    pad_token_id: int = 0,
    pin_memory: bool = False,
) -> DataLoader:
    """A DataLoader over ``encoded`` (restricted to ``indices``) with bucketed, padded batches.
    Call ``loader.batch_sampler.set_epoch(e)`` each epoch. In-process (num_workers=0): the data
    is already tokenised, and worker processes would only copy it. ``pin_memory``: batches in
    pinned host memory, for non-blocking copies to CUDA (pass
    :func:`raydistill.platform.fastpath.loader_kwargs`, which sets it on CUDA only)."""
    sampler = LengthBucketSampler(
        encoded.lengths, batch_size, indices, shuffle, seed, num_replicas, rank
    )
    return DataLoader(
        EncodedDataset(encoded),
        batch_sampler=sampler,
        collate_fn=functools.partial(collate, pad_token_id=pad_token_id),
        num_workers=0,
        pin_memory=pin_memory,
    )


def encode_texts(
    tokenizer: PreTrainedTokenizerFast,
    texts: list[str],
    max_length: int,
    text_pairs: list[str] | None = None,
) -> dict[str, torch.Tensor]:
    """Raw texts (serving) -> one padded batch: input_ids, attention_mask, token_type_ids (B, L)."""
    enc = tokenizer(
        texts,
        text_pairs,
        truncation=True,
        max_length=max_length,
        padding=True,
        return_tensors="pt",
        return_token_type_ids=True,
        return_attention_mask=True,
    )
    return {key: enc[key].long() for key in ("input_ids", "attention_mask", "token_type_ids")}
