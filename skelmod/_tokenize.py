"""Numba kernel that reads a raw NTU ``.skeleton`` file from its bytes
(docs/data.md, "NTU files, names and splits").

Private: it checks nothing about its argument and reports format problems as an
error code in a status vector; :mod:`skelmod.ntu` wraps it, turns the codes into
:class:`~skelmod.ntu.SkeletonFormatError` and parses the few numbers the kernel
leaves to Python (status 2 of :func:`_number`).

The format is line-structured::

    numFrame
    numBody                                   # once per frame
    bodyID clipedEdges ... trackingState      # 10 values, once per body
    numJoint                                  # 25
    x y z depthX ... trackingState            # 12 values, numJoint lines

Lines end in LF, CRLF or a lone CR (as Python's universal newlines read them);
values are separated by spaces or tabs. The kernel reads the file in one pass,
writing into arrays sized by an upper bound on the body count that the file
length gives. Each body record first tries :func:`_read_body`, a call-free fast
path for plain records (every real NTU record); anything else is read again line
by line by :func:`_read_values` / :func:`_read_count`, which either handle it
(values left to Python's ``float``) or report the error. Both paths read numbers
with the one decimal parser :func:`_number`, inlined into each; it reads the
digits after a decimal point eight bytes at a time (:func:`_fraction_digits`).
Numbers are rounded exactly: an integer mantissa below 2**53 and a power of ten
up to 1e22 need one IEEE operation (Clinger's fast path); the rest is parsed by
Python.

With ``NUMBA_DISABLE_JIT=1`` the kernels run as plain Python (the tests do so
once): the intrinsics below then have Python twins, and Python ints stand for
numba's uint64.
"""

from __future__ import annotations

import sys

import numpy as np
from llvmlite import ir
from numba import njit
from numba.core import config, types
from numba.extending import intrinsic

from .layout import V
from .limits import MAX_BODIES

#: Kinect v2 tracks at most six bodies; a frame listing more is corrupt.
MAX_BODIES_PER_FRAME = MAX_BODIES
#: Values on a body line: bodyID and 9 more, kept in ``body_info``.
BODY_VALUES = 10
#: Values on a joint line.
JOINT_VALUES = 12

# Error codes in status[S_CODE].
E_OK = 0
E_EMPTY = 1  # nothing but whitespace
E_NOT_INT = 2  # a count is not an integer
E_NOT_NUMBER = 3  # a body/joint value is not a number
E_BAD_ID = 4  # bodyID is not an integer
E_INT_RANGE = 5  # integer does not fit in int64
E_NEGATIVE = 6  # negative count
E_ZERO_FRAMES = 7  # header says 0 frames
E_TOO_MANY_BODIES = 8  # numBody > MAX_BODIES_PER_FRAME
E_JOINT_COUNT = 9  # numJoint != V
E_COUNT_TOKENS = 10  # a count line holds zero or several tokens
E_VALUE_COUNT = 11  # a body/joint line holds the wrong number of values
E_EOF = 12  # the file ends early
E_TRAILING = 13  # content after the last frame the header announces

# What was being read when an error happened, in status[S_CTX].
CTX_FRAMES = 0  # header line: numFrame
CTX_BODIES = 1  # numBody line
CTX_BODY_LINE = 2  # the 10-value body line
CTX_JOINTS = 3  # numJoint line
CTX_JOINT_LINE = 4  # a 12-value joint line

# Slots of the status vector.
S_CODE, S_LINE, S_TOK_START, S_TOK_END, S_CTX, S_FRAME, S_BODY, S_JOINT, S_FOUND = range(9)
S_NUM_FRAME = 9  # the header's numFrame, once read
STATUS_SIZE = 10

# Fix-up rows: numbers the kernel cannot round exactly, left for Python's float().
FIX_TARGET, FIX_INDEX, FIX_START, FIX_END, FIX_LINE = range(5)
FIX_BODY_INFO = 0  # FIX_INDEX is a flat index into body_info
FIX_JOINTS = 1  # FIX_INDEX is a flat index into joints

_INT64_MAX = np.iinfo(np.int64).max
_MAX_MANTISSA_DIGITS = 18  # 10**18 - 1 < 2**63
_SAFE_DIGITS = 15  # 10**15 - 1 < 2**53: any mantissa this long is exact
_EXACT_MANTISSA = 2**53  # integers below this are exact in float64
# 10**k is exact in float64 for k <= 22, so w * 10**q and w / 10**-q round once (Clinger).
_POW10 = np.array([10.0**k for k in range(23)])
# Integer powers 10**k for the k <= 8 digits that _digits adds at once (an array: numba
# compiles a tuple indexed at run time into a jump table).
_POW10_INT = np.array([10**k for k in range(9)], np.int64)
# Fewest bytes a complete body record takes: a body line of 10 one-character values, "25",
# then 25 joint lines of 12 one-character values (the last may lack its line end). So a file
# of n bytes holds fewer than n // _MIN_BODY_BYTES + 1 bodies, which sizes the output arrays.
_MIN_BODY_BYTES = 2 * BODY_VALUES + 3 + V * 2 * JOINT_VALUES - 1


@njit(cache=True, inline="always")
def _is_blank(c):
    # Whitespace inside a line: space, tab, vertical tab, form feed.
    return c == 32 or c == 9 or c == 11 or c == 12


@njit(cache=True, inline="always")
def _is_eol(c):
    return c == 10 or c == 13


@njit(cache=True)
def _parse_int(buf, s, e):
    """``(status, value)`` of an optionally signed decimal integer in ``buf[s:e]``.

    status 0: ok; 1: not an integer; 2: does not fit in int64.
    """
    i = s
    neg = False
    if i < e and (buf[i] == 43 or buf[i] == 45):
        neg = buf[i] == 45
        i += 1
    if i >= e:
        return 1, 0
    v = 0
    while i < e:
        d = np.int64(buf[i]) - 48
        if d < 0 or d > 9:
            return 1, 0
        if v > (_INT64_MAX - d) // 10:
            return 2, 0
        v = v * 10 + d
        i += 1
    return 0, -v if neg else v


if config.DISABLE_JIT:
    # Plain-Python twins of the intrinsics, for NUMBA_DISABLE_JIT=1 (an intrinsic cannot run
    # as Python). They keep the callers' guarantee checked: Python indexing refuses i >= size,
    # and a negative i, which numpy would wrap, is refused here.

    def _bytes_of(buf):
        return buf

    def _byte(data, i):
        if i < 0:
            raise IndexError(f"_byte: negative index {i}")
        return int(data[i])

    def _put(out, i, v):
        if i < 0:
            raise IndexError(f"_put: negative index {i}")
        out[i] = v

    def _load8(data, i):
        if i < 0 or i + 8 > data.size:
            raise IndexError(f"_load8: bytes {i}..{i + 7} outside 0..{data.size - 1}")
        return int.from_bytes(data[i : i + 8].tobytes(), "little")

    def _low_zeros(x):
        return (x & -x).bit_length() - 1 if x else 64

    # Python ints stand for numba's uint64 and int64: _digits masks every result whose bits
    # above 63 would differ, so both compute the same values.
    _u64 = _i64 = int

else:
    from numba.cpython.unsafe.numbers import trailing_zeros as _low_zeros

    _u64, _i64 = np.uint64, np.int64

    @intrinsic
    def _bytes_of(typingctx, buf):
        """The data pointer of a 1-D uint8 array, for :func:`_byte`.

        The readers pass this pointer, not the array: every use of an array in a helper,
        called or inlined, costs two atomic reference count updates, which at one helper
        per token were half of the parse time. The caller keeps the array alive.
        """
        if not (isinstance(buf, types.Array) and buf.dtype == types.uint8 and buf.ndim == 1):
            return None

        def codegen(context, builder, sig, args):
            return context.make_array(sig.args[0])(context, builder, args[0]).data

        return types.CPointer(types.uint8)(buf), codegen

    @intrinsic
    def _byte(typingctx, data, i):
        """``data[i]`` for a pointer from :func:`_bytes_of`.

        Unchecked: the caller guarantees ``0 <= i < buf.size``. (Array indexing with a
        signed integer also costs three instructions per byte for the wraparound of a
        negative index, a third of a digit.)
        """
        if not (isinstance(data, types.CPointer) and data.dtype == types.uint8):
            return None

        def codegen(context, builder, sig, args):
            return builder.load(builder.gep(args[0], [args[1]]))

        return types.uint8(data, types.intp), codegen

    @intrinsic
    def _put(typingctx, out, i, v):
        """``out[i] = v`` for a contiguous 1-D float64 array; unchecked like :func:`_byte`."""
        if not (isinstance(out, types.Array) and out.dtype == types.float64 and out.ndim == 1):
            return None

        def codegen(context, builder, sig, args):
            data = context.make_array(sig.args[0])(context, builder, args[0]).data
            builder.store(args[2], builder.gep(data, [args[1]]))
            return context.get_dummy_value()

        return types.none(out, types.intp, types.float64), codegen

    @intrinsic
    def _load8(typingctx, data, i):
        """The eight bytes ``data[i:i + 8]`` as one little-endian uint64 (``data[i]`` lowest).

        Unchecked like :func:`_byte`: the caller guarantees ``0 <= i <= buf.size - 8``. An
        unaligned load, which x86 and ARMv8 do at the speed of an aligned one (byte-swapped
        on a big-endian machine).
        """
        if not (isinstance(data, types.CPointer) and data.dtype == types.uint8):
            return None

        def codegen(context, builder, sig, args):
            ptr = builder.bitcast(builder.gep(args[0], [args[1]]), ir.IntType(64).as_pointer())
            raw = builder.load(ptr, align=1)
            return raw if sys.byteorder == "little" else builder.bswap(raw)

        return types.uint64(data, types.intp), codegen


@njit(cache=True, inline="always")
def _sign(data, i):
    """``(negative, index past it)`` of the optional ``+`` or ``-`` at ``data[i]``."""
    c = _byte(data, i)
    neg = c == 45
    if neg or c == 43:
        i += 1
    return neg, i


# SWAR ("SIMD within a register") constants for _fraction_digits: eight bytes in one uint64.
_ASCII_0 = _u64(0x3030303030303030)  # b"00000000"
_ABOVE_9 = _u64(0x4646464646464646)  # a byte + 0x46 reaches 0x80 when the byte is above b"9"
_HIGH_BITS = _u64(0x8080808080808080)
_U64_MASK = _u64(2**64 - 1)
_U32_MASK = _u64(2**32 - 1)
_PAIRS = _u64(0x000000FF000000FF)  # bytes 0 and 4
_MUL_HI = _u64(100 + (1000000 << 32))
_MUL_LO = _u64(1 + (10000 << 32))


@njit(cache=True, inline="always")
def _eight_digits(raw, k):
    """The number written by the first ``k`` bytes (1 <= k <= 8) of ``raw``, ASCII digits.

    ``raw`` is from :func:`_load8`: ``data[i]`` is its lowest byte. The ``k`` digits are
    shifted to the top, zero digits fill the bytes below them, and the classic multiply
    and mask steps combine neighbouring digits, then pairs, then fours (as simdjson and
    fast_float do). The masks keep Python ints equal to numba's wrapping uint64.
    """
    d = ((raw - _ASCII_0) << _u64(64 - 8 * k)) & _U64_MASK
    d = d * _u64(10) + (d >> _u64(8))  # byte j: 10 * digit j + digit j + 1, two digits
    d = (((d & _PAIRS) * _MUL_HI + ((d >> _u64(16)) & _PAIRS) * _MUL_LO) >> _u64(32)) & _U32_MASK
    return _i64(d)


@njit(cache=True, inline="always")
def _digits(data, i, w):
    """``(w * 10**k + D, i + k)`` for the k decimal digits D from ``data[i]`` on.

    Unchecked: a byte that is not a digit follows. ``w`` wraps beyond 18 digits;
    :func:`_number` counts digits to know when.
    """
    while True:
        d = _byte(data, i) - 48
        if d < 0 or d > 9:
            return w, i
        w = w * 10 + d
        i += 1


@njit(cache=True, inline="always")
def _fraction_digits(data, i, w, lim):
    """:func:`_digits` eight bytes at a time (:func:`_load8`) while ``i <= lim``.

    ``lim`` is at most the data's size minus 8. The digit count of eight bytes is where the
    first byte outside ``0``...``9`` sets its high bit. For the digits after a decimal
    point, many and of varying count: the byte loop's exit, which the CPU mispredicts
    there, is a data dependency here. (Integer parts, of one to four digits in real
    files, are faster byte by byte: the CPU predicts the end and runs on.)
    """
    if i <= lim:
        raw = _load8(data, i)
        k = _i64(_low_zeros(((raw + _ABOVE_9) | (raw - _ASCII_0)) & _HIGH_BITS)) >> 3
        if k == 0:
            return w, i
        # _i64: a Python int under NUMBA_DISABLE_JIT, where a numpy int64 would warn as it wraps.
        w = w * _i64(_POW10_INT[k]) + _eight_digits(raw, k)
        i += k
        if k < 8:
            return w, i
    return _digits(data, i, w)


@njit(cache=True, inline="always")
def _number(data, pos, careful, lim):
    """The decimal number at ``data[pos]`` (from :func:`_bytes_of`): ``(status, value, end)``.

    The one number parser of both paths. The grammar is
    ``[+-](digits[.digits]|.digits)[(e|E)[+-]digits]``; ``end`` is the index of the first
    byte that does not continue it, and whether that byte ends the token is the caller's
    question. Unchecked: a blank or line end follows ``pos`` in the data, so reads need
    no test for its end (a third of the time of a digit), and ``lim`` is at most the
    data's size minus 8 (:func:`_fraction_digits` reads eight bytes at a time up to it).

    status 0: ok, ``value`` is the correctly rounded float64. Clinger's fast path: an
    integer mantissa ``w`` below 2**53 and a decimal exponent ``q`` within ±22, so that
    one IEEE multiplication or division by an exact power of ten rounds ``w * 10**q``.
    Leading zeros are not significant (``0.000000000000000000012345`` is exact here).
    status 1: not a number (no digits, or an exponent without digits). status 2: a valid
    number this cannot round exactly (more than 18 significant digits, or beyond the
    fast path), for Python's ``float``.

    ``careful`` (a constant at each call site, so the compiler drops the branch not taken):
    ``False`` in the fast path, which stops at status 2 as soon as a mantissa has more
    than 15 digits, leading zeros included, and leaves it (exponent unread) to the
    line-by-line path; ``True`` there, which reads such numbers to the end. Not carrying
    the long-mantissa check across the exponent keeps the fast path's registers for its
    digit loops: the same machine code per token as the three parsers this replaced.
    """
    neg, first = _sign(data, pos)
    w, i = _digits(data, first, 0)
    nd = i - first  # digits read into w, leading zeros included
    q = 0  # value = w * 10**q
    if _byte(data, i) == 46:
        w, end = _fraction_digits(data, i + 1, w, lim)
        q = i + 1 - end
        nd -= q
        i = end
    if nd == 0:
        return 1, 0.0, i
    exact = nd <= _SAFE_DIGITS
    if not exact:
        if not careful:
            return 2, 0.0, i
        # Rare: w may be 2**53 or more, or have wrapped beyond 18 digits. Leading zeros
        # add nothing to w, so it is exact when the digits after them fit in 18.
        j = first
        while j < i and (_byte(data, j) == 48 or _byte(data, j) == 46):
            if _byte(data, j) == 48:
                nd -= 1
            j += 1
        exact = nd <= _MAX_MANTISSA_DIGITS and w < _EXACT_MANTISSA
    c = _byte(data, i)
    if c == 101 or c == 69:
        i += 1
        c = _byte(data, i)
        eneg = c == 45
        if c == 43 or c == 45:
            i += 1
        x = 0
        start = i
        while True:
            d = _byte(data, i) - 48
            if d < 0 or d > 9:
                break
            if x < 100000:  # any larger exponent is out of range; keep reading its digits
                x = x * 10 + d
            i += 1
        if i == start:
            return 1, 0.0, i
        q += -x if eneg else x
    if not exact or q > 22 or q < -22:
        if w != 0 or not exact:
            return 2, 0.0, i
        q = 0  # zero, whatever its exponent
    # One rounding (Clinger); q = 0 divides by 1.
    v = np.float64(w) * _POW10[q] if q > 0 else np.float64(w) / _POW10[-q]
    return 0, -v if neg else v, i


@njit(cache=True)
def _parse_number(buf, pos):
    """:func:`_number` for the token starting at ``pos`` (not a blank) of the line-by-line path.

    Returns ``(status, value, end)`` with ``end`` just past the token (its first blank, line
    end or the end of the data); a token that does not end where its number does is status 1.
    """
    n = buf.size
    end = pos
    while end < n and not (_is_blank(buf[end]) or _is_eol(buf[end])):
        end += 1
    if end < n:
        status, v, i = _number(_bytes_of(buf), pos, True, n - 8)
    else:
        # The token runs to the end of the data: parse a copy that a blank ends.
        tail = np.full(n - pos + 1, 32, np.uint8)
        tail[: n - pos] = buf[pos:]
        status, v, i = _number(_bytes_of(tail), 0, True, tail.size - 8)
        i += pos
    return (status if i == end else 1), v, end


@njit(cache=True, inline="always")
def _read_line(buf, pos, out, base, first, nvals):
    """Parse the tokens of the line starting at ``pos`` as numbers.

    Tokens ``first <= k < nvals`` go to ``out[base + k - first]``. Returns ``(count,
    next_line_start, eof, flags)``: ``count`` counts every token on the line, stored or
    not; ``eof`` is true when the end of the data ended the line; ``flags`` ORs the
    statuses of tokens ``k >= first`` (1: some token is not a number, 2: some value needs
    Python's float). Token bounds are not kept: the rare lines that need them are
    scanned again with :func:`_token_at`.
    """
    n = buf.size
    count = 0
    flags = 0
    while True:
        while pos < n and _is_blank(buf[pos]):
            pos += 1
        if pos >= n:
            return count, pos, True, flags
        c = buf[pos]
        if c == 10:
            return count, pos + 1, False, flags
        if c == 13:
            if pos + 1 < n and buf[pos + 1] == 10:
                return count, pos + 2, False, flags
            return count, pos + 1, False, flags
        status, v, end = _parse_number(buf, pos)
        if count >= first:
            flags |= status
            if count < nvals:
                out[base + count - first] = v
        count += 1
        pos = end


@njit(cache=True, inline="always")
def _last_separator(buf):
    """Index of the last blank or line end in ``buf``; -1 if it has none."""
    i = buf.size - 1
    while i >= 0 and not (_is_blank(buf[i]) or _is_eol(buf[i])):
        i -= 1
    return i


# error_model="numpy": no zero test before each division; the divisors are powers of ten.
@njit(cache=True, error_model="numpy")
def _read_body(buf, pos, info, joints, b, sep):
    """Fast path for one whole body record: its body line, joint count and 25 joint lines.

    Returns ``(next_pos, body_id, ok)``. Writes the values of body ``b`` into the flat
    ``info`` and ``joints`` when every line is plain: the right value count, an integer
    bodyID of at most 18 digits, a joint count written ``25``, and numbers of at most 15
    digits that :func:`_number` rounds itself. Otherwise returns ``ok = False`` and the caller reads
    the record again with :func:`_read_values` and :func:`_read_count`, which report the
    problem or hand the value to Python. The helpers are inlined and read the bytes
    through a pointer (see :func:`_bytes_of`).

    ``sep`` is :func:`_last_separator` of ``buf``. A token that starts before it ends at
    or before it, so ``sep`` bounds every read inside a token and the byte after a token
    can be read unchecked; a token starting later sends the record to the careful path.
    """
    n = buf.size
    lim = n - 8
    data = _bytes_of(buf)
    # The bodyID, an integer of at most 18 digits.
    while pos < n and _is_blank(_byte(data, pos)):
        pos += 1
    if pos >= sep:
        return pos, np.int64(0), False
    neg, start = _sign(data, pos)
    w, pos = _digits(data, start, 0)
    body_id = -w if neg else w
    if pos == start or pos - start > _MAX_MANTISSA_DIGITS or not _is_blank(_byte(data, pos)):
        return pos, body_id, False
    for r in range(1 + V):  # r = 0: rest of the body line, 1...: joint r - 1
        if r == 0:
            count = 1  # tokens read on this line
            nvals = BODY_VALUES
            base = b * (BODY_VALUES - 1) - 1  # info index of token 0
        else:
            if r == 1:  # the joint count line, "25"
                while pos < n and _is_blank(_byte(data, pos)):
                    pos += 1
                # pos < sep, so pos + 1 <= sep; a "2" is not a separator, so pos + 2 <= sep.
                if pos >= sep or _byte(data, pos) != 50 or _byte(data, pos + 1) != 53:
                    return pos, body_id, False
                pos += 2
                while pos < n and _is_blank(_byte(data, pos)):
                    pos += 1
                if pos >= n or not _is_eol(_byte(data, pos)):
                    return pos, body_id, False
                pos += 1
                if _byte(data, pos - 1) == 13 and pos < n and _byte(data, pos) == 10:
                    pos += 1
            count = 0
            nvals = JOINT_VALUES
            base = (b * V + r - 1) * JOINT_VALUES
        while True:
            while pos < n and _is_blank(_byte(data, pos)):
                pos += 1
            if pos >= n:
                return pos, body_id, False
            c = _byte(data, pos)
            if c == 10 or c == 13:
                pos += 1
                if c == 13 and pos < n and _byte(data, pos) == 10:
                    pos += 1
                break
            if count == nvals or pos >= sep:
                return pos, body_id, False
            status, v, pos = _number(data, pos, False, lim)
            c = _byte(data, pos)  # pos <= sep < n
            if status != 0 or not (_is_blank(c) or _is_eol(c)):
                return pos, body_id, False
            if r == 0:
                _put(info, base + count, v)
            else:
                _put(joints, base + count, v)
            count += 1
        if count != nvals:
            return pos, body_id, False
    return pos, body_id, True


@njit(cache=True)
def _token_at(buf, pos, k):
    """``(start, end)`` of token ``k`` (0-based) of the line starting at ``pos``, which has it."""
    n = buf.size
    i = 0
    while True:
        while pos < n and _is_blank(buf[pos]):
            pos += 1
        start = pos
        while pos < n and not (_is_blank(buf[pos]) or _is_eol(buf[pos])):
            pos += 1
        if i == k:
            return start, pos
        i += 1


@njit(cache=True)
def _rest_is_blank(buf, pos):
    n = buf.size
    while pos < n:
        c = buf[pos]
        if not (_is_blank(c) or _is_eol(c)):
            return False
        pos += 1
    return True


@njit(cache=True, inline="always")  # inlined: one compiled copy per literal argument otherwise
def _fail(status, code, line, ctx, frame, body, joint, tok_start=-1, tok_end=-1, found=0):
    status[S_CODE] = code
    status[S_LINE] = line
    status[S_TOK_START] = tok_start
    status[S_TOK_END] = tok_end
    status[S_CTX] = ctx
    status[S_FRAME] = frame
    status[S_BODY] = body
    status[S_JOINT] = joint
    status[S_FOUND] = found


@njit(cache=True)
def _read_count(buf, pos, line, scratch, status, ctx, frame, body):
    """Read a line holding one non-negative integer; returns ``(value, next_pos)``.

    On a format error it fills ``status`` and returns ``(-1, pos)``.
    """
    count, nxt, _, _ = _read_line(buf, pos, scratch, 0, 0, 1)
    if count == 0 and _rest_is_blank(buf, pos):
        _fail(status, E_EOF, line, ctx, frame, body, -1)
        return -1, pos
    if count != 1:
        _fail(status, E_COUNT_TOKENS, line, ctx, frame, body, -1, found=count)
        return -1, pos
    s, e = _token_at(buf, pos, np.int64(0))
    code, v = _parse_int(buf, s, e)
    if code != 0:
        _fail(status, E_NOT_INT if code == 1 else E_INT_RANGE, line, ctx, frame, body, -1, s, e)
        return -1, pos
    if v < 0:
        _fail(status, E_NEGATIVE, line, ctx, frame, body, -1, s, e, v)
        return -1, pos
    return v, nxt


@njit(cache=True)
def _read_values(buf, pos, line, status, ctx, f, m, j, out, base, target, fixups, n_fix):
    """Read one body line or joint line (``ctx``) into ``out[base:]``.

    A body line starts with the integer bodyID, which is returned rather than stored.
    Returns ``(next_pos, body_id, fixups, n_fix)``; ``fixups`` is reallocated when it
    grows. On a format error it fills ``status``.
    """
    body = ctx == CTX_BODY_LINE
    nvals = BODY_VALUES if body else JOINT_VALUES
    first = 1 if body else 0
    body_id = np.int64(0)
    count, nxt, _, flags = _read_line(buf, pos, out, base, first, nvals)
    if count == 0 and _rest_is_blank(buf, pos):
        _fail(status, E_EOF, line, ctx, f, m, j)
        return pos, body_id, fixups, n_fix
    if count != nvals:
        _fail(status, E_VALUE_COUNT, line, ctx, f, m, j, found=count)
        return pos, body_id, fixups, n_fix
    if body:
        s, e = _token_at(buf, pos, np.int64(0))
        code, body_id = _parse_int(buf, s, e)
        if code != 0:
            _fail(status, E_BAD_ID if code == 1 else E_INT_RANGE, line, ctx, f, m, j, s, e)
            return pos, body_id, fixups, n_fix
    if flags == 0:
        return nxt, body_id, fixups, n_fix
    for k in range(first, nvals):
        s, e = _token_at(buf, pos, k)
        code, _, _ = _parse_number(buf, s)
        if code == 0:
            continue
        if code == 1:
            _fail(status, E_NOT_NUMBER, line, ctx, f, m, j, s, e, k)
            return pos, body_id, fixups, n_fix
        if n_fix == fixups.shape[0]:
            grown = np.empty((2 * n_fix, fixups.shape[1]), np.int64)
            grown[:n_fix] = fixups
            fixups = grown
        fixups[n_fix, FIX_TARGET] = target
        fixups[n_fix, FIX_INDEX] = base + k - first
        fixups[n_fix, FIX_START] = s
        fixups[n_fix, FIX_END] = e
        fixups[n_fix, FIX_LINE] = line
        n_fix += 1
        out[base + k - first] = np.nan
    return nxt, body_id, fixups, n_fix


@njit(cache=True, nogil=True)
def parse_kernel(buf):
    """Parse the bytes of one ``.skeleton`` file; releases the GIL.

    ``buf`` is a 1-D uint8 array. Returns ``(status, bodies_per_frame (F,) int32,
    body_frame (B,) int32, body_ids (B,) int64, body_info (B, 9) float64,
    joints (B, 25, 12) float64, fixups (H, 5) int64)``. ``status[S_CODE]`` is
    ``E_OK`` or an error code, with the line, token bounds and position in the file
    in the other slots; after an error the arrays are meaningless. Each fix-up row
    names a value left as NaN that Python must parse (status 2 of :func:`_number`).
    """
    n = buf.size
    status = np.zeros(STATUS_SIZE, np.int64)
    scratch = np.empty(1, np.float64)
    cap = n // _MIN_BODY_BYTES + 1
    body_frame = np.empty(cap, np.int32)
    body_ids = np.empty(cap, np.int64)
    body_info = np.empty((cap, BODY_VALUES - 1), np.float64)
    joints = np.empty((cap, V, JOINT_VALUES), np.float64)
    info_flat = body_info.reshape(-1)
    joints_flat = joints.reshape(-1)
    fixups = np.empty((16, 5), np.int64)
    n_fix = np.int64(0)
    b = 0
    num_frame = 0
    bodies_per_frame = np.empty(0, np.int32)

    # Arguments of the helpers are typed int64 throughout: a literal argument would
    # compile one more copy of the helper per distinct value.
    none = np.int64(-1)
    sep = _last_separator(buf)
    pos = np.int64(0)
    line = np.int64(1)
    if _rest_is_blank(buf, pos):
        _fail(status, E_EMPTY, 1, CTX_FRAMES, -1, -1, -1)
    else:
        num_frame, pos = _read_count(
            buf, pos, line, scratch, status, np.int64(CTX_FRAMES), none, none
        )
        if num_frame == 0:
            s, e = _token_at(buf, np.int64(0), np.int64(0))
            _fail(status, E_ZERO_FRAMES, 1, CTX_FRAMES, -1, -1, -1, s, e)
        status[S_NUM_FRAME] = num_frame
        line += 1
        # A frame takes at least two bytes ("0\n"), so the file bounds how many are present.
        bodies_per_frame = np.empty(max(0, min(num_frame, n // 2 + 1)), np.int32)
    for f in range(num_frame if status[S_CODE] == E_OK else 0):
        start = pos
        num_body, pos = _read_count(buf, pos, line, scratch, status, np.int64(CTX_BODIES), f, none)
        if num_body > MAX_BODIES_PER_FRAME:
            s, e = _token_at(buf, start, np.int64(0))
            _fail(status, E_TOO_MANY_BODIES, line, CTX_BODIES, f, -1, -1, s, e, num_body)
        if status[S_CODE] != E_OK:
            if status[S_CODE] == E_EOF:
                status[S_FOUND] = f
            break
        line += 1
        bodies_per_frame[f] = num_body
        for m in range(num_body):
            if b >= cap:
                raise RuntimeError("skeleton parser: body bound exceeded (bug)")
            nxt, body_id, ok = _read_body(buf, pos, info_flat, joints_flat, b, sep)
            if ok:
                pos = nxt
                line += 2 + V
                body_ids[b] = body_id
                body_frame[b] = f
                b += 1
                continue
            # Off the fast path: read the record line by line (fix-ups or an error).
            pos, body_id, fixups, n_fix = _read_values(
                buf, pos, line, status, np.int64(CTX_BODY_LINE), f, m, none,
                info_flat, b * (BODY_VALUES - 1), np.int64(FIX_BODY_INFO), fixups, n_fix,
            )  # fmt: skip
            if status[S_CODE] != E_OK:
                break
            body_ids[b] = body_id
            body_frame[b] = f
            line += 1
            start = pos
            num_joint, pos = _read_count(
                buf, pos, line, scratch, status, np.int64(CTX_JOINTS), f, m
            )
            if num_joint >= 0 and num_joint != V:
                s, e = _token_at(buf, start, np.int64(0))
                _fail(status, E_JOINT_COUNT, line, CTX_JOINTS, f, m, -1, s, e, num_joint)
            if status[S_CODE] != E_OK:
                break
            line += 1
            for j in range(V):
                pos, _, fixups, n_fix = _read_values(
                    buf, pos, line, status, np.int64(CTX_JOINT_LINE), f, m, j,
                    joints_flat, (b * V + j) * JOINT_VALUES, np.int64(FIX_JOINTS), fixups, n_fix,
                )  # fmt: skip
                if status[S_CODE] != E_OK:
                    break
                line += 1
            if status[S_CODE] != E_OK:
                break
            b += 1
        if status[S_CODE] != E_OK:
            break

    if status[S_CODE] == E_OK:
        # Only whitespace may follow the last frame the header announces.
        while pos < n:
            c = buf[pos]
            if c == 10 or (c == 13 and not (pos + 1 < n and buf[pos + 1] == 10)):
                line += 1
            elif not (_is_blank(c) or _is_eol(c)):
                e = pos
                while e < n and not (_is_blank(buf[e]) or _is_eol(buf[e])):
                    e += 1
                _fail(status, E_TRAILING, line, CTX_BODIES, num_frame, -1, -1, pos, e)
                break
            pos += 1
    return (
        status,
        bodies_per_frame,
        body_frame[:b].copy(),
        body_ids[:b].copy(),
        body_info[:b].copy(),
        joints[:b].copy(),
        fixups[:n_fix].copy(),
    )
