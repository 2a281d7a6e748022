"""Preprocessors for every observation space, and action checks."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from flowrl.policy.spaces import action_rows, check_action_space, get_preprocessor


def test_box_keeps_dtype_and_checks_shape():
    space = gym.spaces.Box(0, 255, (4, 4, 3), np.uint8)
    prep = get_preprocessor(space)
    out = prep.transform(np.zeros((2, 4, 4, 3), np.uint8))
    assert out.dtype == np.uint8 and out.shape == (2, 4, 4, 3) and prep.shape == (4, 4, 3)
    with pytest.raises(ValueError) as info:
        get_preprocessor(gym.spaces.Box(-1, 1, (4,))).transform(np.zeros((2, 3)))
    message = str(info.value)
    assert "expected shape (batch_size, 4)" in message and "got shape=(2, 3)" in message
    assert "Box" in message


def test_discrete_one_hot_and_range():
    prep = get_preprocessor(gym.spaces.Discrete(3, start=1))
    assert prep.transform(np.array([1, 3])).tolist() == [[1, 0, 0], [0, 0, 1]]
    assert prep.transform(np.array([1])).dtype == np.float32
    with pytest.raises(ValueError, match=r"observation outside observation_space=Discrete"):
        prep.transform(np.array([4]))


def test_multi_discrete_concatenates_one_hots():
    prep = get_preprocessor(gym.spaces.MultiDiscrete([2, 3]))
    out = prep.transform(np.array([[1, 2], [0, 0]]))
    assert out.tolist() == [[0, 1, 0, 0, 1], [1, 0, 1, 0, 0]]
    assert prep.shape == (5,)


def test_multi_binary_flattens():
    out = get_preprocessor(gym.spaces.MultiBinary(3)).transform(np.array([[1, 0, 1]]))
    assert out.tolist() == [[1.0, 0.0, 1.0]] and out.dtype == np.float32


def test_dict_flattens_in_sorted_key_order():
    space = gym.spaces.Dict({"b": gym.spaces.Discrete(2), "a": gym.spaces.Box(-1, 1, (2, 1))})
    prep = get_preprocessor(space)
    out = prep.transform({"b": np.array([1]), "a": np.array([[[0.5], [-0.5]]])})
    assert out.tolist() == [[0.5, -0.5, 0.0, 1.0]] and prep.shape == (4,)
    with pytest.raises(ValueError, match=r"keys \['a', 'b'\]"):
        prep.transform({"a": np.zeros((1, 2, 1))})


def test_tuple_flattens_in_order():
    space = gym.spaces.Tuple((gym.spaces.Discrete(2), gym.spaces.Box(-1, 1, (1,))))
    out = get_preprocessor(space).transform((np.array([0, 1]), np.array([[0.25], [0.75]])))
    assert out.tolist() == [[1, 0, 0.25], [0, 1, 0.75]]


def test_unsupported_spaces_name_the_supported_ones():
    with pytest.raises(ValueError) as info:
        get_preprocessor(gym.spaces.Text(5))
    assert "unsupported observation_space" in str(info.value)
    assert "Box, Discrete, MultiDiscrete" in str(info.value)
    with pytest.raises(ValueError, match="unsupported action_space.*Discrete, MultiDiscrete, Box"):
        check_action_space(gym.spaces.MultiBinary(2))


def test_action_rows_validate():
    assert action_rows(gym.spaces.Discrete(3, start=-1), np.array([-1, 1])).tolist() == [0, 2]
    with pytest.raises(ValueError) as info:
        action_rows(gym.spaces.Discrete(2), np.array([0, 2]))
    assert "actions outside action_space=Discrete(2)" in str(info.value) and "max=2" in str(
        info.value)
    with pytest.raises(ValueError, match="expected shape \\(batch_size, 2\\)"):
        action_rows(gym.spaces.Box(-1, 1, (2,)), np.zeros((3, 3)))
    rows = action_rows(gym.spaces.MultiDiscrete([2, 3]), np.array([[1, 2]]))
    assert rows.tolist() == [[1, 2]]
    with pytest.raises(ValueError, match="outside"):
        action_rows(gym.spaces.MultiDiscrete([2, 3]), np.array([[2, 0]]))
