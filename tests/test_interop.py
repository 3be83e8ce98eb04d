"""PyTorch / NumPy networks in, PyTorch / ONNX / safetensors / npz out (neon_jax.interop), on real data (wine).

Every round trip is checked against the network it started from: the PyTorch source for an unpruned network
(eval mode, BatchNorm running statistics and Dropout included), the masked JAX network for a pruned one.
"""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

from neon_jax import cli, interop, nets  # noqa: E402


@pytest.fixture
def export_deps():
    """The `export` extra (onnx, onnxruntime, safetensors); tests that write those formats skip without it."""
    for module in ("onnx", "onnxruntime", "safetensors"):
        pytest.importorskip(module)


DIMS = nets.NetDims(d_max=16, k_max=4, max_hidden=3, w_max=16)  # wine: 13 features, 3 classes -> padded


def _pad(x, d_max=DIMS.d_max):
    return np.pad(np.asarray(x, np.float32), ((0, 0), (0, d_max - x.shape[1])))


def _masked_logits(variables, arch, x, n_classes):
    model = nets.make_model(DIMS)
    return np.asarray(model.apply(variables, _pad(x), arch, train=False))[:, :n_classes]


def _torch_logits(model, x):
    model.eval()
    with torch.no_grad():
        body = model[:-1] if isinstance(model[-1], nn.Softmax) else model
        return body(torch.from_numpy(np.asarray(x, np.float32))).numpy()


def _with_running_stats(model, x):
    """A few train-mode passes so BatchNorm running statistics are not the defaults; returns the model in eval."""
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.from_numpy(x))
    return model.eval()


def _variants():
    torch.manual_seed(0)
    return {
        "plain": nn.Sequential(nn.Linear(13, 12), nn.ReLU(), nn.Linear(12, 3), nn.Softmax(dim=1)),
        "batchnorm": nn.Sequential(nn.BatchNorm1d(13), nn.Linear(13, 16), nn.Tanh(), nn.BatchNorm1d(16, eps=1e-3),
                                   nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3), nn.Softmax(dim=1)),
        # Dropout after an activation is Dropout in front of the next Linear; no final Softmax
        "dropout": nn.Sequential(nn.Linear(13, 10), nn.Sigmoid(), nn.Dropout(0.3), nn.Linear(10, 6), nn.ReLU(),
                                 nn.Linear(6, 3)),
    }


@pytest.mark.parametrize("variant", ["plain", "batchnorm", "dropout"])
def test_torch_roundtrip_matches_the_source(variant, wine_splits, tmp_path, export_deps):
    x_tr, _, x_te, _ = wine_splits
    source = _with_running_stats(_variants()[variant], x_tr)
    expected = _torch_logits(source, x_te)
    net = interop.from_torch(source)
    assert net.num_params() == sum(p.numel() for p in source.parameters())
    np.testing.assert_allclose(net.logits(x_te), expected, atol=1e-5)
    # into the masked form the agent prunes, and out again: same function
    variables, arch = nets.expand(net, DIMS)
    np.testing.assert_allclose(_masked_logits(variables, arch, x_te, 3), expected, atol=1e-5)
    back = nets.compact(variables, arch, DIMS)
    np.testing.assert_allclose(_torch_logits(interop.to_torch(back), x_te), expected, atol=1e-5)
    # every export format, read back from disk
    paths = interop.export_network(net, tmp_path, stem="net")
    checks = interop.verify_exports(net, paths, x_te, reference_logits=expected, atol=1e-5)
    assert set(checks) == {"torch", "onnx", "safetensors", "npz"}
    assert all(c["same_predictions"] for c in checks.values())
    assert (np.argmax(expected, 1) == np.argmax(interop.run_onnx(paths["onnx"][0], x_te)["logits"], 1)).all()
    # the state_dict + layer list form and the whole-module form of a .pt file
    layers = json.loads(paths["safetensors"][1].read_text())["layers"]
    torch.save({"state_dict": interop.to_torch(net).state_dict(), "layers": layers}, tmp_path / "sd.pt")
    torch.save(source, tmp_path / "whole.pt")
    for name in ("sd.pt", "whole.pt"):
        np.testing.assert_allclose(interop.load_network(tmp_path / name).logits(x_te), expected, atol=1e-5)


def test_pruned_network_exports_match_the_masked_network(wine_splits, tmp_path, export_deps):
    x_tr, _, x_te, _ = wine_splits
    source = _with_running_stats(_variants()["batchnorm"], x_tr)
    variables, arch = nets.expand(interop.from_torch(source), DIMS)
    # prune as the environment does: zeros in the neuron mask (not a prefix), weights left in place
    mask = np.asarray(arch.mask).copy()
    mask[0, [1, 4, 5, 9, 10, 15]] = 0.0
    mask[1, [0, 7]] = 0.0
    arch = arch.replace(mask=mask)
    masked = _masked_logits(variables, arch, x_te, 3)
    pruned = nets.compact(variables, arch, DIMS)
    assert pruned.hidden_widths == [10, 6]
    assert pruned.num_params() == int(nets.count_params(arch))
    paths = interop.export_network(pruned, tmp_path, formats=["torch", "onnx", "safetensors", "npz"])
    checks = interop.verify_exports(pruned, paths, x_te, reference_logits=masked, atol=1e-5)
    assert all(c["same_predictions"] and c["max_abs_diff_logits"] < 1e-5 for c in checks.values())
    exported = interop.load_torch(paths["torch"][0])
    assert [m.out_features for m in exported if isinstance(m, nn.Linear)] == [10, 6, 3]  # the real widths
    assert not exported.training
    onnx_out = interop.run_onnx(paths["onnx"][0], x_te)
    np.testing.assert_allclose(onnx_out["probabilities"].sum(1), 1.0, atol=1e-5)
    # safetensors holds the PyTorch state_dict: it loads into the exported Sequential
    from safetensors.torch import load_file

    fresh = interop.to_torch(pruned)
    fresh.load_state_dict(load_file(str(paths["safetensors"][0])))
    np.testing.assert_allclose(_torch_logits(fresh, x_te), masked, atol=1e-5)
    # never overwrites without being asked
    with pytest.raises(FileExistsError, match="overwrite"):
        interop.export_network(pruned, tmp_path, formats=["onnx"])
    interop.export_network(pruned, tmp_path, formats=["onnx"], overwrite=True)


def test_numpy_weight_lists():
    rng = np.random.default_rng(0)
    w = [rng.normal(size=(5, 7)), rng.normal(size=(7, 4)), rng.normal(size=(4, 2))]
    b = [rng.normal(size=7), rng.normal(size=4), rng.normal(size=2)]
    x = rng.random((20, 5)).astype(np.float32)
    net = interop.from_arrays(w, b, activation=["relu", "tanh"])
    h = np.tanh(np.maximum(x @ w[0] + b[0], 0) @ w[1] + b[1]) @ w[2] + b[2]
    np.testing.assert_allclose(net.logits(x), h, rtol=1e-5, atol=1e-5)
    same = interop.from_arrays([a.T for a in w], b, activation=["relu", "tanh"], layout="out_in")
    np.testing.assert_allclose(same.logits(x), h, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="does not chain.*out_in"):
        interop.from_arrays([a.T for a in w], b)
    with pytest.raises(ValueError, match="2 hidden layer.*2 activation"):
        interop.from_arrays(w, b, activation=["relu"])
    with pytest.raises(ValueError, match="'gelu'"):
        interop.from_arrays(w, b, activation="gelu")


@pytest.mark.parametrize("model, message", [
    (lambda: nn.Sequential(nn.Linear(13, 8), nn.GELU(), nn.Linear(8, 3)), r"layer 1 \(.*GELU\) is not supported"),
    (lambda: nn.Sequential(nn.Linear(13, 8), nn.ReLU(), nn.LayerNorm(8), nn.Linear(8, 3)),
     r"layer 2 \(.*LayerNorm\) is not supported"),
    (lambda: nn.Sequential(nn.Linear(13, 8), nn.ReLU(), nn.Linear(7, 3)),
     r"layer 2 \(Linear\) expects 7 input features but the layer before it gives 8"),
    (lambda: nn.Sequential(nn.Linear(13, 8), nn.ReLU(), nn.BatchNorm1d(6), nn.Linear(8, 3)),
     r"layer 2 \(BatchNorm1d\) normalises 6 features but the layer before it gives 8"),
    (lambda: nn.Sequential(nn.Linear(13, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3)),
     r"layer 1 \(BatchNorm1d\) sits between layer 0 \(Linear\) and its activation"),
    (lambda: nn.Sequential(nn.Linear(13, 8), nn.Linear(8, 3)), r"no activation between them"),
    (lambda: nn.Sequential(nn.Linear(13, 8), nn.ReLU(), nn.Tanh(), nn.Linear(8, 3)),
     r"layer 2 \(Tanh\) does not directly follow a Linear"),
    (lambda: nn.Sequential(nn.Linear(13, 8), nn.ReLU(), nn.Dropout(), nn.Linear(8, 3)),
     r"layer 2 \(Dropout\) sits in front of the output Linear"),
    (lambda: nn.Sequential(nn.Dropout(), nn.BatchNorm1d(13), nn.Linear(13, 8), nn.ReLU(), nn.Linear(8, 3)),
     r"second pre-layer operation"),
    (lambda: nn.Sequential(nn.Linear(13, 8), nn.ReLU(), nn.Linear(8, 3), nn.Sigmoid()), r"ends in an activation"),
    (lambda: nn.Sequential(nn.Linear(13, 3), nn.Softmax(dim=1)), r"at least one hidden Linear"),
    (lambda: nn.Sequential(nn.BatchNorm1d(13, track_running_stats=False), nn.Linear(13, 8), nn.ReLU(),
                           nn.Linear(8, 3)), r"no running statistics"),
    (lambda: nn.Linear(13, 3), r"expected an nn.Sequential, got Linear"),
])
def test_unsupported_or_inconsistent_torch_models_are_refused(model, message):
    with pytest.raises(ValueError, match=message):
        interop.from_torch(model())


class _Custom(nn.Module):
    def forward(self, x):
        return x


def test_bad_files_and_state_dicts_are_refused(tmp_path):
    model = nn.Sequential(nn.Linear(13, 8), nn.ReLU(), nn.Linear(8, 3))
    torch.save(model.state_dict(), tmp_path / "bare.pt")
    with pytest.raises(ValueError, match="bare state_dict.*'layers'"):
        interop.load_network(tmp_path / "bare.pt")
    torch.save(nn.Sequential(nn.Linear(13, 8), _Custom(), nn.Linear(8, 3)), tmp_path / "custom.pt")
    with pytest.raises(ValueError, match=r"_Custom, which neon_jax does not import"):  # refused before unpickling
        interop.load_network(tmp_path / "custom.pt")
    sd = model.state_dict()
    with pytest.raises(ValueError, match=r"no '3.weight', which layer 3 \(Linear\) needs"):
        interop.from_state_dict(sd, ["Linear", "ReLU", "ReLU", "Linear"])
    with pytest.raises(ValueError, match=r"keys the layer list does not use: 2.weight, 2.bias"):
        interop.from_state_dict(sd, ["Linear", "ReLU"])
    with pytest.raises(ValueError, match=r"layer 1 \(Conv1d\) is not supported"):
        interop.from_state_dict(sd, ["Linear", "Conv1d", "Linear"])
    wrong = dict(sd, **{"2.weight": torch.zeros(3, 5)})
    with pytest.raises(ValueError, match="expects 5 input features but the layer before it gives 8"):
        interop.from_state_dict(wrong, ["Linear", "ReLU", "Linear"])
    with pytest.raises(FileNotFoundError, match="no PyTorch file"):
        interop.load_network(tmp_path / "missing.pt")
    # random bytes named .pt: we say it is not a model we accept, never torch's "weights_only=False will succeed"
    (tmp_path / "noise.pt").write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(ValueError, match="not a model file neon_jax accepts: it is not a torch.save file") as err:
        interop.load_network(tmp_path / "noise.pt")
    assert "weights_only" not in str(err.value) and "nn.Sequential" in str(err.value)
    with pytest.raises(ValueError, match="unknown export format.*tflite"):
        interop.parse_formats("torch,tflite")


def test_prune_a_torch_file_and_export_it(tmp_path, capsys, export_deps):
    """`neon-jax prune --network model.pt` on iris (tiny preset, random agent), then `--export`, then `export`."""
    from sklearn.datasets import load_iris

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.BatchNorm1d(16), nn.Linear(16, 12), nn.Tanh(),
                          nn.Linear(12, 3), nn.Softmax(dim=1))
    x = load_iris().data.astype(np.float32)
    _with_running_stats(model, (x - x.min(0)) / (x.max(0) - x.min(0)))
    torch.save(model, tmp_path / "model.pt")
    out = tmp_path / "run"
    argv = ["prune", "--preset", "tiny", "--agent", "random", "--quiet", "--dataset", "iris", "--network",
            str(tmp_path / "model.pt"), "--out", str(out), "--export", "all"]
    code = cli.main(argv)
    cap = capsys.readouterr()
    assert code == 0, cap.err
    report = json.loads((out / "report.json").read_text())
    assert report["params_before"] == sum(p.numel() for p in model.parameters())
    assert report["widths_before"] == "16-12"
    assert report["speedup_b256_numpy"] > 0 and report["latency_b256_numpy_ms_after"] > 0
    assert "measured latency" in cap.out and cap.out.count("same predictions: True") == 3
    # every format is in the folder (npz is the pair --out writes), readable like the others
    files = ["pruned.pt", "pruned.onnx", "pruned.safetensors", "pruned.arch.json", "pruned.npz", "pruned.json"]
    modes = {(out / f).stat().st_mode & 0o777 for f in files}
    assert len(modes) == 1 and modes.pop() & 0o044, "every exported file gets the same permissions"
    assert interop.load_network(out / "pruned.safetensors").hidden_widths == \
        nets.load_dense_network(out / "pruned").hidden_widths
    original = nets.load_dense_network(out / "original")
    np.testing.assert_allclose(original.logits(x), _torch_logits(model, x), atol=1e-5)  # the .pt is what was pruned
    pruned = nets.load_dense_network(out / "pruned")
    exported = interop.load_torch(out / "pruned.pt")
    assert [m.out_features for m in exported if isinstance(m, nn.Linear)] == pruned.hidden_widths + [3]
    np.testing.assert_allclose(_torch_logits(exported, x), pruned.logits(x), atol=1e-5)
    # asking again refuses before any pruning; `neon-jax export` writes other formats from the saved network
    assert cli.main(argv) == 2 and "--overwrite" in capsys.readouterr().err
    assert cli.main(["export", "--network", str(out / "pruned"), "--format", "onnx", "--out", str(out)]) == 2
    assert "pruned.onnx already exist" in capsys.readouterr().err
    code = cli.main(["export", "--network", str(out / "pruned.pt"), "--format", "onnx,npz", "--out",
                     str(tmp_path / "again"), "--name", "m"])
    assert code == 0, capsys.readouterr().err
    onnx_logits = interop.run_onnx(tmp_path / "again" / "m.onnx", x)["logits"]
    np.testing.assert_allclose(onnx_logits, pruned.logits(x), atol=1e-5)
    assert cli.main(["prune", "--dataset", "iris", "--export", "onnx"]) == 2
    assert "--export needs --out" in capsys.readouterr().err


def test_jax_forward_of_the_compacted_network(wine_splits):
    x_tr, _, x_te, _ = wine_splits
    net = interop.from_torch(_with_running_stats(_variants()["batchnorm"], x_tr))
    fn, params = interop.jax_forward(net, probabilities=False)
    np.testing.assert_allclose(np.asarray(fn(params, x_te)), net.logits(x_te), atol=1e-5)
    fn, params = interop.jax_forward(net)
    np.testing.assert_allclose(np.asarray(fn(params, x_te)), net.predict_proba(x_te), atol=1e-6)


def test_prune_a_512_256_128_torch_model_with_the_shipped_agent_and_export_onnx(tmp_path, capsys, export_deps):
    """The main job at a width the shipped agent never saw (trained on 8..64): `neon-jax prune --network model.pt`
    compiles the network at its own bucket (512 wide, 3 deep) and the pruned network round-trips through ONNX."""
    import onnx
    from sklearn.datasets import load_iris

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 512), nn.ReLU(), nn.Linear(512, 256), nn.ReLU(), nn.Linear(256, 128),
                          nn.ReLU(), nn.Linear(128, 3), nn.Softmax(dim=1))
    torch.save(model, tmp_path / "wide.pt")
    out = tmp_path / "run"
    code = cli.main(["prune", "--preset", "tiny", "--agent", "pretrained", "--quiet", "--dataset", "iris",
                     "--network", str(tmp_path / "wide.pt"), "--passes", "1", "--candidates", "2", "--out", str(out),
                     "--export", "onnx", "--no-input-check"])  # an untrained model: no better than chance
    cap = capsys.readouterr()
    assert code == 0, cap.err
    report = json.loads((out / "report.json").read_text())
    assert report["widths_before"] == "512-256-128" and "agent_cpu_tau5" in report["agent"]
    assert report["padded_shape"] == {"w_max": 512, "max_hidden": 3, "d_max": 4, "k_max": 3,
                                      "layer_widths": [512, 256, 128]}  # each layer at its own width
    assert report["params_before"] == sum(p.numel() for p in model.parameters())
    pruned = nets.load_dense_network(out / "pruned")
    assert len(pruned.hidden_widths) == 3 and all(w <= b for w, b in zip(pruned.hidden_widths, (512, 256, 128)))
    graph = onnx.load(out / "pruned.onnx").graph
    dims = [d.dim_value for d in graph.input[0].type.tensor_type.shape.dim]
    assert dims[-1] == 4
    x = load_iris().data.astype(np.float32)
    x = (x - x.min(0)) / (x.max(0) - x.min(0))
    onnx_out = interop.run_onnx(out / "pruned.onnx", x)
    assert onnx_out["logits"].shape == (150, 3)
    np.testing.assert_allclose(onnx_out["logits"], pruned.logits(x), atol=1e-4)
