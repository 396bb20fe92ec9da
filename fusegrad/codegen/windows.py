"""Hand-written CPU kernels for the ops that loop over windows of image planes: convolution (its
columns gathered, im2col, and scattered back, col2im, around one BLAS matmul per image) and max
pooling and its gradient. A compiled plan runs these in place of the ops' NumPy impls, which take a
pass over the whole batch per kernel position (pooling: about ten passes for a 2 x 2 window) where
a kernel takes one pass over the windows, and which pad each image row so that the columns are
contiguous runs, costing a zero-extended copy of every cotangent and an output slice copied out.
conv2d_weight_grad gathers its input's columns again rather than keep the forward pass's: in
the CNN step, holding both convolutions' columns (8 MB) from the forward to the backward pass made
the step about 0.8 ms slower than the second im2col (0.2 ms) of inputs still in cache. Where the
pooling windows tile the plane (no overlap, no padding: the CNNs' 2 x 2, stride 2), max_pool2d
also records which cell of each window is its maximum, and its gradient writes each window's
cotangent there into zeros: one store per window instead of comparing every cell again.

`lower(nodes)` gives the function a plan calls for each node it can run so, with the node's input
values as arguments (float32 and float64; grouped convolutions keep the impl). The ops' impls stay
what eager mode runs and the reference these are tested against (tests/test_codegen.py): results
match them to rounding (col2im adds in the impl's order). The kernels are one module per
window geometry (its sizes are constants, so that Numba unrolls the windows and folds the strides
into the index arithmetic), loaded through the kernel store at a plan's first call. They have no
native libraries (codegen/native.py): a process running a plan with them imports Numba.
"""
import hashlib

import numpy as np

from ..ir import dtypes as D
from ..ir.ops import conv_output_size
from .store import store

# The kernels' body: the module of one geometry is its constants (_source) followed by this, so
# that Numba compiles the window loops with their sizes known (unrolled, constant index arithmetic).
KERNELS = '''

@njit(inline="always")
def _span(out_size, stride, offset, size):
    # the outputs o in [lo, hi) whose cell o * stride + offset lies in 0 .. size - 1
    lo = 0 if offset >= 0 else (-offset + stride - 1) // stride
    hi = min(out_size, (size - 1 - offset) // stride + 1) if offset < size else 0
    return lo, max(lo, hi)


@njit(inline="always")
def _kernel_cell(plane, i, j, h, w, out_h, out_w):
    # kernel cell (i, j) of a plane: its row of the columns, the outputs whose cell lies inside
    # the plane (rows [rows_lo, rows_hi), columns [lo, hi)), and the flat index of output (0, 0)'s
    # cell (outside the plane where it is padding)
    rows_lo, rows_hi = _span(out_h, SH, i * DH - TOP, h)
    lo, hi = _span(out_w, SW, j * DW - LEFT, w)
    return (plane * KH + i) * KW + j, rows_lo, rows_hi, lo, hi, (plane * h - TOP + i * DH) * w - LEFT + j * DW


@njit(inline="always")
def _zero_wrapped(cols, start, rows_lo, rows_hi, lo, hi, w):
    # a band copied (or added) as one run: zero its entries in the padding columns, which the run
    # took from (or would add to) cells of a neighbouring row
    for oy in range(rows_lo, rows_hi):
        for ox in range(lo):
            cols[np.uintp(start + oy * w + ox)] = 0
        for ox in range(hi, w):
            cols[np.uintp(start + oy * w + ox)] = 0


@njit(cache=True, nogil=True, error_model="numpy")
def im2col(x, cols, out_h, out_w):
    # cols[b, (c * KH + i) * KW + j, oy * out_w + ox] = x[b, c, oy * SH - TOP + i * DH, ox * SW - LEFT + j * DW],
    # zero in the padding. On flat arrays, with indices cast to unsigned: Numba checks a signed
    # index for wraparound per element, a select that stops vectorisation
    n, c, h, w = x.shape
    x, cols = x.reshape(-1), cols.reshape(-1)
    size = out_h * out_w
    for plane in range(n * c):
        for i in range(KH):
            for j in range(KW):
                row, rows_lo, rows_hi, lo, hi, origin = _kernel_cell(plane, i, j, h, w, out_h, out_w)
                start = row * size
                if SH == 1 and SW == 1 and out_w == w:
                    # rows as wide as the input's: the band of rows inside is one run of the
                    # plane, copied at once; its cells that wrapped into a neighbouring row are
                    # then zeroed (the padding columns)
                    first, last = 0, 0   # the run from the band's first cell inside to its last
                    if rows_lo < rows_hi and lo < hi:
                        first, last = rows_lo * w + lo, rows_hi * w - (w - hi)
                    for t in range(first):
                        cols[np.uintp(start + t)] = 0
                    for t in range(first, last):
                        cols[np.uintp(start + t)] = x[np.uintp(origin + t)]
                    for t in range(last, size):
                        cols[np.uintp(start + t)] = 0
                    _zero_wrapped(cols, start, rows_lo, rows_hi, lo, hi, w)
                    continue
                for oy in range(out_h):
                    dst = start + oy * out_w
                    inside = oy >= rows_lo and oy < rows_hi
                    row_lo, row_hi = (lo, hi) if inside else (out_w, out_w)
                    for k in range(row_lo):
                        cols[np.uintp(dst + k)] = 0
                    src = origin + oy * SH * w + row_lo * SW
                    for k in range(row_hi - row_lo):
                        cols[np.uintp(dst + row_lo + k)] = x[np.uintp(src + k * SW)]
                    for k in range(row_hi, out_w):
                        cols[np.uintp(dst + k)] = 0


@njit(cache=True, nogil=True, error_model="numpy")
def col2im(cols, grad, out_h, out_w):
    # im2col's transpose: each column entry added to its pixel of grad (zeros on entry), kernel
    # position by kernel position as the op's impl adds them
    n, c, h, w = grad.shape
    cols, grad = cols.reshape(-1), grad.reshape(-1)
    size = out_h * out_w
    for plane in range(n * c):
        for i in range(KH):
            for j in range(KW):
                row, rows_lo, rows_hi, lo, hi, origin = _kernel_cell(plane, i, j, h, w, out_h, out_w)
                if SH == 1 and SW == 1 and out_w == w and rows_lo < rows_hi and lo < hi:
                    # as im2col's band: one run, after zeroing the entries of the padding columns
                    # (the run adds them to cells of a neighbouring row)
                    start = row * size
                    _zero_wrapped(cols, start, rows_lo, rows_hi, lo, hi, w)
                    for t in range(rows_lo * w + lo, rows_hi * w - (w - hi)):
                        grad[np.uintp(origin + t)] += cols[np.uintp(start + t)]
                    continue
                for oy in range(rows_lo, rows_hi):
                    src = row * size + oy * out_w + lo
                    dst = origin + oy * SH * w + lo * SW
                    for k in range(hi - lo):
                        grad[np.uintp(dst + k * SW)] += cols[np.uintp(src + k)]


@njit(inline="always")
def _bit_constants(bits):
    # for the integer view of float32 (int32) or float64 (int64) values: the sign bit's position,
    # the mask of the other bits, and the largest of those that is not NaN (+inf's)
    if bits.itemsize == 4:
        return 31, 0x7FFFFFFF, 0x7F800000
    return 63, 0x7FFFFFFFFFFFFFFF, 0x7FF0000000000000


@njit(inline="always")
def _key(b, top, magnitude, infinity):
    # an integer ordered as the float whose bits are b: -0 and +0 equal, every NaN equal and above
    # +inf (the key `magnitude`). Comparing keys takes integer compares and selects, which stay
    # branch-free: float compares with NaN checks became branches on which cell is larger (data,
    # mispredicted half the time) wherever the loop did not vectorise (rows shorter than its
    # vector block on AVX2: a 2 x 2 pooling of 16 x 16 planes ran 10x slower)
    low = b & magnitude
    k = b ^ ((b >> top) & magnitude)
    k = k if low != 0 else low
    return k if low <= infinity else magnitude


@njit(inline="always")
def _window_max(x, top, ox, i_lo, i_hi, w, m, km, c):
    # the maximum (its bits) of m (key km) and the window's cells inside the plane, NaN winning
    for i in range(i_lo, i_hi):
        for j in range(KW):
            xx = ox * SW - LEFT + j * DW
            if xx >= 0 and xx < w:
                v = x[np.uintp(top + i * DH * w + ox * SW + j * DW)]
                kv = _key(v, c[0], c[1], c[2])
                later = kv > km
                m = v if later else m
                km = kv if later else km
    return m


@njit(inline="always")
def _window_argmax(x, top, ox, i_lo, i_hi, w, km, c):
    # the flat index of the window's argmax cell inside the plane: its first cell whose key is
    # km, or its last NaN where km is NaN's (PyTorch's index); -1 where no cell has the key
    nan = km == c[1]
    chosen = -1
    for i in range(i_lo, i_hi):
        for j in range(KW):
            xx = ox * SW - LEFT + j * DW
            if xx >= 0 and xx < w:
                cell = top + i * DH * w + ox * SW + j * DW
                take = (_key(x[np.uintp(cell)], c[0], c[1], c[2]) == km) & (nan | (chosen < 0))
                chosen = cell if take else chosen
    return chosen


@njit(inline="always")
def _row_geometry(plane, oy, h, w, out_w):
    # the kernel rows inside the plane, the flat index of the window row's top-left cell, and
    # the windows [lo, hi) wholly inside the plane (none when some kernel rows are outside)
    i_lo, i_hi = _span(KH, DH, oy * SH - TOP, h)
    top = (plane * h + oy * SH - TOP) * w - LEFT
    if i_lo != 0 or i_hi != KH:
        return i_lo, i_hi, top, 0, 0
    lo, _ = _span(out_w, SW, -LEFT, w)
    _, hi = _span(out_w, SW, (KW - 1) * DW - LEFT, w)
    return i_lo, i_hi, top, lo, max(lo, hi)


@njit(cache=True, nogil=True, error_model="numpy")
def max_pool2d(x, out, fill):
    # window maxima over the cells inside the plane (the padding is `fill`, -inf); NaN wins.
    # x, out and fill are the integer views of float values, compared by _key. Windows wholly
    # inside the plane run with the cells unrolled and unchecked
    n, c, h, w = x.shape
    out_h, out_w = out.shape[2], out.shape[3]
    x, out = x.reshape(-1), out.reshape(-1)
    constants = _bit_constants(x)
    top_bit, magnitude, infinity = constants
    fill_key = _key(fill, top_bit, magnitude, infinity)
    for plane in range(n * c):
        for oy in range(out_h):
            row = (plane * out_h + oy) * out_w
            i_lo, i_hi, top, lo, hi = _row_geometry(plane, oy, h, w, out_w)
            for ox in range(lo):
                out[np.uintp(row + ox)] = _window_max(x, top, ox, i_lo, i_hi, w, fill, fill_key, constants)
            for ox in range(lo, hi):
                m, km = fill, fill_key
                for i in range(KH):
                    for j in range(KW):
                        v = x[np.uintp(top + i * DH * w + ox * SW + j * DW)]
                        kv = _key(v, top_bit, magnitude, infinity)
                        later = kv > km
                        m = v if later else m
                        km = kv if later else km
                out[np.uintp(row + ox)] = m
            for ox in range(hi, out_w):
                out[np.uintp(row + ox)] = _window_max(x, top, ox, i_lo, i_hi, w, fill, fill_key, constants)


@njit(cache=True, nogil=True, error_model="numpy")
def max_pool2d_backward(g, x, out, grad):
    # each window's cotangent added at its argmax cell inside the plane (_window_argmax); grad is
    # zeros on entry; x and out are integer views, as max_pool2d's
    n, c, h, w = x.shape
    out_h, out_w = out.shape[2], out.shape[3]
    g, x, out, grad = g.reshape(-1), x.reshape(-1), out.reshape(-1), grad.reshape(-1)
    constants = _bit_constants(x)
    top_bit, magnitude, infinity = constants
    for plane in range(n * c):
        for oy in range(out_h):
            row = (plane * out_h + oy) * out_w
            i_lo, i_hi, top, lo, hi = _row_geometry(plane, oy, h, w, out_w)
            for ox in range(out_w):
                km = _key(out[np.uintp(row + ox)], top_bit, magnitude, infinity)
                if ox >= lo and ox < hi:   # wholly inside the plane: unrolled and unchecked
                    # the last cell with the key in one order: scan order for NaN's (rare), else
                    # the reverse (a chain of selects, with no test of what was chosen so far)
                    nan = km == magnitude
                    chosen = -1
                    for q in range(KH * KW):
                        p = q if nan else KH * KW - 1 - q
                        cell = top + (p // KW) * DH * w + ox * SW + (p % KW) * DW
                        chosen = cell if _key(x[np.uintp(cell)], top_bit, magnitude, infinity) == km else chosen
                else:
                    chosen = _window_argmax(x, top, ox, i_lo, i_hi, w, km, constants)
                if chosen >= 0:
                    grad[np.uintp(chosen)] += g[np.uintp(row + ox)]


# Windows that tile the plane (never overlapping) with no padding: the forward pass records each
# window's code, the index i * KW + j of the cell its gradient goes to, for the backward pass,
# which then writes one cell per window into zeros instead of comparing every cell again.

@njit(inline="always")
def _tile_cell(at, q, w):
    # the flat index of cell q (i * KW + j) of the window whose first cell is at (q may be a
    # uint8 code: widened first, which plain Python under NUMBA_DISABLE_JIT needs)
    q = np.intp(q)
    return np.uintp(at + (q // KW) * DH * w + (q % KW) * DW)


@njit(inline="always")
def _last_nans(x, codes, row, top, out_w, w, c):
    # the windows of a row whose coded cell is NaN: recoded to their last NaN, PyTorch's index
    for ox in range(out_w):
        at = top + ox * SW
        code = codes[np.uintp(row + ox)]
        if code < KH * KW and _key(x[_tile_cell(at, code, w)], c[0], c[1], c[2]) == c[1]:
            for q in range(code + 1, KH * KW):
                code = q if _key(x[_tile_cell(at, q, w)], c[0], c[1], c[2]) == c[1] else code
            codes[np.uintp(row + ox)] = code


@njit(cache=True, nogil=True, error_model="numpy")
def tile_max(x, out, codes, given):
    # each window's maximum into out and the code of its argmax cell into codes: its first
    # maximal cell, or its last NaN (PyTorch's index; the rows holding NaN, rare, are recoded
    # after, which keeps NaN's case out of the loop over windows); `given`: out holds the maxima
    # already, and a window none of whose cells equals its maximum gets code KH * KW. x and out
    # are integer views (_key)
    n, c, h, w = x.shape
    out_h, out_w = out.shape[2], out.shape[3]
    x, out, codes = x.reshape(-1), out.reshape(-1), codes.reshape(-1)
    constants = _bit_constants(x)
    top_bit, magnitude, infinity = constants
    for plane in range(n * c):
        for oy in range(out_h):
            row = (plane * out_h + oy) * out_w
            top = (plane * h + oy * SH) * w
            nans = False
            for ox in range(out_w):
                at = top + ox * SW
                if given:
                    km = _key(out[np.uintp(row + ox)], top_bit, magnitude, infinity)
                    code = KH * KW
                    for q in range(KH * KW - 1, -1, -1):
                        kv = _key(x[_tile_cell(at, q, w)], top_bit, magnitude, infinity)
                        code = q if kv == km else code
                else:
                    m = x[np.uintp(at)]
                    km = _key(m, top_bit, magnitude, infinity)
                    code = 0
                    for q in range(1, KH * KW):
                        v = x[_tile_cell(at, q, w)]
                        kv = _key(v, top_bit, magnitude, infinity)
                        later = kv > km
                        m = v if later else m
                        km = kv if later else km
                        code = q if later else code
                    out[np.uintp(row + ox)] = m
                codes[np.uintp(row + ox)] = code
                nans |= km == magnitude
            if nans:
                _last_nans(x, codes, row, top, out_w, w, constants)


@njit(cache=True, nogil=True, error_model="numpy")
def tile_scatter(g, codes, grad):
    # each window's cotangent written at its coded cell of grad (zeros on entry)
    n, c, h, w = grad.shape
    out_h, out_w = g.shape[2], g.shape[3]
    g, codes, grad = g.reshape(-1), codes.reshape(-1), grad.reshape(-1)
    for plane in range(n * c):
        for oy in range(out_h):
            row = (plane * out_h + oy) * out_w
            top = (plane * h + oy * SH) * w
            for ox in range(out_w):
                code = codes[np.uintp(row + ox)]
                if code < KH * KW:
                    grad[_tile_cell(top + ox * SW, code, w)] = g[np.uintp(row + ox)]
'''
FLOATS = (D.float32, D.float64)   # Numba has no float16; integer pooling keeps the impl


def _disjoint(kernel, stride, dilation):
    """Whether windows never overlap: each cell is in one window at most."""
    return all(s >= d * (k - 1) + 1 for k, s, d in zip(kernel, stride, dilation))


def _source(kernel, stride, padding, dilation):
    """The kernel module of one window geometry."""
    (kh, kw), (sh, sw), (top, left), (dh, dw) = kernel, stride, (padding[0][0], padding[1][0]), dilation
    return (f"# fusegrad's kernels over {kh} x {kw} windows of image planes (N, C, H, W): stride {sh} x {sw}, "
            f"padding {top} (top) x {left} (left), dilation {dh} x {dw}\n"
            "import numpy as np\nfrom numba import njit\n\n"
            f"KH, KW, SH, SW, TOP, LEFT, DH, DW = {kh}, {kw}, {sh}, {sw}, {top}, {left}, {dh}, {dw}\n"
            + KERNELS)


class _Lowered:
    """A node computed by `run(kernels, *input values, **attrs)`; `kernels` (the module of the
    node's window geometry) is loaded at the first call, so a plan that never runs loads nothing."""
    __slots__ = ("run", "attrs", "geometry", "cache_dir", "kernels")

    def __init__(self, run, attrs, geometry, cache_dir):
        self.run, self.attrs, self.geometry, self.cache_dir, self.kernels = run, attrs, geometry, cache_dir, None

    def __call__(self, *values):
        if self.kernels is None:
            self.kernels = _Kernels(_source(*self.geometry), self.cache_dir)
        return self.run(self.kernels, *values, **self.attrs)


class _Kernels:
    """The functions of one kernel module, each loaded from the store at its first use."""

    def __init__(self, source, cache_dir):
        self._source, self._store = source, store(cache_dir)
        self._module = f"fusegrad_windows_{hashlib.sha1(source.encode()).hexdigest()[:20]}"

    def __getattr__(self, name):
        fn = self._store.numba_kernel(self._source, self._module, name)
        setattr(self, name, fn)
        return fn


class Shared:
    """What a plan's max_pool2d makes from its input for the max_pool2d_backward of the same
    input and geometry later in the plan: its output and window codes. Taken once: the slot holds
    them only from the forward to the backward pass of one run. The input and its value are one
    attribute, so that runs in two threads never pair one's input with the other's value (the
    loser computes its own)."""
    __slots__ = ("pair",)

    def __init__(self):
        self.pair = None

    def put(self, x, value):
        self.pair = (x, value)

    def take(self, x):
        pair, self.pair = self.pair, None
        return pair[1] if pair is not None and pair[0] is x else None


def _columns(k, x, kernel, stride, padding, dilation):
    """(N, C * kh * kw, Ho * Wo) columns of x's windows, and (Ho, Wo)."""
    n, c, h, w = x.shape
    out_h = conv_output_size(h, padding[0], kernel[0], stride[0], dilation[0])
    out_w = conv_output_size(w, padding[1], kernel[1], stride[1], dilation[1])
    cols = np.empty((n, c * kernel[0] * kernel[1], out_h * out_w), x.dtype)
    k.im2col(np.ascontiguousarray(x), cols, out_h, out_w)
    return cols, (out_h, out_w)


def _conv2d(k, x, w, stride, padding, dilation, groups):
    cols, (out_h, out_w) = _columns(k, x, w.shape[2:], stride, padding, dilation)
    out = np.matmul(w.reshape(w.shape[0], -1), cols)   # one product per image: (N, Cout, Ho * Wo)
    return out.reshape(x.shape[0], w.shape[0], out_h, out_w)


def _conv2d_weight_grad(k, x, g, stride, padding, dilation, groups, weight_shape):
    cols, _ = _columns(k, x, weight_shape[2:], stride, padding, dilation)
    n, c_out = g.shape[:2]
    g = np.ascontiguousarray(g).reshape(n, c_out, g.shape[2] * g.shape[3])
    out = np.empty(weight_shape, x.dtype)
    flat = out.reshape(c_out, -1)
    if n == 1:
        np.matmul(g[0], cols[0].T, out=flat)
    else:   # columns x cotangent per image (as the op's impl: OpenBLAS ran the transposed product slower),
        # summed into a contiguous array (4x faster than into the transposed view of out), then placed
        flat[...] = np.sum(np.matmul(cols, g.transpose(0, 2, 1)), axis=0).T
    return out


def _conv2d_input_grad(k, g, w, stride, padding, dilation, groups, input_shape):
    n, c_out, out_h, out_w = g.shape
    cols = np.matmul(w.reshape(c_out, -1).T, np.ascontiguousarray(g).reshape(n, c_out, out_h * out_w))
    grad = np.zeros(input_shape, g.dtype)
    k.col2im(cols, grad, out_h, out_w)
    return grad


def _tiles(kernel, stride, padding, dilation):
    """Whether the windows tile the plane: never overlapping, no padding (the tile_ kernels)."""
    return _disjoint(kernel, stride, dilation) and padding == ((0, 0), (0, 0))


def _codes(out, kernel):
    return np.empty(out.shape, np.uint8 if kernel[0] * kernel[1] < 255 else np.int32)


def _bits(x):
    """The integer view of float values (contiguous), which the pooling kernels compare (_key)."""
    x = np.ascontiguousarray(x)
    return x.view(np.int32 if x.itemsize == 4 else np.int64)


def _max_pool2d(k, x, kernel, stride, padding, dilation, shared=None):
    n, c, h, w = x.shape
    out = np.empty((n, c, conv_output_size(h, padding[0], kernel[0], stride[0], dilation[0]),
                    conv_output_size(w, padding[1], kernel[1], stride[1], dilation[1])), x.dtype)
    if not _tiles(kernel, stride, padding, dilation):
        bits = _bits(x)
        k.max_pool2d(bits, _bits(out), np.array(-np.inf, x.dtype).view(bits.dtype)[()])
        return out
    codes = _codes(out, kernel)
    k.tile_max(_bits(x), _bits(out), codes, False)
    if shared is not None:
        shared.put(x, (out, codes))
    return out


def _max_pool2d_backward(k, g, x, out, kernel, stride, padding, dilation, shared=None):
    grad = np.zeros(x.shape, g.dtype)
    if not _tiles(kernel, stride, padding, dilation):
        k.max_pool2d_backward(np.ascontiguousarray(g), _bits(x), _bits(out), grad)
        return grad
    found = None if shared is None else shared.take(x)
    codes = found[1] if found is not None and found[0] is out else None
    if codes is None:   # not from this run's max_pool2d: the codes of out's maxima in x
        codes = _codes(out, kernel)
        k.tile_max(_bits(x), _bits(out), codes, True)
    k.tile_scatter(np.ascontiguousarray(g), codes, grad)
    return grad


def _convolution(name, shapes, attrs):
    # the weight's shape is input 1's for conv2d (x, w) and conv2d_input_grad (g, w)
    kernel = attrs["weight_shape"][2:] if name == "conv2d_weight_grad" else shapes[1][2:]
    return (tuple(kernel), attrs["stride"], attrs["padding"], attrs["dilation"]) if attrs["groups"] == 1 else None


def _pooling(name, shapes, attrs):
    return attrs["kernel"], attrs["stride"], attrs["padding"], attrs["dilation"]


LOWERINGS = {   # op -> (its computation, its window geometry: None where the impl runs)
    "conv2d": (_conv2d, _convolution),
    "conv2d_input_grad": (_conv2d_input_grad, _convolution),
    "conv2d_weight_grad": (_conv2d_weight_grad, _convolution),
    "max_pool2d": (_max_pool2d, _pooling),
    "max_pool2d_backward": (_max_pool2d_backward, _pooling),
}


def lowering(name, shapes, dtypes, attrs, cache_dir=None):
    """A callable computing op `name` on values of `shapes` and `dtypes` (each result's dtype is
    its inputs') with the window kernels, or None where the op's impl runs."""
    entry = LOWERINGS.get(name)
    if entry is None or any(d not in FLOATS for d in dtypes):
        return None
    geometry = entry[1](name, shapes, attrs)
    return None if geometry is None else _Lowered(entry[0], dict(attrs), geometry, cache_dir)


def _lowering(node, cache_dir):
    if node.op.name not in LOWERINGS:   # other nodes may have Python scalars among their inputs
        return None
    return lowering(node.op.name, [v.shape for v in node.inputs], [node.dtype] + [v.dtype for v in node.inputs],
                    node.attrs, cache_dir)


def lower(nodes, cache_dir=None):
    """{node: a callable computing it from its input values with the window kernels} for those of
    `nodes` (a plan's single-node steps, in order) that can run so. A max_pool2d and a later
    max_pool2d_backward of its input and geometry share its window codes."""
    lowered = {}
    pooled = {}   # (input, geometry) -> the max_pool2d waiting for its gradient
    for node in nodes:
        fn = _lowering(node, cache_dir)
        if fn is None:
            continue
        lowered[node] = fn
        if node.op.name == "max_pool2d":
            pooled[node.inputs[0], fn.geometry] = fn
        elif node.op.name == "max_pool2d_backward":   # (cotangent, the pooling's input, its output)
            forward = pooled.pop((node.inputs[1], fn.geometry), None)
            if forward is not None:
                fn.attrs["shared"] = forward.attrs["shared"] = Shared()
    return lowered


__all__ = ["lower", "lowering", "LOWERINGS", "Shared", "KERNELS"]
