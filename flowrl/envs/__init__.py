"""flowrl's built-in environments and the PettingZoo parallel-env protocol for multi-agent envs.

`MultiAgentArena` is registered as ``"MultiAgentArena-v0"`` in :mod:`flowrl.env`, so
``flowrl.make_env("MultiAgentArena-v0", {"width": 6})`` builds one.
"""

from flowrl.envs.multi_agent_arena import MultiAgentArena
from flowrl.envs.protocol import (
    ParallelEnvProtocolError,
    ProtocolCheckedParallelEnv,
    is_multi_agent_env,
)

__all__ = [
    "MultiAgentArena",
    "ParallelEnvProtocolError",
    "ProtocolCheckedParallelEnv",
    "is_multi_agent_env",
]
