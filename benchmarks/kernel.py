"""The BLAS kernel a benchmark runs on.

This environment sets ``OPENBLAS_CORETYPE`` and ``OPENBLAS_L2_SIZE``, which force
OpenBLAS's AVX2 (Haswell) kernel on a CPU whose native one is faster; a user's
machine picks its own. Every benchmark entry point (``python -m benchmarks``,
``.cv``, ``.profile``, ``.timeline``) starts again without both variables, for
itself and so for the workers of the LocalCluster it starts (they inherit its
environment), and records the kernel threadpoolctl reports for the driver and
for each worker. Runs on different kernels are never put in one table.

Only the ``python -m`` entry points do this; the tests call ``main()`` and
never change the environment.
"""

from __future__ import annotations

import os
import sys

FORCED = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
_MARK = "SNR_MOE_BENCH_UNSET"


def run_on_native_kernel(module: str) -> None:
    """Re-execute ``python -m module ARGS`` without the kernel-forcing variables
    (a no-op when none is set); the variables unset are kept in ``SNR_MOE_BENCH_UNSET``."""
    present = [name for name in FORCED if name in os.environ]
    if not present:
        return
    env = {k: v for k, v in os.environ.items() if k not in FORCED}
    env[_MARK] = ",".join(f"{name}={os.environ[name]}" for name in present)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, "-m", module, *sys.argv[1:]], env)


def kernel_of(blas: list[dict]) -> str:
    """The kernel (``architecture``) of the BLAS libraries threadpoolctl found, e.g.
    ``"SkylakeX"``; several distinct ones joined with ``+``."""
    names = sorted({str(b.get("architecture")) for b in blas if b.get("architecture")})
    return "+".join(names) or "unknown"


def describe_kernels(driver_blas: list[dict], workers_blas: dict[str, list[dict]]) -> dict:
    """The kernel of the driver and of each worker, and what was unset to get them.

    Raises
    ------
    RuntimeError
        When the workers do not run the driver's kernel: such a run's numbers
        do not belong in one table.
    """
    driver = kernel_of(driver_blas)
    workers = {addr: kernel_of(info) for addr, info in workers_blas.items()}
    odd = {addr: k for addr, k in workers.items() if k != driver}
    if odd:
        raise RuntimeError(
            f"the workers run another BLAS kernel than the driver ({driver}): {odd}; "
            "start the benchmark with the same environment for both"
        )
    return {
        "driver": driver,
        "workers": workers,
        "unset": os.environ.get(_MARK, ""),
        "forced": {name: os.environ[name] for name in FORCED if name in os.environ},
    }


def check_same_kernel(results: list[dict]) -> str:
    """The one kernel of several recorded runs; an error naming the mix otherwise."""
    kernels = {r.get("machine", {}).get("kernel", {}).get("driver", "unknown") for r in results}
    if len(kernels) != 1:
        raise ValueError(
            f"these runs used different BLAS kernels ({sorted(kernels)}); rerun them on one "
            "kernel before putting them in one table"
        )
    return kernels.pop()
