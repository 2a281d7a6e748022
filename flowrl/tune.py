"""Ray Tune support: any flowrl algorithm (or your own plan) as a Tune Trainable.

```python
from ray import tune
import flowrl.tune

tuner = tune.Tuner(
    flowrl.tune.trainable("ppo"),
    param_space={"env": "CartPole-v1", "lr": tune.grid_search([1e-3, 3e-4])},
    run_config=tune.RunConfig(stop={"training_iteration": 20}),
)
results = tuner.fit()
```

The param space is the algorithm's config as a dict plus one key, ``env`` (a gymnasium id or a
name given to ``flowrl.register_env``); it is validated like any flowrl config, so a misspelled
key fails the trial with the closest valid name. Each ``step`` is one ``Trainer.train()``;
checkpoints are ``Trainer.save``/``restore`` inside the directory Tune hands out. Each trial
reserves one CPU for its driver plus ``num_cpus_per_worker`` for each rollout worker.

Needs the ``tune`` extra: ``pip install 'flowrl[tune]'``.
"""

from __future__ import annotations

import glob
import os
import warnings
from collections.abc import Callable
from typing import Any

from flowrl.config import from_dict
from flowrl.plans import get_algorithm

__all__ = ["trainable"]


def trainable(algo: str, *, plan: Callable[[Any, Any], Any] | None = None) -> type:
    """Returns a ``ray.tune.Trainable`` subclass that trains ``algo`` (with ``plan`` if given).

    Args:
        algo: a built-in algorithm name (its config class and policy are used), e.g. "ppo".
        plan: your own plan ``(workers, config) -> iterator`` in place of the built-in one.

    Raises:
        ImportError: when Ray Tune is not installed, saying how to install it.
        ValueError: for an unknown algorithm name (naming the closest).
    """
    try:
        from ray import tune
        from ray.tune.execution.placement_groups import PlacementGroupFactory
    except ImportError as error:
        raise ImportError(
            f"flowrl.tune needs Ray Tune, which cannot be imported ({error}). Install it with "
            f"`pip install 'flowrl[tune]'` (or `pip install 'ray[tune]'`)."
        ) from None
    spec = get_algorithm(algo)

    class FlowrlTrainable(tune.Trainable):
        """One Tune trial: a flowrl Trainer built from the trial's config."""

        @classmethod
        def default_resource_request(cls, config: dict[str, Any]) -> PlacementGroupFactory:
            with warnings.catch_warnings():  # the trial's own config check shows them
                warnings.simplefilter("ignore")
                settings = from_dict(spec.config_class, _without_env(config))
            bundles = [{"CPU": 1.0}] + [
                {"CPU": settings.num_cpus_per_worker} for _ in range(settings.num_workers)
            ]
            return PlacementGroupFactory(bundles, strategy="PACK")

        def setup(self, config: dict[str, Any]) -> None:
            from flowrl.trainer import Trainer

            env = config.get("env")
            if not env:
                raise ValueError(
                    f"The param space of flowrl.tune.trainable({algo!r}) needs an 'env' key "
                    f"(a gymnasium id or a registered name); got keys {sorted(config)}. "
                    f'Example: param_space={{"env": "CartPole-v1", "lr": 1e-3}}.'
                )
            self.trainer = Trainer(spec.name, env=env, config=_without_env(config), plan=plan)

        def step(self) -> dict[str, Any]:
            result = self.trainer.train()
            result.pop("ops", None)  # per-operator statistics: the plan viewer's, not Tune's
            return result

        def save_checkpoint(self, checkpoint_dir: str) -> None:
            self.trainer.save(checkpoint_dir)

        def load_checkpoint(self, checkpoint: str | dict | None) -> None:
            if not isinstance(checkpoint, str):
                raise TypeError(
                    f"A flowrl trial restores from the directory its save_checkpoint wrote; got "
                    f"checkpoint={checkpoint!r}."
                )
            saved = sorted(glob.glob(os.path.join(checkpoint, "checkpoint_*")))
            if not saved:
                raise FileNotFoundError(
                    f"No flowrl checkpoint in {checkpoint!r}: expected a checkpoint_<iteration> "
                    f"directory written by Trainer.save()."
                )
            self.trainer.restore(saved[-1])

        def cleanup(self) -> None:
            self.trainer.stop()

    FlowrlTrainable.__name__ = FlowrlTrainable.__qualname__ = f"{spec.name}Trainable"
    return FlowrlTrainable


def _without_env(config: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in config.items() if key != "env"}
