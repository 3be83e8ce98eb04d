"""Tests of neon_jax.data: the 52 shared files, each file quirk on small handmade files, errors, splits."""

from __future__ import annotations

import gzip
import os
import sys
import types
import urllib.error
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import MinMaxScaler

from neon_jax import data as D

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data_root() -> Path:
    """The shared data folder (neon/, uci/, MANIFEST.csv); $NEON_JAX_TEST_DATA overrides the default."""
    root = Path(os.environ.get("NEON_JAX_TEST_DATA", REPO / ".." / "shared" / "data")).resolve()
    if not (root / "MANIFEST.csv").is_file():
        pytest.skip(f"shared data not found at {root}")
    return root


@pytest.fixture(scope="module")
def manifest(data_root) -> pd.DataFrame:
    return pd.read_csv(data_root / "MANIFEST.csv")


@pytest.fixture(scope="module")
def shared(data_root, manifest) -> dict[str, D.Dataset]:
    """Every shared file loaded once (a few seconds in all)."""
    return {row.name: D.load_dataset(data_root / row.suite / f"{row.name}.csv.gz") for row in manifest.itertuples()}


@pytest.fixture(autouse=True)
def no_data_env(monkeypatch):
    """Tests pass data folders explicitly; a developer's $NEON_JAX_DATA_DIR must not change what they see."""
    monkeypatch.delenv(D.DEFAULT_DATA_ENV, raising=False)


def write(path: Path, text: str) -> Path:
    """Writes a CSV (gzip-compressed when the name ends in .gz)."""
    if path.name.endswith(".gz"):
        with gzip.open(path, "wt") as fh:
            fh.write(text)
    else:
        path.write_text(text)
    return path


def check_arrays(ds: D.Dataset) -> None:
    """The invariants every Dataset holds."""
    assert ds.X.dtype == np.float32 and ds.X.shape == (ds.n_rows, len(ds.feature_names))
    assert np.isfinite(ds.X).all()
    if ds.meta["scaling"] != "none":
        assert ds.X.min() >= 0.0 and ds.X.max() <= 1.0
    assert ds.y.shape == (ds.n_rows,)
    if ds.task == "classification":
        assert ds.y.dtype == np.int32
        assert np.array_equal(np.unique(ds.y), np.arange(ds.n_classes)), "every class id 0..K-1 occurs"
    else:
        assert ds.y.dtype == np.float32 and np.isfinite(ds.y).all() and ds.class_names == ()


# ---------------------------------------------------------------------------------------------------------------
# The shared files
# ---------------------------------------------------------------------------------------------------------------


def test_shared_files_match_manifest(shared, manifest):
    assert len(shared) == len(manifest) == 52
    mismatches = []
    for row in manifest.itertuples():
        ds = shared[row.name]
        check_arrays(ds)
        classes = 0 if pd.isna(row.classes) else int(row.classes)
        got = (ds.task, ds.n_rows, ds.meta["n_raw_features"], ds.n_classes)
        want = (row.task, row.rows, row.features, classes)
        if got != want:
            mismatches.append(f"{row.name}: got {got}, manifest {want}")
        if ds.meta["n_missing_imputed"] + ds.meta["n_missing_categorical"] != row.missing:
            mismatches.append(f"{row.name}: missing cells {ds.meta['n_missing_imputed']} != {row.missing}")
    assert not mismatches, "\n".join(mismatches)


def test_shared_file_quirks(shared):
    # ' quoting of header names; "'1'"-style labels come out unquoted and numerically sorted.
    assert shared["kropt"].meta["raw_feature_names"][0] == "white_king_col"
    assert shared["kropt"].meta["categorical_columns"] == ["white_king_col", "white_rook_col", "black_king_col"]
    assert shared["mfeat-karhunen"].feature_names[0] == "att1"
    tamil = shared["tamilnadu-electricity"]  # ' quoted header, " quoted values
    assert tamil.class_names == tuple(str(k) for k in range(1, 21))
    assert tamil.meta["categorical_columns"] == []  # "21" is a number once unquoted, as the paper's float cast
    assert shared["2dplanes"].class_names == ("N", "P")
    assert shared["nursery"].class_names == ("1", "3", "4", "5")  # labels with a gap map to 0..3
    assert shared["communities"].meta["n_missing_imputed"] == 36851
    assert shared["mnist_5k"].meta["constant_columns"], "blank border pixels are constant and kept"
    assert shared["mnist_5k"].n_features == 784


def test_numeric_file_scaled_exactly_as_the_paper(data_root):
    # neon_spec.md §7: cast to float, last column label, MinMaxScaler fit on the full data.
    path = data_root / "neon" / "diabetes.csv.gz"
    raw = pd.read_csv(path)
    want = MinMaxScaler().fit_transform(raw.iloc[:, :-1].astype(float))
    ds = D.load_dataset(path)
    np.testing.assert_allclose(ds.X, want, atol=1e-6)
    np.testing.assert_array_equal(ds.y, raw.iloc[:, -1].to_numpy())


def test_list_datasets_finds_all_shared_files(data_root, manifest, shared):
    infos = D.list_datasets(data_dir=data_root)
    names = [i.name for i in infos]
    assert len(names) == len(set(names)) and len(infos) >= 52 + 5
    by_source = {i.source: i for i in infos}
    for row in manifest.itertuples():
        info = by_source[str(data_root / row.suite / f"{row.name}.csv.gz")]
        ds = shared[row.name]
        assert (info.task, info.rows, info.features, info.classes) == (
            ds.task, ds.n_rows, ds.meta["n_raw_features"], ds.n_classes), row.name
    tasks = {i.name: i.task for i in infos}
    assert tasks["iris"] == "classification" and tasks["diabetes"] == "classification"  # the neon (Pima) file
    assert tasks["sklearn:diabetes"] == "regression"
    assert "MANIFEST" not in tasks


def test_names_aliases_and_env_folders(data_root, monkeypatch):
    assert D.load_dataset("diabetes", data_root).n_rows == 768  # the file shadows scikit-learn's diabetes
    assert D.load_dataset("neon/diabetes", data_root).n_rows == 768
    assert D.load_dataset("sklearn:diabetes", data_root).task == "regression"
    assert D.load_dataset("House_8l", data_root).name == "house_8L"  # unique case-insensitive match
    monkeypatch.setenv(D.DEFAULT_DATA_ENV, f"{data_root / 'uci'}{os.pathsep}{data_root / 'neon'}")
    assert D.load_dataset("kropt").n_classes == 18
    assert {"kropt", "banana", "iris"} <= {i.name for i in D.list_datasets()}


# ---------------------------------------------------------------------------------------------------------------
# File quirks on handmade files
# ---------------------------------------------------------------------------------------------------------------


def test_single_quotes(tmp_path):
    path = write(tmp_path / "sq.csv", "'a','b','class'\n1,'x','1'\n2,'y','2'\n3,'x','1'\n")
    ds = D.load_dataset(path)
    assert ds.meta["raw_feature_names"] == ["a", "b"] and ds.feature_names == ("a", "b=x", "b=y")
    assert ds.class_names == ("1", "2") and ds.y.tolist() == [0, 1, 0]
    check_arrays(ds)


def test_double_quotes_with_commas_inside(tmp_path):
    text = '"a","city","y"\n"1.5","Paris, FR","b"\n"2.5","Rome, IT","a"\n"0.5","Rome, IT","a"\n'
    path = write(tmp_path / "dq.csv", text)
    ds = D.load_dataset(path)
    assert ds.feature_names == ("a", "city=Paris, FR", "city=Rome, IT")
    np.testing.assert_allclose(ds.X[:, 0], [0.5, 1.0, 0.0])
    assert ds.class_names == ("a", "b") and ds.y.tolist() == [1, 0, 0]


def test_mixed_quotes_as_tamilnadu(tmp_path):
    path = write(tmp_path / "mix.csv", "'V1','V2','Class'\n0.5,\"21\",\"1\"\n0.25,\"9\",\"12\"\n1.0,\"9\",\"2\"\n")
    ds = D.load_dataset(path)
    assert ds.feature_names == ("V1", "V2") and ds.meta["categorical_columns"] == []
    assert ds.class_names == ("1", "2", "12") and ds.y.tolist() == [0, 2, 1]


def test_string_labels(tmp_path):
    ds = D.load_dataset(write(tmp_path / "np.csv", "x,binaryClass\n1,P\n2,N\n3,P\n4,N\n"))
    assert ds.task == "classification" and ds.class_names == ("N", "P") and ds.y.tolist() == [1, 0, 1, 0]


def test_labels_not_starting_at_zero_sort_numerically(tmp_path):
    ds = D.load_dataset(write(tmp_path / "l.csv", "x,y\n1,7\n2,3\n3,5\n4,3\n5,10\n"))
    assert ds.class_names == ("3", "5", "7", "10")  # numeric order: 10 after 7
    assert ds.y.tolist() == [2, 0, 1, 0, 3] and ds.meta["label_values"] == [3.0, 5.0, 7.0, 10.0]


def test_categorical_features_one_hot(tmp_path):
    ds = D.load_dataset(write(tmp_path / "c.csv", "color,size,y\nred,1,a\ngreen,2,b\nblue,3,a\nred,4,b\n"))
    assert ds.feature_names == ("color=blue", "color=green", "color=red", "size")
    np.testing.assert_array_equal(ds.X[:, :3], [[0, 0, 1], [0, 1, 0], [1, 0, 0], [0, 0, 1]])
    assert ds.meta["categorical_columns"] == ["color"] and ds.meta["n_raw_features"] == 2


def test_missing_values(tmp_path):
    text = "num,cat,y\n1,a,0\n,b,1\n?,?,0\n3,,1\n5,a,\n4,b,?\n"
    ds = D.load_dataset(write(tmp_path / "m.csv", text), scale=False)
    assert ds.meta["n_dropped_missing_target"] == 2 and ds.n_rows == 4
    assert ds.meta["n_missing_imputed"] == 2 and ds.meta["n_missing_categorical"] == 2
    np.testing.assert_array_equal(ds.X[:, 0], [1, 2, 2, 3])  # median of 1 and 3 fills both gaps
    assert ds.feature_names[1:] == ("cat=a", "cat=b", "cat=<missing>")
    np.testing.assert_array_equal(ds.X[:, 3], [0, 0, 1, 1])
    check_arrays(D.load_dataset(tmp_path / "m.csv"))


@pytest.mark.parametrize("token", ["NA", "n/a", "NaN", "NULL", "None", "-", "'NA'"])
def test_missing_tokens_in_a_real_file_keep_the_column_numeric(data_root, tmp_path, token):
    """Pima diabetes with some cells of two numeric columns written as a missing-value token: the columns stay
    numeric (no one-hot explosion) and the cells get the column's median, exactly as empty cells do."""
    frame = pd.read_csv(data_root / "neon" / "diabetes.csv.gz")
    rows = np.arange(0, len(frame), 7)
    with_token, with_empty = frame.astype(object).copy(), frame.astype(object).copy()
    for col in frame.columns[[1, 5]]:
        with_token.loc[rows, col] = token
        with_empty.loc[rows, col] = ""
    with_token.to_csv(tmp_path / "token.csv", index=False)
    with_empty.to_csv(tmp_path / "empty.csv", index=False)
    got = D.load_dataset(tmp_path / "token.csv", scale=False)
    want = D.load_dataset(tmp_path / "empty.csv", scale=False)
    assert got.feature_names == tuple(frame.columns[:-1]) and got.meta["categorical_columns"] == []
    assert got.meta["n_missing_imputed"] == 2 * len(rows)
    np.testing.assert_array_equal(got.X, want.X)
    median = np.median(frame.iloc[:, 1].drop(index=rows))
    np.testing.assert_allclose(got.X[rows, 1], median)


def test_a_mostly_numeric_column_read_as_categories_warns(tmp_path):
    text = "a,b,y\n" + "".join(f"{i},{'x' if i == 3 else i * 2},{i % 2}\n" for i in range(10))
    with pytest.warns(D.DatasetWarning, match=r"column 'b' is mostly numbers \(9 of 10 cells\).*'x'"):
        ds = D.load_dataset(write(tmp_path / "w.csv", text))
    assert ds.meta["categorical_columns"] == ["b"]
    import warnings

    with warnings.catch_warnings():  # a real text column does not warn
        warnings.simplefilter("error", D.DatasetWarning)
        D.load_dataset(write(tmp_path / "c.csv", "color,size,y\nred,1,a\ngreen,2,b\nblue,3,a\nred,4,b\n"))


def test_constant_columns_scale_to_zero(tmp_path):
    ds = D.load_dataset(write(tmp_path / "k.csv", "a,b,c,y\n5,x,1,0\n5,x,2,1\n5,x,3,0\n"))
    assert ds.meta["constant_columns"] == ["a", "b=x"]
    np.testing.assert_array_equal(ds.X[:, :2], 0.0)
    np.testing.assert_allclose(ds.X[:, 2], [0.0, 0.5, 1.0])
    check_arrays(ds)


def test_gzip_file_equals_plain(tmp_path):
    text = "a,b,y\n1,2,x\n3,4,y\n5,0,x\n"
    plain = D.load_dataset(write(tmp_path / "p.csv", text))
    packed = D.load_dataset(write(tmp_path / "p.csv.gz", text))
    np.testing.assert_array_equal(plain.X, packed.X)
    np.testing.assert_array_equal(plain.y, packed.y)
    assert packed.name == "p"


def test_target_column_by_name(tmp_path):
    path = write(tmp_path / "t.csv", "a,label,b\n1,u,10\n2,v,20\n3,u,30\n")
    ds = D.load_dataset(path, target="label")
    assert ds.feature_names == ("a", "b") and ds.class_names == ("u", "v") and ds.meta["target"] == "label"
    reg = D.load_dataset(path, target="b", task="regression")
    assert reg.task == "regression" and reg.y.tolist() == [10.0, 20.0, 30.0]


def test_task_heuristic_without_manifest(tmp_path):
    many = "\n".join(f"{i},{i * 1.5}" for i in range(40))
    assert D.load_dataset(write(tmp_path / "r.csv", "x,y\n" + many)).task == "regression"
    assert D.load_dataset(write(tmp_path / "f.csv", "x,y\n1,0.5\n2,1.5\n")).task == "regression"
    assert D.load_dataset(write(tmp_path / "i.csv", "x,y\n1,4\n2,6\n")).task == "classification"


def test_manifest_in_parent_folder_decides_task(tmp_path):
    (tmp_path / "suite").mkdir()
    write(tmp_path / "MANIFEST.csv", "suite,name,task\nsuite,ints,regression\n")
    ds = D.load_dataset(write(tmp_path / "suite" / "ints.csv", "x,y\n1,4\n2,6\n3,5\n"))
    assert ds.task == "regression" and ds.meta["task_source"].startswith("manifest")


def test_unseen_random_files_load(tmp_path):
    """Files of random shape and content, written the ways real files are, all load and agree with the listing."""
    for seed in range(6):
        rng = np.random.default_rng(seed)
        n = int(rng.integers(3, 80))
        columns = {}
        for j in range(int(rng.integers(1, 9))):
            kind = rng.choice(["float", "int", "cat", "const", "sparse"])
            if kind == "float":
                values = [f"{v:.4g}" for v in rng.normal(0, 10.0 ** rng.integers(-3, 6), n)]
            elif kind == "int":
                values = [str(v) for v in rng.integers(-5, 5, n)]
            elif kind == "cat":
                values = list(rng.choice(["a", "b c", "d-e", "?"], n))
            elif kind == "const":
                values = ["7"] * n
            else:
                values = ["" if rng.random() < 0.5 else f"{rng.random():.3f}" for _ in range(n)]
            columns[f"f{j}"] = values
        labels = rng.choice(["p", "q", "r"] if seed % 2 else ["2", "4", "11"], n)
        columns["target"] = list(labels)
        quote = "'" if seed % 3 == 0 else ('"' if seed % 3 == 1 else "")
        lines = [",".join(f"{quote}{c}{quote}" for c in columns)]
        lines += [",".join(f"{quote}{columns[c][i]}{quote}" for c in columns) for i in range(n)]
        folder = tmp_path / f"r{seed}"
        folder.mkdir()
        path = write(folder / f"random{seed}.csv.gz", "\n".join(lines) + "\n")
        if len(set(labels)) < 2:
            with pytest.raises(D.DatasetError, match="one class"):
                D.load_dataset(path)
            continue
        ds = D.load_dataset(path)
        check_arrays(ds)
        assert ds.n_rows == n and ds.meta["n_raw_features"] == len(columns) - 1
        [info] = [i for i in D.list_datasets(folder) if i.source == str(path)]
        assert (info.rows, info.features, info.classes, info.task) == (
            ds.n_rows, ds.meta["n_raw_features"], ds.n_classes, ds.task)


# ---------------------------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------------------------


def test_unknown_name_lists_names_and_how_to_add_folders(data_root):
    with pytest.raises(D.DatasetError) as err:
        D.load_dataset("no-such-set", data_root)
    message = str(err.value)
    assert "no-such-set" in message and "kropt" in message and "iris" in message
    assert "--data-dir <folder> (data_dir= in Python)" in message and D.DEFAULT_DATA_ENV in message
    available, regression = message.split("available: ")[1].split(". ")[0].split(" (regression")
    assert "diabetes" in available.split(", ") and "sklearn:diabetes" in regression  # Pima's file is classification
    assert "abalone" in regression and "abalone" not in available.split(", ")  # regression files are marked
    with pytest.raises(D.DatasetError, match="only the scikit-learn sets"):
        D.load_dataset("kropt")


def test_unreadable_file_names_the_path(tmp_path):
    path = tmp_path / "bad.csv.gz"
    path.write_bytes(b"\x1f\x8b\x08\x00garbage" + bytes(range(256)))
    with pytest.raises(D.DatasetError, match="bad.csv.gz"):
        D.load_dataset(path)
    with pytest.warns(UserWarning, match="bad.csv.gz"):
        assert all(i.source == "sklearn" for i in D.list_datasets(tmp_path))


def test_error_cases(tmp_path):
    with pytest.raises(D.DatasetError, match="one class"):
        D.load_dataset(write(tmp_path / "one.csv", "a,y\n1,x\n2,x\n"))
    with pytest.raises(D.DatasetError, match="no data rows"):
        D.load_dataset(write(tmp_path / "empty.csv", "a,b,y\n"))
    with pytest.raises(D.DatasetError, match="empty"):
        D.load_dataset(write(tmp_path / "nothing.csv", ""))
    with pytest.raises(D.DatasetError, match=r"no target column 'nope'.*\['a', 'b', 'y'\]"):
        D.load_dataset(write(tmp_path / "t.csv", "a,b,y\n1,2,3\n"), target="nope")
    with pytest.raises(D.DatasetError, match="at least 2 columns"):
        D.load_dataset(write(tmp_path / "single.csv", "y\n1\n2\n"))
    with pytest.raises(D.DatasetError, match="file not found"):
        D.load_dataset(tmp_path / "absent.csv")
    with pytest.raises(D.DatasetError, match="no rows with a target"):
        D.load_dataset(write(tmp_path / "notarget.csv", "a,y\n1,?\n2,\n"))
    with pytest.raises(D.DatasetError, match="numeric target"):
        D.load_dataset(write(tmp_path / "s.csv", "a,y\n1,u\n2,v\n"), task="regression")
    with pytest.raises(D.DatasetError, match="does not exist"):
        D.load_dataset("iris", tmp_path / "no-folder")


# ---------------------------------------------------------------------------------------------------------------
# scikit-learn, OpenML and TFDS sources
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, rows, features, classes", [
    ("iris", 150, 4, 3), ("wine", 178, 13, 3), ("breast_cancer", 569, 30, 2), ("digits", 1797, 64, 10),
    ("sklearn:diabetes", 442, 10, 0)])
def test_sklearn_sets(name, rows, features, classes):
    ds = D.load_dataset(name)
    check_arrays(ds)
    assert (ds.n_rows, ds.n_features, ds.n_classes, ds.source) == (rows, features, classes, "sklearn")
    assert ds.task == ("regression" if name == "sklearn:diabetes" else "classification")
    if name == "iris":
        assert ds.class_names == ("setosa", "versicolor", "virginica")


def test_list_without_folders_is_the_sklearn_sets():
    assert [i.name for i in D.list_datasets()] == ["iris", "wine", "breast_cancer", "digits", "sklearn:diabetes"]
    # one name, one dataset: without a data folder "diabetes" is not scikit-learn's regression set
    with pytest.raises(D.DatasetError, match="regression, which pruning does not take: sklearn:diabetes"):
        D.load_dataset("diabetes")


def test_openml_unreachable_gives_clear_error(monkeypatch):
    def offline(**kwargs):
        raise urllib.error.URLError("Temporary failure in name resolution")

    monkeypatch.setattr("sklearn.datasets.fetch_openml", offline)
    with pytest.raises(D.DatasetError, match=r"OpenML dataset 'kropt'.*network"):
        D.load_dataset("openml:kropt")


def test_openml_adapter(monkeypatch):
    from sklearn.utils import Bunch

    frame = pd.DataFrame({"a": [1.0, 2.0, 3.0], "b": pd.Categorical(["x", "y", "x"]),
                          "class": pd.Categorical(["P", "N", "P"])})
    calls = []

    def fetch(**kwargs):
        calls.append(kwargs)
        return Bunch(frame=frame, target_names=["class"], details={"name": "fake"})

    monkeypatch.setattr("sklearn.datasets.fetch_openml", fetch)
    ds = D.load_dataset("openml:42")
    assert calls[0]["data_id"] == 42 and calls[0]["as_frame"] is True
    assert ds.name == "fake" and ds.source == "openml:42"
    assert ds.feature_names == ("a", "b=x", "b=y") and ds.class_names == ("N", "P")


def test_tfds_missing_gives_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # makes the import fail
    with pytest.raises(D.DatasetError, match="tensorflow_datasets"):
        D.load_dataset("tfds:mnist")


def _fake_tfds(fail: bool = False) -> types.ModuleType:
    """A stand-in for tensorflow_datasets with its load(..., as_supervised=True, batch_size=-1) contract."""
    module = types.ModuleType("tensorflow_datasets")
    rng = np.random.default_rng(0)

    def load(name, split, as_supervised, batch_size, with_info):
        assert as_supervised and batch_size == -1 and with_info and split is None
        if fail:
            raise ConnectionError("download failed")
        splits = {s: (rng.integers(0, 255, (n, 2, 3)).astype(np.uint8), np.arange(n) % 3)
                  for s, n in (("train", 9), ("test", 6))}
        label = types.SimpleNamespace(names=["cat", "dog", "eel"])
        return splits, types.SimpleNamespace(supervised_keys=("image", "label"), features={"label": label})

    module.load = load
    module.as_numpy = lambda batch: batch
    return module


def test_tfds_adapter_with_a_stand_in(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", _fake_tfds())
    ds = D.load_dataset("tfds:fake")
    check_arrays(ds)
    assert (ds.n_rows, ds.n_features, ds.source) == (15, 6, "tfds:fake")
    assert ds.class_names == ("cat", "dog", "eel")
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", _fake_tfds(fail=True))
    with pytest.raises(D.DatasetError, match="network"):
        D.load_dataset("tfds:fake")


def test_tfds_with_mock_data():
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=12):
        ds = D.load_dataset("tfds:mnist")
    check_arrays(ds)
    assert ds.n_features == 28 * 28 and ds.task == "classification"


# ---------------------------------------------------------------------------------------------------------------
# Splits and subsampling
# ---------------------------------------------------------------------------------------------------------------


def test_split_indices_is_train_test_split():
    first, second = D.split_indices(101, 0.3, 0)
    want_first, want_second = train_test_split(np.arange(101), test_size=0.3, random_state=0)
    np.testing.assert_array_equal(first, want_first)
    np.testing.assert_array_equal(second, want_second)
    assert len(second) == 31


def test_make_splits_reproduces_the_paper(shared):
    ds = shared["phoneme"]
    n = ds.n_rows
    s = D.make_splits(ds)
    train, test = train_test_split(np.arange(n), test_size=0.3, random_state=0)
    np.testing.assert_array_equal(s.train_idx, train)
    np.testing.assert_array_equal(s.test_idx, test)
    # The environment splits the rows of X_train (in their stored order) 80/20 with random_state=1.
    finetune, val = train_test_split(train, test_size=0.2, random_state=1)
    np.testing.assert_array_equal(s.finetune_idx, finetune)
    np.testing.assert_array_equal(s.val_idx, val)
    assert len(s.test_idx) == int(np.ceil(0.3 * n)) and len(s.val_idx) == int(np.ceil(0.2 * len(train)))
    assert len(np.intersect1d(s.train_idx, s.test_idx)) == 0 and len(np.intersect1d(s.finetune_idx, s.val_idx)) == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([s.train_idx, s.test_idx])), np.arange(n))
    np.testing.assert_array_equal(np.sort(np.concatenate([s.finetune_idx, s.val_idx])), np.sort(s.train_idx))
    for x, y, idx in ((s.x_train, s.y_train, s.train_idx), (s.x_test, s.y_test, s.test_idx),
                      (s.x_finetune, s.y_finetune, s.finetune_idx), (s.x_val, s.y_val, s.val_idx)):
        np.testing.assert_array_equal(x, ds.X[idx])
        np.testing.assert_array_equal(y, ds.y[idx])
    np.testing.assert_array_equal(D.make_splits(ds).val_idx, s.val_idx)
    other = D.make_splits(ds, seed=1)
    assert not np.array_equal(other.test_idx, s.test_idx) and not np.array_equal(other.val_idx, s.val_idx)


def test_subsample_keeps_every_class(shared):
    ds = shared["kropt"]  # 18 classes, the smallest with 27 rows
    sub = D.subsample(ds, 300, seed=0)
    assert sub.n_rows == 300 and np.array_equal(np.unique(sub.y), np.arange(18))
    assert sub.meta["subsampled_from_rows"] == ds.n_rows and sub.class_names == ds.class_names
    np.testing.assert_array_equal(D.subsample(ds, 300, seed=0).X, sub.X)
    assert not np.array_equal(D.subsample(ds, 300, seed=1).X, sub.X)  # the file is sorted by class: y alone matches
    full = np.bincount(ds.y) / ds.n_rows
    np.testing.assert_allclose(np.bincount(sub.y) / 300, full, atol=2 / 300 + 1e-9)  # proportional
    assert D.subsample(ds, 18, seed=0).n_rows == 18
    with pytest.raises(D.DatasetError, match="18 classes"):
        D.subsample(ds, 17, seed=0)
    assert D.subsample(ds, ds.n_rows, seed=0) is ds and D.subsample(ds, None, seed=0) is ds
    reg = D.subsample(shared["ccpp"], 100, seed=0)
    assert reg.n_rows == 100 and reg.task == "regression"
