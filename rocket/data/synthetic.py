"""Synthetic tasks with exact answers, generated in-process from a seed (no files, no download).

Every generator returns a batch in the training pipeline's format (`rocket.data.BATCH_KEYS`: inputs,
targets, positions, segment_ids, weights, num_bytes as [B, T] numpy arrays) over the byte
tokenizer's ids (byte b -> id b + 2, `ByteTokenizer`), so byte-level rocket models train and
evaluate on them directly. `weights` is 1.0 exactly on the answer's target tokens, so the trainer's
loss is the answer loss and `answer_accuracy` is exact-match accuracy of the greedy prediction.

Tasks (the long-context and in-context probes of the papers rocket reproduces):
  associative_recall : "k1:v1,k2:v2,...?kj=" -> vj     (induction heads; MoD/MoR routing probes)
  passkey            : filler with "The pass key is NNNNN." hidden at a random depth, then asked
                       (softplus attention length extrapolation; StreamingLLM)
  copy_task          : "x_1..x_n|" -> x_1..x_n         (copying; speculative decoding acceptance)
  substitution_cipher: a per-row random permutation of the letters of a text batch (lexinvariant
                       models decipher it in context; a standard LM cannot)
"""

from __future__ import annotations

import string

import numpy as np

from rocket.data.tokenizers import ByteTokenizer

_OFFSET = ByteTokenizer.offset
_LETTERS = np.frombuffer(string.ascii_lowercase.encode(), np.uint8)
_DIGITS = np.frombuffer(string.digits.encode(), np.uint8)
_FILLER = b"The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. "


def _as_batch(seqs_bytes: list[bytes], answer_starts: list[int]) -> dict[str, np.ndarray]:
    """Byte sequences of equal length L+1 -> a batch of inputs/targets [B, L]; targets at byte
    indices >= answer_start (i.e. target positions >= answer_start - 1) carry weight 1."""
    lengths = {len(s) for s in seqs_bytes}
    if len(lengths) != 1:
        raise ValueError(f"synthetic sequences must share one length, got {sorted(lengths)}")
    ids = np.stack([np.frombuffer(s, np.uint8).astype(np.int32) + _OFFSET for s in seqs_bytes])
    b, t = ids.shape[0], ids.shape[1] - 1
    pos = np.arange(t, dtype=np.int32)
    weights = (pos[None, :] >= np.asarray(answer_starts)[:, None] - 1).astype(np.float32)
    return {
        "inputs": ids[:, :-1],
        "targets": ids[:, 1:],
        "positions": np.tile(pos, (b, 1)),
        "segment_ids": np.ones((b, t), np.int32),
        "weights": weights,
        "num_bytes": np.ones((b, t), np.int32),
    }


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")


def associative_recall(batch_size: int, n_pairs: int, *, seed: int = 0) -> dict[str, np.ndarray]:
    """Rows "k1:v1,...,kn:vn?kj=vj" with distinct letter keys, digit values, one query; T = 4n + 2."""
    _check_positive(batch_size=batch_size, n_pairs=n_pairs)
    if n_pairs > len(_LETTERS):
        raise ValueError(f"n_pairs must be <= {len(_LETTERS)} (distinct letter keys), got {n_pairs}")
    rng = np.random.default_rng(seed)
    seqs, starts = [], []
    for _ in range(batch_size):
        keys = rng.choice(_LETTERS, n_pairs, replace=False)
        values = rng.choice(_DIGITS, n_pairs)
        j = rng.integers(n_pairs)
        body = b",".join(bytes([k, ord(":"), v]) for k, v in zip(keys, values))
        prompt = body + b"?" + bytes([keys[j], ord("=")])
        seqs.append(prompt + bytes([values[j]]))
        starts.append(len(prompt))
    return _as_batch(seqs, starts)


def passkey(batch_size: int, seq_len: int, *, digits: int = 5, seed: int = 0) -> dict[str, np.ndarray]:
    """Filler text of total length seq_len + 1 bytes with "The pass key is K. Remember it." at a
    uniformly random depth and the question "What is the pass key? The pass key is K" at the end;
    only K's digits at the end are weighted."""
    _check_positive(batch_size=batch_size, digits=digits)
    rng = np.random.default_rng(seed)
    seqs, starts = [], []
    for _ in range(batch_size):
        key = "".join(rng.choice(list(string.digits), digits)).encode()
        needle = b"The pass key is " + key + b". Remember it. "
        question = b"What is the pass key? The pass key is "
        n_filler = seq_len + 1 - len(needle) - len(question) - digits
        if n_filler < 0:
            raise ValueError(
                f"seq_len={seq_len} is too short for a passkey prompt (needs >= {seq_len - n_filler})"
            )
        filler = (_FILLER * (n_filler // len(_FILLER) + 1))[:n_filler]
        cut = int(rng.integers(n_filler + 1))
        prompt = filler[:cut] + needle + filler[cut:] + question
        seqs.append(prompt + key)
        starts.append(len(prompt))
    return _as_batch(seqs, starts)


def copy_task(batch_size: int, length: int, *, seed: int = 0) -> dict[str, np.ndarray]:
    """Rows "x|x" for a random lowercase string x of `length` letters; T = 2 * length."""
    _check_positive(batch_size=batch_size, length=length)
    rng = np.random.default_rng(seed)
    seqs, starts = [], []
    for _ in range(batch_size):
        x = rng.choice(_LETTERS, length).tobytes()
        seqs.append(x + b"|" + x)
        starts.append(length + 1)
    return _as_batch(seqs, starts)


def substitution_cipher(
    batch: dict[str, np.ndarray], *, seed: int = 0
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Enciphers a byte-token batch: row b's lowercase letters go through a random permutation
    perm[b] of the 26 letters (upper case follows its lower-case letter); other bytes are kept.

    Returns (enciphered batch, perm [B, 26] with perm[b, i] = index of the letter that letter i
    becomes). Inputs and targets are enciphered consistently (targets are the shifted inputs).
    """
    rng = np.random.default_rng(seed)
    b = batch["inputs"].shape[0]
    perm_b26 = np.stack([rng.permutation(26) for _ in range(b)]).astype(np.int32)
    table_bv = np.tile(np.arange(256 + _OFFSET, dtype=np.int32), (b, 1))
    for base in (ord("a"), ord("A")):
        src = base + np.arange(26) + _OFFSET
        table_bv[:, src] = base + perm_b26 + _OFFSET
    rows = np.arange(b)[:, None]
    out = dict(batch)
    out["inputs"] = table_bv[rows, batch["inputs"]]
    out["targets"] = table_bv[rows, batch["targets"]]
    return out, perm_b26


def answer_accuracy(logits_btv: np.ndarray, batch: dict[str, np.ndarray]) -> float:
    """Fraction of rows whose greedy predictions are right on every weighted (answer) target."""
    pred_bt = np.asarray(logits_btv).argmax(-1)
    w_bt = np.asarray(batch["weights"]) > 0
    ok_b = np.all((pred_bt == np.asarray(batch["targets"])) | ~w_bt, axis=-1)
    return float(ok_b.mean())
