"""The jitted population programs of one model shape (`make_trainer`, cached per shape and schedule)."""

from __future__ import annotations

import functools

import jax
import numpy as np

from neon_jax import compile_cache, programs
from neon_jax.fit import loops, population
from neon_jax.fit.loops import Learner, cross_entropy
from neon_jax.fit.optim import masked_adam
from neon_jax.nets import MaskedMLP


@programs.cached("trainers", maxsize=32)
def make_trainer(model: MaskedMLP, learning_rate: float = 1e-3, double_softmax: bool = True) -> Trainer:
    """The `Trainer` of one model shape: one compile per shape and schedule (cached, bounded, `programs`).

    Args: model: the masked MLP of the padded shape; learning_rate: Adam's (PyTorch defaults otherwise);
      double_softmax: the original's loss (`fit.loops.log_probs`).
    """
    trainer = Trainer(Learner(model, masked_adam(learning_rate), cross_entropy(double_softmax)))
    trainer.key = ("fit.trainer", model.dims, model.dropout_rate, learning_rate, double_softmax)
    return trainer


class Trainer:
    """A `Learner` and its jitted population programs (`fit.population`), built by `make_trainer`.

    ``train(key, variables, opt_state, archs, dataset_index, data, *, epochs, batch_size, chunk_size="auto")``,
    ``finetune(key, variables, archs, dataset_index, data, trainable, *, max_epochs, batch_size, patience)``,
    ``evaluate(variables, archs, dataset_index, data)`` (P,) accuracies and ``predict(variables, archs, x)``
    (P, N, k_max) logits; ``init_opt_state(variables)`` starts `train`'s optimiser state. Programs that trace the
    one-network pieces into their own (the environment, the baselines, AMC, ADMM) use `learner` with
    `fit.loops` / `fit.population` directly.
    """

    def __init__(self, learner: Learner):
        self.learner = learner
        self.model = learner.model
        self.key = None  # what the programs' tracing depends on (`make_trainer` sets it): a warm run skips it
        self._executables: dict = {}
        self.train = jax.jit(functools.partial(population.train, learner),
                             static_argnames=("epochs", "batch_size", "chunk_size"))
        self.finetune = jax.jit(functools.partial(population.finetune, learner),
                                static_argnames=("max_epochs", "batch_size", "patience"))
        self.evaluate = jax.jit(functools.partial(population.evaluate, learner))
        self.predict = jax.jit(jax.vmap(functools.partial(loops.logits, learner), in_axes=(0, 0, None)))

    def train_compiled(self, args: tuple, *, epochs: int, batch_size: int):
        """`train` of these arguments (no keywords but the schedule) compiled ahead of time, kept per schedule and
        argument types; through `compile_cache.aot_compile`, so a warm run reads it without tracing it."""
        leaves, treedef = jax.tree_util.tree_flatten(args)
        signature = (epochs, batch_size, treedef, tuple(str(jax.typeof(a)) for a in leaves))
        if signature not in self._executables:
            program = jax.jit(functools.partial(population.train, self.learner, epochs=epochs,
                                                batch_size=batch_size))
            if self.key is not None:
                compile_cache.register(program, (*self.key, "train", epochs, batch_size))
            self._executables[signature] = compile_cache.aot_compile(program, args)
        return self._executables[signature]

    @property
    def train_programs(self) -> int:
        """Executables `train_compiled` holds: one per schedule and argument types."""
        return len(self._executables)

    def init_opt_state(self, variables):
        """Optimiser state for a population (leading axis P), to carry across `train` calls made in chunks.

        Adam's initial state is all zeros (moments and step counts), so it is made on the host from its shapes:
        computing it eagerly would compile a one-op program per parameter shape."""
        shapes = jax.eval_shape(jax.vmap(self.learner.tx.init), variables["params"])
        return jax.device_put(jax.tree_util.tree_map(lambda s: np.zeros(s.shape, s.dtype), shapes))
