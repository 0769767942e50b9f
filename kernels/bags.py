"""Pooled embedding lookup of a whole batch, every sparse feature in one kernel call.

Vocabulary (torchrec's): a batch has ``B`` samples and ``F`` sparse features; each
(feature, sample) pair holds a *bag* of ids (one id for a one-hot feature, any number, possibly
zero, for a multi-hot one). The ids of the batch are one flat int64 array ``values``,
feature-major; ``lengths[f, b]`` is the size of bag ``(f, b)``, and ``offsets`` (shape
``[F, B + 1]``) holds absolute positions into ``values``: bag ``(f, b)`` is
``values[offsets[f, b]:offsets[f, b + 1]]``. Each bag is pooled (``sum`` or ``mean``) into a
``D``-wide embedding; the result is float32 ``[B, F, D]``.

Worked example, ``B = 2`` samples, ``F = 2`` features (a one-hot ``carrier`` and a multi-hot
``tags``), ``D = 4``::

    sample 0: carrier = 11, tags = [7, 9]
    sample 1: carrier = 12, tags = []
    values  = [11, 12,  7, 9]          # carrier's bags, then tags' bags
    lengths = [[1, 1], [2, 0]]         # [F, B]
    offsets = [[0, 1, 2], [2, 4, 4]]   # [F, B + 1]; offsets[f, 1:] = offsets[f, 0] + cumsum
    out[0, 1] = z(7) + z(9)            # "sum" pooling; "mean" divides by 2
    out[1, 1] = 0                      # an empty bag pools to zeros

How an id becomes an embedding ``z`` is ``docs/hashing.md`` sections 2-4: MEM-REC features hash
it into a token table and a weight table; full features look it up in a sorted vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from . import _alloc
from . import _bag_kernels as _k
from ._alloc import empty_aligned, empty_output, streams
from ._checks import require_array
from .full_bag import full_bag_rows

__all__ = ["BagPlan", "FeatureTable", "full_bag_rows", "make_plan"]

# Up to this many samples the serial kernel wins: a parallel launch costs ~1.5 us.
SERIAL_MAX_BATCH = 64
# Samples per tile. A tile is hashed, then pooled, feature by feature; its scratch (ids' rows and
# weights) stays in L2. Measured on Zen 4, 2 threads, D=16 and 128, B=256..16384: 512 was within
# 2% of the best of 64..1024 everywhere; 64 (the old cache-sized tiles) was 5-28% slower.
_TILE = 512
_I64 = np.dtype(np.int64)
_F32 = np.dtype(np.float32)
_OK = _k.OK


@dataclass(frozen=True)
class FeatureTable:
    """Where one sparse feature's table lives in the plan's flat arrays, and how it pools.

    Attributes
    ----------
    kind : ``"memrec"`` (hashed token + weight tables) or ``"full"`` (one row per known id)
    token_offset : first row of this feature's table in ``tokens``
    rows : memrec: ``m``, the token rows; full: vocabulary size + 1 (row 0 is out-of-vocabulary)
    slot : the feature's slot within a shared table (mixed into the hash key, spec section 2)
    pooling : ``"sum"`` or ``"mean"``
    token_seeds : memrec: uint64 ``[k, 4]`` seeds of the k token hashes
    weight_offset : memrec: first *element* of the weight table in the flat ``weights`` array
    weight_rows : memrec: ``m_w``
    weight_cols : memrec: ``k`` (one weight per token hash) or 1 (one scalar weight)
    weight_seeds : memrec: uint64 ``[k_w, 4]`` seeds of the k_w weight hashes
    vocab_offset : full: the vocabulary is ``vocab[vocab_offset : vocab_offset + rows - 1]``,
        strictly increasing int64
    """

    kind: str
    token_offset: int
    rows: int
    slot: int = 0
    pooling: str = "sum"
    token_seeds: np.ndarray | None = None
    weight_offset: int = 0
    weight_rows: int = 0
    weight_cols: int = 0
    weight_seeds: np.ndarray | None = None
    vocab_offset: int = 0


class BagPlan:
    """A validated set of feature tables, ready to pool batches with :meth:`lookup`.

    Build it with :func:`make_plan`; it keeps read-only views of the tables (no copies) and a
    compact per-feature description for the kernel.
    """

    def __init__(
        self,
        features: tuple[FeatureTable, ...],
        tokens: np.ndarray,
        weights: np.ndarray,
        vocab: np.ndarray,
        keys: np.ndarray,
        meta: np.ndarray,
    ) -> None:
        self.features = features
        self.tokens = tokens
        self.weights = weights
        self.vocab = vocab
        self._keys = keys
        self._meta = meta
        # Rows of the per-tile scratch: the largest k (a full feature counts as k = 1).
        self._max_k = max(1, int(meta[:, _k.K].max())) if len(features) else 1
        self._kernels = _k.lookup_kernels(int(tokens.shape[1]))
        self._serial_tile = self.tile(1, False)  # independent of the batch; ~1 us saved per call
        self._entries: list = [None, None]  # compiled kernels, by ``parallel``
        self._nf = len(features)
        self._dim = int(tokens.shape[1])
        self._tables = (tokens, weights, vocab, keys, meta)

    @property
    def num_features(self) -> int:
        """``F``, the number of sparse features."""
        return len(self.features)

    @property
    def dim(self) -> int:
        """``D``, the embedding width."""
        return int(self.tokens.shape[1])

    def tile(self, batch: int, parallel: bool) -> int:
        """Samples per tile for a batch of ``batch`` samples (split over threads if parallel)."""
        if parallel:
            # Every thread gets work even when the batch is only a few tiles long.
            return min(_TILE, max(1, -(-batch // numba.get_num_threads())))
        return _TILE

    def empty_output(self, batch: int) -> np.ndarray:
        """An uninitialised ``[batch, F, D]`` float32 output for :meth:`lookup`, 64-byte aligned."""
        return empty_aligned((batch, self._nf, self._dim))

    def lookup(
        self,
        values: np.ndarray,
        offsets: np.ndarray,
        out: np.ndarray | None = None,
        parallel: bool | None = None,
    ) -> np.ndarray:
        """Pooled embeddings of every bag of a batch.

        Parameters
        ----------
        values : int64 array [N], the batch's ids, feature-major (see the module docstring)
        offsets : int64 array [F, B + 1], absolute positions into ``values``; bag ``(f, b)`` is
            ``values[offsets[f, b]:offsets[f, b + 1]]``. Each row must be non-decreasing and
            lie within ``[0, N]``.
        out : float32 array [B, F, D], C-contiguous and writable, overwritten; allocated if
            None. Reusing one across calls avoids page faults on large batches; make it with
            :meth:`empty_output` (64-byte aligned) so that large batches can be written with
            streaming stores.
        parallel : force the multi-threaded (True) or serial (False) kernel; None picks the
            serial one for ``B <= SERIAL_MAX_BATCH``.

        Returns
        -------
        float32 array [B, F, D] (``out`` if given); empty bags give zeros.

        Raises
        ------
        ValueError
            On a wrong dtype, shape or layout of ``values``/``offsets``/``out``, or offsets that
            are negative, decreasing or beyond ``len(values)``.
        """
        nf = self._nf
        try:
            vflags, oflags = values.flags, offsets.flags
            # ``carray`` (C-contiguous, aligned, writable) first: one flag for the usual case.
            fast = (
                values.dtype is _I64
                and offsets.dtype is _I64
                and values.ndim == 1
                and offsets.ndim == 2
                and (vflags.carray or vflags.c_contiguous and vflags.aligned)
                and (oflags.carray or oflags.c_contiguous and oflags.aligned)
            )
        except AttributeError:  # not an array: the full check below says what was expected
            fast = False
        if not fast:
            require_array(values, np.int64, 1, "values")
            require_array(offsets, np.int64, 2, "offsets")
        rows, cols = offsets.shape
        nb = cols - 1
        if nb < 0 or rows != nf:
            raise ValueError(
                f"offsets must have shape [F, B + 1] = [{nf}, B + 1] (one row per feature of "
                f"the plan), got {offsets.shape}"
            )
        if out is None:
            out = empty_output((nb, nf, self._dim))
        else:
            try:
                # carray: C-contiguous, aligned and writable.
                fast &= out.dtype is _F32 and out.ndim == 3 and out.flags.carray
            except AttributeError:
                fast = False
            if not fast:
                require_array(out, np.float32, 3, "out")
                if not out.flags.writeable:
                    raise ValueError(
                        "out must be a writable float32 array of shape [B, F, D]; pass out=None "
                        "to allocate one"
                    )
        if parallel is None:
            parallel = nb > SERIAL_MAX_BATCH
        # The fast path calls the compiled code directly, skipping the dispatcher's typing of
        # ten arguments (~0.5 us, most of it for the read-only tables); it is only taken for
        # exactly the array types that code was compiled for. Anything else (unaligned ids, say)
        # goes through the dispatcher, which compiles what it needs.
        if fast:
            kernel = self._entries[parallel] or self._entry(parallel)
        else:
            kernel = self._kernels[1 if parallel else 0]
        # Streaming stores only pay for outputs too large to stay in cache (so, never serial).
        stream = parallel and streams(out, self._dim * 4)
        status = kernel(
            values,
            offsets,
            *self._tables,
            self.tile(nb, parallel) if parallel else self._serial_tile,
            self._max_k,
            stream,
            out,
        )
        if status != _OK:  # the kernels write nothing if shapes or offsets are bad
            self._raise(status, values, offsets, out)
        return out

    def _entry(self, parallel: bool):
        # The compiled kernel for C-contiguous aligned int64 ids and offsets, float32 output
        # and this plan's tables, compiled (or loaded from the cache) on first use.
        entry = self._entries[parallel]
        if entry is None:
            sig = (
                numba.types.Array(numba.int64, 1, "C", readonly=True),
                numba.types.Array(numba.int64, 2, "C", readonly=True),
                numba.typeof(self.tokens),
                numba.typeof(self.weights),
                numba.typeof(self.vocab),
                numba.typeof(self._keys),
                numba.typeof(self._meta),
                numba.int64,
                numba.int64,
                numba.boolean,
                numba.types.Array(numba.float32, 3, "C"),
            )
            entry = self._kernels[1 if parallel else 0].compile(sig)
            self._entries[parallel] = entry
        return entry

    def _raise(self, status: int, values: np.ndarray, offsets: np.ndarray, out: np.ndarray):
        if status == _k.BAD_SHAPE:
            shape = (offsets.shape[1] - 1, self.num_features, self.dim)
            raise ValueError(
                f"out must be a writable float32 array of shape [B, F, D] = {shape}, got "
                f"shape {out.shape}; pass out=None to allocate one"
            )
        bad = _k.check_offsets(offsets, values.shape[0])
        row = offsets[bad]
        raise ValueError(
            f"offsets[{bad}] must be non-decreasing within [0, {values.shape[0]}] "
            f"(len(values)), found first {int(row[0])}, last {int(row[-1])}, "
            f"min step {int(np.diff(row).min()) if row.shape[0] > 1 else 0}; build them "
            "as offsets[f, 0] + cumsum of lengths"
        )


def make_plan(
    features: list[FeatureTable],
    tokens: np.ndarray,
    weights: np.ndarray,
    vocab: np.ndarray,
    *,
    huge_pages: bool = False,
) -> BagPlan:
    """Validate the tables once and build a :class:`BagPlan`.

    Parameters
    ----------
    features : one :class:`FeatureTable` per sparse feature, in the model's feature order
    tokens : float32 array [R, D], C-contiguous: every table's token rows (memrec) or rows
        (full), stacked; a read-only memory map is used as is
    weights : float32 array [RW], C-contiguous: every memrec weight table, flattened row-major
    vocab : int64 array [V], C-contiguous: every full table's sorted vocabulary, stacked
    huge_pages : copy ``tokens`` into transparent huge pages if it is at most
        ``HUGE_COPY_MAX`` (256 MiB) and the system offers them (13-28% faster lookups from
        MEM-REC-sized tables); otherwise, and by default, ``tokens`` is used in place

    Returns
    -------
    BagPlan

    Raises
    ------
    ValueError
        On any inconsistency: wrong dtype or layout, a table range outside its array, bad seed
        shapes, an unknown kind or pooling, a vocabulary that is not strictly increasing.
    """
    tokens = _readonly(require_array(tokens, np.float32, 2, "tokens"))
    weights = _readonly(require_array(weights, np.float32, 1, "weights"))
    vocab = _readonly(require_array(vocab, np.int64, 1, "vocab"))
    meta = np.zeros((len(features), _k.META_COLS), dtype=np.int64)
    key_blocks: list[np.ndarray] = []
    n_seeds = 0
    for f, ft in enumerate(features):
        if not isinstance(ft, FeatureTable):
            raise ValueError(f"features[{f}] must be a FeatureTable, got {type(ft).__name__}")
        _check_common(f, ft, tokens)
        row = meta[f]
        row[_k.TOKEN_OFFSET] = ft.token_offset
        row[_k.ROWS] = ft.rows
        row[_k.SLOT] = ft.slot
        row[_k.MEAN] = ft.pooling == "mean"
        if ft.kind == "memrec":
            tseeds = _check_seeds(f, ft.token_seeds, "token_seeds")
            wseeds = _check_seeds(f, ft.weight_seeds, "weight_seeds")
            _check_memrec(f, ft, tseeds.shape[0], weights)
            row[_k.KIND] = _k.KIND_MEMREC
            row[_k.TOKEN_SEED] = n_seeds
            row[_k.K] = tseeds.shape[0]
            row[_k.WEIGHT_SEED] = n_seeds + tseeds.shape[0]
            row[_k.KW] = wseeds.shape[0]
            row[_k.WEIGHT_OFFSET] = ft.weight_offset
            row[_k.WEIGHT_ROWS] = ft.weight_rows
            row[_k.WEIGHT_COLS] = ft.weight_cols
            key_blocks += [_keys(tseeds, ft.slot), _keys(wseeds, ft.slot)]
            n_seeds += tseeds.shape[0] + wseeds.shape[0]
        else:
            _check_full(f, ft, vocab)
            row[_k.KIND] = _k.KIND_FULL
            row[_k.VOCAB_OFFSET] = ft.vocab_offset
    keys = np.concatenate(key_blocks) if key_blocks else np.zeros((0, 3), dtype=np.uint64)
    if huge_pages and tokens.nbytes <= _alloc.HUGE_COPY_MAX:
        tokens = _alloc.in_huge_pages(tokens)
    return BagPlan(tuple(features), tokens, weights, vocab, _readonly(keys), meta)


def _keys(seeds: np.ndarray, slot: int) -> np.ndarray:
    # Rows (a0, a1, a2*slot + b mod 2**64): the slot term is the same for every id of a feature.
    keys = np.empty((seeds.shape[0], 3), dtype=np.uint64)
    keys[:, :2] = seeds[:, :2]
    for j in range(seeds.shape[0]):
        keys[j, 2] = (int(seeds[j, 2]) * slot + int(seeds[j, 3])) % 2**64
    return keys


def _readonly(arr: np.ndarray) -> np.ndarray:
    # Every plan hands the kernels read-only views, so one compiled specialisation serves both
    # memory-mapped models and in-memory arrays (and the kernel cannot write to a model).
    view = arr.view(np.ndarray)
    view.flags.writeable = False
    return view


def _where(f: int, ft: FeatureTable) -> str:
    return f"features[{f}] ({ft.kind})"


def _check_common(f: int, ft: FeatureTable, tokens: np.ndarray) -> None:
    if ft.kind not in ("memrec", "full"):
        raise ValueError(f"features[{f}].kind must be 'memrec' or 'full', got {ft.kind!r}")
    if ft.pooling not in ("sum", "mean"):
        raise ValueError(f"features[{f}].pooling must be 'sum' or 'mean', got {ft.pooling!r}")
    if not 1 <= ft.rows < 2**31:
        raise ValueError(f"{_where(f, ft)}: rows must be in [1, 2**31), got {ft.rows}")
    if ft.token_offset < 0 or ft.token_offset + ft.rows > tokens.shape[0]:
        raise ValueError(
            f"{_where(f, ft)}: token rows [{ft.token_offset}, {ft.token_offset + ft.rows}) must "
            f"lie inside tokens, which has {tokens.shape[0]} rows; check token_offset and rows"
        )
    if not 0 <= ft.slot < 2**32:
        raise ValueError(f"{_where(f, ft)}: slot must be in [0, 2**32), got {ft.slot}")


def _check_seeds(f: int, seeds: np.ndarray | None, name: str) -> np.ndarray:
    if (
        not isinstance(seeds, np.ndarray)
        or seeds.dtype != np.uint64
        or seeds.ndim != 2
        or seeds.shape[0] < 1
        or seeds.shape[1] != 4
    ):
        found = (
            f"{seeds.dtype} array of shape {seeds.shape}"
            if isinstance(seeds, np.ndarray)
            else repr(seeds)
        )
        raise ValueError(
            f"features[{f}] (memrec): {name} must be a uint64 array of shape [k >= 1, 4] "
            f"(rows a0, a1, a2, b), found {found}; build them with seeds_from_hex()"
        )
    return seeds


def _check_memrec(f: int, ft: FeatureTable, k: int, weights: np.ndarray) -> None:
    where = _where(f, ft)
    if not 1 <= ft.weight_rows < 2**31:
        raise ValueError(f"{where}: weight_rows must be in [1, 2**31), got {ft.weight_rows}")
    if ft.weight_cols not in (1, k):
        raise ValueError(
            f"{where}: weight_cols must be k = {k} (per-hash weights, k = len(token_seeds)) or "
            f"1 (scalar weight), got {ft.weight_cols}"
        )
    end = ft.weight_offset + ft.weight_rows * ft.weight_cols
    if ft.weight_offset < 0 or end > weights.shape[0]:
        raise ValueError(
            f"{where}: weight elements [{ft.weight_offset}, {end}) (weight_offset + weight_rows "
            f"* weight_cols) must lie inside weights, which has {weights.shape[0]} elements"
        )


def _check_full(f: int, ft: FeatureTable, vocab: np.ndarray) -> None:
    where = _where(f, ft)
    lo, hi = ft.vocab_offset, ft.vocab_offset + ft.rows - 1
    if lo < 0 or hi > vocab.shape[0]:
        raise ValueError(
            f"{where}: vocabulary [{lo}, {hi}) (vocab_offset, rows - 1 ids) must lie inside "
            f"vocab, which has {vocab.shape[0]} ids"
        )
    if not _k.strictly_increasing(vocab, lo, hi):
        raise ValueError(
            f"{where}: vocabulary vocab[{lo}:{hi}] must be strictly increasing (sorted, no "
            "duplicates); sort it with np.unique and reorder the table rows to match"
        )
