"""Bring your own model and data: the user's rows and split kept, scikit-learn in and out, no silent mismatch."""

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_breast_cancer, load_digits, load_iris
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MinMaxScaler, StandardScaler

import neon_jax
from neon_jax.interop import scikit
from neon_jax.user_data import check_feature_names, check_inputs, prepare_user_data


def _fit(model, X, y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return model.fit(X, y)


@pytest.fixture(scope="module")
def cancer():
    """breast_cancer split by the user (their seed, 75/25), a StandardScaler + MLPClassifier fitted on their rows."""
    X, y = load_breast_cancer(return_X_y=True, as_frame=True)
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=0.25, random_state=42, stratify=y)
    pipe = _fit(make_pipeline(StandardScaler(), MLPClassifier((24, 12), max_iter=400, random_state=0)), X_tr, y_tr)
    return X_tr, X_te, y_tr, y_te, pipe


@pytest.mark.parametrize("loader, scaler", [(load_breast_cancer, StandardScaler), (load_digits, MinMaxScaler),
                                            (load_iris, None)])
def test_sklearn_models_round_trip_exactly(loader, scaler):
    """An MLPClassifier (binary: one logistic output) or a Pipeline ending in one -> DenseNetwork -> the same kind
    of estimator: probabilities and classes agree both ways."""
    X, y = loader(return_X_y=True)
    labels = np.array(["no", "yes"])[y] if loader is load_breast_cancer else y  # text labels too
    mlp = MLPClassifier((10, 6), activation="tanh", max_iter=200, random_state=1)
    model = _fit(mlp if scaler is None else make_pipeline(scaler(), mlp), X, labels)
    net, info = scikit.from_sklearn(model)
    assert info.binary == (loader is load_breast_cancer) and net.n_classes == len(np.unique(labels))
    np.testing.assert_allclose(net.predict_proba(info.transform(X)), model.predict_proba(X), atol=1e-5)
    back = scikit.to_sklearn(net, info)
    assert type(back) is type(model)
    np.testing.assert_allclose(back.predict_proba(X), model.predict_proba(X), atol=1e-5)
    assert (back.predict(X) == model.predict(X)).all()
    np.testing.assert_array_equal(info.class_index(labels[:5]), np.searchsorted(info.classes, labels[:5]))


def test_sklearn_models_that_cannot_be_pruned_are_refused_by_name():
    X, y = load_iris(return_X_y=True)
    with pytest.raises(ValueError, match="not fitted"):
        scikit.from_sklearn(MLPClassifier())
    with pytest.raises(ValueError, match="activation 'identity' is not supported"):
        scikit.from_sklearn(_fit(MLPClassifier((4,), activation="identity", max_iter=5), X, y))
    with pytest.raises(ValueError, match="last step is a StandardScaler"):
        scikit.from_sklearn(_fit(make_pipeline(StandardScaler()), X, y))
    with pytest.raises(ValueError, match="expected an MLPClassifier"):
        scikit.from_sklearn("model.pkl")


def test_the_users_rows_are_kept_as_given_and_no_test_row_chooses_or_trains(cancer):
    X_tr, X_te, y_tr, y_te, _ = cancer
    p = prepare_user_data((X_tr, y_tr), test=(X_te, y_te), seed=3)
    s = p.splits
    np.testing.assert_array_equal(s.x_test, X_te.to_numpy(np.float32))  # no scaling, no reordering
    np.testing.assert_array_equal(s.x_train, X_tr.to_numpy(np.float32))
    test_rows = set(s.test_idx.tolist())
    assert not test_rows & set(s.finetune_idx.tolist()) and not test_rows & set(s.val_idx.tolist())
    assert set(s.finetune_idx.tolist()) | set(s.val_idx.tolist()) == set(s.train_idx.tolist())
    assert len(p.dataset.X) == len(X_tr) + len(X_te)  # no row cap
    assert p.dataset.meta["user_rows"]["test_given"] and p.dataset.feature_names == tuple(X_tr.columns)
    # validation given: the fine-tune sees every training row, the validation rows choose
    v = prepare_user_data((X_tr[:300], y_tr[:300]), validation=(X_tr[300:], y_tr[300:])).splits
    assert len(v.finetune_idx) == 300 and len(v.val_idx) == len(X_tr) - 300
    assert v.test_idx is v.val_idx  # no test rows: validation reported (the report says so)
    with pytest.raises(ValueError, match="columns .*differ"):
        prepare_user_data((X_tr, y_tr), test=(X_te[X_te.columns[::-1]], y_te))
    with pytest.raises(ValueError, match=r"columns \['kind'\] are not numeric"):
        prepare_user_data((X_tr.assign(kind="a"), y_tr))
    with pytest.raises(ValueError, match="labels \\[7\\] are not among the classes"):
        prepare_user_data((X_tr, y_tr), test=(X_te, y_te.replace(1, 7)), classes=[0, 1])


def test_inputs_that_do_not_match_the_model_are_refused_in_one_line(cancer):
    X_tr, X_te, y_tr, y_te, pipe = cancer
    net, info = scikit.from_sklearn(pipe)
    assert check_inputs(net, info.transform(X_tr), y_tr.to_numpy())["accuracy"] > 0.95
    # the MLP alone fed min-max scaled rows (neon_jax's own preprocessing of the dataset by name)
    mlp_only = scikit.from_sklearn(pipe[-1])[0]
    with pytest.raises(ValueError, match="no better than always predicting the most common class") as err:
        neon_jax.prune("breast_cancer", network=mlp_only, preset="tiny", progress=None)
    assert "\n" not in str(err.value) and "check_inputs=False" in str(err.value)
    # the same columns in another order, named
    with pytest.raises(ValueError, match="another order than the model was fitted on"):
        neon_jax.prune((X_tr[X_tr.columns[::-1]], y_tr), network=pipe, preset="tiny", progress=None)
    with pytest.raises(ValueError, match="missing \\['mean radius'\\]"):
        check_feature_names(tuple(X_tr.columns), tuple(X_tr.columns[1:]) + ("other",))
    with pytest.raises(ValueError, match="test= and validation= go with your own rows"):
        neon_jax.prune("breast_cancer", test=(X_te, y_te), progress=None)


def test_a_pipeline_pruned_on_the_users_split_reports_on_their_test_rows(cancer):
    """'before' is the pipeline's own accuracy on the user's test rows; 'after' the returned Pipeline's."""
    X_tr, X_te, y_tr, y_te, pipe = cancer
    said = []
    result = neon_jax.prune((X_tr, y_tr), network=pipe, test=(X_te, y_te), tau=5, preset="tiny", passes=1,
                            candidates=2, progress=said.append)
    r = result.report
    assert abs(r["test_acc_before"] - pipe.score(X_te, y_te)) < 1e-6
    pruned = result.to_sklearn()
    assert type(pruned) is type(pipe) and pruned[-1].hidden_layer_sizes == tuple(result.pruned.hidden_widths)
    assert abs(r["test_acc_after"] - pruned.score(X_te, y_te)) < 1e-6
    assert r["data"]["splits"]["test"] == len(X_te) and r["data"]["test_rows"] == "given"
    assert r["data"]["splits"]["finetune"] + r["data"]["splits"]["validation"] == len(X_tr)
    assert r["data"]["input_check"]["accuracy"] > r["data"]["input_check"]["majority_rate"]
    assert any("your rows as given" in line for line in said)
    assert pd.Series(pruned.predict(X_te)).isin(pipe.classes_).all()


class _Payload:
    """A pickle that would create a file when loaded."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_pickle_is_never_loaded_without_trust_and_skops_files_load_safely(cancer, tmp_path):
    import pickle

    import skops.io as sio

    marker = tmp_path / "ran"
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps(_Payload(marker)))
    for loader in (lambda: scikit.load_sklearn_file(path),
                   lambda: neon_jax.prune("breast_cancer", network=str(path), progress=None)):
        with pytest.raises(ValueError, match="runs any code it holds.*--trust-pickle"):
            loader()
    assert not marker.exists()
    pipe = cancer[4]
    sio.dump(pipe, tmp_path / "pipe.skops")
    loaded = scikit.load_sklearn_file(tmp_path / "pipe.skops")
    np.testing.assert_allclose(loaded.predict_proba(cancer[1]), pipe.predict_proba(cancer[1]))
    sio.dump({"payload": _Payload(marker)}, tmp_path / "bad.skops")
    with pytest.raises(ValueError, match="types skops does not trust: .*_Payload"):
        scikit.load_sklearn_file(tmp_path / "bad.skops")
    assert not marker.exists()


def test_the_cli_prunes_a_skops_pipeline_on_the_users_csv_files(cancer, tmp_path):
    """`neon-jax prune --dataset train.csv --test test.csv --preprocess none --network pipe.skops`: the report's
    'before' is the pipeline's test accuracy; the folder holds the pruned Pipeline and the preprocessing."""
    import json
    import subprocess
    import sys

    import skops.io as sio

    X_tr, X_te, y_tr, y_te, pipe = cancer
    X_tr.assign(target=y_tr).to_csv(tmp_path / "train.csv", index=False)
    X_te.assign(target=y_te).to_csv(tmp_path / "test.csv", index=False)
    sio.dump(pipe, tmp_path / "pipe.skops")
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "neon_jax.cli", "prune", "--dataset", str(tmp_path / "train.csv"), "--test",
           str(tmp_path / "test.csv"), "--preprocess", "none", "--network", str(tmp_path / "pipe.skops"),
           "--preset", "tiny", "--passes", "1", "--candidates", "1", "--out", str(out), "--quiet"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads((out / "report.json").read_text())
    assert abs(report["test_acc_before"] - pipe.score(X_te, y_te)) < 1e-6
    pruned = scikit.load_sklearn_file(out / "pruned.skops")
    assert abs(pruned.score(X_te, y_te) - report["test_acc_after"]) < 1e-6
    prep = json.loads((out / "preprocessing.json").read_text())
    assert prep["scaling"].startswith("the model's own steps") and prep["class_labels"] == ["0", "1"]
    refused = subprocess.run([c if c != "none" else "neon" for c in cmd[:-3]], capture_output=True, text=True,
                             timeout=600)
    assert refused.returncode != 0 and "add --preprocess none" in refused.stderr
    assert "Traceback" not in refused.stderr


def _onnx_models(tmp_path):
    """(name, path, predict_proba, X): a PyTorch MLP exported by torch.onnx (Gemm, BatchNormalization, Dropout,
    Softmax) and skl2onnx exports of a binary and a 3-class StandardScaler + MLPClassifier pipeline."""
    import torch
    from skl2onnx import to_onnx

    out = []
    X, y = load_iris(return_X_y=True)
    X = X.astype(np.float32)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 12), torch.nn.ReLU(), torch.nn.BatchNorm1d(12),
                                torch.nn.Dropout(0.2), torch.nn.Linear(12, 6), torch.nn.Tanh(),
                                torch.nn.Linear(6, 3), torch.nn.Softmax(dim=1)).eval()
    with torch.no_grad():
        model[2].running_mean.uniform_(-0.5, 0.5)
        model[2].running_var.uniform_(0.5, 2.0)
    path = tmp_path / "torch.onnx"
    torch.onnx.export(model, (torch.zeros(2, 4),), str(path), dynamo=False, input_names=["x"],
                      output_names=["probs"], dynamic_axes={"x": {0: "batch"}})
    out.append(("torch", path, lambda x: model(torch.from_numpy(x)).detach().numpy(), X))
    for loader in (load_breast_cancer, load_iris):
        Xs, ys = loader(return_X_y=True)
        Xs = Xs.astype(np.float32)
        pipe = _fit(make_pipeline(StandardScaler(), MLPClassifier((9,), max_iter=200, random_state=0)), Xs, ys)
        path = tmp_path / f"skl_{loader.__name__}.onnx"
        path.write_bytes(to_onnx(pipe, Xs[:1], options={"zipmap": False}).SerializeToString())
        out.append((loader.__name__, path, pipe.predict_proba, Xs))
    return out


def test_onnx_mlps_from_pytorch_and_skl2onnx_read_as_their_own_outputs(tmp_path):
    from neon_jax.interop import onnx_import

    for name, path, proba, X in _onnx_models(tmp_path):
        net, info = onnx_import.from_onnx(path)
        np.testing.assert_allclose(net.predict_proba(info.transform(X)), proba(X), atol=2e-5, err_msg=name)
        assert (info.scaler is not None) == (name != "torch")
        assert info.binary == (name == "load_breast_cancer")
    # a graph with a convolution is refused, naming the node
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.ones((2, 1, 2), np.float32), "w")
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"], name="conv1")], "conv",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 3])], [w])
    onnx.save(helper.make_model(graph), str(tmp_path / "conv.onnx"))
    with pytest.raises(ValueError, match=r"node conv1 \(Conv\) is not supported"):
        onnx_import.from_onnx(tmp_path / "conv.onnx")


def test_an_skl2onnx_pipeline_prunes_on_raw_rows_and_exports(tmp_path):
    """The ONNX pipeline's Scaler is applied to the rows; 'before' is the ONNX model's own test accuracy."""
    from neon_jax import interop

    X, y = load_iris(return_X_y=True)
    X_tr, X_te, y_tr, y_te = train_test_split(X.astype(np.float32), y, test_size=0.3, random_state=1, stratify=y)
    from skl2onnx import to_onnx

    pipe = _fit(make_pipeline(StandardScaler(), MLPClassifier((16,), max_iter=500, random_state=0)), X_tr, y_tr)
    path = tmp_path / "iris.onnx"
    path.write_bytes(to_onnx(pipe, X_tr[:1], options={"zipmap": False}).SerializeToString())
    result = neon_jax.prune((X_tr, y_tr), network=str(path), test=(X_te, y_te), preset="tiny", passes=1,
                            candidates=1, progress=None)
    assert abs(result.report["test_acc_before"] - pipe.score(X_te, y_te)) < 1e-6
    x_net = result.model.transform(X_te)
    assert abs(result.report["test_acc_after"] - (result.pruned.logits(x_net).argmax(1) == y_te).mean()) < 1e-6
    paths = interop.export_network(result.pruned, tmp_path / "out", ["onnx"])
    probs = interop.run_onnx(paths["onnx"][0], x_net)["probabilities"]
    np.testing.assert_allclose(probs, result.pruned.predict_proba(x_net), atol=1e-5)


def test_pruned_pt_loads_with_the_line_the_readme_gives(tmp_path):
    import torch

    from neon_jax import interop

    net = interop.from_arrays([np.ones((4, 3), np.float32), np.ones((3, 2), np.float32)])
    path = interop.export_network(net, tmp_path, ["torch"])["torch"][0]
    model = torch.load(path, weights_only=False)  # README: torch.load("pruned.pt", weights_only=False)
    x = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    np.testing.assert_allclose(model(torch.from_numpy(x)).detach().numpy(), net.predict_proba(x), atol=1e-6)
    assert 'torch.load("pruned.pt", weights_only=False)' in (Path(__file__).parents[1] / "README.md").read_text()


def test_the_onnx_export_can_run_on_raw_rows(tmp_path, capsys):
    """With neon_jax's own min-max scaling (a dataset without categorical columns), --export onnx also writes
    pruned_raw.onnx, whose graph scales the raw rows itself: the same outputs as pruned.onnx on scaled rows."""
    from sklearn.datasets import load_wine

    from neon_jax import cli, data, interop

    out = tmp_path / "wine"
    code = cli.main(["prune", "--dataset", "wine", "--preset", "tiny", "--passes", "1", "--candidates", "1",
                     "--quiet", "--out", str(out), "--export", "onnx,sklearn"])
    assert code == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "pruned_raw.onnx" in printed and "exported sklearn" in printed
    frame = load_wine(as_frame=True).data
    raw = frame.to_numpy(np.float32)
    scaled = data.load_dataset("wine").X
    a = interop.run_onnx(out / "pruned_raw.onnx", raw)["logits"]
    b = interop.run_onnx(out / "pruned.onnx", scaled)["logits"]
    np.testing.assert_allclose(a, b, atol=1e-4)
    prep = json.loads((out / "preprocessing.json").read_text())
    assert len(prep["feature_min"]) == 13 and prep["input_columns"][0] == "alcohol"
    # --export sklearn: a Pipeline (the same scaling, then the MLP) on raw rows, predicting the dataset's labels
    pipe = scikit.load_sklearn_file(out / "pruned.skops")
    np.testing.assert_allclose(pipe.predict_proba(raw), interop.softmax(b), atol=1e-5)
    assert list(pipe.classes_) == prep["class_labels"]
    # the raw ONNX names its columns: the same rows with two columns swapped are named before any work
    from neon_jax.interop.onnx_import import from_onnx

    assert from_onnx(out / "pruned_raw.onnx")[1].feature_names == tuple(frame.columns)
    y = load_wine().target
    swapped = frame[[frame.columns[1], frame.columns[0], *frame.columns[2:]]]
    with pytest.raises(ValueError, match="another order.*'malic_acid', 'alcohol'"):
        neon_jax.prune((swapped, y), network=str(out / "pruned_raw.onnx"), preset="tiny", progress=None)


def test_the_small_data_rule_by_hand():
    from neon_jax.jobs.prune import selection_rule

    r = selection_rule(5.0, 20 / 21, 21, "auto")  # iris: 21 validation rows, one row = 4.76 points > tau / 2
    p = 21 / 23
    assert r["applied"] and r["one_row_points"] == pytest.approx(100 / 21)
    assert r["margin_points"] == pytest.approx(100 * np.sqrt(p * (1 - p) / 21))
    assert r["select_tau"] == pytest.approx(5.0 - r["margin_points"])
    assert not selection_rule(50.0, 20 / 21, 21, "auto")["applied"]  # one row resolves tau = 50
    assert not selection_rule(5.0, 20 / 21, 21)["applied"]  # off by default (measured: benchmarks/README.md)
    assert selection_rule(5.0, 0.9, 2000, "auto")["select_tau"] is None
    assert selection_rule(5.0, 0.9, 2000, "on")["select_tau"] == pytest.approx(5.0 - 100 * np.sqrt(
        (1801 / 2002) * (201 / 2002) / 2000))
    assert selection_rule(5.0, 1.0, 21, "on")["margin_points"] > 0  # a perfect validation score still has one
    with pytest.raises(ValueError, match="small_data must be one of auto, on, off"):
        selection_rule(5.0, 0.9, 21, "sometimes")


def test_the_small_data_rule_chooses_within_its_tighter_tolerance():
    """Every candidate counted within the tolerance keeps it; the rule's count is at most the plain rule's, and
    its choice keeps the validation change at or above -select_tau."""
    out = {}
    for rule in ("off", "on"):
        result = neon_jax.prune("iris", tau=5, preset="tiny", passes=1, candidates=2, small_data=rule,
                                progress=None)
        out[rule] = result.report
        limit = 5.0 if rule == "off" else result.report["selection"]["select_tau"]
        within = [c for c in result.candidates if c["within_tau"]]  # the original always counts
        assert all(c["val_change_points"] >= -limit - 1e-4 for c in within if c["episode"] >= 0)
        assert result.report["within_tau"] == len(within)
        chosen = next(c for c in result.candidates if c["chosen"])
        assert chosen["episode"] == -1 or chosen["val_change_points"] >= -limit - 1e-4
    assert out["on"]["selection"]["applied"] and not out["off"]["selection"]["applied"]
    assert out["on"]["within_tau"] <= out["off"]["within_tau"]
    assert out["on"]["candidates"] == out["off"]["candidates"]  # the same episodes: only the choice differs


def test_an_onnx_model_comes_back_with_its_own_outputs_on_raw_rows(tmp_path):
    """`PruneResult.raw_onnx()` of an skl2onnx pipeline: the input's Scaler baked in, its outputs (label,
    probabilities) with their names and order; labels are the model's classes."""
    from skl2onnx import to_onnx

    from neon_jax import interop

    X, y = load_iris(return_X_y=True)
    labels = np.array(["setosa", "versicolor", "virginica"])[y]
    X_tr, X_te, y_tr, y_te = train_test_split(X.astype(np.float32), labels, test_size=0.3, random_state=2,
                                              stratify=labels)
    pipe = _fit(make_pipeline(StandardScaler(), MLPClassifier((12,), max_iter=500, random_state=0)), X_tr, y_tr)
    path = tmp_path / "iris.onnx"
    path.write_bytes(to_onnx(pipe, X_tr[:1], options={"zipmap": False}).SerializeToString())
    result = neon_jax.prune((X_tr, y_tr), network=str(path), test=(X_te, y_te), preset="tiny", passes=1,
                            candidates=1, progress=None)
    assert result.model.output_roles == (("label", "label"), ("probabilities", "probabilities"))
    model = result.raw_onnx()
    assert [o.name for o in model.graph.output] == ["label", "probabilities"]
    out = interop.run_onnx(model, X_te)
    expected = result.pruned.predict_proba(result.model.transform(X_te))
    np.testing.assert_allclose(out["probabilities"], expected, atol=1e-5)
    got = np.array([v.decode() if isinstance(v, bytes) else v for v in out["label"]])
    assert (got == result.model.classes[expected.argmax(1)]).all()
    assert abs((got == y_te).mean() - result.report["test_acc_after"]) < 1e-6


def test_the_share_rule_lets_half_the_training_rows_choose_on_small_data():
    """iris at tau 5: 21 validation rows (one row 4.8 points > tau / 2), so "share" splits 53 of the 105 training
    rows off to choose; the test rows and the base network's training rows stay as they were."""
    plain = neon_jax.prune("iris", tau=5, preset="tiny", passes=1, candidates=1, progress=None).report
    share = neon_jax.prune("iris", tau=5, preset="tiny", passes=1, candidates=1, small_data="share",
                           progress=None).report
    assert plain["selection"]["validation_rows"] == 21 and share["selection"]["validation_rows"] == 53
    assert share["data"]["splits"]["train"] == plain["data"]["splits"]["train"] == 105
    assert share["data"]["splits"]["test"] == plain["data"]["splits"]["test"] == 45
    assert share["test_acc_before"] == plain["test_acc_before"]  # the same base network
    big = neon_jax.prune("iris", tau=50, preset="tiny", passes=1, candidates=1, small_data="share",
                         progress=None).report
    assert big["selection"]["validation_rows"] == 21  # one row resolves tau = 50: the split stays


def test_a_pytorch_exported_onnx_mlp_prunes_and_exports(tmp_path):
    """torch.onnx's graph (Gemm, BatchNormalization, Dropout, Softmax; no Scaler) pruned on iris by name, its
    ONNX export read back."""
    from neon_jax import interop

    name, path, proba, X = _onnx_models(tmp_path)[0]
    assert name == "torch"
    result = neon_jax.prune("iris", network=str(path), preset="tiny", passes=1, candidates=1, check_inputs=False,
                            progress=None)
    assert result.report["widths_before"] == "12-6" and result.model.output_roles == (("probs", "probabilities"),)
    paths = interop.export_network(result.pruned, tmp_path / "out", ["onnx"])
    x = np.asarray(X, np.float32)
    np.testing.assert_allclose(interop.run_onnx(paths["onnx"][0], x)["probabilities"], result.pruned.predict_proba(x),
                               atol=1e-5)


@pytest.mark.parametrize("n_classes", [2, 4])
def test_any_network_becomes_an_mlpclassifier_with_its_batchnorms_folded(n_classes, tmp_path):
    """`DenseNetwork.folded` (batch-norms into the next linear layer, dropout out) computes the same logits, and
    `scikit.network_to_mlp` gives an MLPClassifier with the same probabilities (two classes: one logistic
    output); mixed activations are refused by name."""
    from neon_jax import nets

    rng = np.random.default_rng(n_classes)

    def bn(n):
        return dict(kind="batchnorm", scale=rng.normal(size=n).astype(np.float32),
                    bias=rng.normal(size=n).astype(np.float32), mean=rng.normal(size=n).astype(np.float32),
                    var=rng.uniform(0.2, 2, size=n).astype(np.float32), eps=1e-5)

    def linear(i, o):
        return dict(kind="linear", kernel=rng.normal(size=(i, o)).astype(np.float32),
                    bias=rng.normal(size=o).astype(np.float32))

    layers = [bn(6), linear(6, 9), dict(kind="tanh"), dict(kind="dropout", rate=0.5), bn(9), linear(9, 5),
              dict(kind="tanh"), bn(5), linear(5, n_classes), dict(kind="softmax")]
    net = nets.DenseNetwork(layers=layers, n_features=6, n_classes=n_classes)
    x = rng.normal(size=(200, 6)).astype(np.float32)
    folded = net.folded()
    assert [layer["kind"] for layer in folded.layers] == ["linear", "tanh", "linear", "tanh", "linear", "softmax"]
    np.testing.assert_allclose(folded.logits(x), net.logits(x), rtol=1e-4, atol=1e-4)
    mlp = scikit.network_to_mlp(net, classes=[f"c{i}" for i in range(n_classes)])
    assert mlp.hidden_layer_sizes == (9, 5) and mlp.activation == "tanh"
    assert mlp.out_activation_ == ("logistic" if n_classes == 2 else "softmax")
    np.testing.assert_allclose(mlp.predict_proba(x), net.predict_proba(x), atol=1e-5)
    assert (mlp.predict(x) == np.array([f"c{i}" for i in range(n_classes)])[net.logits(x).argmax(1)]).all()
    from neon_jax import interop  # the export format of a bare network: <stem>.skops, read back and checked

    paths = interop.export_network(net, tmp_path, ["sklearn"], stem="net")
    assert paths["sklearn"] == [tmp_path / "net.skops"]
    assert interop.verify_exports(net, paths, x)["sklearn"]["same_predictions"]
    layers[6] = dict(kind="relu")
    with pytest.raises(ValueError, match="mixes hidden activations.*relu.*tanh"):
        scikit.network_to_mlp(nets.DenseNetwork(layers=layers, n_features=6, n_classes=n_classes))
