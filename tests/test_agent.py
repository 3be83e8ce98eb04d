"""The agent: returns, losses (per-step vs the original's broadcast), networks, jitted iteration, checkpoints."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from neon_jax import agent as agent_lib
from neon_jax import env as env_lib
from neon_jax import features, nets, policies, runner, select
from neon_jax import programs as program_caches
from neon_jax import zoo as zoo_lib
from neon_jax.pool import EnvPool
from neon_jax.presets import PRESETS
from neon_jax.rollout import make_policy_program, make_rollout, policy_program

TINY = PRESETS["tiny"]


def test_monte_carlo_returns_by_hand():
    rewards = jnp.array([1.0, 2.0, 3.0, 99.0])
    valid = jnp.array([True, True, True, False])
    g = np.asarray(agent_lib.monte_carlo_returns(rewards, valid, 0.5))
    # G2 = 3; G1 = 2 + 0.5 * 3 = 3.5; G0 = 1 + 0.5 * 3.5 = 2.75; the step after the end is ignored
    np.testing.assert_allclose(g, [2.75, 3.5, 3.0, 0.0])
    g99 = np.asarray(agent_lib.monte_carlo_returns(jnp.array([-1000.0, 8000.0]), jnp.array([True, True]), 0.99))
    np.testing.assert_allclose(g99, [-1000.0 + 0.99 * 8000.0, 8000.0], rtol=1e-6)


def test_per_step_and_legacy_losses_differ_as_the_spec_says():
    logits = jnp.array([[0.1, 0.2, 0.3, 0.4, 0.5], [1.0, 0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 2.0, 0.0, 0.0]])
    values = jnp.array([1.0, -2.0, 0.5])
    actions = jnp.array([4, 0, 2])
    rewards = jnp.array([1.0, 0.0, 2.0])
    valid = jnp.array([True, True, True])
    gamma = 0.99
    logp = np.asarray(jax.nn.log_softmax(logits))[np.arange(3), np.asarray(actions)]
    g = np.array([1.0 + gamma * (0.0 + gamma * 2.0), 0.0 + gamma * 2.0, 2.0])
    adv = g - np.asarray(values)
    per_step, critic, adv_out = agent_lib.actor_critic_losses(logits, values, actions, rewards, valid, gamma, False)
    legacy, critic_l, _ = agent_lib.actor_critic_losses(logits, values, actions, rewards, valid, gamma, True)
    np.testing.assert_allclose(np.asarray(adv_out), adv, rtol=1e-6)
    np.testing.assert_allclose(float(per_step), -np.mean(logp * adv), rtol=1e-6)
    # §12 A0: the (T,) x (T, 1) broadcast makes the loss -(mean log pi) * (mean advantage)
    np.testing.assert_allclose(float(legacy), -np.mean(logp) * np.mean(adv), rtol=1e-6)
    assert abs(float(per_step) - float(legacy)) > 1e-3
    np.testing.assert_allclose(float(critic), np.mean(adv ** 2), rtol=1e-6)
    assert float(critic) == float(critic_l)
    # with a single step the two coincide
    one = [a[:1] for a in (logits, values, actions, rewards, valid)]
    a1, _, _ = agent_lib.actor_critic_losses(*one, gamma, False)
    b1, _, _ = agent_lib.actor_critic_losses(*one, gamma, True)
    np.testing.assert_allclose(float(a1), float(b1), rtol=1e-6)


def test_losses_ignore_steps_after_the_episode():
    logits = jnp.zeros((4, 5))
    values = jnp.array([0.0, 1.0, 123.0, -50.0])
    actions = jnp.array([1, 2, 3, 4])
    rewards = jnp.array([5.0, 7.0, 1e6, 1e6])
    valid = jnp.array([True, True, False, False])
    full = agent_lib.actor_critic_losses(logits, values, actions, rewards, valid, 0.9, False)
    short = agent_lib.actor_critic_losses(logits[:2], values[:2], actions[:2], rewards[:2], valid[:2], 0.9, False)
    np.testing.assert_allclose(float(full[0]), float(short[0]), rtol=1e-6)
    np.testing.assert_allclose(float(full[1]), float(short[1]), rtol=1e-6)


def test_beyond_paper_options_by_hand():
    r = jnp.array([-64000.0, 0.0, 10.0, 1000.0])
    np.testing.assert_allclose(np.asarray(agent_lib.transform_rewards(r, "symlog")),
                               [-np.log(64001.0), 0.0, np.log(11.0), np.log(1001.0)], rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(agent_lib.transform_rewards(r, "none")), np.asarray(r))
    # scaled: the paper's trade-off unchanged (rho^3 bonus still 1,600x the in-tolerance rho), O(1) magnitudes
    np.testing.assert_allclose(np.asarray(agent_lib.transform_rewards(r, "scaled")), [-1.0, 0.0, 10 / 64000, 1000 / 64000],
                               rtol=1e-6)
    x = jnp.array([[1.0, 3.0, 100.0], [5.0, 7.0, -100.0]])
    valid = jnp.array([[True, True, False], [True, True, False]])
    z = np.asarray(agent_lib.normalise_over_valid(x, valid))
    ref = (np.array([1.0, 3.0, 5.0, 7.0]) - 4.0) / np.sqrt(5.0)  # the invalid entries take no part
    np.testing.assert_allclose(z[:, :2].reshape(-1), ref, rtol=1e-5)
    assert (z[:, 2] == 0).all()
    uniform = jnp.zeros((3, 5))
    np.testing.assert_allclose(float(agent_lib.policy_entropy(uniform, jnp.array([True, True, False]))),
                               np.log(5.0), rtol=1e-6)
    assert float(agent_lib.policy_entropy(jnp.array([[50.0, 0, 0, 0, 0]]), jnp.array([True]))) < 1e-6
    assert agent_lib.AgentConfig().faithful and not agent_lib.AgentConfig(entropy_coef=0.01).faithful
    with pytest.raises(ValueError, match="reward_transform"):
        agent_lib.AgentConfig(reward_transform="log")
    with pytest.raises(ValueError, match="entropy_coef"):
        agent_lib.AgentConfig(entropy_coef=-1.0)
    assert not agent_lib.AgentConfig(gamma=0.0).faithful  # the original discounts with 0.99
    with pytest.raises(ValueError, match="gamma must be in"):
        agent_lib.AgentConfig(gamma=1.5)
    # gamma 0: every step is credited with its own reward only
    np.testing.assert_allclose(np.asarray(agent_lib.monte_carlo_returns(jnp.array([1.0, 2.0, 4.0]),
                                                                      jnp.array([True, True, True]), 0.0)),
                               [1.0, 2.0, 4.0])


def test_warmup_is_min_2n_500():
    assert agent_lib.warmup_episodes(24) == 48
    assert agent_lib.warmup_episodes(528) == 500


def test_paper_sized_networks_have_the_original_feature_count_and_size():
    agent = agent_lib.Agent(agent_lib.AgentConfig(), PRESETS["paper"])
    obs = agent.dummy_obs()
    trunk = agent_lib.NeonTrunk()
    variables = jax.eval_shape(trunk.init, jax.random.PRNGKey(0), obs)
    out = jax.eval_shape(lambda v: trunk.apply(v, obs), variables)
    assert out.shape == (170,)
    actor = jax.eval_shape(agent.actor.init, jax.random.PRNGKey(0), obs)
    critic = jax.eval_shape(agent.critic.init, jax.random.PRNGKey(0), obs)
    count = lambda t: sum(int(np.prod(a.shape)) for a in jax.tree_util.tree_leaves(t))
    # neon_spec.md §6.1: 10,269,076 (actor) and 10,267,872 (critic) with PyTorch's BatchNorm2d affine params
    assert count(actor) == 10_269_076
    assert count(critic) == 10_267_872


def test_compact_agent_size_does_not_depend_on_the_feature_width():
    sizes = []
    for preset in (PRESETS["tiny"], PRESETS["cpu"], PRESETS["paper"]):
        agent = agent_lib.Agent(agent_lib.AgentConfig(architecture="compact"), preset)
        v = jax.eval_shape(agent.actor.init, jax.random.PRNGKey(0), agent.dummy_obs())
        sizes.append(sum(int(np.prod(a.shape)) for a in jax.tree_util.tree_leaves(v)))
    assert len(set(sizes)) == 1


@pytest.fixture(scope="module")
def tiny_setup():
    """A fixed small zoo (iris, 6 networks, tiny preset), a compiled training iteration and the agent's compiled
    pruning program (`evaluate(actor, params, key, greedy, uniform) -> rollout.Outcome`)."""
    prepared = zoo_lib.prepare_data("iris", TINY, seed=0)
    zoo = zoo_lib.build_zoo(prepared, TINY, n=6, n_heldout=2, seed=0, epochs=30)
    pool = EnvPool.from_zoos([(zoo, prepared)], "all", 5.0, TINY)
    env = env_lib.NeonEnv(env_lib.EnvConfig(passes=1), pool.dims, TINY)
    agent = agent_lib.Agent(agent_lib.AgentConfig(batch_size=6), TINY)
    program = agent_lib.policy_program(env, agent)

    def evaluate(actor, params, key, greedy=False, uniform=False):
        return program(jax.random.split(key, params.tau.shape[0]), params, agent.policy(actor, greedy, uniform))

    return pool, env, agent, agent_lib.make_train_iteration(env, agent), evaluate


@pytest.fixture(scope="module")
def rollout(tiny_setup):
    """The agent's roll-out of a batch of the pool's size, compiled once for the module."""
    _, env, agent, _, _ = tiny_setup
    return jax.jit(make_rollout(env, agent.act_fn))


@pytest.fixture(scope="module")
def transitions(tiny_setup, rollout):
    """One batch of uniform-random episodes of every network (observations included, progress attached), for
    the updates to learn from: the roll-out compiles once, each update on its own."""
    pool, env, agent, _, _ = tiny_setup
    state = agent.init(jax.random.PRNGKey(1))
    keys = jax.random.split(jax.random.PRNGKey(2), len(pool))
    _, t = rollout(keys, pool.batch(np.arange(len(pool))), agent.policy(state.actor, uniform=True))
    return t


def test_training_iteration_compiles_once_and_learns(tiny_setup):
    pool, env, agent, iteration, evaluate = tiny_setup
    params = pool.batch(np.arange(len(pool)))
    state = agent.init(jax.random.PRNGKey(0))

    def mean_return(actor, seeds=4):
        out = []
        for s in range(seeds):
            o = evaluate(actor, params, jax.random.PRNGKey(100 + s))
            out.append(float((o.reward * o.valid).sum(-1).mean()))
        return np.mean(out)

    before = mean_return(state.actor)
    for i in range(25):
        state, metrics = iteration(state, params, jax.random.PRNGKey(i), jnp.bool_(i < 3))
    assert iteration._cache_size() == 1  # warm-up and learning iterations share one program
    assert int(state.episodes) == 25 * len(pool)
    after = mean_return(state.actor)
    assert np.isfinite(float(metrics["critic_loss"]))
    assert after > before, (before, after)


def test_one_backward_pass_equals_the_two_separate_gradients(tiny_setup, transitions):
    """The update's joint gradient of actor + critic loss must equal the faithful per-net gradients."""
    pool, env, agent, iteration, evaluate = tiny_setup
    state = agent.init(jax.random.PRNGKey(1))

    def losses(a, c):
        def one(t):
            logits = jax.vmap(lambda o: agent.actor.apply(a, o))(t.obs)
            values = jax.vmap(lambda o: agent.critic.apply(c, o))(t.obs)
            return agent_lib.actor_critic_losses(logits, values, t.action, t.reward, t.valid, 0.99, False)[:2]
        actor, critic = jax.vmap(one)(transitions)
        return actor.mean(), critic.mean()

    g_actor = jax.jit(jax.grad(lambda a: losses(a, state.critic)[0]))(state.actor)
    g_critic = jax.jit(jax.grad(lambda c: losses(state.actor, c)[1]))(state.critic)
    new_state, _ = jax.jit(agent_lib.make_update(agent))(state, transitions)
    # One Adam step from zero moments moves every parameter by about -lr * sign(g). Biases in front of a
    # batch-norm have a gradient that is zero up to float noise, so only clearly non-zero gradients count.
    for old_p, new_p, grads in ((state.actor, new_state.actor, g_actor), (state.critic, new_state.critic, g_critic)):
        scale = max(float(jnp.abs(g).max()) for g in jax.tree_util.tree_leaves(grads))
        for p0, p1, g in zip(*(jax.tree_util.tree_leaves(t) for t in (old_p, new_p, grads))):
            g = np.asarray(g)
            clear = np.abs(g) > 1e-4 * scale
            step = (np.asarray(p1) - np.asarray(p0))[clear]
            np.testing.assert_allclose(step, -1e-3 * np.sign(g[clear]), rtol=1e-3, atol=1e-7)


def test_beyond_paper_options_train_in_one_program(tiny_setup, transitions):
    agent = agent_lib.Agent(agent_lib.AgentConfig(batch_size=6, reward_transform="symlog", normalise_advantages=True,
                                                  entropy_coef=0.01), TINY)
    update = jax.jit(agent_lib.make_update(agent))
    state = agent.init(jax.random.PRNGKey(0))
    for _ in range(3):
        state, metrics = update(state, transitions)
    assert update._cache_size() == 1 and int(state.episodes) == 3 * transitions.action.shape[0]
    assert np.isfinite(float(metrics["actor_loss"])) and np.isfinite(float(metrics["critic_loss"]))
    # the critic learns symlog returns: its loss is on the log scale, far below the cubic reward's squares
    assert float(metrics["critic_loss"]) < 1e3


def test_checkpoint_round_trip_gives_identical_actions(tiny_setup, tmp_path):
    pool, env, agent, iteration, evaluate = tiny_setup
    state = agent.init(jax.random.PRNGKey(3))
    assert agent_lib.save_checkpoint(tmp_path / "ckpt", state, agent.config, TINY) == tmp_path / "ckpt.npz"
    agent2, state2, meta = agent_lib.load_checkpoint(tmp_path / "ckpt")
    assert meta["episodes"] == 0 and agent2.config == agent.config
    params = pool.batch(np.arange(len(pool)))
    t1 = evaluate(state.actor, params, jax.random.PRNGKey(7))
    t2 = evaluate(state2.actor, params, jax.random.PRNGKey(7))
    np.testing.assert_array_equal(np.asarray(t1.actions), np.asarray(t2.actions))
    jax.tree_util.tree_map(np.testing.assert_array_equal, state.actor_opt, state2.actor_opt)
    with pytest.raises(FileNotFoundError, match="no agent checkpoint"):
        agent_lib.load_checkpoint(tmp_path / "missing")
    # a checkpoint of another preset's shape is rejected with a clear message
    cpu_agent = agent_lib.Agent(agent_lib.AgentConfig(), PRESETS["cpu"])
    agent_lib.save_checkpoint(tmp_path / "cpu", cpu_agent.init(jax.random.PRNGKey(0)), cpu_agent.config, TINY)
    with pytest.raises(ValueError, match="do not fit"):
        agent_lib.load_checkpoint(tmp_path / "cpu")


def test_random_actions_are_uniform(tiny_setup):
    pool, env, agent, iteration, evaluate = tiny_setup
    params = pool.batch(np.arange(len(pool)))
    state = agent.init(jax.random.PRNGKey(0))
    actions = []
    for s in range(20):
        o = evaluate(state.actor, params, jax.random.PRNGKey(s), uniform=True)
        actions.append(np.asarray(o.actions)[np.asarray(o.valid)])
    counts = np.bincount(np.concatenate(actions), minlength=5)
    expected = counts.sum() / 5
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert chi2 < 18.5, counts  # 99.9 % quantile of chi-square with 4 degrees of freedom


def test_one_random_agent(tiny_setup):
    """The random agent is one policy (`policies.random_policy`) on every path: an actor's uniform actions, the
    random agent of `learn.run_agent` and the `random` baseline prune every network the same way."""
    from neon_jax import learn, pruning

    pool, env, agent, _, evaluate = tiny_setup
    params = pool.batch(np.arange(len(pool)))
    state = agent.init(jax.random.PRNGKey(0))
    rand = make_policy_program(env, policies.random_policy)(
        jax.random.split(jax.random.PRNGKey(4), len(pool)), params, None)
    uniform = evaluate(state.actor, params, jax.random.PRNGKey(4), uniform=True)
    np.testing.assert_array_equal(np.asarray(rand.actions), np.asarray(uniform.actions))
    np.testing.assert_array_equal(np.asarray(rand.test_acc_after), np.asarray(uniform.test_acc_after))
    rows = lambda result: [(r["widths_after"], r["params_after"], r["test_acc_after"]) for r in result.rows]
    by_agent = learn.run_agent(agent, None, pool, TINY, env.config, seed=2, random_actions=True)
    by_baseline = pruning.run_baseline("random", pool, TINY, passes=1, seed=2)
    assert rows(by_agent) == rows(by_baseline)
    assert len({r[0] for r in rows(by_agent)}) > 1  # the networks were pruned, differently


def test_policy_file_round_trip(tmp_path):
    agent = agent_lib.Agent(agent_lib.AgentConfig(), TINY)
    state = agent.init(jax.random.PRNGKey(5))
    agent_lib.save_policy(tmp_path / "policy", state.actor, agent.config, TINY, {"episodes": 7})
    agent2, actor2, meta = agent_lib.load_policy(tmp_path / "policy")
    assert meta["episodes"] == 7 and agent2.preset == TINY
    jax.tree_util.tree_map(np.testing.assert_array_equal, state.actor, actor2)
    # a full training checkpoint loads as a policy too
    agent_lib.save_checkpoint(tmp_path / "ckpt", state, agent.config, TINY)
    _, actor3, _ = agent_lib.load_policy(tmp_path / "ckpt")
    jax.tree_util.tree_map(np.testing.assert_array_equal, state.actor, actor3)
    (tmp_path / "bad.json").write_text('{"format": "something else"}')
    (tmp_path / "bad.npz").write_bytes(b"")
    with pytest.raises(ValueError, match="not a neon_jax agent"):
        agent_lib.load_policy(tmp_path / "bad")


def test_shipped_agent_loads_and_fits_the_cpu_preset():
    from neon_jax.agent import registry

    agent, actor, random_actions, description, meta = registry.load_agent("pretrained", PRESETS["cpu"])
    assert not random_actions and agent.preset == PRESETS["cpu"]
    assert meta["env"]["cut"] in ("reinit", "keep_best") and meta["episodes"] > 0
    logits = agent.actor.apply(actor, agent.dummy_obs())
    assert logits.shape == (5,) and np.isfinite(np.asarray(logits)).all()
    # networks of the paper's widths are observed through the agent's own maps (evenly spaced neurons)
    agent, *_ = registry.load_agent("pretrained", PRESETS["paper"])
    seen = agent.observation_preset(PRESETS["paper"], nets.NetDims(d_max=30, k_max=4, max_hidden=6, w_max=1024))
    assert (seen.feature_rows, seen.feature_width, seen.finetune_epochs) == (10, 64, 100)
    with pytest.raises(ValueError, match="hold 9 hidden layers"):
        agent.observation_preset(PRESETS["paper"], nets.NetDims(d_max=30, k_max=4, max_hidden=10, w_max=64))


@pytest.mark.parametrize("width", [8, 64, 300, 1000])
def test_shipped_agent_acts_on_networks_of_any_width(width):
    """The shipped agent observes a network of width 8 .. 1000 at the network's own bucket and returns finite action
    probabilities; at width <= 64 (what it was trained on) the maps are the padded network's exactly."""
    from neon_jax.agent import registry

    agent, actor, *_ = registry.load_agent("pretrained", PRESETS["cpu"], tau=5.0)
    rng = np.random.default_rng(width)
    widths, fan_in, layers = [width, max(width // 2, 1)], 5, []
    for w in widths:
        layers += [dict(kind="linear", kernel=rng.uniform(-1, 1, (fan_in, w)).astype(np.float32) / np.sqrt(fan_in),
                        bias=np.zeros(w, np.float32)), dict(kind="relu")]
        fan_in = w
    layers += [dict(kind="linear", kernel=rng.normal(size=(fan_in, 3)).astype(np.float32),
                    bias=np.zeros(3, np.float32)), dict(kind="softmax")]
    net = nets.DenseNetwork(layers=layers, n_features=5, n_classes=3)
    dims = nets.NetDims.for_widths(width, 5, 3, max_hidden=2)
    assert dims.w_max == nets.bucket_width(width) < 2 * width + 16
    variables, arch = nets.expand(net, dims)
    seen = agent.observation_preset(PRESETS["cpu"], dims)
    x = jnp.asarray(rng.uniform(size=(64, 5)), jnp.float32)
    obs = features.observe(variables, arch, dims, seen, x, jnp.ones(64), 0)
    obs = obs.replace(progress=features.progress_features(0.8, 0.8, 5.0, 0, 8, 1000, 1000))
    assert obs.net_weights.shape == (8, 10, 64)
    probs = np.asarray(jax.nn.softmax(agent.actor.apply(actor, obs)))
    assert probs.shape == (5,) and np.isfinite(probs).all() and abs(probs.sum() - 1) < 1e-5
    if width <= 64:  # the same maps as at the preset's padded shape
        wide = nets.NetDims(d_max=5, k_max=3, max_hidden=6, w_max=64)
        v6, a6 = nets.repad(variables, arch, dims, wide)
        obs6 = features.observe(v6, a6, wide, seen, x, jnp.ones(64), 0)
        np.testing.assert_allclose(obs6.net_weights, obs.net_weights, atol=1e-5)
        np.testing.assert_allclose(obs6.net_activations, obs.net_activations, atol=1e-5)


def test_shipped_tau5_agent_acts_on_its_progress():
    """The shipped tau-5 agent reads the episode's progress: it cuts hardest while the validation accuracy holds
    the original's and keeps layers once the drop is beyond tau (the same maps, only the progress differs)."""
    from neon_jax.agent import registry
    from neon_jax.features import progress_features

    agent, actor, *_, meta = registry.load_agent("pretrained", PRESETS["cpu"], tau=5.0)
    assert agent.config.observe_progress and meta["env"]["reward"] == "neon_hold"
    obs = agent.dummy_obs()
    probs = {acc: np.asarray(jax.nn.softmax(agent.actor.apply(
        actor, obs.replace(progress=progress_features(acc, 0.80, 5.0, 4, 16, 5000, 10000)))))
        for acc in (0.80, 0.77, 0.70)}  # held, 3 points down, 10 points down (beyond tau)
    assert probs[0.80].argmax() == 4 and probs[0.80][4] > 0.5  # keep 0.6
    assert probs[0.70].argmax() == 0 and probs[0.70][0] > 0.5  # keep the layer
    assert probs[0.80][0] < probs[0.77][0] < probs[0.70][0]  # the further down, the more it keeps


def test_pretrained_agent_is_the_one_trained_nearest_tau():
    from neon_jax.agent import registry

    shipped = registry.PRETRAINED["cpu"]
    assert len(shipped) >= 2
    for tau in shipped:  # each shipped agent is chosen at its own tau and records that tau
        *_, meta = registry.load_agent("pretrained", PRESETS["cpu"], tau=tau)
        assert float(meta["tau"]) == tau
    low, high = min(shipped), max(shipped)
    assert registry.pretrained_checkpoint("cpu", 0.5).name == shipped[low]
    assert registry.pretrained_checkpoint("cpu", 1000).name == shipped[high]
    assert registry.pretrained_checkpoint("cpu", None) == registry.pretrained_checkpoint("cpu", 5.0)
    # "pretrained:<tau>" names the same agent; the record is decoded in one place and machine-independent
    loaded = registry.load_agent(f"pretrained:{high:g}", PRESETS["cpu"])
    assert loaded.tau == high and loaded.path == "pretrained" and loaded.cut == loaded.env.get("cut", "reinit")
    assert registry.checkpoint_stem(f"pretrained:{high:g}", PRESETS["cpu"]).name == shipped[high]
    rand = registry.load_agent("random", PRESETS["cpu"])
    assert rand.random and rand.actor is None and rand.tau is None


def test_progress_features_by_hand():
    from neon_jax.features import progress_features

    # accuracy 0.80 -> 0.77 is -3 points; tau 5 leaves 2/5 of the tolerance; step 3 of 12; 250 of 1000 params
    f = np.asarray(progress_features(0.77, 0.80, 5.0, 3, 12, 250, 1000))
    np.testing.assert_allclose(f, [-0.3, 0.4, 0.0, np.log1p(5) / np.log1p(100), 0.25, 0.25, 0.0, np.tanh(-3.0)],
                               rtol=1e-5, atol=1e-6)
    # strictly above the original (the reward's rho^3 branch): flagged; a tenth of a point is resolved by tanh
    f = np.asarray(progress_features(0.801, 0.80, 5.0, 1, 12, 900, 1000))
    np.testing.assert_allclose(f[[2, 6, 7]], [0.0, 1.0, np.tanh(0.1)], rtol=1e-3)
    f = np.asarray(progress_features(0.80, 0.80, 5.0, 1, 12, 900, 1000))
    assert f[6] == 0.0  # no change is not above the original (Delta > 0 is strict, §5.1)
    # beyond the tolerance: flagged, tolerance left negative and clipped at -5; tau 0 divides by 1
    f = np.asarray(progress_features(0.50, 0.80, 0.0, 12, 12, 1000, 1000))
    np.testing.assert_allclose(f[:3], [-3.0, -5.0, 1.0], rtol=1e-6)


def test_environment_attaches_progress_and_only_progress_agents_read_it(tiny_setup, transitions):
    pool, env, agent, iteration, evaluate = tiny_setup
    params = pool.batch(np.arange(2))
    obs, state = jax.jit(jax.vmap(env.reset))(jax.random.split(jax.random.PRNGKey(0), 2), params)
    # at reset: no accuracy change, the whole tolerance left, no step taken, every parameter left
    np.testing.assert_allclose(np.asarray(obs.progress)[:, [0, 1, 2, 4, 5, 6, 7]], [[0, 1, 0, 0, 1, 0, 0]] * 2, atol=1e-6)
    obs2, state2, *_ = jax.jit(env.step_batch)(jax.random.split(jax.random.PRNGKey(1), 2), state, jnp.array([4, 4]),
                                               params)
    p = np.asarray(obs2.progress)
    np.testing.assert_allclose(p[:, 0], 10.0 * np.asarray(state2.acc - state2.acc0), rtol=1e-5, atol=1e-6)
    assert np.all(p[:, 4] > 0) and np.all(p[:, 5] < 1)  # a step taken, parameters removed

    one = jax.tree_util.tree_map(lambda a: a[0], obs2)
    other = one.replace(progress=one.progress + 1.0)
    faithful = agent.init(jax.random.PRNGKey(0)).actor
    np.testing.assert_array_equal(np.asarray(agent.actor.apply(faithful, one)),
                                  np.asarray(agent.actor.apply(faithful, other)))
    seeing = agent_lib.Agent(agent_lib.AgentConfig(batch_size=6, observe_progress=True), TINY)
    assert not seeing.config.faithful
    actor = seeing.init(jax.random.PRNGKey(0)).actor
    assert "progress" in actor["params"]
    assert np.abs(np.asarray(seeing.actor.apply(actor, one)) - np.asarray(seeing.actor.apply(actor, other))).max() > 1e-4
    with pytest.raises(ValueError, match="observes the episode's progress"):
        seeing.actor.apply(actor, one.replace(progress=None))
    # learns from the environment's transitions (their progress included) in one program
    update = jax.jit(agent_lib.make_update(seeing))
    s = seeing.init(jax.random.PRNGKey(0))
    for _ in range(2):
        s, m = update(s, transitions)
    assert update._cache_size() == 1 and np.isfinite(float(m["actor_loss"]))


def test_rule_policies_act_as_their_rule(tiny_setup):
    """neon_jax.policies: keep:F always takes F; while:F:D takes F until the validation accuracy change falls
    below -D points and keeps every layer after that."""
    parse_rule = policies.parse_rule
    pool, env, *_ = tiny_setup
    programs = []

    def method(rule):
        def at(dims):
            programs.append(policy_program(env_lib.NeonEnv(env_lib.EnvConfig(passes=2), dims, TINY),
                                           policies.rule_policy))
            return programs[-1], parse_rule(rule)
        return at

    rows = runner.run(method("keep:0.6"), pool, batch_size=6).rows
    assert all(set(r["actions"]) == {"4"} for r in rows)
    # never drop: the first cut that lowers the validation accuracy is the last one
    rows = runner.run(method("while:0.7:0"), pool, batch_size=6).rows
    for r in rows:
        cuts = r["actions"].rstrip("0")
        assert set(cuts) <= {"3"} and "0" not in cuts  # cuts, then only keeps
        if r["val_acc"] >= r["val_acc0"]:
            assert cuts == r["actions"]  # never fell: cut at every step
    program, = set(programs)
    assert runner.compiles(program) == 1  # the rules' numbers are arguments: one program for every rule
    program_caches.clear()  # frees the executables: the next run compiles again and gives the same rows
    assert runner.compiles(program) == 0
    untimed = lambda rs: [{k: v for k, v in r.items() if k != "seconds"} for r in rs]
    again = runner.run(method("while:0.7:0"), pool, batch_size=6).rows
    assert untimed(again) == untimed(rows) and runner.compiles(programs[-1]) == 1  # built and compiled anew
    with pytest.raises(ValueError, match="keep fraction must be one of"):
        parse_rule("keep:0.75")
    with pytest.raises(ValueError, match="cannot read rule"):
        parse_rule("sometimes:0.6")


def test_clipped_surrogate_by_hand_and_its_first_gradient_is_the_policy_gradient():
    """update_epochs > 1: PPO's clipped surrogate, a mean over valid steps; at ratio 1 its gradient is the
    per-step policy gradient the single-update agent follows."""
    logits = jnp.array([[0.1, 0.2, 0.3, 0.4, 0.5], [1.0, 0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 2.0, 0.0, 0.0]])
    actions = jnp.array([4, 0, 2])
    adv = jnp.array([1.5, -2.0, 0.7])
    valid = jnp.array([True, True, False])
    logp = np.asarray(jax.nn.log_softmax(logits))[np.arange(3), np.asarray(actions)]
    behaviour = jnp.asarray(logp + np.array([0.5, -0.01, 0.0]))  # ratios e^-0.5 = 0.61 and e^0.01 = 1.01
    loss = float(agent_lib.clipped_policy_loss(logits, behaviour, actions, adv, valid, 0.2))
    r = np.exp([-0.5, 0.01])
    # step 0: A > 0, ratio 0.61 below the clip range -> min(0.61 A, 0.8 A) = 0.61 A; step 1: A < 0, ratio 1.01
    # inside it -> 1.01 A; step 2 is past the end and takes no part
    np.testing.assert_allclose(loss, -np.mean([r[0] * 1.5, r[1] * -2.0]), rtol=1e-5)
    at_one = lambda lg: agent_lib.clipped_policy_loss(lg, jnp.asarray(logp), actions, adv, valid, 0.2)
    pg = lambda lg: agent_lib.policy_loss(lg, actions, adv, valid, False)
    np.testing.assert_allclose(np.asarray(jax.grad(at_one)(logits)), np.asarray(jax.grad(pg)(logits)),
                               rtol=1e-5, atol=1e-7)
    # beyond the clip the ratio has no gradient: a step whose policy already moved +50 % gets no further push
    moved = lambda lg: agent_lib.clipped_policy_loss(lg, jnp.asarray(logp - np.log(1.5)), actions, jnp.ones(3),
                                                     jnp.array([True, True, True]), 0.2)
    np.testing.assert_allclose(float(moved(logits)), -1.2, rtol=1e-6)  # clip(1.5) * A = 1.2 at every step
    assert float(jnp.abs(jax.grad(moved)(logits)).max()) == 0.0
    with pytest.raises(ValueError, match="update_epochs must be"):
        agent_lib.AgentConfig(update_epochs=0)
    with pytest.raises(ValueError, match="cannot be combined"):
        agent_lib.AgentConfig(update_epochs=4, legacy_episode_mean_advantage=True)
    assert not agent_lib.AgentConfig(update_epochs=4).faithful


def test_proximal_epochs_train_in_one_program_and_move_further(tiny_setup, transitions):
    """Four clipped Adam steps per batch: one compiled program, and the policy moves further from where it
    acted than after the single faithful step (same batches)."""
    pool, env, _, _, _ = tiny_setup
    moved = {}
    for epochs in (1, 4):
        agent = agent_lib.Agent(agent_lib.AgentConfig(batch_size=6, reward_transform="symlog",
                                                      normalise_advantages=True, update_epochs=epochs), TINY)
        update = jax.jit(agent_lib.make_update(agent))
        state = agent.init(jax.random.PRNGKey(0))
        new, metrics = update(state, transitions)
        new, metrics = update(new, transitions)
        assert update._cache_size() == 1 and np.isfinite(float(metrics["actor_loss"]))
        assert int(new.episodes) == 2 * len(pool)
        moved[epochs] = sum(float(jnp.abs(a - b).sum()) for a, b in zip(jax.tree_util.tree_leaves(new.actor),
                                                                         jax.tree_util.tree_leaves(state.actor)))
    assert moved[4] > 2 * moved[1], moved


def test_the_choice_by_hand():
    """neon_jax.select.choose: the fewest parameters within tau on the validation split; ties to the higher
    accuracy, then to the earlier candidate; a change of exactly -tau is within; nothing within -> -1."""
    params = [100, 80, 80, 60, 50]
    acc = [0.80, 0.77, 0.79, 0.70, 0.80]  # changes 0, -3, -1, -10, 0 points
    assert select.choose(params, acc, 0.80, 5.0) == (4, 4)
    assert select.choose(params[:3], acc[:3], 0.80, 5.0) == (2, 3)  # 80 and 80: the higher accuracy
    assert select.choose([80, 80], [0.79, 0.79], 0.80, 5.0) == (0, 2)  # a full tie: the earlier one
    assert select.choose([50, 40], [0.5, 0.6], 0.80, 5.0) == (-1, 0)  # none within: the original
    assert select.choose([10], [0.5], 0.75, 25.0) == (0, 1)  # exactly -tau (both exact in binary) is within
    assert select.choose(params, acc, 0.80, 5.0, valid=np.array([1, 1, 1, 1, 0], bool)) == (2, 3)


def test_candidates_are_single_episodes_and_the_choice_follows_the_rule(tiny_setup, rollout):
    """The batched K-candidate program: episode e of network b is the single roll-out with key e of b (episode
    0 the network's own key, as the one-episode program; e >= 1 fold_in(key, e)), the last one the greedy
    episode; the chosen network is the rule's choice on the candidate table; one compile for every batch."""
    pool, env, agent, _, _ = tiny_setup
    state = agent.init(jax.random.PRNGKey(4))
    k = len(pool) - 1  # sampled episodes + the greedy one = the pool's size: the module's roll-out serves them
    program = select.cached_candidates_program(env, agent.act_fn, k, True, "best", ("agent", agent.config, agent.preset))
    nets_ = [0, 3]
    result = runner.run(lambda dims: (program, agent.policy(state.actor)), pool.subset(nets_), seed=7, batch_size=1,
                        buckets=False)
    assert runner.compiles(program) == 1 and result.compiles == 1  # two batches, one program
    for b, net in enumerate(nets_):
        d, row = result.details[b], result.rows[b]
        k_net = runner.network_keys(7, [b])[0]  # the runner's key of the subset's entry b
        keys = jnp.stack([k_net] + [jax.random.fold_in(k_net, e) for e in range(1, k + 1)])
        params = pool.batch([net] * (k + 1))
        _, sampled = rollout(keys, params, agent.policy(state.actor))
        _, greedy = rollout(keys, params, agent.policy(state.actor, greedy=True))
        for e in range(k + 1):
            t = greedy if e == k else sampled
            valid = np.asarray(t.valid[e])
            np.testing.assert_array_equal(np.asarray(d["valid"][e]), valid)
            np.testing.assert_array_equal(np.asarray(d["params"][e])[valid], np.asarray(t.info["params_after"][e])[valid])
            np.testing.assert_array_equal(np.asarray(d["widths"][e]), np.asarray(t.info["widths"][e]))
            np.testing.assert_allclose(np.asarray(d["val_acc"][e]), np.asarray(t.info["acc"][e]), atol=1e-6)
        assert bool(d["greedy"][k]) and not np.asarray(d["greedy"][:k]).any()
        assert row["actions"] == "".join(str(int(a)) for a in np.asarray(sampled.action[0])[np.asarray(sampled.valid[0])])
        # the rule on the table: the original first, then every step of every episode
        valid = np.asarray(d["valid"]).reshape(-1)
        table_params = np.concatenate([[d["params0"]], np.asarray(d["params"]).reshape(-1)])
        table_acc = np.concatenate([[d["val_acc0"]], np.asarray(d["val_acc"]).reshape(-1)])
        i, within = select.choose(table_params, table_acc, float(d["val_acc0"]), 5.0,
                                  np.concatenate([[True], valid]))
        assert row["within_tau"] == within and row["params_after"] == table_params[i]
        assert row["val_acc"] == pytest.approx(float(table_acc[i]), abs=1e-6)
        if i > 0:
            e, t = divmod(i - 1, valid.size // (k + 1))
            assert (row["chosen_episode"], row["chosen_step"]) == (e, t + 1)
        assert 100 * (row["val_acc"] - row["val_acc0"]) >= -5.0


def test_select_last_is_the_single_episode(tiny_setup):
    """select="last" with one sampled episode is the paper's single episode: the one-episode program's answer."""
    pool, env, agent, _, evaluate = tiny_setup
    state = agent.init(jax.random.PRNGKey(5))
    program = select.cached_candidates_program(env, agent.act_fn, 1, False, "last", ("agent", agent.config, agent.preset))
    last = runner.run(lambda dims: (program, agent.policy(state.actor)), pool, seed=3, batch_size=len(pool),
                      buckets=False).rows
    single = runner.run(lambda dims: (agent_lib.policy_program(env, agent), agent.policy(state.actor)), pool, seed=3,
                        batch_size=len(pool), buckets=False).rows
    for a, b in zip(last, single):
        for field in ("widths_after", "params_after", "actions", "steps"):
            assert a[field] == b[field], field
        for field in ("test_acc_after", "val_acc", "return"):
            assert a[field] == pytest.approx(b[field], abs=1e-5), field
        assert a["chosen_episode"] == 0 and a["chosen_step"] == a["steps"]
