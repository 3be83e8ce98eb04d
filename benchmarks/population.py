"""Population training's work, as `bench_population_training.py` measures it: the sampled population and its
PyTorch copies checked against it (parity), the padded and real matmul FLOPs, the PyTorch side (warm-up, thread
choice, passes), the interleaved timing loop, and the population trained in width buckets as `zoo.build_zoo`
trains it. `profile_population_training.py` uses the FLOP counts too."""

from __future__ import annotations

import dataclasses
import functools
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.common import CpuMeter, PopulationSetup, choose_torch_threads, compile_aot, take, timeit
from neon_jax import fit, nets

# ----------------------------------------------------------------------------------------------------------------
# Work description


def linear_shapes_padded(dims: nets.NetDims) -> list[tuple[int, int]]:
    """(in, out) of every padded Linear of `dims` (each hidden layer at its own padded width)."""
    return [(dims.fan_in(j), dims.width(j)) for j in range(dims.max_hidden)] + [(dims.fan_in(dims.max_hidden),
                                                                                dims.k_max)]


def linear_shapes_real(dense) -> list[tuple[int, int]]:
    return [tuple(l["kernel"].shape) for l in dense.layers if l["kind"] == "linear"]


def train_flops_per_row(shapes) -> int:
    """Matmul FLOPs of one training row: forward 2*in*out, backward twice that (input and weight gradients)."""
    return int(sum(3 * 2 * i * o for i, o in shapes))


def flop_counts(setup: PopulationSetup, dense, p: int, epochs: int, batch_size: int) -> dict:
    """Rows, minibatches and matmul FLOPs: of the padded JAX program (padded rows of the last batch included) and
    of the real networks."""
    n_max = int(setup.data.x.shape[1])
    n_batches = -(-n_max // batch_size)
    padded_flops_row = train_flops_per_row(linear_shapes_padded(setup.dims))
    real_flops_row = [train_flops_per_row(linear_shapes_real(d)) for d in dense]
    return {"n_max": n_max, "n_batches": n_batches,
            "jax_flops": p * epochs * n_batches * batch_size * padded_flops_row,
            "real_flops": epochs * int(len(setup.y_train)) * float(np.sum(real_flops_row))}


# ----------------------------------------------------------------------------------------------------------------
# One population size, piece by piece


@dataclasses.dataclass
class Population:
    """P sampled architectures and their initial weights (on the device and on the host), optimiser state, keys."""

    p: int
    archs: object
    variables: object
    host_vars: object
    host_archs: object
    opt_state: object
    index: object
    k_init: object
    k_train: object

    def train_args(self, data) -> tuple:
        return self.k_train, self.variables, self.opt_state, self.archs, self.index, data


def sample_population(p: int, setup: PopulationSetup, seed: int) -> Population:
    preset, dims, prepared = setup.preset, setup.dims, setup.prepared
    k_arch, k_init, k_train = jax.random.split(jax.random.PRNGKey(seed), 3)
    archs = jax.vmap(lambda k: nets.sample_arch(k, preset, dims, prepared.n_features, prepared.n_classes))(
        jax.random.split(k_arch, p))
    variables = nets.init_population(k_init, setup.model, archs)
    host_vars, host_archs = jax.device_get(variables), jax.device_get(archs)  # one transfer, then NumPy slices
    return Population(p=p, archs=archs, variables=variables, host_vars=host_vars, host_archs=host_archs,
                      opt_state=setup.trainer.init_opt_state(variables), index=jnp.zeros(p, jnp.int32),
                      k_init=k_init, k_train=k_train)


def pad_features(x: np.ndarray, dims: nets.NetDims):
    return jnp.asarray(np.pad(x, ((0, 0), (0, dims.d_max - x.shape[1]))))


def check_probabilities(setup: PopulationSetup, variables, archs, x_check_pad) -> np.ndarray:
    """The JAX networks' softmax outputs on the check rows, the real classes only."""
    return np.asarray(jax.nn.softmax(setup.trainer.predict(variables, archs, x_check_pad), axis=-1))[
        ..., :setup.prepared.n_classes]


def check_eval_parity_all(setup: PopulationSetup, variables, archs, dense, x_check_pad, probs=None) -> float:
    """The largest difference between the JAX networks' outputs (`probs`, computed when None) and the eval-mode
    outputs of the PyTorch Sequentials built from `dense` (the first len(dense) networks)."""
    from benchmarks.torch_reference import check_eval_parity, to_torch_sequential

    if probs is None:
        probs = check_probabilities(setup, variables, archs, x_check_pad)
    return max(check_eval_parity(to_torch_sequential(d), probs[i], setup.x_check) for i, d in enumerate(dense))


def check_train_parity(setup: PopulationSetup, pop: Population, dense, batch_size: int, parity_nets: int):
    """Train-mode loss and gradients on one batch, dropout off (its random masks cannot be matched), for the first
    `parity_nets` networks: (loss differences, gradient differences)."""
    from benchmarks.torch_reference import check_train_loss_parity, to_torch_sequential

    dims = setup.dims
    model0 = nets.MaskedMLP(dims=dims, dropout_rate=0.0)
    trainer0 = fit.make_trainer(model0, setup.preset.learning_rate)
    xb, yb = setup.x_train[:batch_size], setup.y_train[:batch_size]
    xb_pad = pad_features(xb, dims)
    wb = jnp.ones(len(yb), jnp.float32)
    grad_fn = jax.jit(jax.value_and_grad(functools.partial(fit.loops.loss, trainer0.learner), has_aux=True))
    loss_diffs, grad_diffs = [], []
    for i in range(min(pop.p, parity_nets)):
        v, a = take(pop.host_vars, i), take(pop.host_archs, i)
        (loss, _), grads = grad_fn(v["params"], v["batch_stats"], a, xb_pad, jnp.asarray(yb), wb,
                                   jax.random.PRNGKey(0))
        g_dense = nets.compact({"params": grads, "batch_stats": v["batch_stats"]}, a, dims, 0.0)
        r = check_train_loss_parity(to_torch_sequential(dense[i], dropout_rate=0.0), float(loss), g_dense, xb, yb)
        loss_diffs.append(r["loss_abs_diff"])
        grad_diffs.append(r["grad_max_abs_diff"])
    return loss_diffs, grad_diffs


def check_trained(setup: PopulationSetup, pop: Population, out, x_check_pad, parity_nets: int):
    """The JAX training's result is sane, and its first `parity_nets` trained networks (running batch-norm
    statistics included) still match their PyTorch copies: (epoch losses, check probabilities, max difference)."""
    trained, _, jax_losses = out
    jax_losses = np.asarray(jax_losses)
    if not np.all(np.isfinite(jax_losses)):
        raise AssertionError("JAX training produced non-finite losses")
    host_trained = jax.device_get(trained)
    dims, rate = setup.dims, setup.preset.dropout_rate
    trained_dense = [nets.compact(take(host_trained, i), take(pop.host_archs, i), dims, rate)
                     for i in range(min(pop.p, parity_nets))]
    trained_probs = check_probabilities(setup, trained, pop.archs, x_check_pad)
    return jax_losses, trained_probs, check_eval_parity_all(setup, trained, pop.archs, trained_dense, x_check_pad,
                                                            trained_probs)


def prepare_torch(setup: PopulationSetup, dense, batch_size: int, seed: int, device: str, threads):
    """A warm-up network off the clock (allocator, kernels), then the thread count: (threads, probe seconds)."""
    import torch

    from benchmarks.torch_reference import to_torch_sequential, train_torch

    x, y, lr = setup.x_train, setup.y_train, setup.preset.learning_rate
    warm = to_torch_sequential(dense[0]).to(device)
    train_torch(warm, x, y, 1, batch_size, lr, seed=seed, device=device)

    def probe():  # one epoch of the first networks
        for i, d in enumerate(dense[:3]):
            train_torch(to_torch_sequential(d).to(device), x, y, 1, batch_size, lr, seed=seed + i, device=device)
        if device != "cpu":
            torch.cuda.synchronize()

    threads_used, probe_s = choose_torch_threads(threads, probe)
    torch.set_num_threads(threads_used)
    return threads_used, probe_s


@dataclasses.dataclass
class Timings:
    """What the interleaved timing loop measured."""

    run_times: list  # JAX, wall seconds per repeat
    jax_meters: list
    per_net: np.ndarray  # PyTorch, seconds per (pass, network)
    torch_meters: list
    torch_losses: list = dataclasses.field(default_factory=list)  # the last pass's per-network epoch losses
    out: object = None  # the last JAX run's (trained variables, opt state, epoch losses)
    chunked_times: list | None = None
    chunked_out: object = None


def torch_pass(setup: PopulationSetup, dense, n_torch: int, epochs: int, batch_size: int, seed: int, device: str,
               seconds) -> list:
    """The first `n_torch` networks trained one after the other from their initial weights; each one's seconds
    into `seconds`; their epoch losses returned."""
    import torch

    from benchmarks.torch_reference import to_torch_sequential, train_torch

    losses = []
    for i in range(n_torch):
        m = to_torch_sequential(dense[i]).to(device)
        t0 = time.perf_counter()
        losses.append(train_torch(m, setup.x_train, setup.y_train, epochs, batch_size, setup.preset.learning_rate,
                                  seed=seed + i, device=device))
        if device != "cpu":
            torch.cuda.synchronize()
        seconds[i] = time.perf_counter() - t0
    return losses


def time_interleaved(setup, pop, dense, compiled, chunked, *, n_torch, epochs, batch_size, repeats, torch_repeats,
                     seed, device, skip_torch) -> Timings:
    """JAX runs and PyTorch passes interleaved, so both see the same machine conditions."""
    args = pop.train_args(setup.data)
    t = Timings(run_times=[], jax_meters=[], per_net=np.zeros((0 if skip_torch else torch_repeats, n_torch)),
                torch_meters=[], chunked_times=[] if chunked is not None else None)
    for r in range(max(repeats, 0 if skip_torch else torch_repeats)):
        if r < repeats:
            with CpuMeter() as meter:
                t.out = jax.block_until_ready(compiled(*args))
            t.run_times.append(meter.wall_s)
            t.jax_meters.append(meter)
            if chunked is not None:
                t0 = time.perf_counter()
                t.chunked_out = jax.block_until_ready(chunked(*args))
                t.chunked_times.append(time.perf_counter() - t0)
        if not skip_torch and r < torch_repeats:  # every pass starts from the initial weights again
            with CpuMeter() as meter:
                t.torch_losses = torch_pass(setup, dense, n_torch, epochs, batch_size, seed, device, t.per_net[r])
            t.torch_meters.append(meter)
    return t


def torch_seconds(t: Timings, p: int, n_torch: int, skip_torch: bool):
    """(total seconds, best seconds per network, total per pass): the best pass of every network, summed (favours
    PyTorch slightly over the best total), scaled to the population when fewer networks were timed."""
    if skip_torch:
        return None, None, None
    torch_per_net = t.per_net.min(0).tolist()
    return float(np.sum(torch_per_net)) * p / n_torch, torch_per_net, (t.per_net.sum(1) * p / n_torch).tolist()


def work_record(setup: PopulationSetup, dense, p: int, batch_size: int, counts: dict, jax_s, torch_s) -> dict:
    """The padded shape JAX computes at, the real networks, and both sides' matmul FLOPs."""
    dims = setup.dims
    widths = [d.hidden_widths for d in dense]
    jax_flops, real_flops = counts["jax_flops"], counts["real_flops"]
    return {
        "padded_shape": {
            "population": p, "d_max": dims.d_max, "w_max": dims.w_max, "max_hidden": dims.max_hidden,
            "k_max": dims.k_max, "rows_padded": counts["n_max"], "batch": batch_size,
            "linear_shapes": linear_shapes_padded(dims),
            "params_per_network_padded": int(sum(i * o + o for i, o in linear_shapes_padded(dims))),
        },
        "real_networks": {
            "depths": [len(w) for w in widths],
            "mean_depth": float(np.mean([len(w) for w in widths])),
            "mean_width": float(np.mean([x for w in widths for x in w])),
            "params_mean": float(np.mean([d.num_params() for d in dense])),
        },
        "flops": {
            "jax_padded_matmul_flops": float(jax_flops),
            "real_matmul_flops": float(real_flops),
            "padded_over_real": float(jax_flops / real_flops),
            "jax_padded_gflops_per_s": float(jax_flops / jax_s / 1e9),
            "torch_real_gflops_per_s": float(real_flops / torch_s / 1e9) if torch_s else None,
        },
    }


def contention_record(t: Timings) -> dict:
    jax_best = t.jax_meters[int(np.argmin(t.run_times))]
    return {
        "note": ("share of the machine's CPU time used by other processes while timing (0 = quiet machine); "
                 "cpu_s = this process's CPU seconds (all threads)"),
        "jax_best_run_other_share": jax_best.other_share, "jax_best_run_cpu_s": jax_best.cpu_s,
        "torch_passes_other_share": [m.other_share for m in t.torch_meters],
        "torch_passes_cpu_s": [m.cpu_s for m in t.torch_meters],
    }


def bench_buckets(p, setup: PopulationSetup, pop: Population, *, epochs, batch_size, repeats, chunk_size,
                  padded_losses, padded_probs, x_check_pad, torch_s, padded_s, padded_chunks_s, real_flops,
                  n_batches) -> dict:
    """The same P networks trained as `zoo.build_zoo` trains them: grouped by width bucket (`nets.width_buckets`),
    one program per bucket at its own padded width, each network with the initial weights and keys of the padded
    run (the draws do not depend on the padding). Compile seconds apart; the run is the sum over buckets of each
    bucket's best of `repeats`; the per-network losses and outputs are checked against the padded run's."""
    from neon_jax import sharding

    preset, archs = setup.preset, pop.host_archs
    own_shapes = sharding.own_shapes(max(nets.width_buckets(archs)))  # as zoo.build_zoo chooses
    groups = nets.training_groups(archs, setup.dims, own_shapes=own_shapes)
    init_keys, train_keys = jax.random.split(pop.k_init, p), jax.random.split(pop.k_train, p)
    losses, probs = np.zeros_like(padded_losses), np.zeros_like(padded_probs)
    per_bucket, compile_s, run_s, flops = {}, 0.0, 0.0, 0.0
    for idx, bdims in groups:
        barchs = jax.device_put(nets.fit_arch(jax.tree_util.tree_map(lambda a: a[idx], archs), bdims))  # noqa: B023
        model = nets.make_model(bdims, preset)
        trainer = fit.make_trainer(model, preset.learning_rate)
        variables = jax.vmap(lambda k, a: nets.init_network(k, model, a))(init_keys[idx], barchs)  # noqa: B023
        opt_state = trainer.init_opt_state(variables)
        args = (train_keys[idx], variables, opt_state, barchs, jnp.zeros(len(idx), jnp.int32), setup.data)
        compiled, c = compile_aot(trainer.train, *args, epochs=epochs, batch_size=batch_size, chunk_size=chunk_size)
        best, times, out = timeit(lambda: compiled(*args), repeats)  # noqa: B023
        losses[idx] = np.asarray(out[2])
        probs[idx] = np.asarray(jax.nn.softmax(trainer.predict(out[0], barchs, x_check_pad), axis=-1))[
            ..., :padded_probs.shape[-1]]
        bflops = len(idx) * epochs * n_batches * batch_size * train_flops_per_row(linear_shapes_padded(bdims))
        per_bucket[bdims.label() if own_shapes else str(bdims.w_max)] = {
                                  "networks": int(len(idx)),
                                  "layer_widths": [bdims.width(j) for j in range(bdims.max_hidden)],
                                  "compile_s": c, "run_s": best, "run_s_all_repeats": times}
        compile_s, run_s, flops = compile_s + c, run_s + best, flops + bflops
    return {
        "buckets": per_bucket, "compiles": len(groups), "chunk_size": chunk_size, "compile_s": compile_s,
        "run_s": run_s, "speedup": (torch_s / run_s) if torch_s else None,
        "over_padded_one_vmap": padded_s / run_s,
        "over_padded_sorted_chunks": (padded_chunks_s / run_s) if padded_chunks_s else None,
        "padded_matmul_flops": float(flops), "padded_over_real": float(flops / real_flops),
        "epoch_loss_max_abs_diff_vs_padded": float(np.abs(losses - padded_losses).max()),
        "check_probabilities_max_abs_diff_vs_padded": float(np.abs(probs - padded_probs).max()),
        "own_shapes": own_shapes,
        "note": ("zoo.build_zoo's path (nets.training_groups): at paper widths on a CPU each network at its own "
                 "shape (its depth, each layer at its bucket; one program per distinct shape), else one program "
                 "per width bucket (the widest layer rounded up onto nets.bucket_width's ladder), each hidden layer "
                 "padded to the widest bucket its members need at that position (nets.with_layer_widths), networks "
                 "sorted by depth in chunks within a bucket; the "
                 "matmul FLOPs count every layer at its padded width up to max_hidden (the chunks skip the layers "
                 "past a chunk's deepest network, so the real work is less)"),
    }
