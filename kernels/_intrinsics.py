"""Low-level helpers Numba has no spelling for: prefetches, vector row updates, streaming stores.

Random row gathers (token rows in L3, full-table rows in DRAM) are latency bound: a gather loop
stalls once the out-of-order window is full of outstanding loads. Prefetching the rows a few
bags ahead keeps more misses in flight, as FBGEMM's embedding kernels do.

Numba's on-disk cache keys a kernel on its own source file, not on the intrinsics it calls:
after editing this file, delete the ``*.nbi``/``*.nbc`` files in ``kernels/__pycache__`` (or
set ``NUMBA_CACHE_DIR`` to a fresh directory), or the kernels keep running the old code.
"""

from __future__ import annotations

import numba
from llvmlite import binding as llvm
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from ._config import JIT

_IR = cgutils.ir  # llvmlite's IR module, as Numba itself uses it


def _item_ptr(context, builder, aryty, value, idx):
    # Address of ``arr[idx...]`` (no wraparound, no bounds check).
    ary = context.make_array(aryty)(context, builder, value)
    return cgutils.get_item_pointer2(
        context,
        builder,
        ary.data,
        cgutils.unpack_tuple(builder, ary.shape),
        cgutils.unpack_tuple(builder, ary.strides),
        aryty.layout,
        idx,
        wraparound=False,
        boundscheck=False,
    )


@intrinsic
def prefetch(typingctx, arr, i, j):  # noqa: ARG001 (Numba's intrinsic signature)
    """Prefetch the cache line holding ``arr[i, j]`` into all cache levels (``prefetcht0``).

    A hint only: it never faults, so an index outside ``arr`` is harmless (but useless).

    Parameters
    ----------
    arr : 2-D array (any dtype, C layout)
    i, j : integer indices
    """
    if not isinstance(arr, types.Array) or arr.ndim != 2:
        return None
    if not isinstance(i, types.Integer) or not isinstance(j, types.Integer):
        return None
    sig = types.void(arr, i, j)

    def codegen(context, builder, signature, args):
        idx = [
            context.cast(builder, args[1], signature.args[1], types.intp),
            context.cast(builder, args[2], signature.args[2], types.intp),
        ]
        ptr = _item_ptr(context, builder, signature.args[0], args[0], idx)
        i32 = _IR.IntType(32)
        fnty = _IR.FunctionType(_IR.VoidType(), [cgutils.voidptr_t, i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0")
        # (address, rw = read, locality = 3 (keep in all levels), cache = data)
        builder.call(fn, [builder.bitcast(ptr, cgutils.voidptr_t), i32(0), i32(3), i32(1)])
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def data_address(typingctx, arr):  # noqa: ARG001
    """The address of ``arr``'s first element, as an ``intp`` (for alignment checks)."""
    if not isinstance(arr, types.Array):
        return None
    sig = types.intp(arr)

    def codegen(context, builder, signature, args):
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        return builder.ptrtoint(ary.data, context.get_value_type(types.intp))

    return sig, codegen


@intrinsic
def address_as_pointer(typingctx, addr, dtype):  # noqa: ARG001
    """``(dtype *) addr``: a raw address as a typed pointer, to view with ``numba.carray``.

    Only for addresses of live, C-contiguous NumPy data of that dtype, kept alive by the caller
    (``BagPlan`` holds the arrays whose addresses it hands its kernels).
    """
    if isinstance(dtype, types.NumberClass):
        ety = dtype.instance_type
    elif isinstance(dtype, types.DType):  # ``arr.dtype`` inside a kernel
        ety = dtype.dtype
    else:
        return None
    if not isinstance(addr, types.Integer):
        return None
    ptrty = types.CPointer(ety)
    sig = ptrty(addr, dtype)

    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], context.get_value_type(ptrty))

    return sig, codegen


@numba.njit(inline="always", **JIT)
def rows_view(a, dim):
    """``a`` (``[rows, dim]``, C-contiguous, any dtype) viewed again with ``dim`` a constant.

    A function that takes an array as an argument sees its shape as run-time values, so every
    row address costs a multiply by the row length; called with a literal ``dim``, this view
    turns it into a shift (and frees the registers that held the lengths). Worth it in the hot
    loops of separately compiled functions: with it and ``_bag_kernels._weight``, the lookup
    tiles ran 1.05-1.32x as fast one-hot and 1.08-1.17x multi-hot at D = 16, B >= 1024, and
    1.01-1.08x one-hot at D = 128 (side by side, Criteo tables). It holds no reference: ``a``
    must outlive it.
    """
    return numba.carray(address_as_pointer(data_address(a), a.dtype), (a.shape[0], dim))


@numba.njit(inline="always", **JIT)
def borrowed(a):
    """``a`` viewed again, without a reference count (``a`` must outlive the view).

    Numba counts references to an array that it allocated or received from Python: each array
    handed to an inlined helper, each slice of it, is an atomic increment and a decrement, calls
    to ``NRT_incref``/``NRT_decref`` that LLVM cannot remove across loops (and a locked
    instruction orders the loads and stores around it). A view of the raw data has no count:
    none of that. Read-only arrays come back writable: for reading only. (``rows_view`` is the
    same view with a constant row length.)
    """
    return numba.carray(address_as_pointer(data_address(a), a.dtype), a.shape)


# Vector width of the row updates: 16 float32 = one 64-byte cache line, one AVX-512 register.
_VEC = 16
LINE = 16  # float32 elements per 64-byte cache line: one prefetch per line of a row
# Token rows may be stored as IEEE binary16 (``convert --token-dtype float16``): NumPy float16
# arrays, which Numba cannot type, reach the kernels viewed as ``uint16`` bit patterns. The row
# updates load them as half and widen each vector to float32 (one ``vcvtph2ps`` per 8 or 16
# values) before the multiply-add, so a half row pools to exactly the bits of the float32 row
# holding the same values. Outputs are always float32.
HALF_BITS = types.uint16


@intrinsic
def line_items(typingctx, arr):  # noqa: ARG001
    """Elements of ``arr`` in one 64-byte cache line: a constant (16 float32, 32 half rows).

    Row prefetch loops step by it, one prefetch per line of a row.
    """
    if not isinstance(arr, types.Array):
        return None
    items = max(1, 64 * 8 // arr.dtype.bitwidth)
    sig = types.intp(arr)

    def codegen(context, builder, signature, args):
        return context.get_constant(types.intp, items)

    return sig, codegen


def _load_f32(builder, ptr, start, width, half):
    # ``width`` elements of a row at ``ptr + start`` as float32 (a vector if ``width > 1``):
    # loaded as they are, or, for a half row (``ptr`` to i16 bit patterns), widened.
    f32 = _IR.FloatType()
    ety = _IR.IntType(16) if half else f32
    p = builder.gep(ptr, [start], inbounds=True, source_etype=ety)
    vty = ety if width == 1 else _IR.VectorType(ety, width)
    if width > 1:
        p = builder.bitcast(p, vty.as_pointer())
    x = builder.load(p, align=2 if half else 4, typ=vty)
    if not half:
        return x
    hty = _IR.HalfType() if width == 1 else _IR.VectorType(_IR.HalfType(), width)
    return builder.fpext(builder.bitcast(x, hty), f32 if width == 1 else _IR.VectorType(f32, width))


def _src_rows(src) -> bool | None:
    # Whether ``src`` (a Numba array type) holds half rows (True), float32 rows (False), or
    # cannot be a table of rows (None): 2-D, C layout, float32 or binary16 bits.
    if not isinstance(src, types.Array) or src.ndim != 2 or src.layout != "C":
        return None
    if src.dtype == types.float32:
        return False
    return True if src.dtype == HALF_BITS else None


# Every row update is ``acc = w * row + acc`` rounded once (a fused multiply-add) where the CPU
# has FMA, else a multiply then an add; never left to LLVM's ``contract``, which fused a
# different product of ``w0 * r0 + w1 * r1`` depending on the code around the call: the same bag
# then pooled to different last bits in the serial and the parallel kernel. Spelled out, a bag's
# result is one fold over its rows, in id then hash order, whichever path pools it.
_HAS_FMA = numba.config.CPU_NAME is None and bool(llvm.get_host_cpu_features().get("fma", False))


def _mul_add(builder, w, x, acc):
    # ``w * x + acc``: one rounding with FMA (llvm.fma is one vfmadd), two without.
    if _HAS_FMA:
        ty = x.type
        name = f"llvm.fma.v{ty.count}f32" if isinstance(ty, _IR.VectorType) else "llvm.fma.f32"
        fma = cgutils.get_or_insert_function(builder.module, _IR.FunctionType(ty, [ty] * 3), name)
        return builder.call(fma, [w, x, acc])
    return builder.fadd(builder.fmul(w, x), acc)


def _row_ptr(context, builder, aryty, value, row):
    # Address of ``arr[row, 0]`` as a float pointer.
    return _item_ptr(context, builder, aryty, value, [row, context.get_constant(types.intp, 0)])


def _splat(builder, value, width):
    vecty = _IR.VectorType(value.type, width)
    vec = builder.insert_element(_IR.Constant(vecty, None), value, _IR.IntType(32)(0))
    zeros = _IR.Constant(_IR.VectorType(_IR.IntType(32), width), [0] * width)
    return builder.shuffle_vector(vec, _IR.Constant(vecty, None), zeros)


def _emit_rows(builder, dst, srcs, weights, start, width, accumulate, stream=False, half=False):
    # dst[start:start+width] (+)= sum_j weights[j] * srcs[j][start:start+width], every load
    # issued before the store, so no aliasing question arises. ``stream``: a non-temporal
    # store, which must be 64-byte aligned (the caller guarantees it). ``half``: the sources
    # are half rows (``_load_f32``).
    f32 = _IR.FloatType()
    if width == 1:
        ety, cast = f32, lambda p: p
    else:
        ety = _IR.VectorType(f32, width)

        def cast(p):
            return builder.bitcast(p, ety.as_pointer())

    def at(ptr):
        return cast(builder.gep(ptr, [start], inbounds=True, source_etype=f32))

    acc = builder.load(at(dst), align=4, typ=ety) if accumulate else None
    for src, w in zip(srcs, weights, strict=True):
        wv = _splat(builder, w, width) if width > 1 else w
        x = _load_f32(builder, src, start, width, half)
        acc = builder.fmul(wv, x) if acc is None else _mul_add(builder, wv, x, acc)
    if stream:
        store = builder.store(acc, at(dst), align=4 * width)
        store.set_metadata("nontemporal", builder.module.add_metadata([_IR.IntType(32)(1)]))
    else:
        builder.store(acc, at(dst), align=4)


def _row_op(nrows: int, accumulate: bool, dim, dst, i, src, pairs, stream: bool = False):
    """Signature and code of ``op(dim, dst, i, src, r_0, w_0, ..., r_{n-1}, w_{n-1})``.

    It computes ``dst[i, :] = w_0 * src[r_0, :] + ... + w_{n-1} * src[r_{n-1}, :]`` (with
    ``accumulate``, starting from ``dst[i, :]``), left to right, each term after the first one
    multiply-add (``_mul_add``), with explicit 16-wide vector loads and stores. ``dst`` and
    ``src`` are C-contiguous float32 2-D arrays of width ``dim``; nothing is checked. Pass
    ``dim`` as a compile-time constant so that LLVM drops the loops. Numba cannot tell that
    ``dst`` and ``src`` never overlap, so its own loops either fall back to scalar code
    (constant D, fully unrolled) or test for overlap on every row; issuing all loads of a chunk
    before its store needs no such test. ``src`` may also hold half rows (``uint16`` bit
    patterns, see ``HALF_BITS``), widened to float32 as they are loaded.

    ``stream`` writes ``dst[i, :]`` with non-temporal stores, straight to memory without
    first reading the line or keeping it in cache: for outputs too large to stay in cache,
    whose stores would otherwise evict the token tables. Each row must start 64-byte aligned
    and ``dim`` must be a multiple of 16 (the caller checks both; a misaligned streaming store
    faults).
    """
    half = _src_rows(src)
    if half is None or not _f32_2d(dst):
        return None
    if not isinstance(i, types.Integer) or not isinstance(dim, types.Integer):
        return None
    if any(not isinstance(r, types.Integer) for r in pairs[0::2]):
        return None
    if any(not isinstance(w, (types.Float, types.Integer)) for w in pairs[1::2]):
        return None
    sig = types.void(dim, dst, i, src, *pairs)

    def codegen(context, builder, signature, args):
        intp = types.intp
        tys = signature.args
        dim = context.cast(builder, args[0], tys[0], intp)
        row = context.cast(builder, args[2], tys[2], intp)
        dptr = _row_ptr(context, builder, tys[1], args[1], row)
        srcs, ws = [], []
        for j in range(nrows):
            r = context.cast(builder, args[4 + 2 * j], tys[4 + 2 * j], intp)
            srcs.append(_row_ptr(context, builder, tys[3], args[3], r))
            ws.append(context.cast(builder, args[5 + 2 * j], tys[5 + 2 * j], types.float32))
        vec = context.get_value_type(intp)(_VEC)
        nvec = builder.udiv(dim, vec)
        with cgutils.for_range(builder, nvec) as loop:
            start = builder.mul(loop.index, vec)
            _emit_rows(builder, dptr, srcs, ws, start, _VEC, accumulate, stream, half)
        # The tail (D not a multiple of 16) element by element.
        done = builder.mul(nvec, vec)
        with cgutils.for_range(builder, builder.sub(dim, done)) as loop:
            tail = builder.add(done, loop.index)
            _emit_rows(builder, dptr, srcs, ws, tail, 1, accumulate, half=half)
        return context.get_dummy_value()

    return sig, codegen


# One intrinsic per arity (Numba intrinsics take no *args). See ``_row_op`` for the semantics.


@intrinsic
def rows1_set(typingctx, dim, dst, i, src, r0, w0):  # noqa: ARG001
    """``dst[i] = w0 * src[r0]``."""
    return _row_op(1, False, dim, dst, i, src, (r0, w0))


@intrinsic
def rows1_add(typingctx, dim, dst, i, src, r0, w0):  # noqa: ARG001
    """``dst[i] += w0 * src[r0]``."""
    return _row_op(1, True, dim, dst, i, src, (r0, w0))


@intrinsic
def rows2_set(typingctx, dim, dst, i, src, r0, w0, r1, w1):  # noqa: ARG001
    """``dst[i] = w0 * src[r0] + w1 * src[r1]``."""
    return _row_op(2, False, dim, dst, i, src, (r0, w0, r1, w1))


@intrinsic
def rows3_set(typingctx, dim, dst, i, src, r0, w0, r1, w1, r2, w2):  # noqa: ARG001
    """``dst[i] = w0 * src[r0] + w1 * src[r1] + w2 * src[r2]``."""
    return _row_op(3, False, dim, dst, i, src, (r0, w0, r1, w1, r2, w2))


@intrinsic
def rows4_set(typingctx, dim, dst, i, src, r0, w0, r1, w1, r2, w2, r3, w3):  # noqa: ARG001
    """``dst[i] = w0 * src[r0] + w1 * src[r1] + w2 * src[r2] + w3 * src[r3]``."""
    return _row_op(4, False, dim, dst, i, src, (r0, w0, r1, w1, r2, w2, r3, w3))


@intrinsic
def rows1_stream(typingctx, dim, dst, i, src, r0, w0):  # noqa: ARG001
    """``dst[i] = w0 * src[r0]``, streamed (see ``_row_op``)."""
    return _row_op(1, False, dim, dst, i, src, (r0, w0), stream=True)


@intrinsic
def rows2_stream(typingctx, dim, dst, i, src, r0, w0, r1, w1):  # noqa: ARG001
    """``dst[i] = w0 * src[r0] + w1 * src[r1]``, streamed (see ``_row_op``)."""
    return _row_op(2, False, dim, dst, i, src, (r0, w0, r1, w1), stream=True)


@intrinsic
def rows3_stream(typingctx, dim, dst, i, src, r0, w0, r1, w1, r2, w2):  # noqa: ARG001
    """``dst[i] = w0 * src[r0] + w1 * src[r1] + w2 * src[r2]``, streamed (see ``_row_op``)."""
    return _row_op(3, False, dim, dst, i, src, (r0, w0, r1, w1, r2, w2), stream=True)


@intrinsic
def rows4_stream(typingctx, dim, dst, i, src, r0, w0, r1, w1, r2, w2, r3, w3):  # noqa: ARG001
    """``rows4_set``, streamed (see ``_row_op``)."""
    return _row_op(4, False, dim, dst, i, src, (r0, w0, r1, w1, r2, w2, r3, w3), stream=True)


@numba.njit(inline="always", **JIT)
def rows1_write(dim, dst, i, src, r0, w0, stream):
    """``dst[i] = w0 * src[r0]``, streamed if ``stream`` (a loop-invariant flag), else cached."""
    if stream:
        rows1_stream(dim, dst, i, src, r0, w0)
    else:
        rows1_set(dim, dst, i, src, r0, w0)


@numba.njit(inline="always", **JIT)
def rows2_write(dim, dst, i, src, r0, w0, r1, w1, stream):
    """``dst[i] = w0 * src[r0] + w1 * src[r1]``, streamed if ``stream``, else cached."""
    if stream:
        rows2_stream(dim, dst, i, src, r0, w0, r1, w1)
    else:
        rows2_set(dim, dst, i, src, r0, w0, r1, w1)


@numba.njit(inline="always", **JIT)
def rows3_write(dim, dst, i, src, r0, w0, r1, w1, r2, w2, stream):
    """``rows3_set``, streamed if ``stream``, else cached."""
    if stream:
        rows3_stream(dim, dst, i, src, r0, w0, r1, w1, r2, w2)
    else:
        rows3_set(dim, dst, i, src, r0, w0, r1, w1, r2, w2)


@numba.njit(inline="always", **JIT)
def rows4_write(dim, dst, i, src, r0, w0, r1, w1, r2, w2, r3, w3, stream):
    """``rows4_set``, streamed if ``stream``, else cached."""
    if stream:
        rows4_stream(dim, dst, i, src, r0, w0, r1, w1, r2, w2, r3, w3)
    else:
        rows4_set(dim, dst, i, src, r0, w0, r1, w1, r2, w2, r3, w3)


@intrinsic
def store_fence(typingctx):  # noqa: ARG001
    """``sfence``: make this thread's streaming stores visible before anything it does next.

    Streaming stores are weakly ordered; a kernel that issued any calls this before it returns
    (each thread of a parallel kernel, before the thread pool joins).
    """
    sig = types.void()

    def codegen(context, builder, signature, args):
        fn = cgutils.get_or_insert_function(
            builder.module, _IR.FunctionType(_IR.VoidType(), []), "llvm.x86.sse.sfence"
        )
        builder.call(fn, [])
        return context.get_dummy_value()

    return sig, codegen


# ------------------------------------------------------------------ whole bags in registers


def _bag_codegen(dim: int, context, builder, dptr, rows, half=False, stream=False):
    """Emit ``dst = sum over rows of w * src[r]`` with the sum held in registers.

    ``rows(emit)`` emits the loops over the bag and calls ``emit(src_row_ptr, weight)`` once per
    row, in order. The accumulators are allocas, which LLVM promotes to vector registers: a row
    costs a load and a fused multiply-add, not the load-add-store round trip through ``dst``
    (whose store-to-load forwarding made long bags latency bound). Sums start from zero, so an
    empty bag gives zeros and the first row is ``w * r`` exactly: the same fold as ``_row_op``.
    ``half``: the source rows are half rows, widened as they are loaded (``_load_f32``).
    ``stream``: the sum is written with streaming stores (on ``_row_op``'s terms: the caller
    streams only rows that start 64-byte aligned, of whole vectors; a tail is stored cached).
    """
    f32 = _IR.FloatType()
    vecty = _IR.VectorType(f32, _VEC)
    nvec, tail = divmod(dim, _VEC)
    with builder.goto_entry_block():
        accs = [builder.alloca(vecty) for _ in range(nvec)] + [
            builder.alloca(f32) for _ in range(tail)
        ]
    for c in range(nvec):
        builder.store(_IR.Constant(vecty, [0.0] * _VEC), accs[c])
    for t in range(tail):
        builder.store(_IR.Constant(f32, 0.0), accs[nvec + t])

    def chunk(ptr, c, width):
        p = builder.gep(ptr, [_IR.IntType(64)(c)], inbounds=True, source_etype=f32)
        return p if width == 1 else builder.bitcast(p, vecty.as_pointer())

    def emit(sptr, w):
        wv = _splat(builder, w, _VEC)
        for c in range(nvec):
            row = _load_f32(builder, sptr, _IR.IntType(64)(c * _VEC), _VEC, half)
            acc = builder.load(accs[c], typ=vecty)
            builder.store(_mul_add(builder, wv, row, acc), accs[c])
        for t in range(tail):
            x = _load_f32(builder, sptr, _IR.IntType(64)(nvec * _VEC + t), 1, half)
            acc = builder.load(accs[nvec + t], typ=f32)
            builder.store(_mul_add(builder, w, x, acc), accs[nvec + t])

    rows(emit)
    for c in range(nvec):
        acc = builder.load(accs[c], typ=vecty)
        if stream:
            store = builder.store(acc, chunk(dptr, c * _VEC, _VEC), align=4 * _VEC)
            store.set_metadata("nontemporal", builder.module.add_metadata([_IR.IntType(32)(1)]))
        else:
            builder.store(acc, chunk(dptr, c * _VEC, _VEC), align=4)
    for t in range(tail):
        builder.store(
            builder.load(accs[nvec + t], typ=f32), chunk(dptr, nvec * _VEC + t, 1), align=4
        )


def _literal_dim(dim) -> int | None:
    return dim.literal_value if isinstance(dim, types.IntegerLiteral) else None


def _f32_2d(*arrays) -> bool:
    return all(
        isinstance(a, types.Array) and a.ndim == 2 and a.dtype == types.float32 and a.layout == "C"
        for a in arrays
    )


def _scratch_bag_types(dim, dst, src, hb, ab) -> tuple[int, bool] | None:
    # (width, half source rows) if these can pool a bag from the per-tile scratch, else None.
    d = _literal_dim(dim)
    half = _src_rows(src)
    if d is None or half is None or not _f32_2d(dst):
        return None
    if not (isinstance(hb, types.Array) and hb.ndim == 2 and isinstance(hb.dtype, types.Integer)):
        return None
    if not (isinstance(ab, types.Array) and ab.ndim == 2 and ab.dtype == types.float32):
        return None
    return d, half


def _scratch_bag_codegen(d, half, hashes, stream=False):
    # Codegen of ``bag_rows_weighted`` (``hashes`` None: k and sel are its last two arguments)
    # and of ``bag_rows2_weighted`` (``hashes == 2``: rows 0 and 1 of hb and ab, unrolled).
    def codegen(context, builder, signature, args):
        intp = types.intp
        tys = signature.args
        vals = [
            context.cast(builder, a, t, intp) if isinstance(t, types.Integer) else a
            for a, t in zip(args, tys, strict=True)
        ]
        _, dstv, iv, srcv, hbv, abv, q0v, q1v = vals[:8]
        dptr = _row_ptr(context, builder, tys[1], dstv, iv)

        def const(j):
            return context.get_constant(intp, j)

        def one_row(q, j, wj, emit):
            r = builder.load(_item_ptr(context, builder, tys[4], hbv, [j, q]))
            r = context.cast(builder, r, tys[4].dtype, intp)
            w = builder.load(_item_ptr(context, builder, tys[5], abv, [wj, q]))
            emit(_row_ptr(context, builder, tys[3], srcv, r), w)

        def rows(emit):
            with cgutils.for_range_slice(builder, q0v, q1v, q0v.type(1)) as (q, _):
                if hashes is None:
                    kv, selv = vals[8:]
                    with cgutils.for_range(builder, kv) as loop:
                        one_row(q, loop.index, builder.mul(loop.index, selv), emit)
                else:
                    for j in range(hashes):
                        one_row(q, const(j), const(j), emit)

        _bag_codegen(d, context, builder, dptr, rows, half, stream)
        return context.get_dummy_value()

    return codegen


@intrinsic
def bag_rows_weighted(typingctx, dim, dst, i, src, hb, ab, q0, q1, k, sel):  # noqa: ARG001
    """``dst[i] = sum_{q in [q0, q1)} sum_{j < k} ab[j * sel, q] * src[hb[j, q]]``, in that order.

    A MEM-REC bag from the per-tile scratch (``hb``: int64 rows, ``ab``: float32 weights, one
    row per hash function). ``dim`` must be a compile-time constant (a literal int); ``dst`` and
    ``src`` C-contiguous 2-D arrays of width ``dim``, ``dst`` float32, ``src`` float32 or half
    rows (see ``HALF_BITS``). Nothing is checked.
    """
    return _scratch_bag(dim, dst, i, src, hb, ab, (q0, q1, k, sel), None, False)


@intrinsic
def bag_rows_weighted_stream(typingctx, dim, dst, i, src, hb, ab, q0, q1, k, sel):  # noqa: ARG001
    """``bag_rows_weighted``, ``dst[i]`` streamed (see ``_row_op``)."""
    return _scratch_bag(dim, dst, i, src, hb, ab, (q0, q1, k, sel), None, True)


@intrinsic
def bag_rows2_weighted(typingctx, dim, dst, i, src, hb, ab, q0, q1):  # noqa: ARG001
    """``bag_rows_weighted`` with ``k = 2, sel = 1``, unrolled: the same fold, to the same bits.

    ``dst[i] = sum_{q in [q0, q1)} (ab[0, q] * src[hb[0, q]] + ab[1, q] * src[hb[1, q]])``.
    """
    return _scratch_bag(dim, dst, i, src, hb, ab, (q0, q1), 2, False)


@intrinsic
def bag_rows2_stream(typingctx, dim, dst, i, src, hb, ab, q0, q1):  # noqa: ARG001
    """``bag_rows2_weighted``, ``dst[i]`` streamed (see ``_row_op``)."""
    return _scratch_bag(dim, dst, i, src, hb, ab, (q0, q1), 2, True)


def _scratch_bag(dim, dst, i, src, hb, ab, tail, hashes, stream):
    # Signature and code of the intrinsics above; ``tail``: the types of their arguments after
    # ``ab``.
    found = _scratch_bag_types(dim, dst, src, hb, ab)
    if found is None:
        return None
    sig = types.void(dim, dst, i, src, hb, ab, *tail)
    return sig, _scratch_bag_codegen(*found, hashes=hashes, stream=stream)


@intrinsic
def bag_rows(typingctx, dim, dst, i, src, idx, p0, p1):  # noqa: ARG001
    """``dst[i] = sum_{p in [p0, p1)} src[idx[p]]``, in that order (a full-table bag).

    ``dim`` must be a compile-time constant (a literal int); ``dst`` and ``src`` C-contiguous
    float32 2-D arrays of width ``dim``; ``idx`` a 1-D integer array. Nothing is checked.
    """
    return _full_bag(dim, dst, i, src, idx, p0, p1, False)


@intrinsic
def bag_rows_stream(typingctx, dim, dst, i, src, idx, p0, p1):  # noqa: ARG001
    """``bag_rows``, ``dst[i]`` streamed (see ``_row_op``)."""
    return _full_bag(dim, dst, i, src, idx, p0, p1, True)


def _full_bag(dim, dst, i, src, idx, p0, p1, stream):
    # Signature and code of ``bag_rows`` and ``bag_rows_stream``.
    d = _literal_dim(dim)
    if d is None or not _f32_2d(dst, src):
        return None
    if not (
        isinstance(idx, types.Array) and idx.ndim == 1 and isinstance(idx.dtype, types.Integer)
    ):
        return None
    sig = types.void(dim, dst, i, src, idx, p0, p1)

    def codegen(context, builder, signature, args):
        intp = types.intp
        tys = signature.args
        iv = context.cast(builder, args[2], tys[2], intp)
        p0v = context.cast(builder, args[5], tys[5], intp)
        p1v = context.cast(builder, args[6], tys[6], intp)
        dptr = _row_ptr(context, builder, tys[1], args[1], iv)
        one = _IR.Constant(_IR.FloatType(), 1.0)

        def rows(emit):
            with cgutils.for_range_slice(builder, p0v, p1v, p0v.type(1)) as (p, _):
                r = builder.load(_item_ptr(context, builder, tys[4], args[4], [p]))
                r = context.cast(builder, r, tys[4].dtype, intp)
                emit(_row_ptr(context, builder, tys[3], args[3], r), one)

        _bag_codegen(d, context, builder, dptr, rows, stream=stream)
        return context.get_dummy_value()

    return sig, codegen
