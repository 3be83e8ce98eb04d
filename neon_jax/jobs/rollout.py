"""The rollout job: prune every network of one or more zoos with one policy and measure each.

    result = rollout("runs/zoo_cpu", ["diabetes", "no2"], policy="pretrained", passes=4, tau=5)
    result.rows          # one dict per network (`runner.ROW_FIELDS`, plus "split": "train" / "held-out")
    result.totals        # `runner.summarise` of the rows
    result.document()    # what `neon-jax rollout --json` writes

A policy is "random" (the paper's random agent, `pruning.run_baseline("random")`), "pretrained" (the shipped
agent trained nearest tau), the path of an agent (`agent.registry.load_agent`) or a rule (`policies.parse_rule`:
"keep:F", "while:F:D"); every one runs through `runner.run`, one program per width bucket.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import jax

from neon_jax import env as env_lib
from neon_jax import learn, policies, pruning, runner
from neon_jax import zoo as zoo_lib
from neon_jax.agent import registry
from neon_jax.pool import EnvPool
from neon_jax.presets import get_preset
from neon_jax.rollout import policy_program

POLICY_FORMS = ("random", "pretrained", "PATH", "keep:F", "while:F:D")


@dataclasses.dataclass
class RolloutResult:
    """Rows (one per network), their totals, the run's programs and timings, and the settings that made them."""

    rows: list[dict]
    totals: dict
    run: runner.RunResult
    settings: dict
    agent: str | None = None  # the loaded agent's description, for an agent policy

    def document(self) -> dict:
        """The JSON document of the run: settings, device, programs, timings, totals and every network's row."""
        device = jax.devices()[0]
        return {"command": "rollout", "settings": self.settings,
                "device": {"platform": device.platform, "kind": device.device_kind, "jax": jax.__version__},
                "compile_seconds": self.run.compile_seconds, "run_seconds": self.run.run_seconds,
                "programs": self.run.groups, "totals": self.totals, "networks": self.rows}


def check_policy(spec: str) -> str:
    """`spec` if it names a policy (`POLICY_FORMS`); a ValueError naming the forms otherwise (before any work)."""
    if spec in ("random", "pretrained"):
        return spec
    if policies.is_rule(spec):
        policies.parse_rule(spec)
        return spec
    if Path(spec).with_suffix(".json").exists() or Path(spec).is_dir():
        return spec
    raise ValueError(f"unknown policy {spec!r}; choose one of: {', '.join(POLICY_FORMS)} (PATH: an agent file "
                     f"of `neon-jax train-agent`)")


def load_pairs(zoo_root, datasets: list[str], data_dir=None) -> list[tuple[zoo_lib.Zoo, zoo_lib.PreparedData]]:
    """(zoo, the rows and splits it was trained on) of each dataset under `zoo_root`; clear errors for a
    missing zoo or one of another dataset."""
    root = Path(zoo_root)
    pairs = []
    for name in datasets:
        folder = root / name
        if not (folder / "zoo.json").is_file():
            raise ValueError(f"no zoo for {name!r}: {folder} holds no zoo.json "
                             f"(build one with `neon-jax zoo --dataset {name} --out {root}`)")
        z = zoo_lib.load_zoo(folder)
        if z.dataset != name:
            raise ValueError(f"{folder} holds a zoo of {z.dataset!r}, not of {name!r}")
        # the same rows and splits the zoo was trained on (checked against the zoo's digest by the pool)
        pairs.append((z, zoo_lib.prepare_data(name, z.preset, seed=int(z.meta["data_seed"]), data_dir=data_dir)))
    return pairs


def rollout(zoo_root, datasets: list[str], *, policy: str = "pretrained", passes: int = 4, tau: float = 5.0,
            cut: str = "reinit", which: str = "all", preset: str | None = None, seed: int = 0, batch_size: int = 32,
            data_dir=None, progress: bool = False, say: Callable[[str], None] | None = None) -> RolloutResult:
    """Prunes every `which` network of the zoos of `datasets` with `policy`.

    Args:
      zoo_root: the folder of `neon-jax zoo --out` (one subfolder per dataset).
      datasets: distinct dataset names.
      policy: see the module docstring.
      passes, tau, cut: the environment's (`env.EnvConfig`; tau for the reward and the shipped agent's choice).
      which: "train", "heldout" or "all" networks of each zoo.
      preset: the zoos' preset by default; another name must match their shapes.
      seed, batch_size: the run's key and networks per compiled call.
      progress: a progress bar; say: where one-line messages go (None: nowhere).
    """
    policy = check_policy(policy)
    tau = env_lib.validate_tau(tau)
    if not datasets or len(set(datasets)) != len(datasets):
        raise ValueError(f"rollout needs distinct dataset names, got {datasets!r}")
    pairs = load_pairs(zoo_root, datasets, data_dir)
    if preset is not None:
        preset = get_preset(preset)
    else:
        zoo_presets = sorted({z.preset.name for z, _ in pairs})
        if len(zoo_presets) > 1:
            raise ValueError(f"the zoos were built with different presets ({', '.join(zoo_presets)}); pass --preset")
        preset = pairs[0][0].preset
    if sum(len(z.indices(which)) for z, _ in pairs) == 0:
        raise ValueError(f"the zoos hold no {which!r} networks")
    pool = EnvPool.from_zoos(pairs, which, tau, preset)
    config = env_lib.EnvConfig(passes=passes, cut=cut)
    if say:
        say(f"rollout: {len(pool)} networks ({', '.join(datasets)}), policy {policy}, {passes} pass(es), "
            f"batches of {min(batch_size, len(pool))}")
    description = None
    if policy == "random":
        result = pruning.run_baseline("random", pool, preset, passes=passes, cut=cut, seed=seed,
                                      batch_size=batch_size, progress=progress)
    elif policies.is_rule(policy):
        rule = policies.parse_rule(policy)
        result = runner.run(lambda dims: (policy_program(env_lib.NeonEnv(config, dims, preset), policies.rule_policy),
                                          rule), pool, seed=seed, batch_size=batch_size, progress=progress)
    else:
        loaded = registry.load_agent(policy, preset, tau)
        description = loaded.description
        if say:
            say(f"agent: {description}")
        result = learn.run_agent(loaded.agent, loaded.actor, pool, preset, config, seed=seed, batch_size=batch_size,
                                 progress=progress)
    zoos = {z.dataset: z for z, _ in pairs}
    rows = [dict(r, split="held-out" if zoos[r["dataset"]].heldout[r["network"]] else "train") for r in result.rows]
    settings = {"datasets": list(datasets), "zoo": str(zoo_root), "data_dir": data_dir, "which": which,
                "policy": policy, "passes": passes, "tau": tau, "seed": seed, "preset": preset.name, "cut": cut,
                "batch": batch_size}
    return RolloutResult(rows=rows, totals=runner.summarise(rows), run=result, settings=settings, agent=description)
