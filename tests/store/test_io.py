"""open_spectra: the store schema, and a clear error for each way a store can be wrong."""

from __future__ import annotations

import mmap

import numpy as np
import pytest
import xarray as xr
from xarray.tests import raise_if_dask_computes

from snr_moe_dask import StoreError, open_spectra


def write(ds: xr.Dataset, path) -> str:
    ds.to_zarr(path, mode="w", zarr_format=3, consolidated=False)
    return str(path)


def test_open_is_lazy_and_follows_schema(small_survey, tmp_path):
    path = write(small_survey, tmp_path / "s.zarr")
    with raise_if_dask_computes():
        ds = open_spectra(path, require=["logg", "snr"])
    assert ds["flux"].dims == ("spectrum", "wavelength")
    assert ds["flux"].dtype == np.float32 and ds["error"].dtype == np.float32
    assert ds["wavelength"].dtype == np.float64
    assert ds["flux"].chunks[1] == (ds.sizes["wavelength"],)  # chunked along spectrum only
    for key in ("instrument", "arm", "generator_version", "seed", "noise_level"):
        assert key in ds.attrs


def test_unreadable_path(tmp_path):
    with pytest.raises(StoreError, match=r"cannot open spectra store '.*nope.zarr'.*generate"):
        open_spectra(tmp_path / "nope.zarr")


def test_not_a_zarr_store(tmp_path):
    bad = tmp_path / "junk.zarr"
    bad.mkdir()
    (bad / "zarr.json").write_text("{not json")
    with pytest.raises(StoreError, match=r"cannot open spectra store '.*junk.zarr' as Zarr"):
        open_spectra(bad)


def test_missing_variable(small_survey, tmp_path):
    path = write(small_survey.drop_vars("error"), tmp_path / "s.zarr")
    with pytest.raises(StoreError, match=r"store '.*s.zarr' has no variable 'error'; expected"):
        open_spectra(path)


def test_missing_required_label(small_survey, tmp_path):
    path = write(small_survey.drop_vars("logg"), tmp_path / "s.zarr")
    with pytest.raises(StoreError, match=r"no variable 'logg'.*\('spectrum',\)"):
        open_spectra(path, require=["logg"])


def test_wrong_dims(small_survey, tmp_path):
    ds = small_survey.copy()
    ds["error"] = ds["error"].transpose("wavelength", "spectrum")
    path = write(ds, tmp_path / "s.zarr")
    with pytest.raises(
        StoreError,
        match=r"variable 'error' in store '.*s.zarr' has dims \('wavelength', 'spectrum'\); "
        r"expected \('spectrum', 'wavelength'\)",
    ):
        open_spectra(path)


def test_wrong_dtype(small_survey, tmp_path):
    ds = small_survey.copy()
    ds["flux"] = ds["flux"].astype(np.int32)
    path = write(ds, tmp_path / "s.zarr")
    with pytest.raises(StoreError, match=r"variable 'flux' .* has dtype int32; expected float32"):
        open_spectra(path)


def test_non_increasing_wavelength(small_survey, tmp_path):
    wave = small_survey["wavelength"].values.copy()
    wave[10] = wave[9]
    path = write(small_survey.assign_coords(wavelength=wave), tmp_path / "s.zarr")
    with pytest.raises(StoreError, match=r"'wavelength' .* is not strictly increasing.*index 10"):
        open_spectra(path)


def test_shape_mismatch(small_survey, tmp_path):
    ds = small_survey.copy()
    ds = ds.assign(error=(("spectrum", "pix2"), ds["error"].values[:, :10]))
    path = write(ds, tmp_path / "s.zarr")
    with pytest.raises(
        StoreError, match=r"variables 'flux' \(900, 64\) and 'error' \(900, 10\) .* differ in shape"
    ):
        open_spectra(path)


def test_mask_must_be_bool(small_survey, tmp_path):
    ds = small_survey.assign(
        mask=(("spectrum", "wavelength"), np.zeros(small_survey["flux"].shape, dtype=np.uint8))
    )
    path = write(ds, tmp_path / "s.zarr")
    with pytest.raises(StoreError, match=r"variable 'mask' .* has dtype uint8; expected bool"):
        open_spectra(path)


@pytest.mark.parametrize("mapped", [False, True])
@pytest.mark.parametrize("codec", ["none", "zstd"])
def test_raw_chunk_reads_equal_zarr(small_survey, tmp_path, monkeypatch, codec, mapped):
    """StoreRows reads uncompressed, chunk-aligned rows straight from the chunk
    file (copied, or mapped copy-on-write); every row range, aligned or not,
    compressed or not, equals zarr's read, and writing to a mapped read
    leaves the store unchanged."""
    import zarr

    from snr_moe_dask.store import rows as rows_module
    from snr_moe_dask.store.rows import StoreRows, raw_chunk_file

    monkeypatch.setattr(rows_module, "MAP_BYTES", 1 if mapped else 1 << 40)

    ds = small_survey.isel(spectrum=slice(0, 860))  # a partial last chunk (860 = 5 x 150 + 110)
    compressors = [zarr.codecs.ZstdCodec()] if codec == "zstd" else None
    encoding = {v: {"compressors": compressors} for v in ("flux", "error", "snr", "logg", "teff")}
    ds.to_zarr(tmp_path / "s.zarr", mode="w", zarr_format=3, consolidated=False, encoding=encoding)
    path = str(tmp_path / "s.zarr")
    group = zarr.open_group(path, mode="r")
    ranges = [(0, 150), (150, 300), (750, 860), (10, 150), (0, 300), (700, 860)]
    for start, stop in ranges:
        aligned = start % 150 == 0 and stop == min(start + 150, 860)
        raw = raw_chunk_file(group["flux"], slice(start, stop))
        assert (raw is not None) == (aligned and codec == "none"), (start, stop)
        rows = StoreRows(path, start, stop, ("logg", "teff"), True, False).read()
        for var in ("flux", "error", "snr"):
            np.testing.assert_array_equal(rows[var], group[var][start:stop])
        y = np.column_stack([group["logg"][start:stop], group["teff"][start:stop]])
        np.testing.assert_array_equal(rows["y"], y)
        assert rows["flux"].flags.writeable
        base = rows["flux"]
        while isinstance(base, np.ndarray) and base.base is not None:
            base = base.base
        base = base.obj if isinstance(base, memoryview) else base
        assert isinstance(base, mmap.mmap) == (mapped and raw is not None)
        before = group["flux"][start:stop]
        rows["flux"][:] = -1.0
        np.testing.assert_array_equal(zarr.open_group(path, mode="r")["flux"][start:stop], before)


def test_a_chunk_truncated_while_mapped_kills_the_reader_then_is_named(small_survey, tmp_path):
    """A mapped chunk file that shrinks under a running read (another program
    rewriting the store) kills that process with SIGBUS rather than giving it
    wrong numbers; the retried read then finds the damaged chunk and names it."""
    import signal
    import subprocess
    import sys

    from snr_moe_dask.store.rows import StoreRows

    path = tmp_path / "s.zarr"
    encoding = {"flux": {"compressors": None}}
    small_survey.to_zarr(path, mode="w", zarr_format=3, consolidated=False, encoding=encoding)
    chunk = path / "flux" / "c" / "0" / "0"
    script = f"""
import os
from snr_moe_dask.store import rows as io
io.MAP_BYTES = 1
rows = io.StoreRows({str(path)!r}, 0, 150, ("logg",), True, False).read()
os.truncate({str(chunk)!r}, 0)
print(float(rows["flux"][-1].sum()))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == -signal.SIGBUS, (done.returncode, done.stdout, done.stderr)
    assert done.stdout == ""
    with pytest.raises(StoreError, match=r"flux.*c/0/0"):
        StoreRows(str(path), 0, 150, ("logg",), True, False).read()


def test_write_rows_writes_every_array_and_every_chunk_even_of_fill_values(tmp_path):
    """One block of rows into arrays of several shapes and dtypes at once; a block of
    fill values is written too (a store the tool writes has no missing chunk)."""
    import zarr

    from snr_moe_dask.store.blocks import write_rows

    group = zarr.open_group(tmp_path / "p.zarr", mode="w", zarr_format=3)
    group.create_array("y", shape=(10,), chunks=(4,), dtype="f8", fill_value=0.0)
    group.create_array("p", shape=(10, 3), chunks=(4, 3), dtype="f4", fill_value=0.0)
    group.create_array("flag", shape=(10,), chunks=(4,), dtype="i4", fill_value=0)
    rng = np.random.default_rng(0)
    y, p = rng.normal(size=4), rng.random((4, 3)).astype(np.float32)
    write_rows(str(tmp_path / "p.zarr"), 4, {"y": y, "p": p, "flag": np.zeros(4, np.int32)})
    np.testing.assert_array_equal(group["y"][4:8], y)
    np.testing.assert_array_equal(group["p"][4:8], p)
    assert (tmp_path / "p.zarr" / "flag" / "c" / "1").is_file()  # zeros, written all the same
    assert not (tmp_path / "p.zarr" / "y" / "c" / "0").exists()  # rows not written stay absent
