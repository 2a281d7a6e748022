"""Small deterministic environments shared by flowrl's tests, docs and examples."""

from flowrl.testing.envs import ContinuousCorridorEnv, CorridorEnv, NaNRewardEnv

__all__ = ["ContinuousCorridorEnv", "CorridorEnv", "NaNRewardEnv"]
