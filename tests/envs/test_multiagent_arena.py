"""MultiAgentArena's rules, step by step, plus PettingZoo's own API test and baseline returns."""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest
from pettingzoo.test import parallel_api_test

from flowrl.env import make_env
from flowrl.envs import MultiAgentArena

UP, RIGHT, DOWN, LEFT = 0, 1, 2, 3


def cells(observations: dict) -> tuple[int, int]:
    """(agent1's cell, agent2's cell), read from agent1's observation."""
    return int(observations["agent1"][0]), int(observations["agent1"][1])


def step(env: MultiAgentArena, agent1: int, agent2: int) -> tuple:
    return env.step({"agent1": agent1, "agent2": agent2})


def agent1_moves_first(seed: int) -> bool:
    """Plays one step on a 3x1 corridor where the first mover wins the middle cell."""
    env = MultiAgentArena({"width": 3, "height": 1})
    env.reset(seed=seed)
    observations, *_ = step(env, RIGHT, LEFT)
    return cells(observations) == (1, 2)


def test_start_cells_and_observation_encoding():
    env = MultiAgentArena({"width": 5, "height": 3})
    observations, infos = env.reset(seed=0)
    assert env.agents == ["agent1", "agent2"] == env.possible_agents
    assert observations["agent1"].tolist() == [0, 14]
    assert observations["agent2"].tolist() == [14, 0]
    assert infos == {"agent1": {}, "agent2": {}}
    for agent in env.agents:
        assert env.observation_space(agent).contains(observations[agent])

    step(env, RIGHT, UP)  # agent1 -> (0, 1); agent2 -> (1, 4)
    step(env, RIGHT, LEFT)  # agent1 -> (0, 2); agent2 -> (1, 3)
    observations, *_ = step(env, DOWN, UP)  # agent1 -> (1, 2); agent2 -> (0, 3)
    assert cells(observations) == (1 * 5 + 2, 0 * 5 + 3)
    assert observations["agent2"].tolist() == [3, 7]


def test_walls_clamp_every_direction_without_a_collision():
    env = MultiAgentArena()
    env.reset(seed=0)
    for agent1_action, agent2_action in [(UP, DOWN), (LEFT, RIGHT)]:
        observations, rewards, terminations, truncations, infos = step(
            env, agent1_action, agent2_action
        )
        assert cells(observations) == (0, 63)
        assert rewards == {"agent1": -0.5, "agent2": -0.1}
        assert infos["agent1"] == {"collision": False}
        assert terminations == truncations == {"agent1": False, "agent2": False}


def test_new_cells_reward_one_and_revisits_cost_half():
    env = MultiAgentArena()
    env.reset(seed=0)
    rewards_of_agent1 = []
    for action in [RIGHT, LEFT, RIGHT, DOWN, UP, DOWN]:
        _, rewards, *_ = step(env, action, UP)
        rewards_of_agent1.append(rewards["agent1"])
        assert rewards["agent2"] == -0.1
    # (0,1) new; (0,0) start cell, visited; (0,1) again; (1,1) new; (0,1); (1,1)
    assert rewards_of_agent1 == [1.0, -0.5, -0.5, 1.0, -0.5, -0.5]


@pytest.mark.parametrize(("agent1_action", "agent2_action"), [(RIGHT, RIGHT), (LEFT, LEFT)])
def test_a_blocked_move_is_a_collision_whichever_agent_moved(agent1_action, agent2_action):
    # On a 2x1 grid the agents are neighbours: agent1 pushes right, or agent2 pushes left,
    # while the other one runs into its wall.
    env = MultiAgentArena({"width": 2, "height": 1})
    env.reset(seed=0)
    observations, rewards, _, _, infos = step(env, agent1_action, agent2_action)
    assert cells(observations) == (0, 1)
    assert rewards == {"agent1": -1.0, "agent2": 1.0}
    assert infos == {"agent1": {"collision": True}, "agent2": {"collision": True}}


def test_move_order_is_random_and_decides_who_gets_the_contested_cell():
    orders = {seed: agent1_moves_first(seed) for seed in range(40)}
    assert 5 < sum(orders.values()) < 35  # both orders happen
    assert all(agent1_moves_first(seed) == first for seed, first in orders.items())


def test_collision_overrides_the_new_cell_reward_but_the_cell_counts_as_visited():
    seed = next(seed for seed in range(100) if agent1_moves_first(seed))
    env = MultiAgentArena({"width": 3, "height": 1})
    env.reset(seed=seed)
    observations, rewards, *_ = step(env, RIGHT, LEFT)  # agent1 enters 1, agent2 is blocked
    assert cells(observations) == (1, 2)
    assert rewards == {"agent1": -1.0, "agent2": 1.0}
    _, rewards, *_ = step(env, LEFT, RIGHT)  # back to the start cell; agent2 hits its wall
    assert rewards == {"agent1": -0.5, "agent2": -0.1}
    _, rewards, *_ = step(env, RIGHT, RIGHT)  # cell 1 again: visited during the collision step
    assert rewards == {"agent1": -0.5, "agent2": -0.1}


def test_the_same_seed_replays_the_same_episode():
    def trajectory(seed: int) -> list:
        env = MultiAgentArena({"width": 3, "height": 2, "timestep_limit": 30})
        action_rng = np.random.default_rng(123)
        observations, _ = env.reset(seed=seed)
        history = [cells(observations)]
        while env.agents:
            observations, rewards, *_ = step(env, *action_rng.integers(4, size=2).tolist())
            history.append((cells(observations), rewards["agent1"], rewards["agent2"]))
        return history

    assert trajectory(7) == trajectory(7)
    assert any(trajectory(7) != trajectory(seed) for seed in range(8, 12))


def test_reset_without_a_seed_keeps_drawing_from_the_seeded_generator():
    env = MultiAgentArena({"width": 3, "height": 1})
    first_orders = []
    env.reset(seed=3)
    for _ in range(20):
        observations, *_ = step(env, RIGHT, LEFT)
        first_orders.append(cells(observations))
        env.reset()
    env.reset(seed=3)
    replayed = []
    for _ in range(20):
        observations, *_ = step(env, RIGHT, LEFT)
        replayed.append(cells(observations))
        env.reset()
    assert first_orders == replayed
    assert len(set(first_orders)) == 2


def test_both_agents_are_truncated_at_the_limit_and_the_episode_ends():
    env = MultiAgentArena({"timestep_limit": 3})
    env.reset(seed=0)
    for _ in range(2):
        _, _, terminations, truncations, _ = step(env, RIGHT, LEFT)
        assert terminations == truncations == {"agent1": False, "agent2": False}
        assert env.agents == ["agent1", "agent2"]
    observations, rewards, terminations, truncations, _ = step(env, RIGHT, LEFT)
    assert terminations == {"agent1": False, "agent2": False}
    assert truncations == {"agent1": True, "agent2": True}
    assert set(observations) == set(rewards) == {"agent1", "agent2"}
    assert env.agents == []
    with pytest.raises(RuntimeError, match="call reset"):
        step(env, RIGHT, LEFT)


def test_default_limit_is_fifty_steps():
    env = MultiAgentArena()
    env.reset(seed=0)
    steps = 0
    while env.agents:
        step(env, DOWN, UP)
        steps += 1
    assert steps == 50


def test_env_config_sets_size_and_limit_through_the_registry():
    env = make_env("MultiAgentArena-v0", {"width": 4, "height": 6, "timestep_limit": 7})
    assert isinstance(env, MultiAgentArena)
    assert env.observation_space("agent2").nvec.tolist() == [24, 24]
    assert env.action_space("agent1").n == 4
    observations, _ = env.reset(seed=0)
    assert cells(observations) == (0, 23)
    assert env.timestep_limit == 7


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"widht": 4}, "unknown config key 'widht'. Did you mean 'width'"),
        ({"height": 0}, "'height' must be a positive integer"),
        ({"timestep_limit": 2.5}, "'timestep_limit' must be a positive integer"),
        ({"width": 1, "height": 1}, "at least two cells"),
    ],
)
def test_bad_config_is_refused_with_a_clear_error(config, message):
    with pytest.raises(ValueError, match=message):
        MultiAgentArena(config)


def test_bad_actions_and_agents_are_refused_with_a_clear_error():
    env = MultiAgentArena()
    with pytest.raises(RuntimeError, match="call reset"):
        step(env, UP, UP)
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"missing: \['agent2'\]"):
        env.step({"agent1": UP})
    with pytest.raises(ValueError, match="action 4 for 'agent1' is outside"):
        step(env, 4, UP)
    with pytest.raises(ValueError, match="no agent 'agent3'"):
        env.observation_space("agent3")


def test_spaces_are_the_same_object_on_every_call():
    env = MultiAgentArena()
    assert env.observation_space("agent1") is env.observation_space("agent1")
    assert env.action_space("agent2") is env.action_space("agent2")


def test_render_draws_agents_and_visited_cells():
    env = MultiAgentArena({"width": 4, "height": 2})
    env.reset(seed=0)
    step(env, RIGHT, UP)
    lines = env.render().splitlines()
    assert lines[1:3] == ["|.1 2|", "|    |"]
    assert lines[-1] == "step 1/50"


def test_passes_pettingzoo_parallel_api_test_and_pickles():
    env = pickle.loads(pickle.dumps(MultiAgentArena({"width": 5, "height": 4})))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the API test reports most problems as warnings
        parallel_api_test(env, num_cycles=100)


def mean_returns(agent1_policy, episodes: int, seed: int = 0) -> tuple[float, float]:
    """Mean episode returns of agent1 (`agent1_policy(cell, width)`) against a random agent2."""
    env = MultiAgentArena()
    action_rng = np.random.default_rng(seed)
    totals = np.zeros(2)
    for episode in range(episodes):
        observations, _ = env.reset(seed=seed + episode)
        while env.agents:
            agent1_action = agent1_policy(int(observations["agent1"][0]), env.width, action_rng)
            observations, rewards, *_ = step(env, agent1_action, int(action_rng.integers(4)))
            totals += [rewards["agent1"], rewards["agent2"]]
    return totals[0] / episodes, totals[1] / episodes


def random_policy(cell: int, width: int, rng: np.random.Generator) -> int:
    return int(rng.integers(4))


def row_sweeping_policy(cell: int, width: int, rng: np.random.Generator) -> int:
    """Right along even rows, left along odd rows, down at each row's end."""
    row, column = divmod(cell, width)
    if row % 2 == 0:
        return RIGHT if column < width - 1 else DOWN
    return LEFT if column > 0 else DOWN


def test_baseline_returns_match_the_published_figures():
    # Over 2000 episodes: random pair +2.20 / -4.38, row sweeper +46.98 / -3.34. Here 400
    # episodes, with bounds several standard errors wide (0.38 and 0.06 for the random pair).
    agent1_return, agent2_return = mean_returns(random_policy, episodes=400)
    assert 0.5 < agent1_return < 3.8
    assert -4.7 < agent2_return < -4.05
    agent1_return, _ = mean_returns(row_sweeping_policy, episodes=100)
    assert 45.5 < agent1_return < 48.5
