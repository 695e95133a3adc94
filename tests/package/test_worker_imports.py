"""What a worker imports to run the fit's, the prediction's and the evaluation's tasks.

A fresh worker imports whatever unpickling and running its first task needs;
xarray, pandas, dask.array and scikit-learn cost several seconds there, on
the critical path of every command. The tasks need only numpy, scipy and zarr.

The rule, per folder: ``kernels/``, every ``*/tasks.py``, the fit's finalize
tasks (``fit/solve.py``, ``fit/gating.py``: the gate imports scikit-learn when
it runs, never at import) and the store's
worker modules (``store/rows.py``, ``store/blocks.py``, ``store/outputs.py``,
``store/checkpoint.py``) import none of those modules at import time; and
running the tasks, checkpoint tasks included, imports none of them.
"""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import dask
import numpy as np
import pytest

HEAVY = ("xarray", "pandas", "dask.array", "sklearn", "matplotlib")
PACKAGE = Path(__file__).resolve().parents[2] / "snr_moe_dask"
WORKER_MODULES = sorted(
    [p for p in (PACKAGE / "kernels").glob("*.py")]
    + list(PACKAGE.glob("*/tasks.py"))
    + [PACKAGE / "fit" / name for name in ("solve.py", "gating.py")]
    + [PACKAGE / "store" / name for name in ("rows.py", "blocks.py", "outputs.py", "checkpoint.py")]
)

IMPORT_ONE = """
import importlib, sys
importlib.import_module(sys.argv[1])
print(",".join(m for m in sys.argv[2].split(",") if m in sys.modules))
"""

RUN_TASKS = """
import pickle, sys
tasks, a = pickle.load(open(sys.argv[1], "rb"))
fold, merge_partials, solve_experts, checkpoint_task, resume_task, *evaluation = tasks
write_and_summarize, merge_summaries, predict_chunk, slot_piece, merge_piece, choose = evaluation
acc = fold(None, 0, a["train"], a["settings"])
acc = checkpoint_task(acc, a["ckpt"], 0)
acc = merge_partials(resume_task(a["ckpt"]), fold(None, 1, a["train2"], a["settings"], True))
solved = solve_experts(acc, a["settings"])
assert (solved["coef"] != 0).any()
summary = write_and_summarize(a["test"], a["out"], 0, a["names"], a["params"], None, 0, 0,
                              *a["edges"])
merge_summaries(summary, summary)
assert predict_chunk(a["test"], a["params"])["y_moe"].shape == (200,)
assert acc["n"].sum() > 0 and summary["sums"]["n"].sum() > 0
keyed = a["keyed"]  # keys on store labels, fine cells, packed slots, the edge search
parts = [fold(None, i, a[k], keyed, True) for i, k in enumerate(("keyed1", "keyed2"))]
whole = merge_piece(parts[0], slot_piece(parts[1], 0, parts[1]["n"].size, True))
choice = choose(whole, keyed)
assert (solve_experts(whole, keyed, None, choice)["coef"] != 0).any()
print(",".join(m for m in sys.argv[2].split(",") if m in sys.modules))
"""


def _module(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    return ".".join(rel.parts)


@pytest.mark.parametrize("path", WORKER_MODULES, ids=lambda p: _module(p))
def test_worker_modules_import_no_heavy_module(path):
    done = subprocess.run(
        [sys.executable, "-c", IMPORT_ONE, _module(path), ",".join(HEAVY)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "", f"importing {_module(path)} imports {done.stdout}"


def test_fit_checkpoint_prediction_and_evaluation_tasks_run_without_heavy_modules(
    store_pair, tmp_path
):
    from dataclasses import replace

    from snr_moe_dask.evaluation.graph import _create_predictions
    from snr_moe_dask.evaluation.tasks import merge_summaries, write_and_summarize
    from snr_moe_dask.fit.settings import with_data
    from snr_moe_dask.fit.solve import choose_cells, solve_experts
    from snr_moe_dask.fit.tasks import fold, merge_partials, merge_piece, slot_piece
    from snr_moe_dask.model import SNRBinnedRidge
    from snr_moe_dask.predict.graph import model_params, pred_vars
    from snr_moe_dask.predict.tasks import predict_chunk
    from snr_moe_dask.store.checkpoint import checkpoint_task, resume_task
    from snr_moe_dask.store.rows import StoreRows

    train, test = (str(p) for p in store_pair)
    with dask.config.set(scheduler="sync"):
        model = SNRBinnedRidge(alpha=10.0).fit(train)
    params = model_params(model, ["oracle", "observed", "learned", "soft"], 0)
    params["by_true"] = True
    names = list(pred_vars(params))
    out = tmp_path / "predictions.zarr"
    _create_predictions(out, [200, 200, 200, 200], pred_vars(params))
    settings = SNRBinnedRidge(alpha=10.0, max_bad_fraction=0.5)._resolved()
    edges = (np.linspace(0, 5, 11), np.linspace(-1, 6, 11), np.linspace(0, 12, 13))
    keyed = SNRBinnedRidge(
        alpha=10.0,
        by=[("teff", [4500, 5500]), ("mh", [-1, 0])],
        edges="auto:2",
        cv=2,
        gate=False,
        min_spectra=1,
    )._resolved()
    keyed = replace(with_data(keyed, 128, 512, None), pack_above=0.0, packed=True)
    args = {
        "train": StoreRows(train, 0, 256, ("logg",), True, False),
        "train2": StoreRows(train, 256, 512, ("logg",), True, False),
        "test": StoreRows(test, 0, 200, ("logg",), True, False),
        "settings": settings,
        "ckpt": str(tmp_path / "partition-0.zarr"),
        "params": params,
        "out": str(out),
        "names": names,
        "edges": edges,
        "keyed": keyed,
        "keyed1": StoreRows(train, 0, 256, ("logg",), False, False, ("teff", "mh")),
        "keyed2": StoreRows(train, 256, 512, ("logg",), False, False, ("teff", "mh")),
    }
    tasks = tmp_path / "tasks.pkl"
    funcs = (fold, merge_partials, solve_experts, checkpoint_task, resume_task)
    funcs += (write_and_summarize, merge_summaries, predict_chunk, slot_piece, merge_piece)
    funcs += (choose_cells,)
    tasks.write_bytes(pickle.dumps((funcs, args)))
    done = subprocess.run(
        [sys.executable, "-c", RUN_TASKS, str(tasks), ",".join(HEAVY)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "", f"a worker running these tasks imports {done.stdout}"


RUN_INGEST = """
import pickle, sys
(ingest_chunk, merge_counts), jobs = pickle.load(open(sys.argv[1], "rb"))
import functools
counts = [ingest_chunk(*job) for job in jobs]
assert functools.reduce(merge_counts, counts)["spectra"] == sum(c["spectra"] for c in counts) > 0
print(",".join(m for m in sys.argv[2].split(",") if m in sys.modules))
"""


def test_ingest_tasks_run_without_heavy_modules(tmp_path):
    """pfsspec labels are read on the client (pandas); a worker reads pixels only."""
    from ingest_fixtures import write_pfs_arm, write_pfsspec_shard

    from snr_moe_dask.ingest.graph import create_template
    from snr_moe_dask.ingest.plan import make_plan
    from snr_moe_dask.ingest.tasks import ingest_chunk, merge_counts

    jobs = []
    shard = tmp_path / "a.h5"
    write_pfsspec_shard(shard, n=6)
    arm, _ = write_pfs_arm(tmp_path, n_fiber=3, n_pixels=40)
    settings = {"noise_level": 1.0, "seed": 0, "snr_definition": "median"}
    for fmt, source in (("pfsspec", shard), ("pfs", arm)):
        grid = tmp_path / "pfsspec.zarr" if fmt == "pfs" else None
        plan = make_plan([source], fmt, settings, grid=grid, chunk_size=4)
        out = tmp_path / f"{fmt}.zarr"
        create_template(plan, out, "none")
        spec = {"format": fmt, "wavelength": plan.wavelength, "resample": plan.resample}
        spec.update(has_mask=plan.has_mask, settings=plan.settings)
        jobs += [(str(out), start, pieces, plan.files, spec) for start, pieces in plan.chunks()]
        if fmt == "pfsspec":
            ingest_chunk(*jobs[0])  # the pfs plan resamples onto this store's grid
    tasks = tmp_path / "ingest.pkl"
    tasks.write_bytes(pickle.dumps(((ingest_chunk, merge_counts), jobs)))
    done = subprocess.run(
        [sys.executable, "-c", RUN_INGEST, str(tasks), ",".join(HEAVY)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "", f"a worker running the ingest tasks imports {done.stdout}"
