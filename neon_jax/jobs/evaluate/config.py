"""The evaluation grid (`EvalConfig`), its unit of work (`Cell`) and the methods it can run."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from neon_jax import pruning
from neon_jax.amc import AMCConfig
from neon_jax.choices import CUTS, DEFAULT_CANDIDATES, PROTOCOLS
from neon_jax.env import validate_tau
from neon_jax.search import parse_search_spec, search_spec

AGENT_METHODS = ("neon", "neon_best")  # the methods that run a NEON agent
ZOO_NETWORKS = 30  # networks per zoo built by the evaluation (paper: 30)
ZOO_HELDOUT = 6  # of them held out from agent training (paper: 6)


def known_methods() -> list[str]:
    """The methods an evaluation can run.

    Returns:
      "neon" (the paper's single episode), "neon_best" (the best of many candidates, `neon_jax.select`), then
      every baseline of `neon_jax.pruning.BASELINES` (the random agent among them).
    """
    return [*AGENT_METHODS, *pruning.BASELINES]


def _names(value) -> tuple[str, ...]:
    return (value,) if isinstance(value, str) else tuple(value)


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """One evaluation grid; validated and normalised on construction (sequences become tuples).

    Attributes:
      datasets: distinct dataset names. For ``unseen`` the folds are made over these names.
      zoo_root: folder of zoos (one subfolder per dataset, `neon-jax zoo`). A dataset without a zoo there, or
        every dataset when None, gets a zoo built under ``OUT/zoos/<dataset>/``; `run_evaluation` records
        the folder it used (``OUT/zoos`` when None).
      data_dir: folder(s) of the CSV datasets (default: the path recorded in each zoo).
      protocol: one of `neon_jax.choices.PROTOCOLS` ("heldout" or "unseen").
      methods: names from `known_methods` ("neon", "random" and the baselines).
      taus: tolerances for neon (points), each checked by `neon_jax.env.validate_tau`.
      passes: passes per episode (neon, random and the baselines that take passes).
      seeds: evaluation seeds (sampled actions, fine-tuning order, baseline randomness).
      greedy: also evaluate neon with argmax actions (the original samples, §1.4).
      agents: "<tau>" or "<tau>@<fold>" -> agent path ("pretrained" = the shipped agent); missing taus use
        the shipped agent trained nearest that tau ("pretrained:<tau>"), and the report flags a training tau
        that differs from the evaluated tau.
      preset: preset name (default: the preset of the zoos found, else "cpu").
      fold_size / fold_seed: unseen folds; folds: which folds to evaluate (default all).
      settings: baseline -> settings (default: `pruning.default_settings(method)`), each checked by
        `pruning.check_setting`.
      random_cut: the cut of the random agent ("reinit": the paper's environment).
      batch_size: networks per compiled batch.
      zoo_networks / zoo_heldout: size of the zoos the evaluation builds, and how many of their networks are
        held out (the ones the heldout protocol prunes).
      candidates: the K values of neon_best (K sampled episodes and a greedy one per network).
      searches: what neon_best runs after its episodes, each a `neon_jax.search.parse_search_spec` text ("none": the
        main job's default; "2x16:margin=2.5:final": the refine search and the final fine-tune); kept canonical.
      amc: overrides of AMC's search settings (`neon_jax.amc.AMCConfig` fields, e.g. ``{"episodes": 100}``;
        default: the original's).
    """

    datasets: tuple
    zoo_root: str | None = None
    data_dir: str | None = None
    protocol: str = "heldout"
    methods: tuple = ("neon", "random")
    taus: tuple = (5.0,)
    passes: tuple = (4,)
    seeds: tuple = (0,)
    greedy: bool = False
    agents: dict = dataclasses.field(default_factory=dict)
    preset: str | None = None
    fold_size: int = 6
    fold_seed: int = 0
    folds: tuple | None = None
    settings: dict = dataclasses.field(default_factory=dict)
    random_cut: str = "reinit"
    batch_size: int = 32
    zoo_networks: int = ZOO_NETWORKS
    zoo_heldout: int = ZOO_HELDOUT
    candidates: tuple = (DEFAULT_CANDIDATES,)
    searches: tuple = ("none",)
    amc: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        fields = {
            "datasets": _names(self.datasets), "methods": _names(self.methods),
            "taus": tuple(validate_tau(t) for t in self.taus), "passes": tuple(int(p) for p in self.passes),
            "seeds": tuple(int(s) for s in self.seeds),
            "folds": None if self.folds is None else tuple(int(f) for f in self.folds),
            "agents": dict(self.agents), "amc": dict(self.amc),
            "settings": {method: tuple(values) for method, values in self.settings.items()},
            "candidates": ((int(self.candidates),) if isinstance(self.candidates, int)
                           else tuple(int(k) for k in self.candidates)),
            "searches": tuple(dict.fromkeys(search_spec(parse_search_spec(t)) for t in _names(self.searches))),
        }
        for name, value in fields.items():
            object.__setattr__(self, name, value)
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"unknown protocol {self.protocol!r}; choose one of {', '.join(PROTOCOLS)}")
        if not self.datasets or len(set(self.datasets)) != len(self.datasets):
            raise ValueError(f"the evaluation needs distinct dataset names, got {list(self.datasets)}")
        known = known_methods()
        unknown = [m for m in self.methods if m not in known]
        if unknown:
            raise ValueError(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(known)}")
        for method, values in self.settings.items():
            if method not in pruning.BASELINES:
                raise ValueError(f"settings for {method!r}: only the baselines take settings "
                                 f"({', '.join(pruning.BASELINES)})")
            for value in values:
                pruning.check_setting(method, value)
        self.amc_config()  # names a bad AMC override
        if not self.candidates or any(k < 1 for k in self.candidates):
            raise ValueError(f"neon_best needs candidates >= 1, got {list(self.candidates)}")
        if any(p < 1 for p in self.passes):
            raise ValueError(f"passes must be >= 1, got {list(self.passes)}")
        if self.random_cut not in CUTS:
            raise ValueError(f"unknown cut {self.random_cut!r}; choose one of {', '.join(CUTS)}")
        if self.fold_size < 1:
            raise ValueError(f"fold size must be >= 1, got {self.fold_size}")
        if self.batch_size < 1:
            raise ValueError(f"batch size must be >= 1, got {self.batch_size}")
        if not 0 <= self.zoo_heldout < self.zoo_networks:
            raise ValueError(f"a built zoo holds zoo_networks = {self.zoo_networks} networks, of which "
                             f"zoo_heldout = {self.zoo_heldout} are held out: needs 0 <= zoo_heldout < zoo_networks")
        if self.protocol == "heldout" and self.zoo_heldout < 1:
            raise ValueError("the heldout protocol prunes each zoo's held-out networks: zoo_heldout must be >= 1")

    def amc_config(self) -> AMCConfig:
        """AMC's search settings: the original's with the `amc` overrides (ValueError naming a bad one)."""
        fields = {f.name for f in dataclasses.fields(AMCConfig)}
        unknown = sorted(set(self.amc) - fields)
        if unknown:
            raise ValueError(f"unknown AMC setting(s) {', '.join(unknown)}; choose from {', '.join(sorted(fields))}")
        try:
            return AMCConfig(**self.amc)
        except TypeError as e:
            raise ValueError(f"bad AMC setting(s) {self.amc}: {e}") from None

    def identity(self) -> dict:
        """The settings a results folder is tied to.

        Changing them needs another folder or --overwrite; the grid's extent (methods, taus, passes, seeds,
        datasets, agents) may grow between runs.

        Returns:
          protocol, zoo_root (resolved; None while unset), preset, random_cut and batch_size, plus fold_size,
          fold_seed and the sorted datasets the folds are made over for the unseen protocol.
        """
        zoo_root = None if self.zoo_root is None else str(Path(self.zoo_root).resolve())
        doc = {"protocol": self.protocol, "zoo_root": zoo_root, "preset": self.preset,
               "random_cut": self.random_cut, "batch_size": self.batch_size}
        if self.amc:  # recorded only when set, so folders from before AMC keep their identity
            doc["amc"] = dict(sorted(self.amc.items()))
        if self.protocol == "unseen":
            doc.update(fold_size=self.fold_size, fold_seed=self.fold_seed, folds_over=sorted(self.datasets))
        return doc


@dataclasses.dataclass(frozen=True)
class Cell:
    """One unit of work: one method setting on the networks of one dataset."""

    method: str
    setting: str
    tau: float | None
    passes: int | None
    seed: int
    greedy: bool
    dataset: str
    fold: int | None

    @property
    def key(self) -> str:
        """The cell's name in ``cells.jsonl`` and the ``cell`` column of ``networks.csv``."""
        tau = "" if self.tau is None else f"{self.tau:g}"
        passes = "" if self.passes is None else str(self.passes)
        fold = "" if self.fold is None else str(self.fold)
        return (f"{self.method}|{self.setting}|tau={tau}|passes={passes}|seed={self.seed}|"
                f"greedy={int(self.greedy)}|fold={fold}|{self.dataset}")
