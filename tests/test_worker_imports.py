"""What a worker imports to run the fit's and the evaluation's tasks.

A fresh worker imports whatever unpickling and running its first task needs;
xarray, pandas, dask.array and scikit-learn cost several seconds there, on
the critical path of every command. The tasks need only numpy, scipy and zarr.
"""

from __future__ import annotations

import pickle
import subprocess
import sys

import dask
import numpy as np

HEAVY = ("xarray", "pandas", "dask.array", "sklearn", "matplotlib")

RUN_TASKS = """
import pickle, sys
tasks, a = pickle.load(open(sys.argv[1], "rb"))
fold_rows, merge_partials, solve_experts, *evaluation = tasks
evaluate_rows, write_and_summarize, merge_summaries = evaluation
acc = fold_rows(None, 0, a["train"], a["spec"])
acc = merge_partials(acc, fold_rows(None, 1, a["train2"], a["spec"], last=True))
solved = solve_experts(acc, a["settings"])
assert (solved["coef"] != 0).any()
block = evaluate_rows(a["test"], a["params"])
summary = write_and_summarize(block, a["out"], 0, a["names"], a["params"], None, 0, 0, *a["edges"])
merge_summaries(summary, summary)
assert acc["n"].sum() > 0 and summary["sums"]["n"].sum() > 0
print(",".join(m for m in sys.argv[2].split(",") if m in sys.modules))
"""


def test_fit_solve_and_evaluation_tasks_run_without_xarray_pandas_dask_array_or_sklearn(
    store_pair, tmp_path
):
    from snr_moe_dask.evaluate import _create_predictions, model_params, pred_vars
    from snr_moe_dask.evaluate_tasks import evaluate_rows, merge_summaries, write_and_summarize
    from snr_moe_dask.experts import solve_experts
    from snr_moe_dask.model import SNRBinnedRidge
    from snr_moe_dask.reduce import ReduceSpec, fold_rows, merge_partials
    from snr_moe_dask.rows import StoreRows

    train, test = (str(p) for p in store_pair)
    with dask.config.set(scheduler="sync"):
        model = SNRBinnedRidge(alpha=10.0).fit(train)
    params = model_params(model, ["oracle", "observed", "learned", "soft"], 0)
    params["by_true"] = True
    names = list(pred_vars(params))
    out = tmp_path / "predictions.zarr"
    _create_predictions(out, [200, 200, 200, 200], pred_vars(params))
    spec = ReduceSpec(
        edges=(2.0, 4.0, 7.0), routing="oracle", max_bad_fraction=0.5,
        precision="float32", gate="snr", buffer_mb=1.0,
    )  # fmt: skip
    edges = (np.linspace(0, 5, 11), np.linspace(-1, 6, 11), np.linspace(0, 12, 13))
    args = {
        "train": StoreRows(train, 0, 256, ("logg",), True, False),
        "train2": StoreRows(train, 256, 512, ("logg",), True, False),
        "test": StoreRows(test, 0, 200, ("logg",), True, False),
        "spec": spec,
        "params": params,
        "out": str(out),
        "names": names,
        "edges": edges,
        "settings": SNRBinnedRidge(alpha=10.0)._resolved(),
    }
    tasks = tmp_path / "tasks.pkl"
    funcs = (
        fold_rows,
        merge_partials,
        solve_experts,
        evaluate_rows,
        write_and_summarize,
        merge_summaries,
    )
    tasks.write_bytes(pickle.dumps((funcs, args)))
    done = subprocess.run(
        [sys.executable, "-c", RUN_TASKS, str(tasks), ",".join(HEAVY)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "", f"a worker running these tasks imports {done.stdout}"
