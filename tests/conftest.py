"""Shared fixtures: small seeded surveys and a real multi-process LocalCluster."""

from __future__ import annotations

# Import the package before distributed.utils_test, whose config reset would
# otherwise drop our dask.config defaults.
import snr_moe_dask  # noqa: F401

# isort: split
import contextlib
import os
import warnings

import dask
import pytest
import xarray as xr
from distributed import Client, LocalCluster

from snr_moe_dask import generate_survey, survey_dataset

# isort: split
# One throw-away SLURM per session, shared by every module that asks for it.
from slurm_fixture import testslurm  # noqa: F401

warnings.filterwarnings("ignore", message="Failed to open Zarr store with consolidated")

SMALL = {"n": 900, "pixels": 64, "chunk_size": 150}


@contextlib.contextmanager
def local_client(n_workers: int = 2, **kwargs):
    """A fresh LocalCluster of single-threaded worker processes (with nannies) on
    127.0.0.1, and a Client to it; both closed on exit."""
    with (
        LocalCluster(
            n_workers=n_workers,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0",
            **kwargs,
        ) as c,
        Client(c) as client,
    ):
        yield client


@pytest.fixture(scope="session")
def cluster():
    """A LocalCluster of two single-threaded worker processes (with nannies)."""
    with LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address="127.0.0.1:0",
        memory_limit="3GB",
    ) as c:
        yield c


@pytest.fixture
def client(cluster):
    with Client(cluster) as c:
        yield c


@pytest.fixture(scope="session")
def small_survey() -> xr.Dataset:
    """900 spectra x 64 pixels, in memory, chunks of 150."""
    with dask.config.set(scheduler="sync"):
        return (
            survey_dataset(SMALL["n"], pixels=SMALL["pixels"], chunk_size=SMALL["chunk_size"])
            .compute()
            .chunk({"spectrum": SMALL["chunk_size"]})
        )


@pytest.fixture(scope="session")
def store_pair(tmp_path_factory):
    """Train (2000) and test (800) stores on disk at 128 pixels."""
    root = tmp_path_factory.mktemp("stores")
    with dask.config.set(scheduler="threads"):
        train = generate_survey(root / "train.zarr", 2000, pixels=128, chunk_size=256, seed=1)
        test = generate_survey(root / "test.zarr", 800, pixels=128, chunk_size=200, seed=2)
    return train, test


def pytest_configure(config):
    os.environ.setdefault("MPLBACKEND", "Agg")
