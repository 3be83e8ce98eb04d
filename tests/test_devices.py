"""Every batched path on 1, 2, 4, 8 devices (simulated CPU devices): the same rows, networks and choices.

The multi-device checks run in a subprocess started with ``XLA_FLAGS=--xla_force_host_platform_device_count=8``
(set before JAX starts); inside it `sharding.resolve_devices(n)` takes the first n devices, so one process compiles
each path for every count. One device is the unsharded path (the CPU's chunked programs).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def run_with_devices(script: str, n_devices: int, *args, timeout: int = 900) -> subprocess.CompletedProcess:
    """`script` (python -c) in a fresh process with `n_devices` simulated CPU devices, this checkout first."""
    env = dict(os.environ)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={n_devices}").strip()
    env["JAX_PLATFORMS"] = "cpu"
    env.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-c", script, *map(str, args)], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_resolve_devices_and_padding_on_one_device():
    import jax
    import jax.numpy as jnp

    from neon_jax import sharding

    n = jax.device_count()
    assert sharding.resolve_devices(None).size == n and sharding.resolve_devices(1).size == 1
    for bad in (0, -1, n + 1):
        with pytest.raises(ValueError, match=f"between 1 and {n} .*got {bad}"):
            sharding.resolve_devices(bad)
    assert sharding.active_mesh() is None and not sharding.spreads(None)
    mesh = sharding.resolve_devices(1)
    with sharding.use_mesh(mesh):
        assert sharding.active_mesh() is mesh and sharding.job_mesh(None) is mesh
        assert not sharding.spreads(mesh) or jax.process_count() > 1
    assert sharding.active_mesh() is None
    assert sharding.run_record(mesh) == {"devices": 1, "processes": 1, "platform": jax.devices()[0].platform}

    tree = {"a": jnp.arange(6.0).reshape(3, 2), "b": np.arange(3)}
    padded, mask = sharding.pad_to_mesh(tree, sharding.make_mesh(1))
    assert padded is tree and mask.tolist() == [True] * 3
    if n >= 2:  # 3 entries on 2 devices: one padded copy of the last, masked
        padded, mask = sharding.pad_to_mesh(tree, sharding.resolve_devices(2))
        assert list(padded["b"]) == [0, 1, 2, 2] and mask.tolist() == [True, True, True, False]
        back = sharding.drop_padding(padded, mask)
        np.testing.assert_array_equal(back["a"], tree["a"])
