"""The agent's static settings (`AgentConfig`) and the warm-up rule."""

from __future__ import annotations

import dataclasses

from neon_jax.choices import ARCHITECTURES, REWARD_TRANSFORMS


def _flag(default, help: str | None, flag: str | None = None, choices=None):
    """A field with its command-line flag (`add_flags`): `help` None = no flag of its own."""
    return dataclasses.field(default=default, metadata={"help": help, "flag": flag, "choices": choices})


@dataclasses.dataclass(frozen=True)
class AgentConfig:
    """Static settings of the agent.

    Attributes:
      architecture: "neon" (the original's six-branch networks, sized by the preset's feature width) or
        "compact" (beyond the paper: permutation-invariant encoders over neurons and rows, whose size does not
        depend on the padded width).
      gamma: discount of the Monte-Carlo returns (the original's effective 0.99, §12 A3).
      actor_lr / critic_lr: Adam learning rates (1e-3 each, separate optimisers).
      legacy_episode_mean_advantage: reproduce §12 A0 (actor loss = -(mean log pi) x (mean advantage)).
      batch_size: episodes rolled out in parallel per update (1 = the original's schedule).

    Beyond the paper (defaults off = faithful; each measured against the faithful agent, see README):
      reward_transform: "none" (the cubic reward as is), "symlog" (sign(r) log(1 + |r|) before the
        returns: the cubic terms span 0..64,000, so one episode that crossed the tolerance outweighs hundreds
        that did not, and the policy collapses to "keep everything") or "scaled" (r / 64,000: the paper's
        trade-off unchanged, so the same optimal policy, with O(1) targets for the critic; symlog instead
        shrinks the rho^3 bonus for ending above the original accuracy from 1,600x the in-tolerance rho to 3x).
      normalise_advantages: standardise the advantages over the valid steps of each batch (actor loss only).
      entropy_coef: weight of an entropy bonus on the policy (keeps it from collapsing before it has learnt).
      observe_progress: also feed the episode's progress (`features.progress_features`: accuracy change so
        far against tau, tau, steps taken, parameters left) through a small branch beside the six. The
        original state never says whether the tolerance is used up, which the cubic reward turns on.
      update_epochs: gradient steps taken on each batch of episodes (1 = the original's one step). More than
        one turns the actor loss into PPO's clipped surrogate (Schulman et al. 2017, `rlax`'s
        `clipped_surrogate_pg_loss`) against the policy that acted, so a batch is reused without the policy
        running away from the data; the critic regresses the same Monte-Carlo returns at every step. Episodes
        cost seconds of fine-tuning each, an update a few milliseconds: reuse is the cheap side.
      clip_epsilon: PPO's ratio clip (only used when update_epochs > 1).
    """

    architecture: str = _flag("neon", "actor-critic networks: neon (the paper's) or compact (default: neon)",
                              choices=ARCHITECTURES)
    gamma: float = _flag(0.99, "discount of the Monte-Carlo returns (the original: 0.99; 0 credits each cut with its "
                               "own reward only)")
    actor_lr: float = _flag(1e-3, "Adam learning rate of the actor (default: %(default)s)")
    critic_lr: float = _flag(1e-3, "Adam learning rate of the critic (default: %(default)s)")
    legacy_episode_mean_advantage: bool = _flag(False, None)  # set by --legacy with the other LEGACY_FIELDS
    batch_size: int = _flag(8, "episodes per update (1 = the original's schedule)", flag="--batch")
    reward_transform: str = _flag(
        "none", "beyond the paper: learn from sign(r) log(1+|r|) of the cubic reward (symlog) or from r / 64,000 "
                "(scaled: the paper's trade-off, O(1) critic targets)", choices=REWARD_TRANSFORMS)
    normalise_advantages: bool = _flag(False, "beyond the paper: standardise advantages over each batch")
    entropy_coef: float = _flag(0.0, "beyond the paper: entropy bonus weight")
    observe_progress: bool = _flag(False, "beyond the paper: show the agent the accuracy change so far against tau, "
                                          "tau, steps taken and parameters left")
    update_epochs: int = _flag(1, "beyond the paper: Adam steps per batch of episodes (the original: 1); more than "
                                  "one uses PPO's clipped surrogate against the policy that acted")
    clip_epsilon: float = _flag(0.2, "PPO's ratio clip (with --update-epochs > 1)")

    LEGACY_FIELDS = ("legacy_episode_mean_advantage",)

    def __post_init__(self):
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"unknown agent architecture {self.architecture!r}; choose one of {ARCHITECTURES}")
        if self.batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        if not 0.0 <= self.gamma <= 1.0:
            raise ValueError(f"gamma must be in [0, 1], got {self.gamma}")
        if self.reward_transform not in REWARD_TRANSFORMS:
            raise ValueError(f"unknown reward_transform {self.reward_transform!r}; choose one of {REWARD_TRANSFORMS}")
        if self.entropy_coef < 0:
            raise ValueError(f"entropy_coef must be >= 0, got {self.entropy_coef}")
        if self.update_epochs < 1:
            raise ValueError(f"update_epochs must be >= 1, got {self.update_epochs}")
        if not 0.0 < self.clip_epsilon < 1.0:
            raise ValueError(f"clip_epsilon must be in (0, 1), got {self.clip_epsilon}")
        if self.update_epochs > 1 and self.legacy_episode_mean_advantage:
            raise ValueError("legacy_episode_mean_advantage reproduces the original's single update; it cannot be "
                             "combined with update_epochs > 1")

    def with_legacy(self, on: bool = True) -> AgentConfig:
        """This config with every switch that reproduces a bug of the original set to `on` (§12 A0)."""
        return dataclasses.replace(self, **{name: bool(on) for name in self.LEGACY_FIELDS})

    @property
    def faithful(self) -> bool:
        """True when none of the beyond-the-paper options is on."""
        return (self.reward_transform == "none" and not self.normalise_advantages and self.entropy_coef == 0.0
                and not self.observe_progress and self.gamma == 0.99 and self.update_epochs == 1)


def add_flags(parser, cls=None) -> None:
    """Adds one flag per field of `cls` (default `AgentConfig`) that declares one: ``--field-name`` (or the field's
    own), typed by its default, booleans as switches, choices where the field has them. JAX-free (the CLI's
    parsers are built without importing JAX)."""
    for f in dataclasses.fields(cls or AgentConfig):
        meta = f.metadata
        if not meta.get("help"):
            continue
        flag = meta["flag"] or "--" + f.name.replace("_", "-")
        if isinstance(f.default, bool):
            parser.add_argument(flag, dest=f.name, action="store_true", help=meta["help"])
        else:
            parser.add_argument(flag, dest=f.name, type=type(f.default), default=f.default, choices=meta["choices"],
                                help=meta["help"])


def from_flags(args, legacy: bool = False, cls=None):
    """The `cls` (default `AgentConfig`) of parsed `add_flags` flags; `legacy` sets its LEGACY_FIELDS."""
    cls = cls or AgentConfig
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if f.metadata.get("help")}
    return cls(**values).with_legacy(legacy)


def warmup_episodes(n_networks: int) -> int:
    """W = min(2N, 500) uniformly random warm-up episodes (neon_spec.md §1.3)."""
    return min(2 * n_networks, 500)

