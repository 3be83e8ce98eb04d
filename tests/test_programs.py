"""`neon_jax.programs`: bounded program caches, one clear, and a long run whose memory maps plateau."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from neon_jax import fit, nets, programs, pruning, select
from neon_jax import zoo as zoo_lib
from neon_jax.pool import EnvPool
from neon_jax.presets import PRESETS

TINY = PRESETS["tiny"]


@pytest.fixture
def limits():
    """Restores the process's limits after a test that changes them."""
    saved = programs.LIMITS
    yield
    programs.restore(saved)


def test_a_cache_keeps_its_most_recently_used_entries(limits):
    cache = programs.ProgramCache("test entries", maxsize=2)
    built = []
    get = lambda k: cache.get(k, lambda: built.append(k) or f"program {k}")  # noqa: E731
    assert [get(k) for k in "aba"] == ["program a", "program b", "program a"] and built == ["a", "b"]
    get("c")  # evicts b, the least recently used
    assert cache.keys() == ["a", "c"] and cache.evicted == 1
    get("b")
    assert built == ["a", "b", "c", "b"] and cache.keys() == ["c", "b"]
    programs.configure(eviction=False)
    for k in "xyz":
        get(k)
    assert len(cache) == 5  # eviction off: nothing goes
    programs.clear()
    assert len(cache) == 0
    with pytest.raises(ValueError, match="maxsize must be >= 1"):
        programs.ProgramCache("none", 0)
    with pytest.raises(ValueError, match=r"unknown program limit\(s\) \['max_programs'\]"):
        programs.configure(max_programs=3)


def test_the_library_caches_are_bounded_and_cleared_by_one_call():
    names = {c.name for c in programs._CACHES}
    assert {"runner executables", "policy programs", "candidate programs", "baseline programs",
            "trainers"} <= names
    assert select.cached_candidates_program  # imported: its cache is registered
    model = nets.make_model(nets.NetDims(4, 3, 2, 8))
    assert fit.make_trainer(model) is fit.make_trainer(model)  # cached
    assert len(fit.make_trainer.cache) >= 1
    programs.clear()
    assert len(fit.make_trainer.cache) == 0 and programs.compiled_since_clear() == 0


def test_compiles_are_counted_and_a_checkpoint_clears_past_the_bound(limits):
    programs.clear()
    f = jax.jit(lambda x: jnp.tanh(x).sum())
    for n in range(1, 4):
        f(jnp.ones(n + 1000))  # shapes no other test compiles
    assert programs.compiled_since_clear() >= 3
    programs.configure(max_compiled=None, clear_fraction=1.0)
    assert not programs.checkpoint()
    programs.configure(max_compiled=3)
    said = []
    assert programs.checkpoint(said.append) and programs.compiled_since_clear() == 0 and not said
    assert "compiled since clear" in programs.status()
    stats = programs.stats()
    assert stats["memory_maps"] > 0 and stats["map_limit"] > 0 and stats["clears"] >= 1


def test_near_the_map_limit_a_checkpoint_clears_and_says_what_to_do(limits, monkeypatch):
    monkeypatch.setattr(programs, "map_limit", lambda: 100)  # the process holds far more than 80 maps
    monkeypatch.setattr(programs, "_warned", False)
    said = []
    programs.configure(max_compiled=None)
    assert programs.checkpoint(said.append)
    assert len(said) == 1 and "vm.max_map_count" in said[0] and "resume" in said[0]
    assert programs.checkpoint(said.append) and len(said) == 1  # once per process


@pytest.fixture(scope="module")
def two_pools():
    """Tiny-preset zoos of two datasets (iris: 4 features, 3 classes; wine: 13 features, 3 classes)."""
    pools = []
    for name in ("iris", "wine"):
        prepared = zoo_lib.prepare_data(name, TINY, seed=0)
        zoo = zoo_lib.build_zoo(prepared, TINY, n=3, n_heldout=1, seed=1, epochs=2)
        pools.append(EnvPool.from_zoos([(zoo, prepared)], "all", 5.0, TINY))
    return pools


def _long_run(pools, rounds):
    """Memory maps after each round of a long run: every round new programs (another dataset, method or batch
    shape), as an evaluation over many cells compiles."""
    maps = []
    for r in range(rounds):
        method = ("magnitude", "structured")[r // 2 % 2]
        pruning.run_baseline(method, pools[r % 2], TINY, seed=r, batch_size=1 + r // 4, buckets=False)
        maps.append(programs.memory_maps())
    return np.array(maps)


@pytest.mark.skipif(programs.memory_maps() is None, reason="needs /proc/self/maps")
def test_a_long_run_keeps_its_programs_and_memory_maps_bounded(two_pools, limits):
    """With eviction, every run over a pool starts at a checkpoint: past `max_compiled` programs they are all
    dropped, so the maps plateau. Without eviction the same run grows by every program it compiles."""
    rounds = 8
    programs.clear()
    # a low bound, so a short test crosses it several times: each round compiles a few programs (its pruning
    # program and the keys), no eager one-op programs any more
    programs.configure(max_compiled=3)
    clears = programs.stats()["clears"]
    bounded = _long_run(two_pools, rounds)
    assert programs.stats()["clears"] - clears >= 2
    assert programs.cached_entries() <= sum(c.maxsize for c in programs._CACHES)
    programs.clear()
    programs.configure(eviction=False)
    start = programs.memory_maps()
    growing = _long_run(two_pools, rounds)
    grown = growing[-1] - start
    kept = bounded.max() - bounded.min()
    # the run without eviction keeps every program: its maps rise all the way (a line)
    assert grown > 300 and np.all(np.diff(growing[rounds // 2:]) >= 0)
    assert growing[-1] - growing[rounds // 2] > 0.25 * grown
    # with eviction they stay within a band well under that growth (a plateau: a saw-tooth between clears): the
    # second half is no higher than the first half's peak, give or take a few programs (about 5 maps each)
    assert bounded[rounds // 2:].max() <= bounded[:rounds // 2].max() + 100, (bounded, growing)
    assert kept < 0.8 * grown, (bounded, growing)
