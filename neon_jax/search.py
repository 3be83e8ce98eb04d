"""Beyond the paper: a population search after the agent's episodes, and a final fine-tune of the chosen network.

The agent proposes; a cross-entropy search refines (`Search`, an option of `select.candidates_program`):

* The start: per network, the `elite` smallest candidates within the choice tolerance on validation among the
  agent's (the original always among them), as per-layer keep fractions (alive / original width).
* Each of `rounds` rounds samples `population` width vectors per network, keep fraction ~ Normal(mean, std) per
  layer (clipped to [1 / width, 1], rounded, at least one neuron kept), mean / std those of the elite (std at
  least `min_std`). A proposal is the ORIGINAL network cut to those widths, keeping in every layer the neurons
  with the largest L2 norm of incoming weights (the environment's ``keep_best`` rule, layer after layer), then
  fine-tuned over every layer with the environment's fine-tuner (`fit.finetune`: the preset's fine-tune epochs
  and patience). All proposals of a round (B networks x population) are one vmapped fine-tune.
* The new elite: the `elite` smallest within tau on validation among the old elite and the round's proposals.
* The search's candidates join the agent's under the same rule (fewest parameters within tau on validation,
  ties to the higher validation accuracy; on a full tie the agent's candidate stays): the original is always
  eligible, and the test split never takes part (it is measured for the candidate table only).

The final fine-tune (``Search(final_finetune=True)``) trains the chosen network once more over every layer,
up to the preset's training epochs with its patience (the fine-tuner's rule); its result replaces the chosen
network only when its validation accuracy is at least the chosen one's, so the choice stays within tau.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from neon_jax import fit, nets
from neon_jax.choice_rule import better, within_tolerance
from neon_jax.env import EnvParams, NeonEnv

SEARCHES = ("none", "cem")


@dataclasses.dataclass(frozen=True)
class Search:
    """What runs after the agent's episodes (hashable: part of a compiled program's key).

    Attributes:
      rounds: rounds of the cross-entropy search (0: none, the faithful main job).
      population: proposals per network and round (all of a round fine-tuned in one vmapped program).
      elite: candidates whose keep fractions set the next round's sampling distribution.
      min_std: the smallest standard deviation of a keep fraction (keeps the search exploring).
      final_finetune: fine-tune the chosen network once more (every layer, the preset's training epochs).
      margin: points of validation accuracy the search's candidates must keep besides tau (they count as within
        the tolerance at ``tau - margin``; the agent's candidates and the original are unaffected): against the
        winner's curse of choosing the smallest of many proposals on the same validation rows.
      proposal_epochs: the most fine-tune epochs of a proposal (None: the preset's fine-tune epochs, as the
        agent's steps); fewer is a cheaper search whose validation accuracies are lower (a stricter choice).
    """

    rounds: int = 0
    population: int = 16
    elite: int = 4
    min_std: float = 0.1
    final_finetune: bool = False
    proposal_epochs: int | None = None
    margin: float = 0.0

    def __post_init__(self):
        for name, low in (("rounds", 0), ("population", 1), ("elite", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"refine {name} must be a whole number >= {low}, got {value!r}")
        if self.proposal_epochs is not None and (isinstance(self.proposal_epochs, bool) or not isinstance(
                self.proposal_epochs, int) or self.proposal_epochs < 1):
            raise ValueError(f"refine proposal_epochs must be a whole number >= 1 or None, got {self.proposal_epochs!r}")
        if not float(self.margin) >= 0.0:
            raise ValueError(f"refine margin must be >= 0 points, got {self.margin!r}")
        if not 0.0 < float(self.min_std) <= 1.0:
            raise ValueError(f"refine min_std must be in (0, 1], got {self.min_std!r}")

    @property
    def active(self) -> bool:
        """Whether anything runs after the agent's episodes."""
        return self.rounds > 0 or self.final_finetune

    def record(self) -> dict:
        """The settings as a report records them."""
        return dataclasses.asdict(self)


NO_SEARCH = Search()


def parse_refine(text: str | int | None) -> tuple[int, int]:
    """(rounds, population) from the command line's ``--refine``: "R" or "RxP" ("0": none); one-line errors."""
    if text is None:
        return 0, Search.population
    raw = str(text).strip().lower()
    rounds, _, population = raw.partition("x")
    try:
        r, p = int(rounds), int(population) if population else Search.population
    except ValueError:
        raise ValueError(f"--refine takes ROUNDS or ROUNDSxPOPULATION (e.g. 2 or 2x16), got {text!r}") from None
    if r < 0 or p < 1:
        raise ValueError(f"--refine takes ROUNDS >= 0 and POPULATION >= 1, got {text!r}")
    return r, p


def parse_search_spec(text: str) -> Search:
    """The `Search` an evaluation names (``--search``): "none", or ``[R[xP]][:epochs=E][:margin=M][:final]``
    ("2x16:margin=2.5:final", "final"); one-line ValueErrors."""
    raw = str(text).strip().lower()
    if raw in ("", "none"):
        return NO_SEARCH
    fields: dict = {"final_finetune": False}
    for part in raw.split(":"):
        key, sep, value = part.partition("=")
        try:
            if part == "final":
                fields["final_finetune"] = True
            elif not sep:
                fields["rounds"], fields["population"] = parse_refine(part)
            elif key == "epochs":
                fields["proposal_epochs"] = int(value)
            elif key == "margin":
                fields["margin"] = float(value)
            else:
                raise ValueError(f"unknown part {part!r}")
        except ValueError as err:
            raise ValueError(f"search {text!r}: expected none or [ROUNDS[xPOPULATION]][:epochs=E][:margin=M][:final] "
                             f"(e.g. 2x16:margin=2.5:final): {err}") from None
    try:
        return Search(**fields)
    except ValueError as err:
        raise ValueError(f"search {text!r}: {err}") from None


def search_spec(search: Search) -> str:
    """The canonical text of a `Search` (`parse_search_spec` reads it back): "none" when nothing runs."""
    if not search.active:
        return "none"
    parts = [f"{search.rounds}x{search.population}"] if search.rounds else []
    if search.rounds and search.proposal_epochs is not None:
        parts.append(f"epochs={search.proposal_epochs}")
    if search.rounds and search.margin:
        parts.append(f"margin={search.margin:g}")
    if search.final_finetune:
        parts.append("final")
    return ":".join(parts)


def cut_to_widths(variables: dict, arch: nets.Arch, dims: nets.NetDims, widths) -> tuple[dict, nets.Arch]:
    """One network cut to `widths` (max_hidden,) int: in each hidden layer in turn the alive neurons with the largest
    L2 norm of incoming weights (after the layers before were cut) survive; dead weights zeroed."""
    for j in range(dims.max_hidden):
        mask = nets.largest_norm_mask(variables, arch, dims, j, widths[j])
        arch = nets.narrow(arch, j, mask)
        variables = nets.zero_dead(variables, arch, dims)
    return variables, arch


def _elite_stats(fractions, n_params, acc, within, elite: int, min_std: float):
    """(mean, std, chosen indices) of one network's elite: the `elite` smallest within tau (ties: higher acc)."""
    big = jnp.iinfo(jnp.int32).max
    score = jnp.where(within, n_params, big)
    order = jnp.lexsort((-acc, score))[:elite]
    w = within[order].astype(jnp.float32)
    f = fractions[order]
    total = jnp.maximum(w.sum(), 1.0)
    mean = (w[:, None] * f).sum(0) / total
    std = jnp.sqrt((w[:, None] * (f - mean) ** 2).sum(0) / total)
    return mean, jnp.maximum(std, min_std), order


def refine(env: NeonEnv, search: Search, keys, params: EnvParams, agent: dict):
    """The cross-entropy search over B networks (traced; see the module). `agent`: the agent's candidates per network,
    {"widths" (B, N, H), "params" (B, N), "acc" (B, N), "valid" (B, N)} (the original need not be among them).

    Returns {"widths" (B, R, P, H), "params" (B, R, P), "val_acc", "test_acc" (B, R, P), and the search's best
    per network: "best_variables", "best_arch", "best_params", "best_acc", "best_round", "best_index",
    "best_within"}."""
    dims, preset = env.dims, env.preset
    R, P, K = search.rounds, search.population, search.elite
    n = params.tau.shape[0]
    w0 = params.arch.widths  # (B, H)
    w0f = jnp.maximum(w0, 1).astype(jnp.float32)
    acc0 = env_acc0(env, params)
    tau = params.choice_tau - search.margin  # the search's own candidates keep the margin too
    everything = nets.Trainable.everything(dims.max_hidden)
    epochs = preset.finetune_epochs if search.proposal_epochs is None else search.proposal_epochs

    # the pool the first elite comes from: the original, then the agent's candidates
    frac = jnp.concatenate([jnp.ones((n, 1, dims.max_hidden)), agent["widths"] / w0f[:, None, :]], axis=1)
    pool_params = jnp.concatenate([nets.count_params(params.arch)[:, None], agent["params"]], axis=1)
    pool_acc = jnp.concatenate([acc0[:, None], agent["acc"]], axis=1)
    pool_within = jnp.concatenate([jnp.ones((n, 1), bool), agent["valid"] & within_tolerance(
        agent["acc"], acc0[:, None], tau[:, None])], axis=1)
    stats = jax.vmap(lambda f, p, a, w: _elite_stats(f, p, a, w, K, search.min_std))
    mean, std, order = stats(frac, pool_params, pool_acc, pool_within)
    take = lambda a, o: jnp.take_along_axis(a, o.reshape(o.shape + (1,) * (a.ndim - 2)), axis=1)  # noqa: E731
    elite = {"frac": take(frac, order), "params": take(pool_params, order), "acc": take(pool_acc, order),
             "within": take(pool_within, order)}

    def propose(key, p: EnvParams, m, s):
        k_draw, k_tune = jax.random.split(key)
        z = jax.random.normal(k_draw, (P, dims.max_hidden))
        wf = jnp.maximum(p.arch.widths, 1).astype(jnp.float32)
        f = jnp.clip(m[None] + s[None] * z, 1.0 / wf, 1.0)
        widths = jnp.where(p.arch.widths > 0, jnp.clip(jnp.round(f * wf), 1, wf), 0).astype(jnp.int32)

        def one(k, w):
            variables, arch = cut_to_widths(p.variables, p.arch, dims, w)
            variables, _ = fit.finetune(env.trainer.learner, k, variables, arch, p.finetune, everything,
                                        max_epochs=epochs, batch_size=preset.finetune_batch,
                                        patience=preset.patience, index=p.data_index)
            return (variables, arch, nets.count_params(arch), env.accuracy(variables, arch, p.val, index=p.data_index),
                    env.accuracy(variables, arch, p.test, index=p.data_index))

        variables, arch, n_params, val, test = jax.vmap(one)(jax.random.split(k_tune, P), widths)
        return widths, variables, arch, n_params, val, test

    rows = {"widths": [], "params": [], "val_acc": [], "test_acc": []}
    best = None
    for r in range(R):
        round_keys = jax.vmap(lambda k, r=r: jax.random.fold_in(k, 1_000_003 + r))(keys)
        widths, variables, arch, n_params, val, test = jax.vmap(propose)(round_keys, params, mean, std)
        within = within_tolerance(val, acc0[:, None], tau[:, None])
        for name, value in zip(rows, (widths, n_params, val, test)):
            rows[name].append(value)
        # the round's best per network (same rule), kept with its weights
        big = jnp.iinfo(jnp.int32).max
        rank = jax.vmap(lambda p, a, w: jnp.lexsort((-a, jnp.where(w, p, big)))[0])(n_params, val, within)
        pick = lambda a: jnp.take_along_axis(a, rank.reshape((n, 1) + (1,) * (a.ndim - 2)), axis=1)[:, 0]  # noqa
        cand = {"variables": jax.tree_util.tree_map(pick, variables), "arch": jax.tree_util.tree_map(pick, arch),
                "params": pick(n_params), "acc": pick(val), "within": pick(within),
                "round": jnp.full((n,), r, jnp.int32), "index": rank.astype(jnp.int32)}
        if best is None:
            best = cand
        else:
            take_new = cand["within"] & (~best["within"] | better(cand["params"], cand["acc"], best["params"],
                                                                  best["acc"]))
            best = jax.tree_util.tree_map(
                lambda a, b: jnp.where(take_new.reshape((-1,) + (1,) * (a.ndim - 1)), a, b), cand, best)
        # the next elite: the old elite and this round's proposals
        wf = jnp.maximum(params.arch.widths, 1).astype(jnp.float32)[:, None, :]
        frac = jnp.concatenate([elite["frac"], widths / wf], axis=1)
        pool_params = jnp.concatenate([elite["params"], n_params], axis=1)
        pool_acc = jnp.concatenate([elite["acc"], val], axis=1)
        pool_within = jnp.concatenate([elite["within"], within], axis=1)
        mean, std, order = stats(frac, pool_params, pool_acc, pool_within)
        elite = {"frac": take(frac, order), "params": take(pool_params, order), "acc": take(pool_acc, order),
                 "within": take(pool_within, order)}
    out = {name: jnp.stack(v, axis=1) for name, v in rows.items()}
    out.update({f"best_{k}": v for k, v in best.items()})
    return out


def env_acc0(env: NeonEnv, params: EnvParams):
    """(B,) the originals' validation accuracies (eval mode), as the environment measures acc0."""
    return jax.vmap(lambda v, a, p: env.accuracy(v, a, p.val, index=p.data_index))(
        params.variables, params.arch, params)


def final_finetune(env: NeonEnv, keys, params: EnvParams, variables, arch, acc):
    """The chosen networks fine-tuned once more (every layer, up to the preset's training epochs with its patience),
    kept only where the validation accuracy is at least `acc` (the chosen one's). Returns (variables, val acc,
    kept (B,) bool, epochs (B,))."""
    dims, preset = env.dims, env.preset
    everything = nets.Trainable.everything(dims.max_hidden)

    def one(key, p: EnvParams, v, a):
        tuned, info = fit.finetune(env.trainer.learner, jax.random.fold_in(key, 2_000_003), v, a, p.finetune,
                                   everything, max_epochs=preset.train_epochs, batch_size=preset.finetune_batch,
                                   patience=preset.patience, index=p.data_index)
        return tuned, env.accuracy(tuned, a, p.val, index=p.data_index), info["epochs"]

    tuned, val, epochs = jax.vmap(one)(keys, params, variables, arch)
    kept = val >= acc
    chosen = jax.tree_util.tree_map(lambda t, v: jnp.where(kept.reshape((-1,) + (1,) * (t.ndim - 1)), t, v),
                                    tuned, variables)
    return chosen, jnp.where(kept, val, acc), kept, epochs
