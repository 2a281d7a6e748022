"""Built-in algorithms, each an execution plan, registered in one explicit mapping.

`ALGORITHMS` maps a lower-case name to an `AlgorithmSpec`: the algorithm's config class, its
plan function `(workers, config) -> iterator`, and the `PolicySpec` it trains. Nothing is
registered by import side effect of a plan module, and nothing is generated at run time: every
entry pickles with the standard `pickle` module.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from flowrl.plans import (
    a2c,
    a3c,
    apex,
    apex_ddpg,
    appo,
    ars,
    ddpg,
    dqn,
    es,
    impala,
    pg,
    ppo,
    r2d2,
    sac,
    td3,
)
from flowrl.policy import PolicySpec, policy_class
from flowrl.policy.spec import FRAMEWORKS


@dataclass(frozen=True)
class AlgorithmSpec:
    """Everything the Trainer needs to run one built-in algorithm."""

    name: str
    """Display name, e.g. "PPO"."""
    config_class: type
    """The algorithm's frozen config dataclass."""
    plan: Callable[[Any, Any], Any]
    """`plan(workers, config)` -> the plan's output iterator."""
    policy: PolicySpec
    """The policy this algorithm trains (losses, model, action selection)."""
    description: str
    """One line for `flowrl list`."""
    flow: Callable[..., Any] | None = None
    """`flow(experiences, workers, config, policy_id)` -> the flow that trains one policy, for
    `multiagent_plan` to compose with other algorithms' flows; None: the algorithm's plan
    trains only policies of its own."""
    steps_per_output: Callable[[Any, Any], float] | None = None
    """`(workers, config)` -> env steps `flow` consumes per output (balances composed flows)."""
    flow_input: Literal["batches", "sourced"] = "batches"
    """What `flow` reads: "batches" (synchronous rounds of samples) or "sourced" ((worker,
    fragment) pairs as each worker finishes, for learner-thread flows)."""


ALGORITHMS: dict[str, AlgorithmSpec] = {
    "pg": AlgorithmSpec("PG", pg.PGConfig, pg.pg_plan, pg.PG_POLICY,
                        "Vanilla policy gradient (REINFORCE) with synchronous sampling.",
                        pg.pg_flow, pg.steps_per_update),
    "a2c": AlgorithmSpec("A2C", a2c.A2CConfig, a2c.a2c_plan, pg.PG_POLICY,
                         "Synchronous advantage actor-critic, optionally with microbatches.",
                         a2c.a2c_flow, pg.steps_per_update),
    "a3c": AlgorithmSpec("A3C", a3c.A3CConfig, a3c.a3c_plan, pg.PG_POLICY,
                         "Asynchronous advantage actor-critic: gradients computed on workers."),
    "ppo": AlgorithmSpec("PPO", ppo.PPOConfig, ppo.ppo_plan, ppo.PPO_POLICY,
                         "Proximal policy optimization with clipped surrogate and adaptive KL.",
                         ppo.ppo_flow, pg.steps_per_update),
    "impala": AlgorithmSpec("IMPALA", impala.IMPALAConfig, impala.impala_plan,
                            impala.IMPALA_POLICY,
                            "Async sampling into a learner thread with V-trace off-policy "
                            "correction.", impala.impala_flow,
                            impala.learner_steps_per_output, "sourced"),
    "appo": AlgorithmSpec("APPO", appo.APPOConfig, appo.appo_plan, appo.APPO_POLICY,
                          "Asynchronous PPO: IMPALA's learner thread with a clipped surrogate "
                          "on V-trace advantages.", appo.appo_flow,
                          impala.learner_steps_per_output, "sourced"),
    "dqn": AlgorithmSpec("DQN", dqn.DQNConfig, dqn.dqn_plan, dqn.DQN_POLICY,
                         "Deep Q-learning: double Q, dueling heads, n-step returns, prioritized "
                         "replay.", dqn.dqn_flow, dqn.dqn_steps_per_output),
    "r2d2": AlgorithmSpec("R2D2", r2d2.R2D2Config, r2d2.r2d2_plan, r2d2.R2D2_POLICY,
                          "Recurrent replay DQN: stored-state sequences, burn-in, value "
                          "rescaling, n-step double Q."),
    "sac": AlgorithmSpec("SAC", sac.SACConfig, sac.sac_plan, sac.SAC_POLICY,
                         "Soft actor-critic: squashed-Gaussian (or discrete) actor, twin "
                         "critics, learned temperature.", sac.sac_flow,
                         sac.sac_steps_per_output),
    "ddpg": AlgorithmSpec("DDPG", ddpg.DDPGConfig, ddpg.ddpg_plan, ddpg.DDPG_POLICY,
                          "Deep deterministic policy gradient: deterministic actor, critic, "
                          "OU exploration.", ddpg.ddpg_flow, ddpg.ddpg_steps_per_output),
    "td3": AlgorithmSpec("TD3", td3.TD3Config, td3.td3_plan, td3.TD3_POLICY,
                         "Twin delayed DDPG: clipped double Q, delayed actor, target "
                         "smoothing.", td3.td3_flow, ddpg.ddpg_steps_per_output),
    "apex": AlgorithmSpec("APEX", apex.ApexConfig, apex.apex_plan, apex.APEX_POLICY,
                          "Ape-X: async rollouts into replay actors feeding a DQN learner "
                          "thread."),
    "apex_ddpg": AlgorithmSpec("APEX_DDPG", apex_ddpg.ApexDDPGConfig, apex_ddpg.apex_ddpg_plan,
                               apex_ddpg.APEX_DDPG_POLICY,
                               "Ape-X DDPG: async rollouts into replay actors feeding a DDPG "
                               "(or TD3) learner thread."),
    "es": AlgorithmSpec("ES", es.ESConfig, es.es_plan, es.ES_POLICY,
                        "Evolution strategies: antithetic perturbations from a shared noise "
                        "table, centered ranks, Adam."),
    "ars": AlgorithmSpec("ARS", ars.ARSConfig, ars.ars_plan, ars.ARS_POLICY,
                         "Augmented random search: top-b antithetic directions, linear policy "
                         "by default."),
}


def list_algorithms() -> list[str]:
    """Names of the built-in algorithms, as accepted by `flowrl.run` and `flowrl.Trainer`."""
    return [spec.name for spec in ALGORITHMS.values()]


def get_algorithm(name: str) -> AlgorithmSpec:
    """Looks up a built-in algorithm by name (case-insensitive).

    Raises:
        ValueError: for an unknown name, suggesting the closest valid one.
    """
    key = str(name).lower()
    if key in ALGORITHMS:
        return ALGORITHMS[key]
    close = difflib.get_close_matches(key, list(ALGORITHMS), n=1)
    hint = f" Did you mean {ALGORITHMS[close[0]].name!r}?" if close else ""
    raise ValueError(
        f"Unknown algorithm {name!r}.{hint} Valid algorithms: {list_algorithms()}. To run a plan "
        "of your own, pass plan=your_plan to flowrl.Trainer."
    )


def get_policy_spec(algo: str) -> PolicySpec:
    """The `PolicySpec` a built-in algorithm trains."""
    return get_algorithm(algo).policy


def get_policy_class(*args: str, framework: str | None = None) -> type:
    """`TorchPolicy` or `TFPolicy`: the class every built-in policy is, for `framework`.

    `get_policy_class("torch")` and `get_policy_class(framework="tf")` both work. 0.1's form
    `get_policy_class(algo, framework=...)`, one generated class per algorithm, is gone: a call
    naming an algorithm raises a TypeError that names what replaced it.

    Examples:
        >>> get_policy_class("ppo", framework="torch")
        Traceback (most recent call last):
        ...
        TypeError: get_policy_class('ppo', framework='torch') is flowrl 0.1's call...
    """
    if len(args) > 1 or (args and framework is not None) or (
            args and args[0] not in FRAMEWORKS and args[0].lower() in ALGORITHMS):
        shown = ", ".join([*map(repr, args)] + ([f"framework={framework!r}"] if framework
                                               else []))
        algo = next((a for a in args if a.lower() in ALGORITHMS), "ppo")
        raise TypeError(
            f"get_policy_class({shown}) is flowrl 0.1's call, which returned one generated "
            f"class per algorithm. Since 0.2 every algorithm's policy is a TorchPolicy or "
            f"TFPolicy built from the algorithm's PolicySpec: use "
            f"flowrl.plans.get_policy_spec({algo!r}).build(observation_space, action_space, "
            f"config) for a policy, or get_policy_class(framework={framework or 'torch'!r}) "
            f"for the class.")
    return policy_class(framework or (args[0] if args else "torch"))


__all__ = ["ALGORITHMS", "AlgorithmSpec", "get_algorithm", "get_policy_class", "get_policy_spec",
           "list_algorithms"]
