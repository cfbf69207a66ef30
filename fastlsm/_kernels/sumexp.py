"""The one exp-sum row pass of every normalizer, written as an LLVM IR loop over vectors.

``sum(exp(x - m))`` is the arithmetic core of log_softmax, logsumexp, cross-entropy and the
beam step, and the one pass that is bound by arithmetic rather than by memory. Written in
Numba as an exp map into a scratch block followed by a fixed-order sum, it costs about 30
vector instructions per 16 elements; here it is about 17, in registers:

- ``d = x - m`` first (exact for ``d`` near 0 even for logits like 1e4), then the float32
  exp of a sum term (:func:`.math.exp_sum_ir`: clamped below at -87, one normal ``2**n``);
- the terms are added into four 16-lane float32 accumulators, 4 terms per lane, then widened
  and added into four 16-lane float64 accumulators; the 64 lanes are combined in a fixed
  tree. The order depends only on the row length: the same bits on every thread, every
  process and every CPU that runs the same IR (AVX2 machines split each vector in two).

What a pass does besides summing is composed explicitly, by a :class:`RowPass` spec, never
inferred from which arguments are present:

- ``store``: also store ``exp(x - m)`` as output values (:func:`.math.exp_out_ir`: within
  2 ulp down to the smallest denormal, ``exp(-inf) = 0``) to a row ``out``. The sum is
  unchanged: each term is derived from its stored value by one select
  (:func:`.math.sum_term_from_out_ir`), so a storing pass returns the bits of a summing one
  (cross-entropy's forward and backward give the same loss, logsumexp the same lse);
- ``write``: in the same loop, write the *previous* row's output ``po`` from ``px``:
  ``"shift"`` ``(px - a) - b`` (log_softmax) or ``"divide"`` ``px / s`` (softmax), one
  vector of ``po`` per vector of ``x``, streaming (``nontemporal``) or plain stores, so that
  the write traffic of one row overlaps the arithmetic of the next;
- ``prefetch``: prefetch the row ``nxt`` (the one this thread computes next) into L2, one
  line per vector at the same offsets, bounded by its length;
- the dtypes: ``src`` (how ``x`` and ``px`` are loaded), ``store`` (how exponentials are
  stored), ``dst`` (how ``po`` is stored) are :class:`.ir.Element` s.

Adding a dtype: add its :class:`.ir.Element` (a load that widens to float32 and a store
that rounds) in :mod:`.ir`, then a spec naming it and an entry made by :func:`make_pass`;
the loop itself does not change.

Every term that matters (``d >= -17``) is within 2 ulp of ``exp(d)``; the sum's relative
error is a few float32 ulp at most (4-term float32 partial sums, then float64), typically
below one. A NaN ``d`` gives a NaN term (it reaches the sum); ``d`` must be below 88 (true
for ``m >= max(x) - 88``; ``d = +inf`` is not handled here, callers treat a row whose
maximum is ``+inf`` before summing).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from llvmlite import ir as llvm_ir
from numba.core import cgutils, types
from numba.extending import intrinsic

from . import half, ir
from .math import SUM_LO_F, exp_out_ir, exp_sum_ir, softcap_ir, sum_term_from_out_ir
from .memory import affine_ir, write_affine_ir, write_scalar_ir

WIDTH = 16  # float32 lanes per vector: one AVX-512 register, two AVX2 registers
ACCS = 4  # independent accumulators: enough to hide the add latency
INNER = 4  # vectors added into each float32 lane before it is widened to float64
CHUNK = WIDTH * ACCS * INNER  # 256 elements per float64 flush


@dataclass(frozen=True)
class RowPass:
    """What one exp-sum pass over a row does (see the module docstring).

    Entry arguments, in order: ``x, m``, then ``inv, cap`` if ``softcap``, ``out`` if
    ``store``, ``nxt`` if ``prefetch``, then ``px, po, a, b`` (``write="shift"``) or
    ``px, po, s`` (``write="divide"``). Every row has ``x``'s length; ``out`` may be ``x``;
    ``po`` may be ``px`` but not ``x``. Returns the float64 sum.
    """

    src: ir.Element = ir.FLOAT32
    store: ir.Element | None = None
    write: str | None = None  # None, "shift" or "divide"
    dst: ir.Element = ir.FLOAT32
    nontemporal: bool = True  # po written with streaming stores (else plain ones)
    prefetch: bool = True
    next_max: bool = False  # also max(nxt) (nxt as long as x), from demand loads; no prefetch
    softcap: bool = False  # sum over y = cap * tanh(x * inv) instead of x (math.softcap_ir)

    def arg_names(self) -> tuple[str, ...]:
        names = ["x", "m"] + ["inv", "cap"] * self.softcap + ["out"] * bool(self.store)
        names += ["nxt"] * (self.prefetch or self.next_max)
        if self.write == "shift":
            names += ["px", "po", "a", "b"]
        elif self.write == "divide":
            names += ["px", "po", "s"]
        elif self.write is not None:
            raise ValueError(f"RowPass.write must be None, 'shift' or 'divide', not {self.write!r}")
        return tuple(names)

    def prev_src(self) -> ir.Element:
        """Element of ``px``: the previous input row (shift) or exponential buffer (divide)."""
        return self.store if self.write == "divide" else self.src

    def arg_elements(self) -> dict:
        return {
            "x": self.src,
            "out": self.store,
            "nxt": self.src,
            "px": self.prev_src(),
            "po": self.dst,
        }


class _Prev:
    """The previous row's write (spec ``write``): head, per-vector stores, tail."""

    def __init__(self, builder, spec, args, n, intp):
        self.b, self.spec, self.intp = builder, spec, intp
        self.src = (spec.prev_src(), args["px"].data)
        self.dst = (spec.dst, args["po"].data)
        f32 = args["f32"]
        if spec.write == "shift":
            self.scalars = (f32(args["a"]), None, f32(args["b"]))
        else:
            zero = llvm_ir.Constant(ir.F32, 0.0)
            self.scalars = (zero, f32(args["s"]), zero)
        self.vectors = tuple(
            None if v is None else ir.splat(builder, v, WIDTH) for v in self.scalars
        )
        self.divide = spec.write == "divide"
        self.head = ir.head_to_line(builder, self.dst[1], n, spec.dst.itemsize, intp)
        self.nwrite = builder.sdiv(builder.sub(n, self.head), llvm_ir.Constant(intp, CHUNK))

    def vector(self, j):
        """``po[j:j + WIDTH]`` (``j`` on a vector boundary of ``po``)."""
        (src_el, px), (dst_el, po) = self.src, self.dst
        v = affine_ir(self.b, src_el.load(self.b, px, j, WIDTH), *self.vectors, self.divide)
        dst_el.store(self.b, v, po, j, aligned=True, nontemporal=self.spec.nontemporal)

    def scalar_range(self, first, stop):
        """The head before ``po``'s first line boundary: plain scalar stores."""
        write_scalar_ir(
            self.b, self.src, self.dst, first, stop, self.scalars, self.divide, self.intp
        )

    def tail(self, first, n):
        """From ``first`` (a line boundary) to ``n``: whole vectors, then one masked."""
        write_affine_ir(
            self.b,
            self.src,
            self.dst,
            first,
            n,
            self.vectors,
            self.divide,
            self.spec.nontemporal,
            self.intp,
        )


def _emit(spec: RowPass, context, builder, args):
    """Emit the pass of ``spec`` over the unpacked ``args``; returns the float64 sum."""
    intp = context.get_value_type(types.intp)
    f32vec = ir.vec(ir.F32, WIDTH)
    f64vec = ir.vec(ir.F64, WIDTH)
    xa = args["x"]
    n = builder.extract_value(xa.shape, 0)
    m_vec = ir.splat(builder, args["f32"](args["m"]), WIDTH)
    zero32, zero64 = ir.const(f32vec, 0.0), ir.const(f64vec, 0.0)
    zero = llvm_ir.Constant(intp, 0)
    acc64 = [cgutils.alloca_once_value(builder, zero64) for _ in range(ACCS)]
    prev = _Prev(builder, spec, args, n, intp) if spec.write else None
    if spec.softcap:
        inv_vec, cap_vec = (ir.splat(builder, args["f32"](args[k]), WIDTH) for k in ("inv", "cap"))

    def shifted(v):
        """``d = y - m``: ``y`` the loaded value, softcapped when the spec says so."""
        if spec.softcap:
            v, _slope = softcap_ir(builder, v, inv_vec, cap_vec)  # the slope is not emitted
        return builder.fsub(v, m_vec)

    lo_vec = ir.const(f32vec, SUM_LO_F)
    lanes_int = llvm_ir.IntType(WIDTH)

    def term(d, j, mask=None):
        """The sum term of ``d`` (and the stored exponential, when ``store``).

        Storing: where every lane has ``d >= -87`` (nearly always) the output value is the
        sum term itself (:func:`.math.exp_sum_ir`, bitwise :func:`.math.exp_out_ir` there);
        a vector with a lane below takes the full output exp (denormals, 0) and derives
        its terms from it. The same bits either way, about a third fewer instructions.
        """
        fast = exp_sum_ir(builder, d)
        if spec.store is None:
            return fast
        low = builder.fcmp_ordered("<", d, lo_vec)
        any_low = builder.icmp_unsigned(
            "!=", builder.bitcast(low, lanes_int), llvm_ir.Constant(lanes_int, 0)
        )
        entry = builder.block
        with builder.if_then(any_low, likely=False):
            e_slow = exp_out_ir(builder, d)
            t_slow = sum_term_from_out_ir(builder, d, e_slow)
            slow = builder.block
        e = builder.phi(f32vec)
        e.add_incoming(fast, entry)
        e.add_incoming(e_slow, slow)
        t = builder.phi(f32vec)
        t.add_incoming(fast, entry)
        t.add_incoming(t_slow, slow)
        if mask is None:
            spec.store.store(builder, e, args["out"].data, j)
        else:
            spec.store.store_masked(builder, e, args["out"].data, j, mask)
        return t

    if spec.next_max:
        na = args["nxt"]
        ninf = ir.const(f32vec, float("-inf"))
        nmax = [cgutils.alloca_once_value(builder, ninf) for _ in range(ACCS)]

    def next_max(k, j, mask=None):
        """Fold ``nxt[j:j + WIDTH]`` into the next row's maximum (accumulator ``k``)."""
        if mask is None:
            v = spec.src.load(builder, na.data, j, WIDTH)
        else:
            v = builder.select(mask, spec.src.load_masked(builder, na.data, j, mask), ninf)
        builder.store(ir.call(builder, "maxnum", [builder.load(nmax[k]), v]), nmax[k])

    def flush(k, acc32):
        acc = acc64[k]
        builder.store(builder.fadd(builder.load(acc), builder.fpext(acc32, f64vec)), acc)

    def chunks(first, count, write):
        """Full chunks: vector (i, k) of a chunk goes to accumulator k, i = 0..INNER-1."""
        with cgutils.for_range(builder, count, intp=intp) as loop:
            base = builder.mul(builder.add(first, loop.index), llvm_ir.Constant(intp, CHUNK))
            if spec.prefetch:  # the next row's lines at the same offsets, in bounds
                na = args["nxt"]
                end = builder.add(base, llvm_ir.Constant(intp, CHUNK))
                in_next = builder.icmp_signed("<=", end, builder.extract_value(na.shape, 0))
                own = builder.bitcast(xa.data, na.data.type)  # (a prefetch never faults)
                fetch_base = builder.select(in_next, na.data, own)
            accs = [zero32] * ACCS
            for i in range(INNER):
                for k in range(ACCS):
                    j = builder.add(base, llvm_ir.Constant(intp, (i * ACCS + k) * WIDTH))
                    if spec.prefetch:  # one line per vector
                        ir.prefetch_l2(builder, builder.gep(fetch_base, [j]))
                    if write:  # the previous row's output, one aligned vector per vector
                        prev.vector(builder.add(j, prev.head))
                    if spec.next_max:
                        next_max(k, j)
                    d = shifted(spec.src.load(builder, xa.data, j, WIDTH))
                    accs[k] = builder.fadd(accs[k], term(d, j))
            for k in range(ACCS):
                flush(k, accs[k])

    nchunk = builder.sdiv(n, llvm_ir.Constant(intp, CHUNK))
    if prev is None:
        chunks(zero, nchunk, False)
    else:
        chunks(zero, prev.nwrite, True)
        chunks(prev.nwrite, builder.sub(nchunk, prev.nwrite), False)
        prev.scalar_range(zero, prev.head)
        prev.tail(
            builder.add(prev.head, builder.mul(prev.nwrite, llvm_ir.Constant(intp, CHUNK))), n
        )

    # The rest (< CHUNK elements): vectors in order into one float32 accumulator, the last
    # one loaded under a mask (missing lanes add an exact 0).
    start = builder.mul(nchunk, llvm_ir.Constant(intp, CHUNK))
    nvec = builder.sdiv(
        builder.add(builder.sub(n, start), llvm_ir.Constant(intp, WIDTH - 1)),
        llvm_ir.Constant(intp, WIDTH),
    )
    acc_rest = cgutils.alloca_once_value(builder, zero32)
    with cgutils.for_range(builder, nvec, intp=intp) as loop:
        j = builder.add(start, builder.mul(loop.index, llvm_ir.Constant(intp, WIDTH)))
        mask = ir.lane_mask(builder, builder.sub(n, j), WIDTH)
        if spec.next_max:
            next_max(0, j, mask)
        d = shifted(spec.src.load_masked(builder, xa.data, j, mask))
        e = term(d, j, mask)
        builder.store(
            builder.fadd(builder.load(acc_rest), builder.select(mask, e, zero32)), acc_rest
        )
    flush(0, builder.load(acc_rest))

    # Fixed tree: accumulators pairwise, then the 16 lanes by halves.
    a = [builder.load(acc) for acc in acc64]
    v = builder.fadd(builder.fadd(a[0], a[1]), builder.fadd(a[2], a[3]))
    width = WIDTH
    while width > 1:
        half = width // 2
        lo = builder.shuffle_vector(
            v, v, llvm_ir.Constant(llvm_ir.VectorType(ir.I32, half), list(range(half)))
        )
        hi = builder.shuffle_vector(
            v, v, llvm_ir.Constant(llvm_ir.VectorType(ir.I32, half), list(range(half, width)))
        )
        v = builder.fadd(lo, hi)
        width = half
    total = builder.extract_element(v, llvm_ir.Constant(ir.I32, 0))
    if not spec.next_max:
        return total
    return total, _max_lanes(builder, [builder.load(acc) for acc in nmax])


def _max_lanes(builder, vectors):
    """``maxnum`` of every lane of the vectors (order irrelevant: max is exact)."""
    v = vectors[0]
    for w in vectors[1:]:
        v = ir.call(builder, "maxnum", [v, w])
    width = ir.width_of(v.type)
    while width > 1:
        h = width // 2
        lo, hi = (
            builder.shuffle_vector(
                v, v, llvm_ir.Constant(llvm_ir.VectorType(ir.I32, h), list(range(a, a + h)))
            )
            for a in (0, h)
        )
        v = ir.call(builder, "maxnum", [lo, hi])
        width = h
    return builder.extract_element(v, llvm_ir.Constant(ir.I32, 0))


def make_pass(spec: RowPass, name: str, doc: str):
    """The Numba intrinsic running ``spec`` (arguments as :meth:`RowPass.arg_names`).

    The elements of ``x``, ``out``, ``nxt`` and ``po`` are those of the arrays passed (any dtype
    computed in float32: float32, bfloat16 or float16 rows, see :mod:`.half`): one intrinsic
    serves them all, and its loop is compiled for each combination.
    """
    names = spec.arg_names()

    def fits(name, ty, elements):
        if name in elements:
            return (
                isinstance(ty, types.Array)
                and ty.ndim == 1
                and ty.layout == "C"
                and ty.dtype == elements[name].numba_dtype
            )
        return isinstance(ty, (types.Float, types.Integer))

    def typer(typingctx, *argtys):
        if len(argtys) != len(names):
            return None
        typed = dict(zip(names, argtys, strict=True))
        kinds = {k: getattr(typed.get(k), "dtype", None) for k in ("x", "out", "nxt", "po")}
        if not all(d is None or half.is_f32_math(d) for d in kinds.values()):
            return None
        actual = replace(spec, src=half.element(kinds["x"]),
                         store=half.element(kinds["out"]) if spec.store else None,
                         dst=half.element(kinds["po"]) if spec.write else spec.dst)
        elements = actual.arg_elements()
        if spec.prefetch or spec.next_max:
            elements["nxt"] = half.element(kinds["nxt"])
        if not all(fits(k, t, elements) for k, t in typed.items()):
            return None

        def codegen(context, builder, signature, values):
            args = {}
            for name, ty, value in zip(names, signature.args, values, strict=True):
                if isinstance(ty, types.Array):
                    args[name] = context.make_array(ty)(context, builder, value)
                else:
                    args[name] = (value, ty)

            def f32(pair):
                return context.cast(builder, pair[0], pair[1], types.float32)

            args["f32"] = f32
            result = _emit(actual, context, builder, args)
            if spec.next_max:
                return context.make_tuple(builder, rty, list(result))
            return result

        rty = types.Tuple((types.float64, types.float32)) if spec.next_max else types.float64
        return rty(*argtys), codegen

    # Numba folds call arguments by the typer's Python signature (no *args): give it the
    # spec's named parameters.
    params = ", ".join(names)
    scope = {"typer": typer}
    exec(f"def {name}(typingctx, {params}):\n    return typer(typingctx, {params})\n", scope)
    fn = intrinsic(scope[name])
    fn.__doc__ = doc
    return fn


SUM = RowPass()
STORE = RowPass(store=ir.FLOAT32)
STORE_NO_PREFETCH = RowPass(store=ir.FLOAT32, prefetch=False)
SHIFT_PREV = RowPass(write="shift")
SHIFT_PREV_PLAIN = RowPass(write="shift", nontemporal=False)
STORE_DIVIDE_PREV = RowPass(store=ir.FLOAT32, write="divide")
STORE_DIVIDE_PREV_PLAIN = RowPass(store=ir.FLOAT32, write="divide", nontemporal=False)
SOFTCAP = RowPass(softcap=True)
SUM_NEXT_MAX = RowPass(prefetch=False, next_max=True)
STORE_NEXT_MAX = RowPass(store=ir.FLOAT32, prefetch=False, next_max=True)

sumexp_f32 = make_pass(
    SUM,
    "sumexp_f32",
    """``sum(exp(x - m))`` in float64 for a float32 row ``x`` (:data:`SUM`), prefetching
    ``nxt``. ``m`` is converted to float32; every ``x - m`` must be below 88.""",
)
expsum_store_f32 = make_pass(
    STORE,
    "expsum_store_f32",
    """``out[j] = exp(x[j] - m)`` (output values) for every j; returns the sum of
    :func:`sumexp_f32` (the same bits), prefetching ``nxt`` (:data:`STORE`).""",
)
expsum_store_only_f32 = make_pass(
    STORE_NO_PREFETCH,
    "expsum_store_only_f32",
    """As :func:`expsum_store_f32` without prefetching (``x, m, out``): a pass whose
    stores are the traffic (cross-entropy's gradient rows) ran slower with prefetches.""",
)
sumexp_shift_prev_f32 = make_pass(
    SHIFT_PREV,
    "sumexp_shift_prev_f32",
    """:func:`sumexp_f32` (the same bits) while streaming the previous row's log_softmax
    ``po = (px - a) - b`` (the bits of ``memory.stream_affine(px, po, a, 1, b, True)``);
    the caller fences after its last row.""",
)
sumexp_shift_prev_plain_f32 = make_pass(
    SHIFT_PREV_PLAIN,
    "sumexp_shift_prev_plain_f32",
    """As :func:`sumexp_shift_prev_f32` with plain stores (outputs that fit in cache).""",
)
expsum_store_divide_prev_f32 = make_pass(
    STORE_DIVIDE_PREV,
    "expsum_store_divide_prev_f32",
    """:func:`expsum_store_f32` (the same bits) while streaming the previous row's softmax
    ``po = px / s`` (the bits of ``memory.stream_divide(px, po, 0, s, 0, True)``).""",
)
expsum_store_divide_prev_plain_f32 = make_pass(
    STORE_DIVIDE_PREV_PLAIN,
    "expsum_store_divide_prev_plain_f32",
    """As :func:`expsum_store_divide_prev_f32` with plain stores.""",
)
sumexp_softcap_f32 = make_pass(
    SOFTCAP,
    "sumexp_softcap_f32",
    """``sum(exp(y - m))``, ``y = cap * tanh(x * inv)`` (:func:`.math.softcap_ir`), as
    :func:`sumexp_f32`; ``m`` the maximum of ``y``, ``inv`` and ``cap`` converted to float32.""",
)
sumexp_next_max_f32 = make_pass(
    SUM_NEXT_MAX,
    "sumexp_next_max_f32",
    """``(sumexp_f32(x, m), max(nxt))`` (the same bits; ``nxt`` as long as ``x``): the next
    row's maximum from loads in the same loop (:data:`SUM_NEXT_MAX`), so that the next row
    streams in from memory while this one's exponentials are computed from cache.""",
)
expsum_store_next_max_f32 = make_pass(
    STORE_NEXT_MAX,
    "expsum_store_next_max_f32",
    """``(expsum_store_f32(x, m, out), max(nxt))`` as :func:`sumexp_next_max_f32` (the same
    bits; ``out`` may be ``x``, ``nxt`` is another row of ``x``'s length).""",
)
