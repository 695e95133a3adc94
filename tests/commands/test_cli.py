"""The snr-moe command, called through main(argv) as a user would."""

from __future__ import annotations

import json

import pytest
import yaml

from snr_moe_dask.cli import main

CLUSTER = ["--workers", "2", "--threads-per-worker", "1", "--quiet"]


def test_generate_fit_evaluate(tmp_path, capsys):
    train, test, model = tmp_path / "train.zarr", tmp_path / "test.zarr", tmp_path / "m.zarr"
    assert (
        main(
            [
                "generate",
                str(train),
                "--n",
                "600",
                "--pixels",
                "64",
                "--chunk-size",
                "128",
                *CLUSTER,
            ]
        )
        == 0
    )
    assert (
        main(["generate", str(test), "--n", "300", "--pixels", "64", "--seed", "9", *CLUSTER]) == 0
    )
    assert (
        main(
            [
                "fit",
                str(train),
                "--model",
                str(model),
                "--alpha",
                "1e3",
                "--min-spectra",
                "1",
                "--precision",
                "float64",
                *CLUSTER[:-1],
            ]
        )
        == 0
    )
    out = capsys.readouterr()
    assert "dashboard: http://127.0.0.1:" in out.err
    assert "fitted 5 models" in out.out and "excluded spectra" in out.out
    report = tmp_path / "perf.html"
    assert (
        main(
            [
                "evaluate",
                str(model),
                str(test),
                "--out",
                str(tmp_path / "ev"),
                "--bootstrap",
                "50",
                "--performance-report",
                str(report),
                *CLUSTER,
            ]
        )
        == 0
    )
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert metrics["overall"]["n"] == 300 and metrics["alpha"]["global"] == 1e3
    assert report.stat().st_size > 10_000


def test_errors_are_one_line_with_status_2(tmp_path, capsys):
    assert (
        main(["fit", str(tmp_path / "missing.zarr"), "--model", str(tmp_path / "m.zarr"), *CLUSTER])
        == 2
    )
    err = capsys.readouterr().err
    assert "snr-moe fit: error: cannot open spectra store" in err and "Traceback" not in err
    assert main(["fit", "x.zarr", "--model", "m.zarr", "--bins", "4,2", *CLUSTER]) == 2
    assert "strictly increasing" in capsys.readouterr().err
    assert (
        main(
            ["fit", "x.zarr", "--model", "m.zarr", "--bins", "2,4", "--bin-names", "a,b", *CLUSTER]
        )
        == 2
    )
    assert "2 bin edges make 3 bins" in capsys.readouterr().err


def test_refuses_to_overwrite(tmp_path, capsys):
    out = tmp_path / "s.zarr"
    out.mkdir()
    assert main(["generate", str(out), "--n", "10", *CLUSTER]) == 2
    assert "already exists; pass --overwrite" in capsys.readouterr().err


def _config(tmp_path, **changes):
    cfg = {
        "model": {"type": "Ridge", "alpha": 1000},
        "data": {
            "train_size": 500,
            "test_size": 200,
            "feature_dim": 32,
            "noise_level": 1.0,
            "seed": 3,
            "chunk_size": 100,
            "train_store": str(tmp_path / "d" / "train.zarr"),
            "test_store": str(tmp_path / "d" / "test.zarr"),
        },
        "routing": {"type": "oracle"},
        "bins": {"edges": [2, 4, 7], "names": ["X", "L", "M", "H"]},
        "fit": {"min_spectra": 1},
        "evaluate": {"bootstrap": 20},
        "cluster": {"kind": "local", "workers": 2},
    }
    for path, value in changes.items():
        section, _, key = path.partition("__")
        if key:
            cfg[section][key] = value
        else:
            cfg[section] = value
    p = tmp_path / "exp.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


def test_run_generates_fits_evaluates_and_reports(tmp_path, capsys):
    cfg = _config(tmp_path)
    out = tmp_path / "out"
    assert main(["run", str(cfg), "--out", str(out), "--quiet"]) == 0
    for name in ("model.zarr", "predictions.zarr", "metrics.json", "report.md", "figures"):
        assert (out / name).exists(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["overall"]["n_train"] == 500
    assert set(metrics["timings"]) >= {"generate", "fit", "evaluate", "report"}
    assert metrics["config"]["data"]["train_size"] == 500
    # A second run reuses the stores, and refuses to replace the output without --overwrite.
    assert main(["run", str(cfg), "--out", str(out), "--quiet"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["run", str(cfg), "--out", str(out), "--quiet", "--overwrite"]) == 0
    again = json.loads((out / "metrics.json").read_text())
    assert again["overall"] == metrics["overall"]
    assert again["timings"]["generate"] == 0.0


@pytest.mark.parametrize(
    "change, message",
    [
        (
            {"model__kind": "x"},
            r"unknown key 'model.kind'; allowed: \['alpha', 'alpha_grid', 'cv_folds', 'type'\]",
        ),
        (
            {"routing__type": "psychic"},
            r"routing.type: 'psychic' is not allowed; expected one "
            r"of \['oracle', 'observed'\]",
        ),
        ({"data__train_size": "many"}, r"data.train_size: expected int, got 'many'"),
        ({"bins__edges": [7, 2]}, r"bins: bin edges must be finite and strictly increasing"),
        ({"extra": {}}, r"unknown key 'extra'"),
    ],
)
def test_config_errors_name_the_key(tmp_path, capsys, change, message):
    cfg = _config(tmp_path, **change)
    assert main(["run", str(cfg), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "exp.yaml" in err
    import re

    assert re.search(message, err), err


@pytest.mark.parametrize("name, alpha", [("demo.yaml", "gcv"), ("oracle_snr_moe.yaml", 100000)])
def test_shipped_configs_are_valid(name, alpha):
    from pathlib import Path

    from snr_moe_dask.experiment import load_experiment

    exp = load_experiment(Path(__file__).resolve().parents[2] / "configs" / name)
    assert exp["model"]["alpha"] == alpha and exp["routing"]["type"] == "oracle"
    assert exp["bins"]["edges"] == [2, 4, 7]


def test_gate_cv_config_is_valid_and_builds_the_model():
    from pathlib import Path

    from snr_moe_dask.experiment import load_experiment, model_params
    from snr_moe_dask.model import SNRBinnedRidge

    exp = load_experiment(Path(__file__).resolve().parents[2] / "configs" / "gate_cv.yaml")
    settings = SNRBinnedRidge(**model_params(exp))._resolved()
    assert settings.cv.folds == 5 and len(settings.cv.alphas) == 28
    assert settings.gate == "snr"
    assert exp["evaluate"]["routings"] == ["oracle", "observed", "learned", "soft"]
