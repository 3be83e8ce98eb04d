"""Sharding the batch axis over a device mesh changes where the work runs, not the numbers.

Runs in a subprocess with 8 simulated CPU devices (``XLA_FLAGS=--xla_force_host_platform_device_count=8`` must be
set before JAX starts): population training, a roll-out and the agent's update on it, each once unsharded and once
with the batch on an 8-device mesh (`neon_jax.sharding`), at the tiny preset.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent(r"""
    import jax, jax.numpy as jnp, numpy as np
    assert jax.device_count() == 8, jax.devices()
    from neon_jax import agent as agent_lib, env as env_lib, nets, sharding, fit, zoo
    from neon_jax.policies import random_policy
    from neon_jax.presets import get_preset
    from neon_jax.rollout import make_rollout

    preset = get_preset("tiny")
    B = 8
    mesh = sharding.make_mesh()
    assert mesh.size == 8 and mesh.axis_names == ("batch",)

    def close(a, b, what, rtol=1e-5, atol=1e-5):
        la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
        assert len(la) == len(lb)
        for x, y in zip(la, lb):
            np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol, err_msg=what)

    def spread(tree):  # every batched output really lives on all 8 devices
        for leaf in jax.tree_util.tree_leaves(tree):
            if leaf.ndim and leaf.shape[0] == B:
                assert len(leaf.sharding.device_set) == 8, leaf.sharding

    prepared = zoo.prepare_data("wine", preset, seed=0)
    s = prepared.splits
    dims = nets.NetDims.for_preset(preset, prepared.n_features, prepared.n_classes)
    model = nets.make_model(dims, preset)
    archs = jax.vmap(lambda k: nets.sample_arch(k, preset, dims, prepared.n_features, prepared.n_classes))(
        jax.random.split(jax.random.PRNGKey(0), B))
    variables = nets.init_population(jax.random.PRNGKey(1), model, archs)

    # 1. population training
    trainer = fit.make_trainer(model, preset.learning_rate)
    data = fit.stack_data([(s.x_train, s.y_train)], dims.d_max)
    opt = trainer.init_opt_state(variables)
    index = jnp.zeros(B, jnp.int32)
    key = jax.random.PRNGKey(2)
    ref = trainer.train(key, variables, opt, archs, index, data, epochs=2, batch_size=preset.train_batch)
    sv, so, sa, si = sharding.shard_batch((variables, opt, archs, index), mesh)
    got = trainer.train(key, sv, so, sa, si, sharding.replicate(data, mesh), epochs=2,
                        batch_size=preset.train_batch)
    spread(got[0])
    close(ref[2], got[2], "training losses")
    # Adam divides by sqrt(v): on parameters whose gradients are ~0 (dead neurons) last-bit differences of a
    # differently partitioned matmul become visible steps of size ~lr, so parameters get a looser tolerance
    close(ref[:2], got[:2], "population training", rtol=1e-3, atol=3e-3)
    trained = ref[0]

    # 2. a roll-out of B environments (rollout.make_rollout, random actions: every policy's roll-out is this scan)
    items = [env_lib.make_env_params(jax.tree_util.tree_map(lambda a: a[i], trained),
                                     jax.tree_util.tree_map(lambda a: a[i], archs), s, dims, tau=5.0)
             for i in range(B)]
    params = env_lib.stack_params(items)
    env = env_lib.NeonEnv(env_lib.EnvConfig(passes=1), dims, preset)
    rollout = jax.jit(make_rollout(env, random_policy))
    sparams = sharding.shard_batch(params, mesh)
    keys = jax.random.split(jax.random.PRNGKey(4), B)
    ref_final, ref_traj = rollout(keys, params, None)
    got_final, got_traj = rollout(sharding.shard_batch(keys, mesh), sparams, None)
    spread(got_final.arch)
    close((ref_traj.action, ref_final.arch, ref_final.step), (got_traj.action, got_final.arch, got_final.step),
          "roll-out actions and widths", rtol=0, atol=0)
    close(ref_traj.reward, got_traj.reward, "roll-out rewards", rtol=1e-3, atol=1e-3)
    close(ref_final.variables, got_final.variables, "roll-out weights", rtol=1e-3, atol=3e-3)

    # 3. the agent's update (returns + losses + both Adam steps; a training iteration is the roll-out above, then
    # this) on the roll-out's transitions, the batch sharded: its batch mean becomes an all-reduce
    # the compact agent: the same update code at a fraction of the compile time of the six-branch networks
    agent = agent_lib.Agent(agent_lib.AgentConfig(architecture="compact", batch_size=B), preset)
    state = agent.init(jax.random.PRNGKey(3))
    update = jax.jit(agent_lib.make_update(agent))
    ref_state, ref_metrics = update(state, ref_traj)
    got_state, got_metrics = update(sharding.replicate(state, mesh), got_traj)
    close(ref_metrics, got_metrics, "agent losses", rtol=1e-4, atol=1e-4)
    close(ref_state, got_state, "agent update", rtol=1e-3, atol=3e-3)
    print("SHARDING-OK")
""")


def test_sharded_and_unsharded_runs_agree():
    env = dict(os.environ)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
    env["JAX_PLATFORMS"] = "cpu"
    env.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    out = subprocess.run([sys.executable, "-c", SCRIPT], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0 and "SHARDING-OK" in out.stdout, out.stdout[-3000:] + out.stderr[-6000:]


def test_helpers_validate_shapes():
    import jax
    import jax.numpy as jnp
    import numpy as np
    import pytest

    from neon_jax import sharding

    mesh = sharding.make_mesh(1)
    tree = {"a": jnp.ones((3, 2)), "b": jnp.arange(3)}
    padded = sharding.pad_batch(tree, 4)
    assert padded["a"].shape == (4, 2) and list(padded["b"]) == [0, 1, 2, 2]
    assert sharding.pad_batch(tree, 3) is tree
    placed = sharding.shard_batch(padded, mesh)
    assert placed["a"].shape == (4, 2)
    with pytest.raises(ValueError, match="scalar"):
        sharding.shard_batch({"x": jnp.float32(1.0)}, mesh)
    with pytest.raises(ValueError, match="n_devices"):
        sharding.make_mesh(0)
    assert sharding.process_slice(4) == slice(0, 4)

    f = lambda x, y: {"sum": (x * y).sum(), "row": x + y[0]}
    xs, ys = jnp.arange(12.0).reshape(6, 2), jnp.arange(6.0)[:, None] * jnp.ones((6, 2))
    want = jax.vmap(f)(xs, ys)
    for chunk in (None, 2, 4):  # 4 does not divide 6: lax.map handles the remainder
        got = sharding.vmap_in_chunks(f, chunk)(xs, ys)
        np.testing.assert_allclose(got["sum"], want["sum"])
        np.testing.assert_allclose(got["row"], want["row"])


def test_vmap_sorted_chunks_keeps_the_order_and_tells_each_chunk_its_bound():
    import jax
    import jax.numpy as jnp
    import numpy as np

    from neon_jax import sharding

    depth = jnp.asarray([3, 1, 6, 2, 2, 5, 1], jnp.int32)
    xs = jnp.arange(14.0).reshape(7, 2)

    def f(bound, d, x):
        return {"x": x * 2 + d, "bound": jnp.broadcast_to(bound, ()), "ok": d <= bound}

    want = jax.vmap(lambda d, x: x * 2 + d)(depth, xs)
    for chunk in (1, 3, 7, 16):  # 3 does not divide 7: the last chunk is padded
        got = jax.jit(sharding.vmap_sorted_chunks(f, chunk))(depth, depth, xs)
        np.testing.assert_array_equal(np.asarray(got["x"]), np.asarray(want))
        assert np.asarray(got["ok"]).all()
        bounds = np.asarray(got["bound"])
        if chunk == 3:  # sorted depths 1 1 2 | 2 3 5 | 6: each member sees its own chunk's deepest
            np.testing.assert_array_equal(bounds, [5, 2, 6, 2, 5, 5, 2])
        if chunk == 1:
            np.testing.assert_array_equal(bounds, np.asarray(depth))
        if chunk >= 7:
            assert (bounds == 6).all()


def test_default_chunk_size_runs_wide_networks_one_at_a_time_on_one_cpu():
    """On one CPU device: chunks of 4 for small padded widths (or unknown), 1 from `WIDE_ON_CPU` (paper widths,
    where a vmapped network costs more than one alone); accelerators and meshes keep their own policy."""
    import jax
    import pytest

    from neon_jax import sharding

    if jax.default_backend() != "cpu" or jax.device_count() != 1:
        pytest.skip("the CPU policy needs exactly one CPU device")
    assert sharding.default_chunk_size() == 4
    assert sharding.default_chunk_size(64) == 4
    assert sharding.default_chunk_size(sharding.WIDE_ON_CPU) == 1
    assert sharding.default_chunk_size(1024) == 1
    assert sharding.resolve_chunk_size("auto", 1024) == 1
    assert sharding.resolve_chunk_size(4, 1024) == 4
    assert sharding.resolve_chunk_size(None, 1024) is None
