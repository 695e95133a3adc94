"""Resample spectra on their own wavelength grids onto one target grid (numpy kernels).

Real pipeline products sample each fibre on its own wavelength grid; the
store has one grid. :func:`resample` maps every spectrum of a block onto the
target grid with one of two methods:

``"linear"``
    Linear interpolation between the two input pixels around each output
    wavelength. The variance is interpolated with the same weights,
    ``var = (1 - t) var_j + t var_{j+1}``. That keeps each output pixel's
    noise at the level of the input pixels around it; the exact propagation
    for independent pixels, ``(1 - t)^2 var_j + t^2 var_{j+1}``, would make
    the error dip by up to sqrt(2) half-way between input pixels, an artefact
    of the correlation the interpolation introduces between neighbouring
    output pixels (which a per-pixel error cannot express either way).
``"flux"``
    Flux-conserving rebinning: each pixel is a bin whose edges lie half-way
    to its neighbours (the outer edges half a step out), the input is taken
    as constant over each input bin, and each output pixel is the mean flux
    density over its bin, ``f_k = sum_j w_kj f_j`` with ``w_kj`` the overlap
    of output bin ``k`` and input bin ``j`` divided by the width of bin
    ``k``. Errors are propagated exactly for independent input pixels,
    ``var_k = sum_j w_kj^2 var_j`` (so rebinning to coarser pixels lowers
    the error, as averaging does); covariance between input pixels (PFS's
    COVAR off-diagonals) is ignored. ``sum_k f_k width_k`` equals the input's
    integral over the covered range. Constant spectra are preserved
    exactly, linear ones exactly when each output bin is a union of whole
    input bins of one width, and otherwise to within half an input pixel's
    change of the line.

With either method an output pixel is bad (``mask`` True, flux and error
NaN) when it is not covered by the input (linear: outside the first and
last input wavelengths; flux: its bin not wholly inside the input's bins) or
when it takes a non-zero weight from a bad input pixel: one that ``mask``
flags, or whose flux is not finite, or whose error is not finite or not
positive (the project's definition of a bad pixel). On the identity grid
both methods return their input bit for bit.

The work is vectorised over spectra and pixels (a per-spectrum grid is
located with one stable ``argsort`` of input and output wavelengths per
row), in blocks of rows that bound the memory to a few tens of MB.
"""

from __future__ import annotations

import numpy as np

METHODS = ("linear", "flux")
_BLOCK_ELEMENTS = 1 << 20  # rows x (n_in + n_out) per block: bounds the sort arrays' memory


def find_non_increasing(wave: np.ndarray) -> tuple[int, int] | None:
    """Return the first (row, pixel) where ``wave`` is not finite or not strictly increasing.

    Parameters
    ----------
    wave : ndarray of shape (n_pixels,) or (n_spectra, n_pixels)

    Returns
    -------
    tuple of int or None
        ``(row, pixel)`` of the first offending pixel (row 0 for a 1-D
        grid): a non-finite value, or a value not larger than the one before
        it. None when every row is finite and strictly increasing.
    """
    w = np.atleast_2d(np.asarray(wave, dtype=np.float64))
    bad = ~np.isfinite(w)
    bad[:, 1:] |= ~(np.diff(w, axis=1) > 0)
    if not bad.any():
        return None
    row, pixel = np.argwhere(bad)[0]
    return int(row), int(pixel)


def pixel_edges(wave: np.ndarray) -> np.ndarray:
    """Return pixel-bin edges half-way between centres, the outer ones half a step out.

    Parameters
    ----------
    wave : ndarray of shape (..., n_pixels), n_pixels >= 2, increasing

    Returns
    -------
    ndarray of shape (..., n_pixels + 1), float64
    """
    w = np.asarray(wave, dtype=np.float64)
    mid = 0.5 * (w[..., 1:] + w[..., :-1])
    first = w[..., :1] - 0.5 * (w[..., 1:2] - w[..., :1])
    last = w[..., -1:] + 0.5 * (w[..., -1:] - w[..., -2:-1])
    return np.concatenate([first, mid, last], axis=-1)


def find_bad_inputs(flux: np.ndarray, error: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """Return True where an input pixel is bad: flagged, or a non-finite or non-positive value.

    Parameters
    ----------
    flux, error : ndarray of shape (n_spectra, n_pixels)
    mask : ndarray of bool, same shape, or None

    Returns
    -------
    ndarray of bool, shape (n_spectra, n_pixels)
    """
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(flux) | ~np.isfinite(error) | ~(error > 0)
    if mask is not None:
        bad |= np.asarray(mask, dtype=bool)
    return bad


def locate(wave_in: np.ndarray, wave_out: np.ndarray) -> np.ndarray:
    """Return, for each output wavelength, the index of the last input wavelength <= it.

    Parameters
    ----------
    wave_in : ndarray of shape (n_in,) or (n_spectra, n_in), strictly increasing
    wave_out : ndarray of shape (n_out,), strictly increasing

    Returns
    -------
    ndarray of int64, shape (n_spectra, n_out) (n_spectra = 1 for a 1-D
    ``wave_in``); -1 where the output lies below the first input.
    """
    if wave_in.ndim == 1:
        return (np.searchsorted(wave_in, wave_out, side="right") - 1)[None, :]
    n, n_in = wave_in.shape
    # One stable sort per row of inputs followed by outputs: ties put the input
    # first, so the count of inputs up to an output is searchsorted(side="right").
    merged = np.concatenate([wave_in, np.broadcast_to(wave_out, (n, wave_out.size))], axis=1)
    order = np.argsort(merged, axis=1, kind="stable")
    is_input = order < n_in
    count = np.cumsum(is_input, axis=1)
    out_pos = np.empty((n, wave_out.size), dtype=np.int64)
    rows, cols = np.nonzero(~is_input)
    out_pos[rows, order[rows, cols] - n_in] = count[rows, cols] - 1
    return out_pos


def resample(
    wave_in: np.ndarray,
    flux: np.ndarray,
    error: np.ndarray,
    mask: np.ndarray | None,
    wave_out: np.ndarray,
    method: str = "linear",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Resample spectra onto one wavelength grid, propagating errors and bad pixels.

    Parameters
    ----------
    wave_in : ndarray of shape (n_in,) or (n_spectra, n_in)
        Each spectrum's wavelengths (one shared grid, or one per spectrum),
        strictly increasing, in the same unit as ``wave_out``; n_in >= 2.
    flux, error : ndarray of shape (n_spectra, n_in)
        Flux and its 1-sigma error.
    mask : ndarray of bool, shape (n_spectra, n_in), or None
        True = bad input pixel.
    wave_out : ndarray of shape (n_out,)
        The target grid, strictly increasing (n_out >= 2 for ``"flux"``).
    method : {"linear", "flux"}
        Linear interpolation, or flux-conserving rebinning (see the module
        docstring for both, and for the error propagation).

    Returns
    -------
    flux, error : ndarray of shape (n_spectra, n_out)
        float32 for float32 input, else float64; NaN at bad pixels.
    mask : ndarray of bool, shape (n_spectra, n_out)
        True where the output pixel is not covered or touches a bad input pixel.

    Raises
    ------
    ValueError
        For an unknown method, mismatched shapes, or a grid that is not
        finite and strictly increasing.
    """
    wave_in, wave_out = check_resample_inputs(wave_in, flux, error, mask, wave_out, method)
    dtype = np.result_type(flux.dtype, error.dtype, np.float32)
    f = np.asarray(flux, dtype=np.float64)
    e = np.asarray(error, dtype=np.float64)
    bad = find_bad_inputs(f, e, mask)
    f = np.where(bad, 0.0, f)
    var = np.where(bad, 0.0, np.square(e))
    kernel = resample_linear if method == "linear" else resample_flux
    n, n_in = f.shape
    n_out = wave_out.size
    f_out = np.empty((n, n_out))
    var_out = np.empty((n, n_out))
    bad_out = np.empty((n, n_out), dtype=bool)
    rows = max(1, _BLOCK_ELEMENTS // (n_in + n_out + 2))
    for a in range(0, n, rows):
        b = min(n, a + rows)
        w = wave_in if wave_in.ndim == 1 else wave_in[a:b]
        f_out[a:b], var_out[a:b], bad_out[a:b] = kernel(w, f[a:b], var[a:b], bad[a:b], wave_out)
    f_out[bad_out] = np.nan
    var_out[bad_out] = np.nan
    return f_out.astype(dtype), np.sqrt(var_out).astype(dtype), bad_out


def check_resample_inputs(wave_in, flux, error, mask, wave_out, method):
    """Validate :func:`resample`'s arguments; return the grids as float64 arrays."""
    if method not in METHODS:
        raise ValueError(f"resample: method must be one of {METHODS}; got {method!r}")
    wave_in = np.asarray(wave_in, dtype=np.float64)
    wave_out = np.asarray(wave_out, dtype=np.float64)
    flux, error = np.asarray(flux), np.asarray(error)
    if flux.ndim != 2:
        raise ValueError(
            f"resample: flux has shape {flux.shape}; expected (n_spectra, n_in) "
            "(use flux[None, :] for one spectrum)"
        )
    n, n_in = flux.shape
    if error.shape != flux.shape or (mask is not None and np.shape(mask) != flux.shape):
        shapes = f"error {error.shape}" + ("" if mask is None else f", mask {np.shape(mask)}")
        raise ValueError(
            f"resample: flux has shape {flux.shape} but {shapes}; all must be (n_spectra, n_in)"
        )
    if wave_in.shape not in ((n_in,), (n, n_in)):
        raise ValueError(
            f"resample: wave_in has shape {wave_in.shape}; expected ({n_in},) or ({n}, {n_in}) "
            "to match flux"
        )
    if n_in < 2:
        raise ValueError(f"resample: need at least 2 input pixels; got {n_in}")
    min_out = 2 if method == "flux" else 1
    if wave_out.ndim != 1 or wave_out.size < min_out:
        raise ValueError(
            f"resample: wave_out has shape {wave_out.shape}; expected (n_out,) with "
            f"n_out >= {min_out} for method {method!r}"
        )
    for name, wave in (("wave_in", wave_in), ("wave_out", wave_out)):
        where = find_non_increasing(wave)
        if where is not None:
            row, pixel = where
            at = f"row {row}, pixel {pixel}" if wave.ndim == 2 else f"pixel {pixel}"
            raise ValueError(
                f"resample: {name} is not finite and strictly increasing at {at}; "
                "sort the grid and drop duplicate or NaN wavelengths"
            )
    return wave_in, wave_out


def resample_linear(wave_in, f, var, bad, wave_out):
    """Linear interpolation of flux and variance; see :func:`resample`.

    Parameters
    ----------
    wave_in : ndarray of shape (n_in,) or (n_spectra, n_in)
    f, var : ndarray of shape (n_spectra, n_in), float64, zero at bad pixels
    bad : ndarray of bool, shape (n_spectra, n_in)
    wave_out : ndarray of shape (n_out,)

    Returns
    -------
    f_out, var_out : ndarray of shape (n_spectra, n_out), float64
    bad_out : ndarray of bool, shape (n_spectra, n_out)
    """
    n, n_in = f.shape
    w = np.broadcast_to(wave_in, (n, n_in))
    pos = locate(wave_in, wave_out)
    j = np.broadcast_to(np.clip(pos, 0, n_in - 2), (n, wave_out.size))
    w0, w1 = _take(w, j), _take(w, j + 1)
    t = np.clip((wave_out[None, :] - w0) / (w1 - w0), 0.0, 1.0)
    a, b = 1.0 - t, t
    f_out = a * _take(f, j) + b * _take(f, j + 1)
    var_out = a * _take(var, j) + b * _take(var, j + 1)
    covered = (wave_out[None, :] >= w[:, :1]) & (wave_out[None, :] <= w[:, -1:])
    bad_out = ~covered | ((a > 0) & _take(bad, j)) | ((b > 0) & _take(bad, j + 1))
    return f_out, var_out, bad_out


def resample_flux(wave_in, f, var, bad, wave_out):
    """Flux-conserving rebinning of flux and variance; see :func:`resample`.

    Parameters and returns are those of :func:`resample_linear`.

    The input and output bin edges of each row are merged into one sorted
    list; every segment between consecutive points lies in exactly one input
    bin ``j`` and at most one output bin ``k``, and is their overlap. Summing
    segments per output bin (``bincount``) gives the weights without any
    cumulative sum (so without cancellation): an output bin that is one
    input bin gets weight exactly 1.
    """
    n, n_in = f.shape
    edges_in = np.broadcast_to(pixel_edges(wave_in), (n, n_in + 1))
    edges_out = pixel_edges(wave_out)
    n_out = edges_out.size - 1
    merged = np.concatenate([edges_in, np.broadcast_to(edges_out, (n, n_out + 1))], axis=1)
    order = np.argsort(merged, axis=1, kind="stable")
    points = np.take_along_axis(merged, order, axis=1)
    is_input = order <= n_in
    j = np.cumsum(is_input, axis=1)[:, :-1] - 1  # input bin of each segment
    k = np.cumsum(~is_input, axis=1)[:, :-1] - 1  # output bin of each segment
    length = np.diff(points, axis=1)
    use = (j >= 0) & (j < n_in) & (k >= 0) & (k < n_out) & (length > 0)
    row = np.broadcast_to(np.arange(n)[:, None], use.shape)[use]
    j, k, length = j[use], k[use], length[use]
    slot = row * n_out + k
    size = n * n_out
    width = np.bincount(slot, weights=length, minlength=size)
    weight = length / width[slot]
    f_out = np.bincount(slot, weights=weight * f[row, j], minlength=size)
    var_out = np.bincount(slot, weights=weight**2 * var[row, j], minlength=size)
    touched = np.bincount(slot, weights=bad[row, j], minlength=size) > 0
    covered = (edges_out[None, :-1] >= edges_in[:, :1]) & (edges_out[None, 1:] <= edges_in[:, -1:])
    bad_out = touched.reshape(n, n_out) | ~covered
    return f_out.reshape(n, n_out), var_out.reshape(n, n_out), bad_out


def _take(x: np.ndarray, index: np.ndarray) -> np.ndarray:
    return np.take_along_axis(x, index, axis=1)
