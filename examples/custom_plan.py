"""Write your own execution plan from flowrl's operators and train it.

This plan is A2C with two changes a researcher might try: advantages standardized per batch,
and three SGD epochs per batch. It runs with the PPO policy's loss (clipped surrogate), i.e.
a PPO without KL adaptation. Draw it, then train it:

    python examples/custom_plan.py
"""

from __future__ import annotations

import flowrl
from flowrl.ops import (
    BroadcastWeights,
    ConcatBatches,
    ParallelRollouts,
    StandardizeFields,
    TrainOneStep,
)
from flowrl.viz import to_dot


def my_plan(workers, config):
    # Lock-step sampling: every batch comes from the current weights.
    rollouts = ParallelRollouts(workers, mode="bulk_sync")
    batches = rollouts.combine(ConcatBatches(min_batch_size=config.train_batch_size))
    batches = batches.for_each(StandardizeFields(["advantages"]))
    trained = batches.for_each(TrainOneStep(workers, num_sgd_iter=3, sgd_minibatch_size=128))
    # Weight sync is its own stage.
    return trained.for_each(BroadcastWeights(workers))


if __name__ == "__main__":
    trainer = flowrl.Trainer("ppo", env="CartPole-v1", plan=my_plan, local_mode=True,
                             config={"num_workers": 0, "seed": 0})
    print(to_dot(trainer.plan_graph()))
    for _ in range(30):
        result = trainer.train()
        print(result["training_iteration"], round(result["episode_reward_mean"], 1))
    trainer.stop()
