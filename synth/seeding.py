"""Per-sample randomness: derived only from (manifest seed, global sample index, op).

Never from shard order, batch size, worker count or executor; that one rule buys resume,
distribution and reproducibility together.
"""

import zlib

import numpy as np


def _op_code(op: str) -> int:
    return zlib.crc32(op.encode("utf-8"))


def sample_seed(seed: int, index: int, op: str) -> int:
    """A 63-bit integer seed for (seed, index, op); fits torch.Generator.manual_seed."""
    ss = np.random.SeedSequence([int(seed) & 0xFFFFFFFFFFFFFFFF, int(index), _op_code(op)])
    return int(ss.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def sample_rng(seed: int, index: int, op: str) -> np.random.Generator:
    """A numpy Generator for (seed, index, op)."""
    return np.random.default_rng(sample_seed(seed, index, op))
