"""R2D2: value rescaling, sequence cutting, the sequence loss and priorities, and short runs."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

import flowrl
from flowrl.config import from_dict
from flowrl.envs.memory import StatelessCartPole
from flowrl.plans.r2d2 import R2D2_POLICY, R2D2Config
from flowrl.plans.r2d2_losses import (
    _q_after_burn_in_torch,
    _sequence_td_errors_torch,
    compute_sequence_priorities,
    inverse_value_rescale,
    r2d2_loss_torch,
    value_rescale,
)
from flowrl.policy import SampleBatch
from flowrl.replay import SequenceBuilder
from flowrl.replay.sequences import (
    BOOTSTRAP_DISCOUNT,
    BOOTSTRAP_INDEX,
    BURN_IN_STEPS,
    LOSS_MASK,
    N_STEP_RETURNS,
)
from flowrl.testing.recurrent_q import TorchTinyRecurrentQ

OBS_SPACE = gym.spaces.Box(-10.0, 10.0, (2,), np.float32)


def _steps(times, eps_id=0, terminated=False, truncated=False, reward=1.0):
    """Rows of one episode at `times`; obs = [t, eps_id], state_in_0 = [t, t]; its last row
    ends the episode as asked."""
    times = np.asarray(times)
    count = len(times)
    ends = np.zeros(count, bool)
    return SampleBatch(
        obs=np.stack([times, np.full(count, eps_id)], 1).astype(np.float32),
        new_obs=np.stack([times + 1, np.full(count, eps_id)], 1).astype(np.float32),
        actions=times % 2, rewards=np.full(count, reward, np.float32),
        terminateds=np.where(np.arange(count) == count - 1, terminated, ends),
        truncateds=np.where(np.arange(count) == count - 1, truncated, ends),
        eps_id=np.full(count, eps_id, np.int64), t=times.astype(np.int64),
        state_in_0=np.stack([times, times], 1).astype(np.float32))


# ---- value rescaling --------------------------------------------------------------------------


@pytest.mark.parametrize("epsilon", [1e-3, 0.0, 0.1])
def test_h_and_its_inverse_are_inverses(epsilon):
    x = np.concatenate([-np.logspace(-4, 4, 50), [0.0], np.logspace(-4, 4, 50)])
    np.testing.assert_allclose(inverse_value_rescale(value_rescale(x, epsilon), epsilon), x,
                               rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(value_rescale(inverse_value_rescale(x, epsilon), epsilon), x,
                               rtol=1e-6, atol=1e-9)
    tensor = torch.tensor(x)
    np.testing.assert_allclose(inverse_value_rescale(value_rescale(tensor, epsilon, torch),
                                                     epsilon, torch).numpy(), x, rtol=1e-6,
                               atol=1e-9)
    # h squashes: h(99) = sqrt(100) - 1 + 99 eps.
    assert value_rescale(99.0, epsilon) == pytest.approx(9.0 + 99 * epsilon)


# ---- the loss ---------------------------------------------------------------------------------


def _policy(**overrides):
    config = {"seed": 0, "burn_in": 3, "n_step": 2, "model": {
        "custom_model": TorchTinyRecurrentQ, "use_lstm": False, "max_seq_len": 4}, **overrides}
    return R2D2_POLICY.build(OBS_SPACE, gym.spaces.Discrete(2), config)


def _sequences(policy, episodes=3, seed=0):
    """Sequences of random episodes (lengths 3 to 11) with random observations and states."""
    config, rng = policy.config, np.random.default_rng(seed)
    builder = SequenceBuilder(burn_in=config.burn_in, train_length=config.model.max_seq_len,
                              n_step=config.n_step, gamma=config.gamma)
    parts = []
    for eps_id in range(episodes):
        steps = _steps(range(int(rng.integers(3, 12))), eps_id=eps_id, terminated=eps_id % 2 == 0,
                       truncated=eps_id % 2 == 1)
        steps["obs"] = rng.normal(size=steps["obs"].shape).astype(np.float32)
        steps["new_obs"] = rng.normal(size=steps["obs"].shape).astype(np.float32)
        steps["rewards"] = rng.normal(size=len(steps)).astype(np.float32)
        del steps["state_in_0"]
        for index, initial in enumerate(policy.initial_state()):
            steps[f"state_in_{index}"] = rng.normal(size=(len(steps), *initial.shape)
                                                    ).astype(np.float32)
        steps["actions"] = rng.integers(0, 2, len(steps))
        parts.append(builder(steps))
    return SampleBatch({name: np.concatenate([part[name] for part in parts])
                        for name in parts[0].columns})


def _padding(batch, burn_in):
    positions = np.arange(batch["obs"].shape[1])[None]
    front = (burn_in - batch[BURN_IN_STEPS])[:, None]
    return (positions < front) | (positions >= front + batch["seq_lens"][:, None])


def test_padded_positions_do_not_change_the_loss_or_its_gradients():
    policy = _policy()
    batch = _sequences(policy)
    padding = _padding(batch, policy.config.burn_in)
    assert padding.any()
    grads, stats = policy.compute_gradients(batch)
    garbage = SampleBatch({name: np.array(value, copy=True) for name, value in batch.items()})
    garbage["obs"][padding] = 1e6
    untrained = ~batch[LOSS_MASK]
    garbage["actions"][padding] = 1 - garbage["actions"][padding]
    for name, value in ((N_STEP_RETURNS, 1e6), (BOOTSTRAP_DISCOUNT, 7.0), (BOOTSTRAP_INDEX, 2)):
        garbage[name][untrained] = value
    garbage_grads, garbage_stats = policy.compute_gradients(garbage)
    assert garbage_stats["total_loss"] == pytest.approx(stats["total_loss"], rel=1e-6)
    for grad, garbage_grad in zip(grads, garbage_grads):
        np.testing.assert_allclose(garbage_grad, grad, rtol=1e-5, atol=1e-7)


def test_burn_in_steps_warm_the_state_but_carry_no_gradient():
    policy = _policy()
    batch = _sequences(policy)
    tensors = policy._batch_to_tensors(batch)
    tensors["obs"].requires_grad_(True)
    loss, _ = r2d2_loss_torch(policy, tensors)
    loss.backward()
    burn_in = policy.config.burn_in
    obs_grad = tensors["obs"].grad.abs().sum(dim=2)
    assert obs_grad[:, :burn_in].sum() == 0
    assert obs_grad[:, burn_in:].sum() > 0
    # Yet the burn-in observations change the state the trained steps start from.
    warmed = batch[BURN_IN_STEPS] > 0
    changed = SampleBatch({name: np.array(value, copy=True) for name, value in batch.items()})
    changed["obs"][warmed, :burn_in] += 1.0
    assert policy.compute_gradients(changed)[1]["total_loss"] != pytest.approx(
        policy.compute_gradients(batch)[1]["total_loss"], rel=1e-6)


def test_priorities_mix_the_max_and_mean_td_error_of_each_sequence():
    policy = _policy(priority_eta=0.7)
    policy.learn_on_batch(_sequences(policy, seed=1))  # online and target now differ
    batch = _sequences(policy, seed=2)
    with torch.no_grad():
        _, td_errors, mask = _sequence_td_errors_torch(policy, policy._batch_to_tensors(batch))
    absolute, mask = td_errors.abs().numpy(), mask.numpy()
    expected = [0.7 * row[keep].max() + 0.3 * row[keep].mean()
                for row, keep in zip(absolute, mask)]
    np.testing.assert_allclose(compute_sequence_priorities(policy, batch), expected, rtol=1e-5)
    assert (absolute[~mask] == 0).all()


def test_td_errors_follow_the_rescaled_n_step_double_q_target():
    policy = _policy(burn_in=0, n_step=2, gamma=0.9)
    policy.learn_on_batch(_sequences(policy, seed=1))
    batch = _sequences(policy, seed=3)
    tensors = policy._batch_to_tensors(batch)
    with torch.no_grad():
        _, td_errors, mask = _sequence_td_errors_torch(policy, tensors)
        # burn_in=0: no front padding, so the whole sequence runs from the stored state.
        state, lens = [tensors["state_in_0"]], tensors["seq_lens"]
        online, _ = policy.model(tensors["obs"], state, lens)
        target_net, _ = policy.target_model(tensors["obs"], state, lens)
    online, target_net = online.numpy(), target_net.numpy().astype(np.float64)
    rows, steps = np.nonzero(mask.numpy())
    index = batch[BOOTSTRAP_INDEX][rows, steps]
    best = online[rows, index].argmax(axis=1)
    next_value = inverse_value_rescale(target_net[rows, index, best])
    target = value_rescale(batch[N_STEP_RETURNS][rows, steps]
                           + batch[BOOTSTRAP_DISCOUNT][rows, steps] * next_value)
    chosen = online[rows, steps, batch["actions"][rows, steps]]
    np.testing.assert_allclose(td_errors.numpy()[rows, steps], chosen - target, atol=1e-5)


def test_the_learner_replays_the_q_values_the_actor_saw():
    # An actor steps StatelessCartPole carrying its state; its steps are cut into sequences,
    # and the loss's Q-values (burn-in from each stored state) equal the actor's, step by step.
    env = StatelessCartPole()
    policy = _policy(burn_in=3)
    obs, _ = env.reset(seed=0)
    state, rows, actor_q = [policy.initial_state()[0][None]], [], []
    for t in range(60):
        (q_values,), state_out = policy.forward(policy.preprocess(obs[None]), state)
        action = int(obs[1] > 0) if t % 5 else 1 - int(obs[1] > 0)
        next_obs, reward, terminated, truncated, _ = env.step(action)
        rows.append({"obs": obs, "new_obs": next_obs, "actions": action, "rewards": reward,
                     "terminateds": terminated, "truncateds": truncated or t == 59,
                     "eps_id": 0, "t": t, "state_in_0": state[0][0]})
        actor_q.append(q_values[0])
        state, obs = state_out, next_obs
        if terminated:
            break
    steps = SampleBatch({name: np.stack([np.asarray(row[name]) for row in rows])
                         for name in rows[0]})
    steps["obs"], steps["new_obs"] = (steps["obs"].astype(np.float32),
                                      steps["new_obs"].astype(np.float32))
    config = policy.config
    sequences = SequenceBuilder(burn_in=config.burn_in, train_length=config.model.max_seq_len,
                                n_step=config.n_step, gamma=config.gamma)(steps)
    assert len(sequences) >= 3 and (sequences[BURN_IN_STEPS] == config.burn_in).any()
    tensors = policy._batch_to_tensors(sequences)
    with torch.no_grad():
        learner_q = _q_after_burn_in_torch(policy, policy.model, tensors["obs"],
                                           [tensors["state_in_0"]], tensors).numpy()
    for index, mask in enumerate(sequences[LOSS_MASK][:, config.burn_in:]):
        start = index * config.model.max_seq_len
        np.testing.assert_allclose(learner_q[index][mask],
                                   np.array(actor_q[start:start + mask.sum()]), atol=1e-6)


@pytest.mark.tf
def test_the_tf_loss_priorities_and_update_equal_torchs():
    config = {"seed": 0, "burn_in": 3, "n_step": 2, "model": {
        "fcnet_hiddens": [8], "use_lstm": True, "lstm_cell_size": 8, "max_seq_len": 4}}
    policies = [R2D2_POLICY.build(OBS_SPACE, gym.spaces.Discrete(2),
                                  {**config, "framework": framework})
                for framework in ("torch", "tf")]
    policies[1].set_weights(policies[0].get_weights())
    for policy in policies:
        policy.update_target(1.0)
    batch = _sequences(policies[0])
    np.testing.assert_allclose(compute_sequence_priorities(policies[1], batch),
                               compute_sequence_priorities(policies[0], batch), rtol=1e-4,
                               atol=1e-6)
    stats = [policy.learn_on_batch(batch) for policy in policies]
    assert stats[1]["total_loss"] == pytest.approx(stats[0]["total_loss"], rel=1e-4)
    assert stats[1]["mean_q"] == pytest.approx(stats[0]["mean_q"], rel=1e-4, abs=1e-6)
    weights = [policy.get_weights() for policy in policies]
    for name, value in weights[0].items():
        np.testing.assert_allclose(weights[1][name], value, rtol=1e-3, atol=1e-5, err_msg=name)


def test_config_checks_name_the_field_and_the_fix():
    with pytest.raises(ValueError, match="priority_eta mixes max and mean"):
        from_dict(R2D2Config, {"priority_eta": 1.5})
    with pytest.raises(ValueError, match="sequence_overlap must be in"):
        from_dict(R2D2Config, {"sequence_overlap": 20})
    with pytest.raises(ValueError, match="recurrent Q-network: set model.use_lstm=True"):
        from_dict(R2D2Config, {"model": {"use_lstm": False}})
    with pytest.raises(ValueError, match="burn_in must be >= 0"):
        from_dict(R2D2Config, {"burn_in": -1})


# ---- runs -------------------------------------------------------------------------------------


SMOKE = {"seed": 0, "min_time_s_per_iteration": 0, "num_envs_per_worker": 2,
         "rollout_fragment_length": 8, "min_steps_per_iteration": 160, "learning_starts": 4,
         "train_batch_size": 8, "burn_in": 2, "training_intensity": 8,
         "target_network_update_freq": 100,
         "model": {"fcnet_hiddens": [16], "use_lstm": True, "lstm_cell_size": 8,
                   "max_seq_len": 5}}


def test_plan_reads_as_dqns_with_sequences_stored(local_executor):
    trainer = flowrl.Trainer("r2d2", env="StatelessCartPole-v1", config=SMOKE)
    try:
        text = repr(trainer.plan)
    finally:
        trainer.stop()
    assert text.startswith(
        "Concurrently([ParallelRollouts(mode='bulk_sync').for_each(SequenceBuilder(burn_in=2, "
        "train_length=5, n_step=3, overlap=0)).for_each(StoreToReplay(PrioritizedReplayBuffer))"
        ".for_each(BroadcastWeights()), Replay(PrioritizedReplayBuffer, num_items=8, "
        "learning_starts=4).for_each(UpdatePriorities(PrioritizedReplayBuffer))"), text


def test_r2d2_runs_on_stateless_cartpole(executor, tmp_path):
    # A remote rollout worker: the state columns cross to the driver's sequence builder.
    result = flowrl.run("r2d2", env="StatelessCartPole-v1", verbose=0, log_dir=str(tmp_path),
                        config={**SMOKE, "num_workers": 1, "num_cpus_per_worker": 0},
                        stop={"timesteps_total": 320})
    counters = result["info"]["counters"]
    assert result["timesteps_total"] >= 320
    assert counters["learner/steps_trained"] > 0 and counters["replay/rows_added"] > 0
    assert counters["learner/target_updates"] >= 1
    assert np.isfinite(result["info"]["learner"]["default_policy"]["total_loss"])


def test_a_restored_checkpoint_continues_with_its_weights(local_executor, tmp_path):
    trainer = flowrl.Trainer("r2d2", env="StatelessCartPole-v1", config=SMOKE)
    try:
        trainer.train()
        weights = trainer.get_policy().get_weights()
        path = trainer.save(str(tmp_path))
    finally:
        trainer.stop()
    restored = flowrl.Trainer.from_checkpoint(path)
    try:
        for name, value in restored.get_policy().get_weights().items():
            np.testing.assert_array_equal(value, weights[name], err_msg=name)
        result = restored.train()
    finally:
        restored.stop()
    assert result["timesteps_total"] >= 2 * SMOKE["min_steps_per_iteration"]
    assert result["info"]["counters"]["learner/steps_trained"] > 0
