"""The fast ``.skeleton`` parser (skelmod.ntu) against the line-by-line reader.

All but the two tests that parse many files also run with ``NUMBA_DISABLE_JIT=1``
(tests/test_nojit.py), so keep new tests to a few files.
"""

from __future__ import annotations

import itertools
import pickle

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from naive_reader import naive_read, naive_read_xyz

from skelmod import _tokenize
from skelmod.ntu import RawSkeleton, SkeletonFormatError, parse_skeleton, read_skeleton

FIELDS = ("bodies_per_frame", "body_frame", "body_ids", "body_info", "joints")
A001 = "S001C001P001R001A001.skeleton"  # LF, 103 frames, one body per frame


def assert_same(raw: RawSkeleton, ref: dict) -> None:
    assert raw.frame_count == ref["frame_count"]
    for field in FIELDS:
        got, want = getattr(raw, field), ref[field]
        assert got.dtype == want.dtype, field
        assert got.shape == want.shape, field
        np.testing.assert_array_equal(got, want, err_msg=field)


def render(frames, fmt=repr, sep=" ", eol="\n", trailing="") -> bytes:
    """A ``.skeleton`` text from ``frames``: a list of frames, each a list of
    ``(body_id, info (9,), joints (25, 12))``; values rendered with ``fmt``."""
    out = [str(len(frames))]
    for bodies in frames:
        out.append(str(len(bodies)))
        for body_id, info, joints in bodies:
            out.append(sep.join([str(body_id)] + [fmt(float(v)) for v in info]) + trailing)
            out.append(str(len(joints)))
            out.extend(sep.join(fmt(float(v)) for v in row) + trailing for row in joints)
    return (eol.join(out) + eol).encode()


def expected_from_text(data: bytes) -> dict:
    """What float()/int() give for every token of a well-formed file (a second slow twin)."""
    lines = data.decode().splitlines()
    it = iter(lines)
    frame_count = int(next(it))
    bpf, bframe, ids, info, joints = [], [], [], [], []
    for f in range(frame_count):
        nb = int(next(it))
        bpf.append(nb)
        for _ in range(nb):
            tokens = next(it).split()
            bframe.append(f)
            ids.append(int(tokens[0]))
            info.append([float(t) for t in tokens[1:]])
            nj = int(next(it))
            joints.append([[float(t) for t in next(it).split()] for _ in range(nj)])
    return {
        "frame_count": frame_count,
        "bodies_per_frame": np.array(bpf, np.int32),
        "body_frame": np.array(bframe, np.int32),
        "body_ids": np.array(ids, np.int64),
        "body_info": np.array(info, np.float64).reshape(-1, 9),
        "joints": np.array(joints, np.float64).reshape(-1, 25, 12),
    }


# --- real files ------------------------------------------------------------------------------


def test_real_files_equal_naive_reader(ntu_real_files):
    assert len(ntu_real_files) >= 40
    for path in ntu_real_files:
        raw = read_skeleton(path)
        assert raw.name == path.stem
        assert_same(raw, naive_read(path))
        assert np.all(raw.body_frame[1:] >= raw.body_frame[:-1])
        assert np.array_equal(np.bincount(raw.body_frame, minlength=raw.frame_count),
                              raw.bodies_per_frame)  # fmt: skip
        # Every NTU value is rounded by the kernel itself, none is left to Python's float.
        fixups = _tokenize.parse_kernel(np.frombuffer(path.read_bytes(), np.uint8))[-1]
        assert fixups.shape == (0, 5)


def test_xyz_matches_reference_read_xyz(ntu_real_files):
    # One file with two bodies per frame: the first two listed bodies fill slots 0 and 1.
    path = next(p for p in ntu_real_files if p.name == "S001C001P001R001A050.skeleton")
    raw = read_skeleton(path)
    want = naive_read_xyz(path)
    got = np.zeros_like(want)
    slot = np.zeros(raw.frame_count, np.int64)
    for b, f in enumerate(raw.body_frame):
        if slot[f] < 2:
            got[:, f, :, slot[f]] = raw.xyz[b].T
        slot[f] += 1
    np.testing.assert_array_equal(got, want)


def test_crlf_lf_and_cr_line_ends_agree(ntu_real_dir):
    lf = (ntu_real_dir / A001).read_bytes()
    assert b"\r" not in lf
    ref = parse_skeleton(lf)
    for eol in (b"\r\n", b"\r"):
        assert_same(parse_skeleton(lf.replace(b"\n", eol)), vars_of(ref))
    crlf = (ntu_real_dir / "S002C001P003R001A003.skeleton").read_bytes()
    assert b"\r\n" in crlf
    assert_same(parse_skeleton(crlf.replace(b"\r\n", b"\n")), vars_of(parse_skeleton(crlf)))


def vars_of(raw: RawSkeleton) -> dict:
    return {"frame_count": raw.frame_count, **{f: getattr(raw, f) for f in FIELDS}}


def test_tabs_and_trailing_whitespace(ntu_real_dir):
    lf = (ntu_real_dir / A001).read_bytes()
    ref = vars_of(parse_skeleton(lf))
    assert_same(parse_skeleton(lf.replace(b" ", b" \t ").replace(b"\n", b"  \t\n")), ref)
    assert_same(parse_skeleton(lf + b"\n\n  \n\t"), ref)


def test_zero_body_frames_and_names(tmp_path):
    rng = np.random.default_rng(0)
    body = (72057594037931101, rng.normal(size=9), rng.normal(size=(25, 12)))
    data = render([[], [body], []])
    path = tmp_path / "S001C002P003R001A010.skeleton"
    path.write_bytes(data)
    raw = read_skeleton(path)
    assert raw.name == "S001C002P003R001A010"
    assert raw.frame_count == 3
    assert raw.bodies_per_frame.tolist() == [0, 1, 0]
    assert raw.body_frame.tolist() == [1]
    assert raw.xyz.shape == (1, 25, 3)
    np.testing.assert_array_equal(raw.joints[0], body[2])
    assert parse_skeleton(data).name == "<bytes>"


def test_exponents_signs_and_leading_dot():
    tokens = ["1E-05", "-2.5e+03", "+.5", "-.25E2", "3.", "0e0", "-0", "6.666685E-05",
              "1e22", "1e-22", "123456789012345678", "0.12345678901234567", "1e23", "5e-324",
              "0.000000000000000000000012345", "2.2250738585072014e-308", "1.7976931348623157e308",
              "9007199254740993", "-1E+2", "00012.5000", "0.0000000000000000001234",
              "-0000000000000000000000.5", "1234567890123456789012345e-30"]  # fmt: skip
    values = (tokens * 30)[:300]
    raw = parse_skeleton(one_body_text(values))
    assert_same(raw, expected_from_text(one_body_text(values)))
    assert np.signbit(raw.body_info[0, values.index("-0")])


def one_body_text(values: list[str]) -> bytes:
    """A one-frame, one-body file: the 300 tokens ``values`` as joint values, the first 9
    also as body values."""
    rows = [" ".join(values[12 * j : 12 * j + 12]) for j in range(25)]
    return ("1\n1\n7 " + " ".join(values[:9]) + "\n25\n" + "\n".join(rows) + "\n").encode()


def test_fractions_of_every_length():
    # The digits after a point are read eight bytes at a time (_tokenize._fraction_digits),
    # those of the last eight bytes of the data one by one: fractions of 0 to 17 digits
    # (beyond 15 digits in all, the careful path's), integer parts of 0 to 4 digits.
    rng = np.random.default_rng(0)
    values = []
    for k in range(300):
        digits = "".join(rng.choice(list("0123456789"), size=k % 18 + k // 18 % 5))
        cut = k // 18 % 5
        values.append(("-" if k % 7 == 3 else "") + digits[:cut] + "." + digits[cut:])
    values = [v if v.strip("-.") else "0." for v in values]  # "." alone is not a number
    assert_same(parse_skeleton(one_body_text(values)), expected_from_text(one_body_text(values)))


@pytest.mark.parametrize("after", [b"/", b":", b"a", b".", b"\xff"])
def test_fraction_ends_at_any_other_byte(after):
    # A byte just outside 0-9 (or beyond ASCII) after k fraction digits, wherever it falls
    # in the eight bytes read at once: the token is not a number.
    # Far from the end of the data and among its last bytes (read one by one).
    for where, k in itertools.product((20, 298), range(10)):
        values = ["0.25"] * 300
        values[where] = "1." + "123456789"[:k] + "@"
        data = one_body_text(values).replace(b"@", after)
        with pytest.raises(SkeletonFormatError, match="expected a number"):
            parse_skeleton(data)


def test_fast_and_careful_paths_mix(ntu_real_dir, tmp_path):
    # Values the kernel leaves to Python's float, and a 19-digit bodyID, in the middle of
    # a real file: those records take the careful path, their neighbours the fast one.
    lines = (ntu_real_dir / A001).read_bytes().split(b"\n")
    frame50 = 1 + 49 * 28
    lines[frame50 + 1] = lines[frame50 + 1].replace(b"72057594037931101", b"9223372036854775807")
    lines[frame50 + 23] = b" ".join([b"0.12345678901234567"] * 11 + [b"2e-30"])
    lines[frame50 + 29] = lines[frame50 + 29].replace(b"0.", b"0.000000000000000000", 1)
    path = tmp_path / "mixed.skeleton"
    path.write_bytes(b"\n".join(lines))
    raw = read_skeleton(path)
    assert_same(raw, naive_read(path))
    assert raw.body_ids[49] == 2**63 - 1
    assert raw.joints[49, 20, 0] == 0.12345678901234567


def test_body_ids_exact_beyond_float64():
    a, b = 72057594037931101, 72057594037931102
    assert float(a) == float(b)  # they collide as float64, as the reference parses them
    info, joints = np.zeros(9), np.ones((25, 12))
    raw = parse_skeleton(
        render([[(a, info, joints), (b, info, joints)], [(2**63 - 1, info, joints)]])
    )
    assert raw.body_ids.dtype == np.int64
    assert raw.body_ids.tolist() == [a, b, 2**63 - 1]
    assert len(set(raw.body_ids.tolist())) == 3


# --- malformed input -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def a001_lines(ntu_real_dir) -> list[bytes]:
    return (ntu_real_dir / A001).read_bytes().split(b"\n")


def _set(lines, i, value):
    out = list(lines)
    out[i] = value
    return b"\n".join(out)


# Line indices (0-based) of the A001 file: 0 header, 1 numBody, 2 body line, 3 numJoint,
# 4..28 joints of frame 1; each frame takes 28 lines.
BAD_INPUTS = {
    "extra value on a joint line": (
        lambda L: _set(L, 5, L[5] + b" 1"), 6, "expected 12 values (x y z", "found 13"),
    "missing value on a joint line": (
        lambda L: _set(L, 5, L[5].rsplit(b" ", 1)[0]), 6, "on a joint line, found 11", "joint 2"),
    "extra value on a body line": (
        lambda L: _set(L, 2, L[2] + b" 0"), 3, "expected 10 values (bodyID", "found 11"),
    "junk token": (
        lambda L: _set(L, 6, L[6].replace(b"0.2457799", b"abc")), 7,
        "expected a number, found 'abc'", "(frame 1, body 1, joint 3)"),
    "nan token": (
        lambda L: _set(L, 4, L[4].replace(b"0.2181153", b"nan")), 5,
        "expected a number, found 'nan'", "joint 1"),
    "overflowing value": (
        lambda L: _set(L, 4, L[4].replace(b"0.2181153", b"1e400")), 5,
        "expected a finite number", "'1e400'"),
    "two points": (
        lambda L: _set(L, 4, L[4].replace(b"0.2181153", b"0.21.81")), 5,
        "expected a number", "'0.21.81'"),
    "truncated inside a body": (
        lambda L: b"\n".join(L[:500]), 501, "expected a joint line", "found the end of the file"),
    "truncated after a body line": (
        lambda L: b"\n".join(L[:3]) + b"\n", 4, "expected a joint-count line",
        "found the end of the file"),
    "fewer frames than the header": (
        lambda L: b"\n".join(L[: 1 + 57 * 28]) + b"\n", 1 + 57 * 28 + 1,
        "expected 103 frames, as the header on line 1 says",
        "found the end of the file after frame 57"),
    "more frames than the header": (
        lambda L: _set(L, 0, b"57"), 1 + 57 * 28 + 1,
        "expected the end of the file after the 57 frames", "found more content, '1'"),
    "content after the last frame": (
        lambda L: b"\n".join(L) + b"junk\n", 1 + 103 * 28 + 1, "expected the end of the file",
        "'junk'"),
    "negative body count": (
        lambda L: _set(L, 1, b"-1"), 2, "expected a non-negative integer, the body count", "-1"),
    "negative frame count": (
        lambda L: _set(L, 0, b"-103"), 1, "expected a non-negative integer, the frame count",
        "-103"),
    "too many bodies": (
        lambda L: _set(L, 1, b"7"), 2, "expected at most 6 bodies", "found 7 (frame 1)"),
    "wrong joint count": (
        lambda L: _set(L, 3, b"24"), 4, "expected 25 joints, found 24", "(frame 1, body 1)"),
    "non-integer count": (
        lambda L: _set(L, 29, b"1.0"), 30, "expected an integer, the body count", "'1.0'"),
    "two values on a count line": (
        lambda L: _set(L, 3, b"25 25"), 4, "expected one integer, the joint count",
        "found 2 values"),
    "blank line": (
        lambda L: _set(L, 1, b""), 2, "expected one integer, the body count", "an empty line"),
    "non-integer bodyID": (
        lambda L: _set(L, 2, L[2].replace(b"72057594037931101", b"7.2e16")), 3,
        "expected an integer bodyID", "'7.2e16'"),
    "bodyID beyond int64": (
        lambda L: _set(L, 2, L[2].replace(b"72057594037931101", b"99999999999999999999")), 3,
        "expected an integer that fits in 64 bits", "'99999999999999999999'"),
    "frame count beyond int64": (
        lambda L: _set(L, 0, b"99999999999999999999999"), 1, "fits in 64 bits", "'9999"),
    "non-UTF-8 bytes": (
        lambda L: _set(L, 4, L[4].replace(b"0.2181153", b"0.21\xff\xfe")), 5,
        "expected a number, found non-text bytes", "is this a .skeleton text file?"),
    "binary file": (
        lambda L: b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", 1, "expected an integer, the frame count",
        "non-text bytes"),
    "empty file": (lambda L: b"", 1, "expected the frame count (numFrame)", "an empty file"),
    "whitespace-only file": (lambda L: b" \n\r\n\t\n", 1, "frame count", "an empty file"),
    "zero frames": (lambda L: b"0\n", 1, "expected at least one frame", "found 0"),
}  # fmt: skip


@pytest.mark.parametrize("kind", sorted(BAD_INPUTS))
def test_malformed_input_is_a_clear_error(kind, a001_lines):
    mutate, line, *fragments = BAD_INPUTS[kind]
    with pytest.raises(SkeletonFormatError) as info:
        parse_skeleton(mutate(a001_lines), "bad.skeleton")
    err = info.value
    assert err.line == line, str(err)
    assert err.path == "bad.skeleton"
    message = str(err)
    assert message.startswith(f"bad.skeleton:{line}: expected ")
    assert message == f"{err.path}:{err.line}: expected {err.expected}, found {err.found}"
    for fragment in fragments:
        assert fragment in message


def test_read_skeleton_errors_name_the_file(tmp_path):
    path = tmp_path / "S001C001P001R001A001.skeleton"
    path.write_bytes(b"2\n0\n")
    with pytest.raises(SkeletonFormatError, match=r"A001\.skeleton:3: expected 2 frames"):
        read_skeleton(path)
    with pytest.raises(FileNotFoundError):
        read_skeleton(tmp_path / "absent.skeleton")
    err = SkeletonFormatError("f", 3, "x", "y")
    assert isinstance(err, ValueError)
    assert str(pickle.loads(pickle.dumps(err))) == str(err)
    with pytest.raises(TypeError, match="needs bytes"):
        parse_skeleton("1\n0\n")


# --- random well-formed files ----------------------------------------------------------------

finite = st.floats(allow_nan=False, allow_infinity=False)
FORMATS = (repr, lambda v: f"{v:.7g}", lambda v: f"{v:.7E}", lambda v: repr(v).upper())


@st.composite
def skeleton_files(draw):
    n_frames = draw(st.integers(1, 4))
    pool = np.array(draw(st.lists(finite, min_size=1, max_size=40)))
    fmt = FORMATS[draw(st.integers(0, len(FORMATS) - 1))]
    sep = draw(st.sampled_from([" ", "\t", "  "]))
    eol = draw(st.sampled_from(["\n", "\r\n"]))
    trailing = draw(st.sampled_from(["", " ", "\t "]))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(n_frames):
        bodies = []
        for _ in range(draw(st.integers(0, 3))):
            body_id = draw(st.integers(0, 2**63 - 1))
            values = rng.choice(pool, size=9 + 25 * 12)
            bodies.append((body_id, values[:9], values[9:].reshape(25, 12)))
        frames.append(bodies)
    return render(frames, fmt=fmt, sep=sep, eol=eol, trailing=trailing)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(skeleton_files())
def test_random_files_round_trip_to_float(data):
    raw = parse_skeleton(data)
    assert_same(raw, expected_from_text(data))


@pytest.mark.parametrize("last", ["1036.2334", "-6.666685E-05", "2"])
def test_data_ending_inside_the_last_token(last):
    # The fast path reads a token only when a blank or line end follows it somewhere in the
    # data (so its digit loops need no end-of-data test); a record whose last token runs to
    # the end of the data is read the careful way. Cut the data at every byte of that
    # token: it must read as with a final line end (fast path), as float() reads it, or
    # fail the same way.
    joints = np.arange(300.0).reshape(25, 12) / 7
    text = render([[(5, np.full(9, 0.5), joints)]]).rstrip(b"\n")
    text = text.rsplit(b" ", 1)[0] + b" " + last.encode()
    for cut in range(len(last) + 1):
        data = text[: len(text) - cut]
        token = last[: len(last) - cut]
        try:
            value = float(token)
        except ValueError:
            value = None
        if value is None:
            with pytest.raises(SkeletonFormatError) as bare:
                parse_skeleton(data)
            with pytest.raises(SkeletonFormatError) as ended:
                parse_skeleton(data + b"\n")
            assert str(bare.value) == str(ended.value)
            continue
        raw = parse_skeleton(data)
        assert raw.joints[0, -1, -1] == value
        assert_same(raw, expected_from_text(data))
        assert_same(raw, vars_of(parse_skeleton(data + b"\n")))
