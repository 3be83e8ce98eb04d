"""The actor and critic networks (flax): the original's six branches or a compact permutation-invariant trunk,
then 300-300 heads (neon_spec.md §6.1), with PyTorch's default initialisation."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from neon_jax.features import Observation


def _torch_uniform(fan_in):
    bound = 1.0 / np.sqrt(max(fan_in, 1))
    return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -bound, bound)


class TorchDense(nn.Module):
    """Dense layer with PyTorch's default initialisation (weights and bias U(+-1/sqrt(fan_in)))."""

    features: int

    @nn.compact
    def __call__(self, x):
        fan_in = x.shape[-1]
        kernel = self.param("kernel", _torch_uniform(fan_in), (fan_in, self.features))
        bias = self.param("bias", _torch_uniform(fan_in), (self.features,))
        return x @ kernel + bias


class RowBatchNorm(nn.Module):
    """BatchNorm2d at batch size 1 in train mode: statistics over the rows of one observation, per channel."""

    @nn.compact
    def __call__(self, x):  # x: (rows, channels)
        scale = self.param("scale", nn.initializers.ones, (x.shape[-1],))
        bias = self.param("bias", nn.initializers.zeros, (x.shape[-1],))
        mean = x.mean(0)
        var = ((x - mean) ** 2).mean(0)
        return (x - mean) * jax.lax.rsqrt(var + 1e-5) * scale + bias


class RowBranch(nn.Module):
    """A dense map shared over rows, each followed by row batch-norm and ReLU; output flattened channel-major."""

    features: tuple[int, ...]

    @nn.compact
    def __call__(self, x):  # (rows, inputs)
        for f in self.features:
            x = nn.relu(RowBatchNorm()(TorchDense(f)(x)))
        return x.T.reshape(-1)  # index = channel * rows + row, as PyTorch's flatten of (C, rows, 1)


class MLPBranch(nn.Module):
    features: tuple[int, ...]

    @nn.compact
    def __call__(self, x):
        for f in self.features:
            x = nn.relu(TorchDense(f)(x))
        return x


class NeonTrunk(nn.Module):
    """The original's six branches -> (2R + 5R + 5R + 10 + 20 + 20,) features (170 for R = 10)."""

    @nn.compact
    def __call__(self, obs: Observation):
        rows = obs.net_topology.shape[0]
        per_row = lambda m: jnp.transpose(m, (1, 0, 2)).reshape(rows, -1)  # (8, R, F) -> (R, 8F)
        return jnp.concatenate([
            RowBranch((50, 5, 2), name="net_topology")(obs.net_topology),
            RowBranch((100, 10, 5), name="net_activations")(per_row(obs.net_activations)),
            RowBranch((100, 10, 5), name="net_weights")(per_row(obs.net_weights)),
            MLPBranch((10, 10, 10), name="layer_topology")(obs.layer_topology),
            MLPBranch((500, 500, 20), name="layer_activations")(obs.layer_activations.reshape(-1)),
            MLPBranch((500, 500, 20), name="layer_weights")(obs.layer_weights.reshape(-1)),
        ])


class CompactTrunk(nn.Module):
    """Beyond the paper: a permutation-invariant encoder whose size does not depend on the feature width.

    Every neuron's 8 statistics (activation and weight) are embedded by a shared MLP and pooled (mean and max
    over the layer's non-padded neurons); rows are then pooled the same way for the network-level part. The
    padded width only changes the amount of pooling, never the parameter count.
    """

    hidden: int = 64

    @nn.compact
    def __call__(self, obs: Observation):
        neuron = MLPBranch((self.hidden, self.hidden), name="neuron_encoder")

        def pool_layer(act, wts):  # (8, F) each -> (2 * hidden,)
            stats = jnp.concatenate([act, wts], axis=0).T  # (F, 16)
            alive = (jnp.abs(stats).sum(-1) > 0).astype(jnp.float32)[:, None]
            emb = neuron(stats) * alive
            n = jnp.maximum(alive.sum(), 1.0)
            return jnp.concatenate([emb.sum(0) / n, emb.max(0)])

        layer = pool_layer(obs.layer_activations, obs.layer_weights)
        rows = jax.vmap(pool_layer, in_axes=(1, 1))(obs.net_activations, obs.net_weights)  # (R, 2h)
        row_in = jnp.concatenate([rows, obs.net_topology], axis=-1)
        row_emb = MLPBranch((self.hidden,), name="row_encoder")(row_in)
        network = jnp.concatenate([row_emb.mean(0), row_emb.max(0)])
        return jnp.concatenate([layer, network, MLPBranch((10,), name="layer_topology")(obs.layer_topology)])


class AgentNet(nn.Module):
    """Trunk + 300-300 head to `outputs` (5 logits for the actor, 1 value for the critic)."""

    outputs: int
    architecture: str = "neon"
    observe_progress: bool = False

    @nn.compact
    def __call__(self, obs: Observation):
        trunk = NeonTrunk() if self.architecture == "neon" else CompactTrunk()
        x = trunk(obs)
        if self.observe_progress:
            if obs.progress is None:
                raise ValueError("this agent observes the episode's progress, but the observation has none "
                                 "(observations from a NeonEnv carry it)")
            x = jnp.concatenate([x, MLPBranch((32, 32), name="progress")(obs.progress)])
        x = MLPBranch((300, 300), name="head")(x)
        out = TorchDense(self.outputs, name="out")(x)
        return out if self.outputs > 1 else out[0]


