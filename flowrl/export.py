"""Export a trained policy for serving without flowrl: TorchScript (torch) or a SavedModel (TF).

The exported model maps a batch of *preprocessed* observation rows (`policy.preprocess(raw)`;
for a `Box` observation space that is the observations themselves as float32) to the greedy
actions in the env's action space, exactly the actions `policy.compute_actions(raw,
explore=False)` returns:

```python
from flowrl.export import export_policy
path = export_policy(trainer.get_policy(), "exported/")    # exported/policy.pt or a SavedModel

import torch                                                 # serving, without flowrl
actions = torch.jit.load("exported/policy.pt")(torch.as_tensor(obs_rows))
import tensorflow as tf
actions = tf.saved_model.load("exported/")(tf.constant(obs_rows))
```

Policies that sample a distribution (PG, A2C, A3C, PPO, IMPALA, APPO: its mode) and Q-networks
(DQN, Ape-X: the argmax) export; a recurrent policy or one of another kind is refused with the
reason.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from flowrl.policy.spaces import action_offset

TORCHSCRIPT_FILE = "policy.pt"
"""The file a torch policy is exported to, inside the export directory."""


def export_policy(policy: Any, directory: str | Path) -> str:
    """Writes `policy`'s greedy actions as a standalone model into `directory`.

    Returns:
        The path to load: `directory/policy.pt` (TorchScript) for a torch policy, `directory`
        (a SavedModel) for a TF one.

    Raises:
        ValueError: a recurrent policy, or a model that is neither a distribution's inputs nor
            Q-values (the message names what exports).
    """
    if getattr(policy, "is_recurrent", False):
        raise ValueError("export_policy exports stateless policies; this one is recurrent (its "
                         "actions depend on a state carried between calls). Serve it with "
                         "policy.compute_actions(obs, state) instead.")
    if policy.dist_class is None and hasattr(policy.model, "actor"):
        raise ValueError("export_policy exports policies that sample a distribution (PG, A2C, "
                         "A3C, PPO, IMPALA, APPO) and Q-networks (DQN, Ape-X); this policy has "
                         "a deterministic actor, which it does not export yet.")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    example = np.zeros((1, *policy.preprocessor.shape),
                       np.uint8 if policy.preprocessor.dtype == np.uint8 else np.float32)
    offset = np.asarray(action_offset(policy.action_space))
    shape = tuple(policy.action_space.shape)
    if policy.framework == "torch":
        return _export_torchscript(policy, directory, example, offset, shape)
    return _export_saved_model(policy, directory, example, offset, shape)


def _export_torchscript(policy: Any, directory: Path, example: np.ndarray, offset: np.ndarray,
                        shape: tuple[int, ...]) -> str:
    import torch

    class GreedyActions(torch.nn.Module):
        """The policy's model and its greedy action, traced into TorchScript."""

        def __init__(self) -> None:
            super().__init__()
            self.model = policy.model
            self.register_buffer("offset", torch.as_tensor(offset))

        def forward(self, obs: torch.Tensor) -> torch.Tensor:
            outputs = self.model(obs)
            if policy.dist_class is None:  # Q-values
                actions = torch.argmax(outputs, dim=-1)
            else:
                actions = policy.dist_class(outputs[0]).deterministic_sample()
            return (actions + self.offset).reshape((-1, *shape)).detach()

    path = directory / TORCHSCRIPT_FILE
    module = GreedyActions().to("cpu").eval()
    with torch.no_grad():
        traced = torch.jit.trace(module, torch.as_tensor(example), check_trace=False)
    traced.save(str(path))
    return str(path)


def _export_saved_model(policy: Any, directory: Path, example: np.ndarray,
                        offset: np.ndarray, shape: tuple[int, ...]) -> str:
    import tensorflow as tf

    model, dist_class = policy.model, policy.dist_class
    is_box = isinstance(policy.action_space, gym.spaces.Box)

    class GreedyActions(tf.Module):
        """The policy's model and its greedy action, as a SavedModel signature."""

        def __init__(self) -> None:
            super().__init__()
            self.model = model

        @tf.function(input_signature=[tf.TensorSpec((None, *example.shape[1:]),
                                                    tf.as_dtype(example.dtype))])
        def __call__(self, obs: tf.Tensor) -> tf.Tensor:
            outputs = self.model(obs)
            if dist_class is None:  # Q-values
                actions = tf.argmax(outputs, axis=-1)
            else:
                actions = dist_class(outputs[0]).deterministic_sample()
            if not is_box:
                actions = tf.cast(actions, tf.int64) + tf.constant(offset, tf.int64)
            return tf.reshape(actions, (-1, *shape))

    tf.saved_model.save(GreedyActions(), str(directory))
    return str(directory)


__all__ = ["TORCHSCRIPT_FILE", "export_policy"]
