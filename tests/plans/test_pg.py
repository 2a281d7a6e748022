"""PG: learns a corridor with plain returns."""

from __future__ import annotations

import flowrl


def test_pg_improves_on_the_corridor(tiny_config, local_executor):
    config = tiny_config("pg", lr=0.02, train_batch_size=200, rollout_fragment_length=20,
                         env_config={"length": 3, "max_steps": 6})
    trainer = flowrl.Trainer("pg", env="corridor", config=config)
    try:
        first = trainer.train()
        for _ in range(25):
            last = trainer.train()
    finally:
        trainer.stop()
    # Reaching the end gives 1; a random walk reaches it about half the time.
    assert last["episode_reward_mean"] > max(first["episode_reward_mean"], 0.9)
