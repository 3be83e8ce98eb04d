"""The base-network zoo (neon_jax.zoo): build on real data, save / load, data checks.

One zoo is built for the whole module: the NEON paper's Pima `diabetes` file from the shared data, preset tiny,
8 networks, 2 held out. tests/test_cli.py builds the identical zoo through the command line, so in one pytest run
the training program compiles once for both files.
"""

import dataclasses
import json

import jax
import numpy as np
import pytest

from neon_jax import fit, nets
from neon_jax import zoo as zoo_lib
from neon_jax.presets import PRESETS

TINY = PRESETS["tiny"]
N, N_HELDOUT = 8, 2


def _leaves(tree):
    flat = jax.tree_util.tree_flatten_with_path(jax.device_get(tree))[0]
    return {"/".join(str(getattr(k, "key", k)) for k in path): np.asarray(leaf) for path, leaf in flat}


@pytest.fixture(scope="module")
def prepared(shared_data):
    return zoo_lib.prepare_data("diabetes", TINY, data_dir=shared_data / "neon")


@pytest.fixture(scope="module")
def built(prepared):
    calls = []
    zoo = zoo_lib.build_zoo(prepared, TINY, n=N, n_heldout=N_HELDOUT, seed=0,
                            progress=lambda done, total: calls.append((done, total)))
    return zoo, calls


@pytest.fixture(scope="module")
def saved(built, tmp_path_factory):
    zoo, _ = built
    out = tmp_path_factory.mktemp("zoo")
    return out, zoo_lib.save_zoo(zoo, out)


def test_prepare_data_uses_the_pima_file_not_sklearns_regression_set(prepared):
    ds = prepared.dataset
    assert ds.task == "classification" and ds.source.endswith("diabetes.csv.gz")
    assert (ds.n_features, ds.n_classes) == (8, 2)
    assert ds.n_rows == TINY.max_rows < 768  # subsampled to the preset's row cap
    s = prepared.splits
    assert (len(s.train_idx), len(s.test_idx)) == (210, 90)
    assert len(s.finetune_idx) + len(s.val_idx) == len(s.train_idx)
    # the 2 classes both survive the stratified subsample in roughly the file's proportion (500 : 268)
    assert 0.25 < ds.y.mean() < 0.45


def test_build_zoo_records_networks_splits_and_accuracies(built, prepared):
    zoo, calls = built
    assert len(zoo) == N and zoo.dataset == "diabetes"
    # one program per width bucket (the widest layer rounded up: 4 and 8 -> 8, 12 and 16 -> 16), stored at the
    # widest bucket present
    buckets = {int(w): v["networks"] for w, v in zoo.meta["buckets"].items()}
    widest = nets.widest_layers(zoo.archs)
    assert buckets == {b: int((np.where(widest <= 8, 8, 16) == b).sum()) for b in (8, 16) if (
        np.where(widest <= 8, 8, 16) == b).any()}
    assert zoo.dims == dataclasses.replace(nets.NetDims.for_preset(TINY, 8, 2), w_max=max(buckets))
    nb = len(buckets)  # one chunk per bucket (3 epochs < chunk of 5)
    assert calls == [(TINY.train_epochs * (b + 1), TINY.train_epochs * nb) for b in range(nb)]
    # compiles per run are bounded: one training program per bucket (and per chunk length)
    for width in buckets:
        model = nets.make_model(dataclasses.replace(zoo.dims, w_max=width), TINY)
        assert fit.make_trainer(model, TINY.learning_rate).train_programs == 1
    # held-out networks: exactly n_heldout, and the subsets partition the zoo
    assert zoo.heldout.dtype == bool and zoo.heldout.sum() == N_HELDOUT
    held, rest = zoo.indices("heldout"), zoo.indices("train")
    assert len(held) == N_HELDOUT and len(rest) == N - N_HELDOUT
    assert sorted(np.concatenate([held, rest]).tolist()) == list(range(N))
    _, archs, idx = zoo.select("heldout")
    np.testing.assert_array_equal(idx, held)
    np.testing.assert_array_equal(np.asarray(archs.depth), np.asarray(zoo.archs.depth)[held])
    with pytest.raises(ValueError, match="unknown subset"):
        zoo.indices("test")
    # architectures follow the preset
    depth = np.asarray(zoo.archs.depth)
    assert ((depth >= 1) & (depth <= TINY.max_hidden)).all()
    for i in range(N):
        d = zoo.describe(i)
        assert len(d["widths"]) == depth[i] and set(d["widths"]) <= set(TINY.widths)
        assert d["params"] == int(nets.count_params(zoo.network(i)[1]))
    # accuracies: one per network, and they are the accuracies of the stored weights on the stored splits
    assert zoo.train_accuracy.shape == zoo.test_accuracy.shape == (N,)
    s = prepared.splits
    for i in range(N):
        dense = nets.compact(*zoo.network(i), zoo.dims)
        for x, y, recorded in ((s.x_train, s.y_train, zoo.train_accuracy[i]),
                               (s.x_test, s.y_test, zoo.test_accuracy[i])):
            assert abs((dense.logits(x).argmax(1) == y).mean() - recorded) <= 1.0 / len(y) + 1e-6
    meta = zoo.meta
    assert meta["epochs"] == TINY.train_epochs and meta["seed"] == 0 and meta["data_seed"] == 0
    assert meta["split_sizes"] == {"train": 210, "test": 90, "finetune": len(s.finetune_idx), "val": len(s.val_idx)}
    assert len(meta["final_train_loss"]) == N and np.isfinite(meta["final_train_loss"]).all()
    assert meta["split_digest"] == prepared.split_digest()


def test_build_zoo_is_seeded(built, prepared):
    zoo, _ = built
    again = zoo_lib.build_zoo(prepared, TINY, n=N, n_heldout=N_HELDOUT, seed=0)
    for (name, a), b in zip(_leaves(zoo.variables).items(), _leaves(again.variables).values()):
        np.testing.assert_array_equal(a, b, err_msg=name)
    np.testing.assert_array_equal(zoo.heldout, again.heldout)
    np.testing.assert_array_equal(zoo.test_accuracy, again.test_accuracy)


def test_zoos_of_different_datasets_draw_different_architectures(built, prepared):
    """The paper samples each dataset's architectures afresh; one seed must not give every zoo the same ones."""
    zoo, _ = built
    renamed = dataclasses.replace(prepared, dataset=dataclasses.replace(prepared.dataset, name="diabetes_copy"))
    other = zoo_lib.build_zoo(renamed, TINY, n=N, n_heldout=N_HELDOUT, seed=0, epochs=1)
    assert not np.array_equal(np.asarray(zoo.archs.widths), np.asarray(other.archs.widths))
    assert other.meta["seed_rule"].startswith("per-dataset")


def test_build_zoo_rejects_bad_heldout_counts(prepared):
    for bad in (-1, N):
        with pytest.raises(ValueError, match="n_heldout"):
            zoo_lib.build_zoo(prepared, TINY, n=N, n_heldout=bad)


def test_save_load_round_trip(built, saved):
    zoo, _ = built
    out, path = saved
    assert path == out / "diabetes"
    assert (path / "zoo.json").is_file() and (path / "networks.npz").is_file()
    doc = json.loads((path / "zoo.json").read_text())
    assert doc["dataset"] == "diabetes" and len(doc["networks"]) == N
    assert set(doc["dims"]) == {"d_max", "k_max", "max_hidden", "w_max"}  # the format earlier versions read

    for where in (path, path / "zoo.json"):
        loaded = zoo_lib.load_zoo(where)
        assert loaded.dataset == zoo.dataset and loaded.preset == TINY and loaded.dims == zoo.dims
        assert loaded.meta == zoo.meta
        a, b = _leaves(zoo.variables), _leaves(loaded.variables)
        assert a.keys() == b.keys()
        for name in a:
            assert a[name].dtype == b[name].dtype, name
            np.testing.assert_array_equal(a[name], b[name], err_msg=name)
        for field in dataclasses.fields(nets.Arch):
            x, y = np.asarray(getattr(zoo.archs, field.name)), np.asarray(getattr(loaded.archs, field.name))
            assert x.dtype == y.dtype, field.name
            np.testing.assert_array_equal(x, y, err_msg=field.name)
        np.testing.assert_array_equal(loaded.heldout, zoo.heldout)
        np.testing.assert_array_equal(loaded.test_accuracy, zoo.test_accuracy)
        np.testing.assert_array_equal(loaded.train_accuracy, zoo.train_accuracy)
        assert [loaded.describe(i) for i in range(N)] == [zoo.describe(i) for i in range(N)]


def test_loaded_zoo_evaluates_like_the_original(built, saved, prepared):
    """The loaded population goes straight back into the compiled evaluator and reproduces the accuracies."""
    zoo, _ = built
    loaded = zoo_lib.load_zoo(saved[1])
    trainer = fit.make_trainer(nets.make_model(loaded.dims, loaded.preset), loaded.preset.learning_rate)
    test = fit.stack_data([(prepared.splits.x_test, prepared.splits.y_test)], loaded.dims.d_max)
    acc = np.asarray(trainer.evaluate(loaded.variables, loaded.archs, np.zeros(N, np.int32), test))
    np.testing.assert_allclose(acc, zoo.test_accuracy, atol=1e-6)


def test_save_refuses_to_overwrite(built, saved):
    zoo, _ = built
    out, path = saved
    before = (path / "zoo.json").read_text()
    with pytest.raises(FileExistsError, match="overwrite"):
        zoo_lib.save_zoo(zoo, out)
    assert (path / "zoo.json").read_text() == before
    assert zoo_lib.save_zoo(zoo, out, overwrite=True) == path
    assert zoo_lib.load_zoo(path).meta == zoo.meta


def test_check_data_matches(built, prepared, shared_data):
    zoo, _ = built
    zoo_lib.check_data_matches(zoo, prepared)  # the same object
    zoo_lib.check_data_matches(zoo, zoo_lib.prepare_data("diabetes", TINY, data_dir=shared_data / "neon"))  # reloaded
    other_seed = zoo_lib.prepare_data("diabetes", TINY, seed=1, data_dir=shared_data / "neon")
    with pytest.raises(ValueError, match="does not match"):
        zoo_lib.check_data_matches(zoo, other_seed)
    other_cap = zoo_lib.prepare_data("diabetes", PRESETS["cpu"], data_dir=shared_data / "neon")  # no subsample
    with pytest.raises(ValueError, match="does not match"):
        zoo_lib.check_data_matches(zoo, other_cap)


def test_load_rejects_a_folder_that_is_not_a_zoo(tmp_path, saved):
    with pytest.raises(FileNotFoundError, match="not a zoo folder"):
        zoo_lib.load_zoo(tmp_path)
    with pytest.raises(FileNotFoundError, match="not a zoo folder"):
        zoo_lib.load_zoo(tmp_path / "missing")
    # zoo.json without its networks.npz is not a zoo either
    half = tmp_path / "half"
    half.mkdir()
    (half / "zoo.json").write_text((saved[1] / "zoo.json").read_text())
    with pytest.raises(FileNotFoundError, match="networks.npz"):
        zoo_lib.load_zoo(half)


def test_prepare_data_rejects_regression(shared_data):
    with pytest.raises(ValueError, match="regression task; NEON prunes classifiers only"):
        zoo_lib.prepare_data("sklearn:diabetes", TINY)
    with pytest.raises(ValueError, match="'airfoil' is a regression task"):
        zoo_lib.prepare_data("airfoil", TINY, data_dir=shared_data / "uci")
