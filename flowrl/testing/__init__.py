"""Small deterministic environments shared by flowrl's tests, docs and examples."""

from flowrl.testing.envs import CorridorEnv, NaNRewardEnv

__all__ = ["CorridorEnv", "NaNRewardEnv"]
