"""Keys, fine bins and the edge search from Python, the command line and an experiment YAML:
each bad value fails in one line naming the setting and the fix, before any compute."""

from __future__ import annotations

import dask
import pytest
import yaml

from snr_moe_dask import keyspec
from snr_moe_dask.checks import Invalid
from snr_moe_dask.cli import main
from snr_moe_dask.experiment import load_experiment, model_params
from snr_moe_dask.fit.settings import with_data
from snr_moe_dask.model import SNRBinnedRidge


def settings(**params):
    return SNRBinnedRidge(**params)._resolved()


def test_the_forms_of_a_key_agree():
    expected = (("teff", (4500.0, 5250.0)), ("mh", None))
    assert keyspec.by(["teff:4500,5250", "mh"]) == expected
    assert keyspec.by([{"var": "teff", "edges": [4500, 5250]}, {"var": "mh"}]) == expected
    assert keyspec.by({"teff": [4500, 5250], "mh": None}) == expected
    assert keyspec.by([("teff", [4500, 5250]), ("mh",)]) == expected
    assert keyspec.by(keyspec.by(["teff:4500,5250", "mh"])) == expected
    assert keyspec.fine_bins(["8", "snr:0.5,1,2"]) == (8, ("snr", (0.5, 1.0, 2.0)))
    assert keyspec.fine_bins({"teff": 4}) == (("teff", 4),)
    assert keyspec.search("auto") == () and keyspec.search("auto:3,2") == (3, 2)
    assert keyspec.search(keyspec.search("auto:3")) == (3,)


@pytest.mark.parametrize(
    "check, value",
    [
        (keyspec.by, ["teff:5250,4500"]),
        (keyspec.by, ["teff:1,nan"]),
        (keyspec.by, ["teff", "teff"]),
        (keyspec.by, ["global:1"]),
        (keyspec.fine_bins, ["snr:0"]),
        (keyspec.search, "manual"),
        (keyspec.search, "auto:0"),
        (keyspec.gate_features, "snr,pca:0"),
        (keyspec.gate_features, "pca:2,pca:3"),
    ],
)
def test_bad_values_are_refused(check, value):
    with pytest.raises(Invalid):
        check(value)


def test_the_snr_shorthand_is_one_snr_key():
    short = settings(bins=[2, 4, 7])
    assert short.keys == (("snr", (2.0, 4.0, 7.0)),) and short.names == ("X", "L", "M", "H")
    keyed = settings(by=["snr:2,4,7"])
    assert keyed.keys == short.keys and keyed.names[0] == "snr(-inf,2]"
    named = settings(by=["snr:2,4,7"], bin_names=["X", "L", "M", "H"])
    assert named.names == short.names


@pytest.mark.parametrize(
    "params, message",
    [
        ({"bins": [2, 4], "by": ["teff:4500"]}, r"give the SNR bins \(bins=, --bins\) or keys"),
        ({"fine_bins": 8}, r"fine_bins \(--fine-bins\) sets the fine bins .* add edges='auto'"),
        ({"by": ["teff"]}, r"key 'teff' has no edges: give them \(--by teff:e1,e2"),
        ({"by": ["teff:4500"], "routing": "observed"}, r"routing 'observed' needs an observed"),
        ({"by": ["teff:4500"], "bin_names": ["a"]}, r"bin_names must name the 2 cells"),
        ({"by": ["snr"], "edges": "auto", "alpha": "gcv"}, r"alpha='gcv' has no folds"),
        ({"by": ["snr"], "edges": "auto", "alpha": {"global": 1}}, r"alpha cannot name"),
        ({"by": ["snr"], "edges": "auto:2,2"}, r"gives 2 bin counts for 1 keys"),
        ({"by": ["snr:1,2"], "edges": "auto", "fine_bins": "snr:4"}, r"has edges .* and fine"),
        ({"by": ["snr"], "edges": "auto", "fine_bins": "mh:4"}, r"fine_bins names \['mh'\]"),
        ({"by": ["snr"], "edges": "auto", "bin_names": ["a"]}, r"bin_names cannot name"),
        ({"by": ["teff:1"], "edges": None, "gate": "pca:x"}, r"gate must be true, false or"),
    ],
)
def test_bad_settings_fail_in_one_line_before_anything_is_read(params, message):
    with pytest.raises(ValueError, match=message):
        settings(**params)


def test_data_dependent_checks_fail_before_the_pass():
    searched = settings(by=["observed_snr"], edges="auto")
    with pytest.raises(ValueError, match=r"key 'observed_snr' routes by 'observed_snr', which"):
        with_data(searched, 16, 100, lambda name: None)
    few = settings(by=["snr:1,2"], edges="auto:4")
    with pytest.raises(ValueError, match=r"key 'snr' has 3 fine bins .* fewer than the 4"):
        with_data(few, 16, 100, lambda name: None)


@pytest.mark.parametrize(
    "flag, value, message",
    [
        ("--by", "teff:5,4", "argument --by: must be keys VAR[:EDGES]"),
        ("--edges", "sometimes", "argument --edges: must be auto, auto:B"),
        ("--fine-bins", "snr:x", "argument --fine-bins: must be a number of fine bins"),
        ("--gate-features", "pca:0", "argument --gate-features: must be gate features"),
    ],
)
def test_the_command_line_names_the_flag(capsys, flag, value, message):
    with pytest.raises(SystemExit) as info:
        main(["fit", "t.zarr", "--model", "m.zarr", flag, value])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_a_keyed_fit_and_evaluation_from_the_command_line(store_pair, tmp_path, capsys):
    train, test = (str(p) for p in store_pair)
    model, out = str(tmp_path / "m.zarr"), str(tmp_path / "out")
    fit = ["fit", train, "--model", model, "--by", "teff:4500,5250", "--by", "mh:-1,0"]
    fit += ["--alpha", "30", "--min-spectra", "5", "--gate-features", "snr,pca:2", "--quiet"]
    with dask.config.set(scheduler="sync"):
        assert main(fit) == 0
        evaluate = ["evaluate", model, test, "--out", out, "--routing", "oracle,learned,soft"]
        assert main([*evaluate, "--bootstrap", "20", "--quiet"]) == 0
    report = (tmp_path / "out" / "report.md").read_text()
    assert "teff(4500,5250]|mh(-1,0]" in report
    assert (tmp_path / "out" / "figures" / "delta_grid.png").exists()
    searched = ["fit", train, "--model", str(tmp_path / "a.zarr"), "--by", "snr"]
    searched += ["--fine-bins", "4", "--edges", "auto:2", "--alpha", "30", "--quiet"]
    with dask.config.set(scheduler="sync"):
        assert main(searched) == 0
    assert capsys.readouterr().err == ""


def test_an_experiment_yaml_keys_the_experts(tmp_path):
    config = {
        "data": {"train_size": 10, "test_size": 10, "train_store": "a", "test_store": "b"},
        "bins": {
            "by": [{"var": "teff", "edges": [4500, 5250]}, {"var": "mh", "edges": [-1, 0]}],
        },
        "fit": {"gate_features": "snr,pca:4"},
    }
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(config))
    params = model_params(load_experiment(path))
    assert params["by"] == (("teff", (4500.0, 5250.0)), ("mh", (-1.0, 0.0)))
    assert params["gate"] == "snr,pca:4"
    assert SNRBinnedRidge(**params)._resolved().names[4] == "teff(4500,5250]|mh(-1,0]"
    config["bins"] = {"by": [{"var": "snr"}], "fine_bins": 16, "search": "auto:4"}
    path.write_text(yaml.safe_dump(config))
    resolved = SNRBinnedRidge(**model_params(load_experiment(path)))._resolved()
    assert resolved.fine == (16,) and resolved.search.bins == (4,)
    config["bins"] = {"by": [{"var": "teff", "edges": [2, 1]}]}
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(ValueError, match=r"exp.yaml: bins.by: must be keys VAR\[:EDGES\]"):
        load_experiment(path)


def test_a_key_the_store_lacks_is_one_line_naming_store_and_variable(store_pair, tmp_path, capsys):
    fit = ["fit", str(store_pair[0]), "--model", str(tmp_path / "m.zarr"), "--by", "foo:1"]
    assert main([*fit, "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "has no variable 'foo'" in err
    assert str(store_pair[0]) in err and not (tmp_path / "m.zarr").exists()
