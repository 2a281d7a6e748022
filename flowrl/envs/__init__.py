"""flowrl's built-in environments and the PettingZoo parallel-env protocol for multi-agent envs.

Each built-in env is registered by name in :mod:`flowrl.env` (``docs/envs.md`` lists them):
``"MultiAgentArena-v0"``, ``"TwoStepGame-v0"`` (PettingZoo parallel envs),
``"StatelessCartPole-v1"`` and ``"RepeatAfterMe-v0"`` (gymnasium envs that need memory). So
``flowrl.make_env("MultiAgentArena-v0", {"width": 6})`` builds one.
"""

from flowrl.envs.memory import RepeatAfterMe, StatelessCartPole
from flowrl.envs.multi_agent_arena import MultiAgentArena
from flowrl.envs.protocol import (
    ParallelEnvProtocolError,
    ProtocolCheckedParallelEnv,
    is_multi_agent_env,
)
from flowrl.envs.two_step_game import TwoStepGame

__all__ = [
    "MultiAgentArena",
    "ParallelEnvProtocolError",
    "ProtocolCheckedParallelEnv",
    "RepeatAfterMe",
    "StatelessCartPole",
    "TwoStepGame",
    "is_multi_agent_env",
]
