"""The main job: prune one network on one dataset with a trained agent (no agent training).

    result = neon_jax.prune("breast_cancer", tau=5)          # trains a random base network first
    result.pruned                                            # a DenseNetwork with the real, smaller widths
"""

from __future__ import annotations

import dataclasses
import json
import time
from importlib import resources
from pathlib import Path

import jax
import numpy as np

from neon_jax import agent as agent_lib
from neon_jax import interop, nets, runner
from neon_jax.env import EnvConfig, NeonEnv, validate_tau
from neon_jax.learn import agent_env
from neon_jax.policies import random_policy
from neon_jax.pool import EnvPool
from neon_jax.presets import Preset, get_preset
from neon_jax.rollout import policy_program
from neon_jax.zoo import Zoo, build_zoo, prepare_data

# preset -> {training tau: policy stem in neon_jax/assets/}; `prune` takes the agent trained nearest the user's tau
PRETRAINED = {"cpu": {1.0: "agent_cpu_tau1", 5.0: "agent_cpu_tau5", 50.0: "agent_cpu_tau50"}}


@dataclasses.dataclass
class PruneResult:
    dataset: str
    original: nets.DenseNetwork
    pruned: nets.DenseNetwork
    report: dict


def pretrained_checkpoint(preset: str | Preset, tau: float | None = None) -> Path:
    """Path (stem) of the shipped agent for networks of `preset`, the one trained nearest `tau` (on a log scale;
    None means the default tau of 5).

    The preset's own agents first; a preset without any (such as `tiny`) takes the agents of a preset whose state
    maps hold its networks (as many hidden layers, as wide). A clear error if none does.
    """
    preset = get_preset(preset)
    candidates = [preset.name] + [name for name in PRETRAINED if name != preset.name]
    fits = [name for name in candidates if name in PRETRAINED and _maps_hold(get_preset(name), preset)]
    if not fits:
        raise ValueError(f"no pretrained agent ships for preset {preset.name!r} (its networks have up to "
                         f"{preset.max_hidden} hidden layers of {preset.w_max} neurons; agents ship for "
                         f"{', '.join(PRETRAINED)}); train one with `neon-jax train-agent` and pass --agent PATH")
    by_tau = PRETRAINED[fits[0]]
    target = np.log1p(5.0 if tau is None else float(tau))
    nearest = min(by_tau, key=lambda t: (abs(np.log1p(t) - target), t))
    path = Path(str(resources.files("neon_jax") / "assets" / by_tau[nearest]))
    if not path.with_suffix(".npz").exists():
        raise FileNotFoundError(f"the pretrained agent file {path.with_suffix('.npz')} is missing from the install")
    return path


def _maps_hold(agent_preset: Preset, preset: Preset) -> bool:
    return agent_preset.feature_width >= preset.w_max and agent_preset.feature_rows >= preset.max_hidden + 1


def load_agent(spec: str, preset: Preset, tau: float | None = None):
    """'pretrained' (the shipped agent trained nearest `tau`), 'random' or a checkpoint path ->
    (agent, actor_params, random_actions, description, meta). The agent must observe networks of `preset`
    (`Agent.observation_preset`)."""
    if spec == "random":
        agent = agent_lib.Agent(agent_lib.AgentConfig(batch_size=1), preset)
        return agent, agent.init(jax.random.PRNGKey(0)).actor, True, "random policy", {}
    path = pretrained_checkpoint(preset, tau) if spec == "pretrained" else Path(spec)
    agent, actor, meta = agent_lib.load_policy(path)
    try:
        agent.observation_preset(preset)
    except ValueError as err:
        raise ValueError(f"the agent at {path} cannot observe these networks: {err}") from None
    trained_tau = meta.get("tau", meta.get("settings", {}).get("tau"))
    what = f"{spec} {path.name}" if spec == "pretrained" else spec
    tau_note = f", trained at tau {float(trained_tau):g}" if trained_tau is not None else ""
    return agent, actor, False, f"{what} ({meta.get('episodes', '?')} training episodes{tau_note})", meta


def _single_network_zoo(network: nets.DenseNetwork, prepared, preset: Preset) -> Zoo:
    """A one-network zoo around a user's network, checked against the dataset."""
    if network.n_features != prepared.n_features:
        raise ValueError(f"the network expects {network.n_features} input features but the dataset has "
                         f"{prepared.n_features}")
    if network.n_classes != prepared.n_classes:
        raise ValueError(f"the network has {network.n_classes} outputs but the dataset has "
                         f"{prepared.n_classes} classes")
    if max(network.hidden_widths) > preset.w_max or len(network.hidden_widths) > preset.max_hidden:
        raise ValueError(f"the network (widths {network.hidden_widths}) does not fit preset {preset.name!r} "
                         f"(at most {preset.max_hidden} hidden layers of width <= {preset.w_max}); "
                         f"try --preset paper")
    dims = nets.NetDims.for_preset(preset, prepared.n_features, prepared.n_classes)
    variables, arch = nets.expand(network, dims)
    stack = lambda t: jax.tree_util.tree_map(lambda a: a[None], t)
    test_acc = float((np.argmax(network.logits(prepared.splits.x_test), 1) == prepared.splits.y_test).mean())
    return Zoo(dataset=prepared.dataset.name, preset=preset, dims=dims, variables=stack(variables), archs=stack(arch),
               train_accuracy=np.array([np.nan]), test_accuracy=np.array([test_acc]), heldout=np.array([False]),
               meta={"split_digest": prepared.split_digest()})


def prune(dataset, *, data_dir=None, network=None, tau: float = 5.0, passes: int = 4, agent: str = "pretrained",
          preset: str | Preset = "cpu", seed: int = 0, greedy: bool = False, cut: str | None = None,
          progress=print) -> PruneResult:
    """Prunes a network on a dataset with a trained agent.

    Args:
      dataset: a dataset name (see `neon-jax datasets`), a CSV path, or a loaded `data.Dataset`.
      data_dir: folder(s) of CSV datasets.
      network: a `DenseNetwork`, a PyTorch file (``.pt``: ``torch.save`` of an ``nn.Sequential`` or of
        ``{"state_dict", "layers"}``, see `interop.from_torch_file`), a ``.safetensors`` export, or a path written by
        `nets.save_dense_network`; None trains a random base network of the preset's architecture space first.
      tau: tolerated accuracy drop in points (paper: 1, 5, 50).
      passes: visits per hidden layer (paper's best: 4).
      agent: "pretrained" (the agent shipped for the preset), "random", or a checkpoint path.
      greedy: argmax actions instead of sampling (the original samples).
      cut: "reinit" or "keep_best"; default: the cut the agent was trained with ("reinit" for the random policy).
    Returns:
      `PruneResult` with the original and pruned `DenseNetwork`s and a report dict (widths, parameters,
      compression, test accuracies, seconds, measured NumPy batch-256 latency before/after and its speedup).
    """
    tau = validate_tau(tau)
    preset = get_preset(preset)
    say = progress or (lambda *_: None)
    start = time.perf_counter()
    prepared = prepare_data(dataset, preset, seed=seed, data_dir=data_dir)
    agent_obj, actor_params, random_actions, agent_desc, agent_meta = load_agent(agent, preset, tau)
    if cut is None:
        cut = agent_meta.get("env", agent_meta.get("settings", {}).get("env", {})).get("cut", "reinit")
    if network is None:
        say(f"training a random base network on {prepared.dataset.name} "
            f"({prepared.dataset.n_rows} rows, preset {preset.name}) ...")
        zoo = build_zoo(prepared, preset, n=1, n_heldout=0, seed=seed)
    else:
        if not isinstance(network, nets.DenseNetwork):
            network = interop.load_network(network)  # .pt/.pth (PyTorch), .safetensors, or a neon_jax network
        zoo = _single_network_zoo(network, prepared, preset)
    base_seconds = time.perf_counter() - start
    pool = EnvPool.from_zoos([(zoo, prepared)], "all", tau, preset)
    env_config = EnvConfig(passes=passes, cut=cut)
    if random_actions:  # the random policy needs no actor (the same draws as an actor's uniform actions)
        program, policy = policy_program(NeonEnv(env_config, pool.dims, preset), random_policy), None
    else:
        program = agent_lib.policy_program(agent_env(agent_obj, pool.dims, preset, env_config), agent_obj)
        policy = agent_obj.policy(actor_params, greedy)
    say(f"pruning with the {agent_desc} agent (tau={tau:g}, passes={passes}) ...")
    t0 = time.perf_counter()
    result = runner.run(program, pool, policy, seed=seed, batch_size=1, keep_networks=True)
    prune_seconds = time.perf_counter() - t0
    row = result.rows[0]
    v0, a0 = jax.tree_util.tree_map(lambda a: a[0], (pool.variables, pool.archs))
    original = nets.compact(v0, a0, pool.dims, preset.dropout_rate)
    final_variables, final_arch = result.networks[0]
    pruned = nets.compact(final_variables, final_arch, pool.dims, preset.dropout_rate)
    report = {
        "dataset": prepared.dataset.name, "rows": prepared.dataset.n_rows, "features": prepared.n_features,
        "classes": prepared.n_classes, "preset": preset.name, "tau": tau, "passes": passes, "agent": agent_desc,
        "greedy": greedy, "seed": seed, "cut": cut,
        **row,
        "base_network_seconds": base_seconds, "prune_seconds_including_compile": prune_seconds,
        "prune_compile_seconds": result.compile_seconds, "prune_run_seconds": result.run_seconds,
        # measured, not inferred from the parameter count: NumPy eval forward pass, batch 256, this machine
        **interop.latency_report(original, pruned),
    }
    return PruneResult(dataset=prepared.dataset.name, original=original, pruned=pruned, report=report)


def save_result(result: PruneResult, out_dir, overwrite: bool = False) -> Path:
    """Writes original.{npz,json}, pruned.{npz,json} and report.json to `out_dir` (never silently overwrites)."""
    out = Path(out_dir)
    if (out / "report.json").exists() and not overwrite:
        raise FileExistsError(f"{out} already holds a prune result; pass --overwrite to replace it")
    out.mkdir(parents=True, exist_ok=True)
    nets.save_dense_network(result.original, out / "original")
    nets.save_dense_network(result.pruned, out / "pruned")
    (out / "report.json").write_text(json.dumps(result.report, indent=1))
    return out
