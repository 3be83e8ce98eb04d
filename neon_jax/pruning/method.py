"""The protocol every pruning method meets, and the registry that names them.

A method is one small class (jaxpruner's shape): what its setting means and which values are valid (`check`),
the sweep the paper reports (`sweep`), how one network is pruned inside the batched program (`prune`), and how its
parameters are counted (`counting`). `pruning.program` builds the one vmapped prune-and-fine-tune program around
any of them; adding a method is one new file that defines its class and calls `register`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import jax

from neon_jax import nets

COUNTINGS = ("structured", "unstructured")


@dataclasses.dataclass(frozen=True)
class Context:
    """What `PruningMethod.prune` may use besides the network: the environment (its trainer, model and
    accuracy), the padded dims and the method's resolved config (`PruningMethod.config`; None for most)."""

    env: Any
    dims: nets.NetDims
    config: Any = None


class PruningMethod:
    """One pruning method.

    Attributes (class-level):
      name: the registry key ("magnitude", ...).
      description: one line for listings.
      counting: "structured" (`nets.count_params` of the remaining architecture) or "unstructured" (that count
        minus the pruned Linear weights); see `pruning.program`.
      uses_passes: an episode of NEON's environment (the random agents) instead of one cut; `passes` and
        `cut` apply to it only.
      tunes_each_step: the environment fine-tunes after every cut (the paper's random agent); otherwise one
        whole-network fine-tune follows the method's pruning.
      sweep: the settings the paper reports ([None] for methods without a setting).
      default: the setting `None` stands for.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    counting: ClassVar[str] = "structured"
    uses_passes: ClassVar[bool] = False
    tunes_each_step: ClassVar[bool] = False
    sweep: ClassVar[tuple] = (None,)
    default: ClassVar[Any] = None

    def check(self, setting):
        """`setting` validated (None = `default`), as a float / int / None; a ValueError naming the problem."""
        if setting is None:
            return self.default
        raise ValueError(f"{self.name!r} takes no setting (use passes=...), got {setting!r}")

    def arrays(self, setting, dims: nets.NetDims) -> dict:
        """The traced form of a checked setting: the program's third argument (one compile for a sweep)."""
        del setting, dims
        return {}

    def config(self, dims: nets.NetDims, amc_config=None, admm_config=None):
        """The method's own resolved, hashable configuration (part of the program's cache key); None if none."""
        del dims, amc_config, admm_config
        return None

    def prune(self, key: jax.Array, p, setting: dict, ctx: Context) -> dict:
        """Prunes one network (no fine-tune yet).

        Args:
          key: this network's key.
          p: its `EnvParams` (variables, arch, data splits).
          setting: `arrays(...)` of the setting.
          ctx: `Context`.

        Returns:
          {"variables", "arch", "masks" (per-kernel keep masks of unstructured pruning, or None), "extra" (row
          fields), "params_after" (None: counted by `counting`)}.
        """
        raise NotImplementedError(f"{self.name!r} prunes through NEON's environment (uses_passes)")

    def own_retrain_epochs(self, config) -> int | None:
        """Epochs of the method's own retrain, which replaces the common fine-tune (ADMM); None: none."""
        del config
        return None

    def floors_accuracy(self, config) -> bool:
        """Reports max(pruned, unpruned) test accuracy, as the original AMC did (neon_spec.md §12 C3)."""
        del config
        return False

    def sequential(self, config) -> bool:
        """Prunes the batch's networks one after another inside the program (`lax.map`) instead of `vmap`."""
        del config
        return False


METHODS: dict[str, PruningMethod] = {}


def register(method: PruningMethod) -> PruningMethod:
    """Adds `method` to `METHODS` under its name (once)."""
    if not method.name or method.name in METHODS:
        raise ValueError(f"a pruning method needs a new name, got {method.name!r}")
    if method.counting not in COUNTINGS:
        raise ValueError(f"{method.name}: counting must be one of {COUNTINGS}, got {method.counting!r}")
    METHODS[method.name] = method
    return method


def get_method(name: str) -> PruningMethod:
    """The registered method `name`; a ValueError listing them otherwise."""
    if name not in METHODS:
        raise ValueError(f"unknown baseline {name!r}; choose one of {', '.join(METHODS)}")
    return METHODS[name]


def check_fraction(name: str, setting, what: str, out_of_range: str | None = None) -> float:
    """A number in (0, 1), or a ValueError naming `what` it is (`out_of_range`: the whole message for a number
    outside (0, 1) instead)."""
    try:
        value = float(setting)
    except (TypeError, ValueError):
        raise ValueError(f"{name!r} needs a number in (0, 1), got {setting!r}") from None
    if not 0.0 < value < 1.0:
        raise ValueError(out_of_range or f"{name!r} needs a fraction in (0, 1) ({what}), got {setting!r}")
    return value
