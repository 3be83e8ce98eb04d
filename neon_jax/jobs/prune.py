"""The main job: prune one network on one dataset with a trained agent (no agent training).

    result = neon_jax.prune("breast_cancer", tau=5)          # trains a random base network first
    result.pruned                                            # a DenseNetwork with the real, smaller widths
"""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import jax
import numpy as np
from matplotlib.figure import Figure

from neon_jax import compile_log, interop, nets, runner, sharding
from neon_jax import data as data_lib
from neon_jax.agent.registry import LoadedAgent, load_agent
from neon_jax.choices import DEFAULT_CANDIDATES, SELECTIONS
from neon_jax.env import EnvConfig, NeonEnv, validate_tau
from neon_jax.interop import onnx_import, scikit
from neon_jax.learn import agent_env
from neon_jax.policies import random_policy
from neon_jax.pool import EnvPool
from neon_jax.presets import Preset, get_preset
from neon_jax.progress import stage
from neon_jax.search import NO_SEARCH, Search
from neon_jax.select import cached_candidates_program, within_tolerance
from neon_jax.user_data import check_feature_names, prepare_user_data
from neon_jax.user_data import check_inputs as check_inputs_fn
from neon_jax.zoo import Zoo, build_zoo, prepare_data


@dataclasses.dataclass
class PruneResult:
    """The main job's answer: the original and the chosen pruned network (real widths), the report (what
    `report.json` holds) and every candidate (one dict per network an episode passed through)."""

    dataset: str
    original: nets.DenseNetwork
    pruned: nets.DenseNetwork
    report: dict
    candidates: list[dict] = dataclasses.field(default_factory=list)
    model: scikit.SklearnModel | onnx_import.OnnxModel | None = None  # what a scikit-learn / ONNX model brought
    preprocessing: dict = dataclasses.field(default_factory=dict)  # what the inputs are (`preprocessing_record`)

    def input_scaling(self):
        """((d,) offset, (d,) scale) such that the network's inputs are ``(raw - offset) * scale``: neon_jax's
        min-max scaling of a dataset without categorical columns, or an ONNX model's leading Scaler; None when the
        inputs are the rows as given, or their preprocessing is not an affine map of the raw columns (one-hot
        encoding, a scikit-learn pipeline's steps: `to_sklearn` keeps those)."""
        if isinstance(self.model, onnx_import.OnnxModel):
            return self.model.scaler
        p = self.preprocessing
        if p.get("scaling") != data_lib.SCALING_NOTE or p.get("categorical_columns"):
            return None
        lo, hi = np.asarray(p["feature_min"], np.float32), np.asarray(p["feature_max"], np.float32)
        span = hi - lo
        return lo, np.where(span > 0, 1.0 / np.where(span > 0, span, 1.0), 0.0).astype(np.float32)

    def raw_onnx(self):
        """The pruned network as an ``onnx.ModelProto`` that runs on raw rows (`input_scaling` baked in; None when
        the inputs are not an affine map of raw columns) and, for a model that came as ONNX, with that model's
        outputs: the same names in the same order (probabilities, logits, and a label output of its classes)."""
        from neon_jax import interop

        scaling = self.input_scaling()
        if scaling is None and not isinstance(self.model, onnx_import.OnnxModel):
            return None
        names = getattr(self.model, "feature_names", None) or self.preprocessing.get("input_columns") or None
        if names is not None and (len(names) != self.pruned.n_features
                                  or list(names) == [f"x{i}" for i in range(len(names))]):  # none, or made up
            names = None
        if isinstance(self.model, onnx_import.OnnxModel) and self.model.output_roles:
            return interop.to_onnx(self.pruned, input_scaling=scaling, outputs=self.model.output_roles,
                                   class_labels=self.model.classes, feature_names=names)
        return interop.to_onnx(self.pruned, input_scaling=scaling, feature_names=names)

    def to_sklearn(self):
        """The pruned network as a scikit-learn estimator: the one it came as (the same `Pipeline` with the
        pruned MLP last, or an `MLPClassifier`); for a network that came otherwise, an `MLPClassifier` predicting
        the dataset's class labels, behind the input scaling as a `MinMaxScaler` in a `Pipeline` where that
        scaling is an affine map of the raw columns (`input_scaling`), so it runs on raw rows as
        ``pruned_raw.onnx`` does."""
        from sklearn.pipeline import Pipeline

        if isinstance(self.model, scikit.SklearnModel):
            return scikit.to_sklearn(self.pruned, self.model)
        labels = self.preprocessing.get("class_labels")
        if isinstance(self.model, onnx_import.OnnxModel) and self.model.labelled:
            labels = list(self.model.classes)
        if not labels or len(labels) != self.pruned.n_classes:
            labels = list(range(self.pruned.n_classes))
        mlp = scikit.network_to_mlp(self.pruned, labels)
        scaling = self.input_scaling()
        return mlp if scaling is None else Pipeline([("scale", scikit.affine_scaler(*scaling)), ("mlp", mlp)])


def preprocessing_record(ds: data_lib.Dataset) -> dict:
    """What a network's inputs and outputs are, to run it on new rows: the scaling applied (none, the model's own
    steps, or neon_jax's min-max scaling with its per-column min and max), the input columns in order, the raw
    columns they came from (one-hot columns are named "column=value") and the class labels in output order."""
    meta = ds.meta
    record = {"dataset": ds.name, "source": ds.source, "scaling": meta.get("scaling"),
              "input_columns": list(ds.feature_names), "class_labels": list(ds.class_names)}
    if meta.get("scaling") == data_lib.SCALING_NOTE:
        lo, hi = np.asarray(meta["feature_min"], float), np.asarray(meta["feature_max"], float)
        record.update({
            "formula": "x[j] = (raw[j] - feature_min[j]) / (feature_max[j] - feature_min[j]); 0 where max == min; "
                       "categorical columns one-hot encoded first (input columns 'column=value')",
            "feature_min": lo.tolist(), "feature_max": hi.tolist(),
            "raw_columns": meta.get("raw_feature_names"), "categorical_columns": meta.get("categorical_columns"),
            "categories": meta.get("categories")})
    return record


SMALL_DATA_RULES = ("auto", "on", "off", "share")
SMALL_DATA_SHARE = 0.5  # small_data="share": the validation share of the training rows when one row is too coarse


def selection_rule(tau: float, acc0: float, n_val: int, small_data: str = "off") -> dict:
    """The tolerance the choice among candidates applies, given how many validation rows decide.

    A candidate's validation change moves in steps of one row (100 / n_val points), and with few rows the
    smallest candidate that happens to score well on them is often worse on new rows. So the choice can require a
    candidate to stay within ``tau - margin``, margin one standard error of the original's validation accuracy,
    ``100 sqrt(p (1 - p) / n_val)`` with ``p = (correct + 1) / (n_val + 2)`` (never 0). "auto" applies it when one
    row is worth more than tau / 2 points, "on" always, "off" never.

    Returns:
      {"rule", "applied", "validation_rows", "one_row_points", "margin_points", "select_tau"} (select_tau None
      when the choice uses tau itself).
    """
    if small_data not in SMALL_DATA_RULES:
        raise ValueError(f"small_data must be one of {', '.join(SMALL_DATA_RULES)}, got {small_data!r}")
    one_row = 100.0 / n_val
    p = (acc0 * n_val + 1.0) / (n_val + 2.0)
    margin = 100.0 * float(np.sqrt(p * (1.0 - p) / n_val))
    applied = small_data == "on" or (small_data == "auto" and one_row > tau / 2)  # "share" acts on the split
    return {"rule": small_data, "applied": bool(applied), "validation_rows": int(n_val), "one_row_points": one_row,
            "margin_points": margin, "select_tau": float(tau - margin) if applied else None}


def _is_rows(dataset) -> bool:
    """(X, y): the user's own rows (a pair of array-likes), not a dataset name, path or `data.Dataset`."""
    return isinstance(dataset, (tuple, list)) and len(dataset) == 2 and not isinstance(dataset[0], str)


def _model_named(ds: data_lib.Dataset, model) -> data_lib.Dataset:
    """A named dataset loaded unscaled, as a scikit-learn or ONNX model takes it: the model's own steps before its
    MLP applied, the labels in the model's class order (matched by their text; a model that does not name its
    classes, such as a PyTorch export, keeps the dataset's order)."""
    if not getattr(model, "labelled", True):
        if model.input_transform is None:
            return ds
        return dataclasses.replace(ds, X=model.transform(ds.X),
                                   meta={**ds.meta, "scaling": "the model's own steps (unscaled rows)"})
    labels = np.asarray(ds.class_names, dtype=object)[ds.y]
    names = [str(c) for c in model.classes.tolist()]
    unknown = sorted(set(labels.tolist()) - set(names))
    if unknown:
        raise ValueError(f"{ds.name}: labels {unknown[:5]} are not among the model's classes_ {names[:10]}")
    y = np.array([names.index(v) for v in labels.tolist()], np.int32)
    x = model.transform(ds.X)
    return dataclasses.replace(ds, X=x, y=y, class_names=tuple(names),
                               feature_names=tuple(f"x{i}" for i in range(x.shape[1])),
                               meta={**ds.meta, "scaling": "the model's own steps before its MLP (unscaled rows)"})


def load_model(network, trust_pickle: bool = False):
    """(DenseNetwork or None, what the model brought: `scikit.SklearnModel` / `onnx_import.OnnxModel` / None) of a
    `prune(network=...)`: a scikit-learn estimator or file, an ONNX file, a PyTorch / safetensors / neon_jax file,
    or a `DenseNetwork` (None: train a base network)."""
    if isinstance(network, (str, Path)) and Path(network).suffix.lower() in scikit.SKLEARN_SUFFIXES:
        return scikit.from_sklearn(scikit.load_sklearn_file(network, trust_pickle))
    if isinstance(network, (str, Path)) and Path(network).suffix.lower() == ".onnx":
        return onnx_import.from_onnx(network)
    if scikit.is_sklearn_model(network):
        return scikit.from_sklearn(network)
    if network is not None and not isinstance(network, nets.DenseNetwork):
        return interop.load_network(network), None  # .pt/.pth (PyTorch), .safetensors, or a neon_jax network
    return network, None


def _prepare_rows(dataset, model, *, test, validation, seed, data_dir, preset, tau, small_data, say):
    """The `PreparedData` of the main job: the user's rows as given (`user_data.prepare_user_data`), or a dataset
    by name prepared by neon_jax (through the model's own steps when it brings them), with the small-data share."""
    own_rows = _is_rows(dataset)
    if own_rows:
        if model is not None:
            columns = getattr(dataset[0], "columns", None)
            source = ("list(onnx_import.from_onnx(path)[1].feature_names)" if isinstance(model, onnx_import.OnnxModel)
                      else "model.feature_names_in_")
            check_feature_names(model.feature_names, None if columns is None else tuple(str(c) for c in columns),
                                source)

        def user_rows(val_fraction):
            return prepare_user_data(dataset, test=test, validation=validation, seed=seed,
                                     classes=None if model is None else model.classes,
                                     transform=None if model is None else model.input_transform,
                                     val_fraction=val_fraction)

        prepared = user_rows(0.2)
        if small_data == "share" and validation is None and 100.0 / len(prepared.splits.val_idx) > tau / 2:
            prepared = user_rows(SMALL_DATA_SHARE)
        rows = prepared.dataset.meta["user_rows"]
        say(f"your rows as given: {rows['finetune']} fine-tune, {rows['validation_rows']} validation "
            f"({'given' if rows['validation_given'] else f'split off the training rows, seed {seed}'}), "
            + (f"{rows['test']} test" if rows["test_given"]
               else "no test rows given: the report's test numbers are the validation rows'"))
    else:
        ds = dataset
        # a scikit-learn model, or an ONNX model with its own Scaler, brings its preprocessing: unscaled rows
        # through its steps; any other network takes neon_jax's (min-max scaled, as a .pt file does)
        own_steps = isinstance(model, scikit.SklearnModel) or (model is not None and model.input_transform is not None)
        if not isinstance(ds, data_lib.Dataset):
            ds = data_lib.load_dataset(ds, data_dir=data_dir, scale=not own_steps)
        if model is not None:
            ds = _model_named(ds, model)
        if preset.max_rows is not None and ds.n_rows > preset.max_rows:
            say(f"note: {ds.name} has {ds.n_rows} rows; preset {preset.name} subsamples {preset.max_rows} of them "
                f"(stratified, seed {seed}). To use every row, pass them: prune((X, y), test=...)")
        prepared = prepare_data(ds, preset, seed=seed)
        if small_data == "share" and 100.0 / len(prepared.splits.val_idx) > tau / 2:
            prepared = prepare_data(ds, preset, seed=seed, val_fraction=SMALL_DATA_SHARE)
    return prepared


def _small_data_notes(selection: dict, tau: float, small_data: str, say) -> None:
    """The notes the main job prints when the validation rows are too few to resolve tau (`selection_rule`)."""
    if not selection["applied"] and selection["one_row_points"] > tau / 2:
        say(f"note: the choice was made on {selection['validation_rows']} validation rows, where one row is "
            f"{selection['one_row_points']:.2f} points against tau = {tau:g}: they can hardly resolve tau, and the "
            f"test change may fall beyond it; give more validation rows (validation=(X_val, y_val) / --validation) "
            f"or let half the training rows choose (small_data='share' / --small-data share; measured better at tau 5, "
            f"while at tau 1 small_data='auto' kept tau more often, mostly by keeping the original)")
    if selection["applied"]:
        bound = selection["select_tau"]
        need = f"lose at most {bound:.2f} points" if bound >= 0 else f"gain at least {-bound:.2f} points"
        say(f"note: the choice was made on {selection['validation_rows']} validation rows, where one row is "
            f"{selection['one_row_points']:.2f} points against tau = {tau:g}; so a candidate had to {need} of "
            f"validation accuracy (tau less one standard error, {selection['margin_points']:.2f} points; "
            f"small_data={small_data!r}); more validation rows (validation=(X_val, y_val) / --validation) let the "
            f"choice use tau itself")


def prune(dataset, *, data_dir=None, network=None, tau: float = 5.0, passes: int = 4, agent: str = "pretrained",
          preset: str | Preset = "cpu", seed: int = 0, greedy: bool = False, cut: str | None = None,
          candidates: int = DEFAULT_CANDIDATES, select: str = "best", test=None, validation=None,
          check_inputs: bool = True, trust_pickle: bool = False, small_data: str = "off",
          refine: int = 0, refine_population: int = 16, final_finetune: bool = False, refine_epochs: int | None = None,
          refine_margin: float = 0.0,
          progress=print, devices: int | None = None) -> PruneResult:
    """Prunes a network on a dataset with a trained agent, keeping the user's tolerance on the validation split.

    Args:
      dataset: the user's own training rows ``(X, y)`` (NumPy arrays or a pandas DataFrame / Series, used exactly
        as given: no scaling, encoding, reordering or row cap; `user_data.prepare_user_data`), or a dataset name
        (see `neon-jax datasets`), a CSV path, or a loaded `data.Dataset` (neon_jax's preprocessing: min-max
        scaled, the preset's row cap, its own seeded 70/30 split).
      data_dir: folder(s) of CSV datasets.
      test: with ``(X, y)`` rows: ``(X_test, y_test)`` that only report (None: the validation rows are reported,
        and the report says so).
      validation: with ``(X, y)`` rows: ``(X_val, y_val)`` that choose among the candidates (None: 20 % of the
        training rows, split off with `seed`).
      check_inputs: before any work, a given network must score better on its training rows than always guessing
        the most common class (else the rows are not preprocessed as it was trained: one clear error).
      network: a scikit-learn `MLPClassifier` or a `Pipeline` ending in one, or its file (``.skops``; a pickle
        only with `trust_pickle`): its earlier steps are applied to the rows (`scikit.from_sklearn`) and the
        answer's `to_sklearn()` gives the pruned model back as the same estimator. Or a `DenseNetwork`, a PyTorch
        file (``.pt``: ``torch.save`` of an ``nn.Sequential`` or of ``{"state_dict", "layers"}``, see
        `interop.from_torch_file`), a ``.safetensors`` export, or a path written by `nets.save_dense_network`. Any
        width and up to ``feature_rows - 1`` (9) hidden layers; None trains a random base network of the preset's
        architecture space first.
      trust_pickle: load a scikit-learn model from a pickle file (``.pkl`` / ``.joblib``), which runs any code it
        holds; ``.skops`` files need no trust.
      tau: tolerated accuracy drop in points (paper: 1, 5, 50).
      small_data: how the choice treats validation rows too few to resolve tau (`selection_rule`): "off" (tau
        itself), "auto" (a candidate must stay within tau less one standard error of the validation accuracy
        when one validation row is worth more than tau / 2 points), "on" (always so), "share" (then
        `SMALL_DATA_SHARE` of the training rows choose, not 20 %; the base network still trains on all of them;
        without given validation rows). Measured on iris, wine and
        sonar (5 seeds each; `benchmarks/small_data_tau.py`): at tau 5 "off" lost beyond tau on test 3 times in
        15, "auto" 3 (at less compression), "share" once (median x3.16 against x5.57); at tau 1 "off" 6, "auto"
        1 (returning the original 12 times), "share" 9. No rule wins at both, so "off" stays the default. The report's
        ``selection`` says how many validation rows decided and what one row is worth, and a note says so when
        one row is worth more than tau / 2.
      passes: visits per hidden layer (paper's best: 4).
      agent: "pretrained" (the agent shipped for the preset), "random", or a checkpoint path.
      greedy: argmax actions in a single episode instead of sampled ones (the original samples).
      cut: "reinit" or "keep_best"; default: the cut the agent was trained with ("reinit" for the random policy).
      candidates: sampled episodes rolled out together (plus one greedy episode with a trained agent); every
        network of every episode is a candidate (`neon_jax.select`).
      select: "best" (the candidate with the fewest parameters within tau on the validation split; the original
        if none) or "last" (the final network of one sampled episode: the paper's answer).
      refine: beyond the paper: rounds of a population (cross-entropy) search after the episodes (`neon_jax.search`;
        0, the default: none, the faithful job). Each round cuts the original network to `refine_population`
        width vectors sampled around the smallest candidates within tau, fine-tunes them all in one vmapped
        program and adds them to the candidates; the choice is the same rule over all (validation only).
      refine_population: proposals per round.
      refine_epochs: the most fine-tune epochs of a proposal (None: the preset's fine-tune epochs, as the agent's
        steps; fewer: a cheaper search, best with `final_finetune`).
      refine_margin: points the search's candidates must keep besides tau on validation (within ``tau -
        refine_margin``; the agent's candidates keep tau): against the winner's curse of many proposals.
      final_finetune: beyond the paper: fine-tune the chosen network once more (every layer, up to the preset's
        training epochs), kept only when its validation accuracy does not fall; the report's ``final_finetune``
        gives validation and test accuracy before and after.
      devices: devices the candidate episodes are split over (`sharding.job_mesh`: default all; padded with further
        episodes, dropped before the choice); the report's ``run`` records them. The base network trains on one.
    Returns:
      `PruneResult`. The report holds the chosen network's widths, parameters, compression and accuracies, which
      candidate won (episode, step; -1 / 0 = the original), how many were within tau, the seconds of each stage
      (``load``: agent, network file and data; ``base_network``: training it when none is given; ``compile``: the
      environment and the pruning program, compiled or read from the persistent cache; ``run``: the episodes;
      ``report``: compaction and latency; ``total``: their sum, the call's wall time), the measured NumPy
      batch-256 latency before / after, and ``padded_shape``: the program's shape (its width bucket and depth).
    """
    tau, preset = _check_arguments(dataset, tau, preset, passes, candidates, select, small_data, test, validation)
    search = _check_search(refine, refine_population, final_finetune, select, refine_epochs, refine_margin)
    say = progress or (lambda *_: None)
    # the stages' seconds and the programs each compiled; the candidate episodes on the job's devices
    with sharding.use_mesh(sharding.job_mesh(devices)), compile_log.StageClock() as clock:
        stage(progress, "loading the agent, the network and the data")
        network, model = load_model(network, trust_pickle)
        loaded = load_agent(agent, preset, tau)
        cut = _agent_cut(loaded.env, cut, passes, say)
        prepared = _prepare_rows(dataset, model, test=test, validation=validation, seed=seed, data_dir=data_dir,
                                 preset=preset, tau=tau, small_data=small_data, say=say)
        zoo, input_check, seconds = _base_network(network, prepared, preset, seed, check_inputs, clock, progress)
        pool, original, selection = _environment(zoo, prepared, preset, tau, small_data, network is None, progress)
        plan = _episode_plan(preset, tau, passes, loaded, greedy, seed, cut, select, candidates, search)
        result = _run_episodes(pool, plan, seconds, clock, progress)
        _small_data_notes(selection, tau, small_data, say)
        stage(progress, "measuring the latency of the original and the pruned network")
        row, pruned, table = _choose(result, pool, prepared, plan, selection, say)
        report = _report(prepared, pool, plan, row, selection, seconds, original, pruned, table, input_check,
                         own_rows=_is_rows(dataset))
        clock.finish(seconds, report)
    return PruneResult(dataset=prepared.dataset.name, original=original, pruned=pruned, report=report,
                       candidates=table, model=model, preprocessing=preprocessing_record(prepared.dataset))


def _check_arguments(dataset, tau, preset, passes, candidates, select, small_data, test,
                     validation) -> tuple[float, Preset]:
    """(tau, `Preset`) of a `prune` call, every argument checked before any work (a ValueError naming the first
    that does not fit)."""
    tau = validate_tau(tau)
    preset = get_preset(preset)
    if isinstance(candidates, bool) or int(candidates) != candidates or candidates < 1:
        raise ValueError(f"candidates must be a whole number of episodes >= 1, got {candidates!r}")
    if select not in SELECTIONS:
        raise ValueError(f"unknown selection {select!r}; choose one of {', '.join(SELECTIONS)}")
    if small_data not in SMALL_DATA_RULES:
        raise ValueError(f"small_data must be one of {', '.join(SMALL_DATA_RULES)}, got {small_data!r}")
    EnvConfig(passes=passes)  # passes >= 1
    if not _is_rows(dataset) and (test is not None or validation is not None):
        raise ValueError("test= and validation= go with your own rows: prune((X, y), test=(X_test, y_test), ...)")
    return tau, preset


def _check_search(refine, population, final_finetune, select, epochs=None, margin=0.0) -> Search:
    """The `Search` of a prune's refine options, checked (one-line ValueErrors)."""
    for name, value, low in (("refine", refine, 0), ("refine_population", population, 1)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"{name} must be a whole number >= {low}, got {value!r}")
    if not isinstance(final_finetune, (bool, np.bool_)):
        raise ValueError(f"final_finetune must be True or False, got {final_finetune!r}")
    if epochs is not None and (isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)) or epochs < 1):
        raise ValueError(f"refine_epochs must be a whole number >= 1 or None, got {epochs!r}")
    if isinstance(margin, bool) or not isinstance(margin, (int, float, np.number)) or not margin >= 0:
        raise ValueError(f"refine_margin must be a number of points >= 0, got {margin!r}")
    search = Search(rounds=int(refine), population=int(population), final_finetune=bool(final_finetune),
                    proposal_epochs=None if epochs is None else int(epochs), margin=float(margin))
    if search.active and select != "best":
        raise ValueError("refine and final_finetune choose among candidates: they need select='best'")
    return search


def _agent_cut(trained_env: dict, cut: str | None, passes: int, say) -> str:
    """The cut of a prune (given, or the one the agent was trained with; "reinit" if unrecorded), checked, and a
    note when the agent was trained with other passes."""
    if cut is None:
        cut = trained_env.get("cut", "reinit")
    EnvConfig(passes=passes, cut=cut)
    if "passes" in trained_env and trained_env["passes"] != passes:
        say(f"note: the agent was trained with {trained_env['passes']} passes, this prune makes {passes}")
    return cut


def _base_network(network, prepared, preset: Preset, seed: int, check_inputs: bool, clock: compile_log.StageClock, progress):
    """(zoo of the one network to prune, the input check or None, the seconds so far): the given network, checked
    against the data, or a random base network trained on it."""
    input_check = None
    if network is None:
        seconds = {"load": clock.lap("load")}
        stage(progress, f"training a random base network on {prepared.dataset.name} "
                        f"({prepared.dataset.n_rows} rows, preset {preset.name})")
        zoo = build_zoo(prepared, preset, n=1, n_heldout=0, seed=seed, devices=1 if jax.process_count() == 1 else None)
        seconds["base_network"] = clock.lap("base_network")
    else:
        network.check_finite(prepared.splits.x_test, "the network to prune")
        zoo = Zoo.of_network(network, prepared, preset)  # checks its shape against the data first
        if check_inputs:
            input_check = check_inputs_fn(network, prepared.splits.x_train, prepared.splits.y_train)
        seconds = {"load": clock.lap("load"), "base_network": 0.0}
    return zoo, input_check, seconds


def _environment(zoo: Zoo, prepared, preset: Preset, tau: float, small_data: str, trained: bool, progress):
    """(the pool of the one network, its original as a `DenseNetwork`, the `selection_rule` of its validation rows);
    `trained`: the network is the base network trained here."""
    cache = jax.config.jax_compilation_cache_dir
    stage(progress, "building the environment and compiling the pruning program"
                    + (f" (compiled programs are kept in {cache}; tracing runs every time)" if cache else ""))
    pool = EnvPool.from_zoos([(zoo, prepared)], "all", tau, preset)
    v0, a0 = jax.tree_util.tree_map(lambda a: a[0], (pool.variables, pool.archs))
    original = nets.compact(v0, a0, pool.dims, preset.dropout_rate)
    original.check_finite(prepared.splits.x_test, "the base network" if trained else "the network")
    x_val, y_val = prepared.splits.x_val, prepared.splits.y_val
    selection = selection_rule(tau, float((original.logits(x_val).argmax(1) == y_val).mean()), len(y_val),
                               small_data)
    if selection["select_tau"] is not None:
        pool = dataclasses.replace(pool, select_tau=selection["select_tau"])
    return pool, original, selection


@dataclasses.dataclass(frozen=True)
class _Plan:
    """What one prune runs: the settings its report records, the agent, and the episodes they make."""

    preset: Preset
    tau: float
    passes: int
    agent: LoadedAgent
    greedy: bool
    seed: int
    cut: str
    select: str
    sampled: int  # sampled episodes
    with_greedy: bool  # plus one greedy episode (a trained agent choosing the best)
    search: Search = NO_SEARCH  # beyond the paper: what runs after the episodes (`neon_jax.search`)

    @property
    def episodes(self) -> int:
        """Episodes rolled out together."""
        return self.sampled + int(self.with_greedy)


def _episode_plan(preset: Preset, tau: float, passes: int, loaded: LoadedAgent, greedy: bool, seed: int, cut: str,
                  select: str, candidates: int, search: Search = NO_SEARCH) -> _Plan:
    """The `_Plan` of a prune: `candidates` sampled episodes when choosing the best and not greedy (else one), and
    then one greedy episode besides with a trained agent."""
    sampled = int(candidates) if select == "best" and not greedy else 1
    with_greedy = select == "best" and not greedy and not loaded.random
    return _Plan(preset=preset, tau=tau, passes=passes, agent=loaded, greedy=greedy, seed=seed, cut=cut,
                 select=select, sampled=sampled, with_greedy=with_greedy, search=search)


def _run_episodes(pool: EnvPool, plan: _Plan, seconds: dict, clock: compile_log.StageClock, progress):
    """The `runner.run` result of the plan's episodes on the pool's one network (its networks kept); records the
    seconds of the "compile" and "run" stages."""
    preset, select, greedy, loaded = plan.preset, plan.select, plan.greedy, plan.agent
    agent_obj, actor_params, random_actions = loaded.agent, loaded.actor, loaded.random
    env_config = EnvConfig(passes=plan.passes, cut=plan.cut)
    sampled, with_greedy, mesh = plan.sampled, plan.with_greedy, sharding.active_mesh()

    def method(dims):  # the pool's one network, at its own bucket and depth
        if random_actions:  # the random policy needs no actor (the same draws as an actor's uniform actions)
            return cached_candidates_program(NeonEnv(env_config, dims, preset), random_policy, sampled, False,
                                             select, mesh=mesh, search=plan.search), None
        return (cached_candidates_program(agent_env(agent_obj, dims, preset, env_config), agent_obj.act_fn, sampled,
                                          with_greedy, select, ("agent", agent_obj.config, agent_obj.preset),
                                          mesh, search=plan.search),
                agent_obj.policy(actor_params, greedy))
    episodes = plan.episodes

    def on_stage(name):  # the runner's "compile" falls in the stage begun above; "run" ends it
        if name == "run":
            seconds["compile"] = clock.lap("compile")
            stage(progress, f"pruning with the {loaded.description} agent (tau={plan.tau:g}, passes={plan.passes}, "
                            f"{episodes} episode{'s' if episodes > 1 else ''}, select {select})")

    result = runner.run(method, pool, seed=plan.seed, batch_size=1, keep_networks=True, on_stage=on_stage,
                        mesh=mesh, split_batch=False)
    seconds["run"] = clock.lap("run")
    return result


def _choose(result, pool: EnvPool, prepared, plan: _Plan, selection: dict, say):
    """(the result's row, the chosen network compacted to its real widths, the candidate table), and a note when
    no pruned candidate kept the tolerance."""
    tau = plan.tau
    row = result.rows[0]
    final_variables, final_arch = result.networks[0]
    pruned = nets.compact(final_variables, final_arch, pool.dims, plan.preset.dropout_rate)
    pruned.check_finite(prepared.splits.x_test, "the pruned network")
    table = candidate_table(result.details[0], row,
                            tau if selection["select_tau"] is None else selection["select_tau"], plan.episodes)
    if plan.select == "best" and row["chosen_episode"] < 0:
        limit = tau if selection["select_tau"] is None else selection["select_tau"]
        say(f"no pruned candidate kept the validation accuracy within {limit:.4g} points of the original's"
            f"{'' if selection['select_tau'] is None else ' (the small-data rule)'}: returning the original network")
    return row, pruned, table


def _report(prepared, pool: EnvPool, plan: _Plan, row: dict, selection: dict, seconds: dict, original, pruned,
            table: list[dict], input_check, own_rows: bool) -> dict:
    """The prune's report (what ``report.json`` holds; see `prune`), its ``seconds`` the very dict given."""
    return {
        "dataset": prepared.dataset.name, "rows": prepared.dataset.n_rows, "features": prepared.n_features,
        "classes": prepared.n_classes, "preset": plan.preset.name, "tau": plan.tau, "passes": plan.passes,
        "agent": plan.agent.description, "greedy": plan.greedy, "seed": plan.seed, "cut": plan.cut,
        "select": plan.select, "episodes": plan.episodes, "sampled_episodes": plan.sampled,
        "greedy_episode": plan.with_greedy,
        # the compiled program's shape: each hidden layer at its own width bucket, the network's depth, not the
        # preset's widest (`nets.shape_groups` of the one network)
        "padded_shape": {"w_max": pool.dims.w_max, "max_hidden": pool.dims.max_hidden, "d_max": pool.dims.d_max,
                         "k_max": pool.dims.k_max,
                         "layer_widths": list(nets.layer_buckets(pool.archs, int(np.max(pool.archs.depth))))},
        **row,
        "chosen": {"episode": row["chosen_episode"], "step": row["chosen_step"],
                   "greedy": bool(plan.with_greedy and row["chosen_episode"] == plan.sampled),
                   "val_acc_change_points": 100.0 * (row["val_acc"] - row["val_acc0"]),
                   "test_acc_change_points": row["acc_change_points"]},
        "seconds": seconds, "run": sharding.run_record(sharding.active_mesh()),  # devices, processes
        # measured, not inferred from the parameter count: NumPy eval forward pass, batch 256, this machine
        **interop.latency_report(original, pruned),
        "candidate_table": table,
        "data": {"source": prepared.dataset.source, "scaling": prepared.dataset.meta.get("scaling"),
                 "splits": {"train": len(prepared.splits.train_idx), "finetune": len(prepared.splits.finetune_idx),
                            "validation": len(prepared.splits.val_idx), "test": len(prepared.splits.test_idx)},
                 "test_rows": ("the validation rows (no test rows given)"
                               if own_rows and not prepared.dataset.meta["user_rows"]["test_given"]
                               else "given" if own_rows else "neon_jax's split"),
                 "input_check": input_check},
        # the rows that decided, what one row is worth, and the tolerance the choice applied
        "selection": selection,
        **(_search_report(plan, row) if plan.search.active else {}),
    }


def _search_report(plan: _Plan, row: dict) -> dict:
    """The report's ``search`` (its settings, whether its candidate was chosen) and ``final_finetune`` (validation
    and test accuracy before / after it, whether it was kept)."""
    out = {"search": {**plan.search.record(), "chosen_by_search": bool(row.get("chosen_by_search", False))}}
    if plan.search.final_finetune:
        out["final_finetune"] = {"val_acc_before": row["final_val_before"], "test_acc_before": row["final_test_before"],
                                 "val_acc_after": row["val_acc"], "test_acc_after": row["test_acc_after"],
                                 "kept": bool(row["final_kept"]), "epochs": int(row["final_epochs"])}
    return out


def candidate_table(details: dict, row: dict, tau: float, episodes: int | None = None) -> list[dict]:
    """Every candidate of one prune as dicts (the original first, then each step of each episode): episode,
    step, greedy, params, widths, val_acc, test_acc, val / test change in points, within_tau (within the
    tolerance the choice applied, `tau` here; the original always counts, as it is always eligible), chosen.
    With a refine search (details hold ``search_*``), its candidates follow, marked ``search`` True (every entry
    then has the field): round r's proposal i is episode ``episodes + r``, step ``i + 1``; its within_tau is
    within ``tau`` less the search's margin."""
    acc0, test0 = float(details["val_acc0"]), float(details["test_acc0"])
    depth = len(row["widths_before"].split("-"))

    def entry(episode, step, greedy, n_params, widths, val, test):
        val, test = float(val), float(test)
        val_change, test_change = 100.0 * (val - acc0), 100.0 * (test - test0)
        return {"episode": episode, "step": step, "greedy": greedy, "params": int(n_params),
                "widths": widths, "val_acc": val, "test_acc": test,
                "val_change_points": val_change, "test_change_points": test_change,
                "within_tau": episode < 0 or bool(within_tolerance(np.float32(val), np.float32(acc0), tau)),
                "chosen": (episode, step) == (row["chosen_episode"], row["chosen_step"])}

    table = [entry(-1, 0, False, details["params0"], row["widths_before"], acc0, test0)]
    valid = np.asarray(details["valid"])
    for e, t in zip(*np.nonzero(valid)):
        table.append(entry(int(e), int(t) + 1, bool(details["greedy"][e]), details["params"][e, t],
                           "-".join(str(int(w)) for w in details["widths"][e, t, :depth]),
                           details["val_acc"][e, t], details["test_acc"][e, t]))
    if "search_params" in details:
        for c in table:
            c["search"] = False
        rounds, population = np.asarray(details["search_params"]).shape
        for r in range(rounds):
            for i in range(population):
                c = entry(int(episodes) + r, i + 1, False, details["search_params"][r, i],
                          "-".join(str(int(w)) for w in details["search_widths"][r, i, :depth]),
                          details["search_val_acc"][r, i], details["search_test_acc"][r, i])
                c["search"] = True  # within the tolerance the search's candidates keep: tau less its margin
                c["within_tau"] = bool(within_tolerance(np.float32(c["val_acc"]), np.float32(acc0),
                                                        tau - float(details["search_margin"])))
                table.append(c)
    return table


CANDIDATE_FIELDS = ("episode", "step", "greedy", "params", "widths", "val_acc", "test_acc", "val_change_points",
                    "test_change_points", "within_tau", "chosen")


def save_result(result: PruneResult, out_dir, overwrite: bool = False) -> Path:
    """Writes original.{npz,json}, pruned.{npz,json}, report.json, preprocessing.json (`preprocessing_record`),
    candidates.csv and front.png to `out_dir`, and pruned.skops (the pruned scikit-learn estimator, loaded with
    ``skops.io.load(path)``) when a scikit-learn model was pruned. Never silently overwrites."""
    out = Path(out_dir)
    if (out / "report.json").exists() and not overwrite:
        raise FileExistsError(f"{out} already holds a prune result; pass --overwrite to replace it")
    out.mkdir(parents=True, exist_ok=True)
    nets.save_dense_network(result.original, out / "original")
    nets.save_dense_network(result.pruned, out / "pruned")
    (out / "report.json").write_text(json.dumps(result.report, indent=1))
    (out / "preprocessing.json").write_text(json.dumps(result.preprocessing, indent=1, default=str))
    if isinstance(result.model, scikit.SklearnModel):
        try:
            import skops.io as sio
        except ImportError:
            raise ValueError("saving the pruned scikit-learn model needs skops (pip install skops)") from None
        sio.dump(result.to_sklearn(), out / "pruned.skops")
    with open(out / "candidates.csv", "w", newline="") as fh:
        fields = CANDIDATE_FIELDS + (("search",) if result.candidates and "search" in result.candidates[0] else ())
        writer = csv.DictWriter(fh, fields)
        writer.writeheader()
        writer.writerows(result.candidates)
    plot_front(result, out / "front.png")
    return out


def plot_front(result: PruneResult, path) -> Path:
    """front.png: every candidate's parameters against its accuracy change (validation, what chose; test, what it
    means), the original, the tolerance line and the chosen candidate marked."""
    r, table = result.report, result.candidates
    fig = Figure(figsize=(7, 4.5))
    ax = fig.add_subplot()
    params = np.array([c["params"] for c in table])
    ax.scatter(params, [c["val_change_points"] for c in table], s=14, alpha=0.6, label="candidates (validation)")
    ax.scatter(params, [c["test_change_points"] for c in table], s=10, alpha=0.35, marker="x",
               label="candidates (test)")
    ax.axhline(-r["tau"], color="crimson", lw=1, ls="--", label=f"tolerance: -{r['tau']:g} points")
    ax.axhline(0, color="grey", lw=0.8)
    ax.scatter([r["params_before"]], [0.0], marker="s", s=50, color="black", label="original", zorder=3)
    chosen = next(c for c in table if c["chosen"])
    ax.scatter([chosen["params"]], [chosen["val_change_points"]], marker="*", s=220, color="gold",
               edgecolor="black", zorder=4, label=f"chosen: {chosen['params']} params, x{r['compression']:.2f}")
    ax.set_xscale("log")
    ax.set_xlabel("parameters (log scale)")
    ax.set_ylabel("accuracy change (points)")
    ax.set_title(f"{r['dataset']}: {len(table)} candidates, {r['within_tau']} within tau (validation)")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return Path(path)
