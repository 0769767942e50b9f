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

from collections.abc import Iterable
from dataclasses import dataclass

import numba
import numpy as np

from . import _alloc
from . import _bag_kernels as _k
from ._alloc import empty_aligned, empty_output
from ._checks import require_array
from .full_bag import full_bag_rows

__all__ = ["BagPlan", "FeatureTable", "full_bag_rows", "make_plan"]

# Up to this many samples the serial kernel wins: a parallel launch costs ~1.5 us.
SERIAL_MAX_BATCH = 64
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
        # The kernels reach the tables through this handle of addresses (``_k.H_TOKENS``); the
        # attributes above and these two keep the memory alive for as long as the plan.
        self._keys = keys
        self._meta = meta
        self._nf = len(features)
        self._dim = int(tokens.shape[1])
        self._half = tokens.dtype == np.float16  # kernels for binary16 token rows
        handle = np.zeros(_k.HANDLE_LEN, dtype=np.int64)
        for slot, arr in (
            (_k.H_TOKENS, tokens),
            (_k.H_WEIGHTS, weights),
            (_k.H_VOCAB, vocab),
            (_k.H_KEYS, keys),
            (_k.H_META, meta),
        ):
            handle[slot] = arr.ctypes.data
            handle[slot + 1] = arr.shape[0]
        # Rows of the per-tile scratch: the largest k (a full feature counts as k = 1).
        handle[_k.H_MAX_K] = max(1, int(meta[:, _k.K].max())) if len(features) else 1
        # Rows of the hash scratch: k token and k_w weight rows per id (4 for k = k_w = 2).
        hashes = meta[:, _k.K] + meta[:, _k.KW]
        handle[_k.H_MAX_HASHES] = max(4, int(hashes.max())) if len(features) else 4
        handle[_k.H_STREAM_MIN] = _alloc.stream_min_bytes(self._dim * 4)
        handle[_k.H_POOL] = numba.config.NUMBA_NUM_THREADS
        self._handle = handle
        # (serial, parallel) kernels, fetched on first use by ``_checked_lookup``: calling None
        # raises the TypeError that sends the first call of each kind down that path.
        self._kernels: list = [None, None]

    @property
    def num_features(self) -> int:
        """``F``, the number of sparse features."""
        return len(self.features)

    @property
    def dim(self) -> int:
        """``D``, the embedding width."""
        return int(self.tokens.shape[1])

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
        float32 array [B, F, D] (``out`` if given); empty bags give zeros. A bag's embedding
        does not depend on the batch around it, the kernel or the threads: its rows are summed
        in id then hash order with the same multiply-adds on every path, to the same bits.

        Raises
        ------
        ValueError
            On a wrong dtype, shape or layout of ``values``/``offsets``/``out``, or offsets that
            are negative, decreasing or beyond ``len(values)`` (then a given ``out`` may have
            been partly overwritten).
        """
        # The usual call is one dispatcher call: Numba types the four arrays in C and finds the
        # one compiled signature (``_k.SIGNATURE``); the kernel checks shapes and offsets.
        # Anything else (a wrong dtype or layout; the first call) raises TypeError, since the
        # kernels never compile on the fly, and takes the checked path. ~1 us at B = 1 in all.
        if out is None:
            out = self._new_output(values, offsets)
        try:
            if parallel is None:
                parallel = len(out) > SERIAL_MAX_BATCH
            status = self._kernels[1 if parallel else 0](values, offsets, self._handle, out)
        except TypeError:
            status = self._checked_lookup(values, offsets, out, bool(parallel))
        if status != _OK:  # nothing was read out of bounds; ``out`` is not to be used
            self._raise(status, values, offsets, out)
        return out

    def load_kernels(self, batch_sizes: Iterable[int]) -> None:
        """Load now the kernels that batches of these sizes use (else the first lookup does).

        The first time on a machine this compiles them, about a minute each (Numba's on-disk
        cache keeps them for every later process); afterwards it takes well under a second.
        """
        for parallel in sorted({int(b) > SERIAL_MAX_BATCH for b in batch_sizes}):
            self._kernel(parallel)

    def _kernel(self, parallel: bool):
        # The serial or parallel kernel, loaded (or compiled) on first use and kept.
        if self._kernels[parallel] is None:
            self._kernels[parallel] = _k.compiled_lookup_kernel(self._dim, parallel, self._half)
        return self._kernels[parallel]

    def _new_output(self, values: object, offsets: object) -> np.ndarray:
        require_array(values, np.int64, 1, "values")
        self._check_offsets_shape(require_array(offsets, np.int64, 2, "offsets"))
        return empty_output((offsets.shape[1] - 1, self._nf, self._dim))

    def _check_offsets_shape(self, offsets: np.ndarray) -> None:
        if offsets.shape[0] != self._nf or offsets.shape[1] < 1:
            raise ValueError(
                f"offsets must have shape [F, B + 1] = [{self._nf}, B + 1] (one row per feature "
                f"of the plan), got {offsets.shape}"
            )

    def _checked_lookup(self, values: object, offsets: object, out: object, parallel: bool) -> int:
        # The slow path: say what is wrong with the arguments, or compile the kernel (first
        # call for this D in the process; loads from Numba's cache when it can) and run it on
        # arrays of exactly the compiled types (copies for unaligned ones, say).
        values = require_array(values, np.int64, 1, "values")
        offsets = require_array(offsets, np.int64, 2, "offsets")
        self._check_offsets_shape(offsets)
        out = require_array(out, np.float32, 3, "out")
        if not out.flags.writeable:
            raise ValueError(
                "out must be a writable float32 array of shape [B, F, D]; pass out=None to "
                "allocate one"
            )
        kernel = self._kernel(parallel)
        if not values.flags.aligned:
            values = np.array(values)  # a copy is aligned
        if not offsets.flags.aligned:
            offsets = np.array(offsets)
        if out.flags.aligned and type(out) is np.ndarray:
            return kernel(values, offsets, self._handle, out)
        tmp = np.empty(out.shape, np.float32)
        status = kernel(values, offsets, self._handle, tmp)
        out[...] = tmp
        return status

    def _raise(self, status: int, values: np.ndarray, offsets: np.ndarray, out: np.ndarray):
        if status == _k.BAD_SHAPE:
            self._check_offsets_shape(offsets)
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
    tokens : float32 or float16 array [R, D], C-contiguous: every table's token rows (memrec)
        or rows (full), stacked; a read-only memory map is used as is. float16 rows are widened
        to float32 as they are read: lookups give exactly what the float32 copy of the same
        rows would, from half the bytes.
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
    tokens = _readonly(require_array(tokens, _token_type(tokens), 2, "tokens"))
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


def _token_type(tokens: object) -> type:
    # float16 or float32 (the default, for anything that is neither: ``require_array`` names it).
    if isinstance(tokens, np.ndarray) and tokens.dtype == np.float16:
        return np.float16
    if isinstance(tokens, np.ndarray) and tokens.dtype != np.float32:
        raise ValueError(
            f"tokens must be a float32 or float16 array [R, D], found {tokens.dtype}; convert "
            "with np.ascontiguousarray(tokens, dtype=np.float32)"
        )
    return np.float32


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
