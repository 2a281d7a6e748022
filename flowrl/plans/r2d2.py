"""R2D2: recurrent replay distributed DQN (Kapturowski et al., 2019), on DQN's replay plan.

Paper: https://openreview.net/forum?id=r1lyTjAqYX

Implementation details:
1. DQN's two flows (`flowrl.plans.off_policy.replay_train_flow`), with one stage more in the
   store flow: `SequenceBuilder` cuts each round's steps into fixed-length sequences, each
   `burn_in + model.max_seq_len + n_step` steps of one episode with the recurrent state the
   actor had at its first step; the prioritized buffer stores and samples sequences as rows.
   It keeps every running episode's unfinished steps across rounds (see its module), so
   sampling rounds keep their fixed size and `training_intensity` its meaning.
2. Burn-in (the losses are in `flowrl.plans.r2d2_losses`): the first `burn_in` steps of a
   sequence run the online and the target network from the stored state without gradient
   and without loss, only to warm the state; the next `model.max_seq_len` steps are
   trained; the last `n_step` only bootstrap. The first sequences of an episode have their
   burn-in zero-padded before the episode's start (they begin from the initial state, which
   is exact there). `zero_init_states` starts every sequence from the initial state instead
   of the stored one.
3. n-step double Q with value rescaling (`use_h_function`):
   `target = h(R_n + gamma^k h^-1(Q_target(s_{t+k}, argmax_a Q_online(s_{t+k}, a))))`, with
   `h(x) = sign(x)(sqrt(|x| + 1) - 1) + eps x` and k = min(n_step, steps left in the episode);
   a terminated episode does not bootstrap, a truncated one does, from its final observation.
4. Loss: Huber (delta 1) of the TD errors over each sequence's trained steps (padding masked
   out), averaged per sequence, weighted by the importance weights, averaged over sequences.
5. Priorities per sequence: `eta * max_t |delta_t| + (1 - eta) * mean_t |delta_t|` over its
   trained steps (`priority_eta`, 0.9), with the weights the batch is trained with.
6. `buffer_size`, `learning_starts` and `train_batch_size` count sequences;
   `training_intensity` counts trained steps (`max_seq_len` per sequence) per env step.
7. Single-agent only; no Ape-X variant yet (see docs/plans/r2d2.md).

Metrics reported: `info/learner/default_policy/{total_loss, mean_q, min_q, max_q,
mean_td_error, grad_gnorm, cur_lr}`, plus the shared `sampler/env_steps`,
`learner/steps_trained` (sequences), `learner/target_updates`, `replay/rows_added`
(sequences), `replay/priority_updates`, `learner/weight_broadcasts`, `timers/learn`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from flowrl.config import ModelConfig
from flowrl.iter import LocalIterator
from flowrl.ops import ParallelRollouts, TrainResult
from flowrl.plans.dqn import DQNConfig, dqn_epsilon_greedy
from flowrl.plans.off_policy import replay_train_flow
from flowrl.plans.r2d2_losses import (  # noqa: F401 - re-exported: R2D2's maths lives there
    compute_sequence_priorities,
    inverse_value_rescale,
    r2d2_loss_tf,
    r2d2_loss_torch,
    value_rescale,
)
from flowrl.policy import PolicySpec, q_model
from flowrl.replay import SequenceBuilder
from flowrl.workers import WorkerSet


@dataclass(frozen=True, kw_only=True)
class R2D2Config(DQNConfig):
    """R2D2's hyperparameters: DQN's, with sequences, burn-in and value rescaling."""

    model: ModelConfig = dataclasses.field(default_factory=lambda: ModelConfig(
        fcnet_hiddens=(64,), fcnet_activation="relu", use_lstm=True, lstm_cell_size=64,
        max_seq_len=20))
    """The recurrent Q-network; `max_seq_len` is the trained steps of each replayed sequence."""
    buffer_size: int = 5000
    """Replay capacity in sequences."""
    learning_starts: int = 50
    """Sequences stored before the first gradient step."""
    train_batch_size: int = 32
    """Sequences per replayed batch (one gradient step each)."""
    training_intensity: float | None = 160.0
    """Steps trained on (max_seq_len per sequence) per env step sampled; None: a batch a round."""
    target_network_update_freq: int = 1000
    """Env steps sampled between copies of the online network into the target network."""
    burn_in: int = 10
    """Steps before each sequence's trained part that only warm the recurrent state (R2D2: 40)."""
    sequence_overlap: int = 0
    """Trained steps shared by adjacent sequences of an episode; 0 tiles it (R2D2: 40 of 80)."""
    zero_init_states: bool = False
    """Start replayed sequences from the initial state instead of the actor's stored state."""
    use_h_function: bool = True
    """Value rescaling h(x) = sign(x)(sqrt(|x| + 1) - 1) + eps x on the n-step targets."""
    h_function_epsilon: float = 1e-3
    """The eps of h(x): its linear term, which keeps h^-1 Lipschitz."""
    priority_eta: float = 0.9
    """Sequence priority: eta * max |TD error| + (1 - eta) * mean |TD error| over its steps."""

    @property
    def replayed_steps_per_row(self) -> int:
        """A replayed sequence trains on `model.max_seq_len` steps."""
        return self.model.max_seq_len

    def _validate(self) -> None:
        super()._validate()
        if self.burn_in < 0:
            raise ValueError(f"burn_in must be >= 0 steps, got burn_in={self.burn_in}.")
        if not 0 <= self.sequence_overlap < self.model.max_seq_len:
            raise ValueError(
                f"sequence_overlap must be in [0, model.max_seq_len) so that adjacent sequences "
                f"advance; got sequence_overlap={self.sequence_overlap}, model.max_seq_len="
                f"{self.model.max_seq_len}.")
        if not 0.0 <= self.priority_eta <= 1.0:
            raise ValueError(f"priority_eta mixes max and mean TD errors, so it lies in [0, 1]; "
                             f"got priority_eta={self.priority_eta}.")
        if self.h_function_epsilon < 0:
            raise ValueError(f"h_function_epsilon must be >= 0, got {self.h_function_epsilon}.")
        if not (self.model.use_lstm or self.model.use_gru or self.model.custom_model):
            raise ValueError("R2D2 trains a recurrent Q-network: set model.use_lstm=True (or "
                             "model.use_gru=True), or a recurrent model.custom_model.")
        if self.model.lstm_use_prev_action or self.model.lstm_use_prev_reward:
            raise ValueError("R2D2 does not feed previous actions or rewards to its LSTM yet; "
                             "set model.lstm_use_prev_action and lstm_use_prev_reward to False.")


# ---- the policy and the plan ------------------------------------------------------------------


R2D2_POLICY = PolicySpec(name="r2d2", torch_loss=r2d2_loss_torch, tf_loss=r2d2_loss_tf,
                         model=q_model, action_selection=dqn_epsilon_greedy, postprocess=None,
                         target_network=True, recurrent_loss=True, batch_of_sequences=True,
                         config_class=R2D2Config)
"""R2D2's policy: a recurrent (dueling) Q-network and its target, epsilon-greedy acting with
the state carried per env, trained on replayed sequences."""


def sequence_builder(config: R2D2Config) -> SequenceBuilder:
    """The `SequenceBuilder` that cuts `config`'s sequences."""
    return SequenceBuilder(burn_in=config.burn_in, train_length=config.model.max_seq_len,
                           n_step=config.n_step, gamma=config.gamma,
                           overlap=config.sequence_overlap)


def r2d2_flow(experiences: LocalIterator[Any], workers: WorkerSet, config: R2D2Config,
              policy_id: str | None = None) -> LocalIterator[TrainResult]:
    """R2D2's flows for one policy: DQN's store and replay-train flows, the steps cut into
    sequences before they are stored (`replay_train_flow` with `SequenceBuilder`)."""
    return replay_train_flow(experiences, workers, config, policy_id,
                             compute_td_errors=compute_sequence_priorities,
                             rows_to_store=sequence_builder(config))


def r2d2_plan(workers: WorkerSet, config: R2D2Config) -> LocalIterator[TrainResult]:
    """R2D2 as a dataflow: sample, cut into sequences, store; replay, prioritize, train."""
    return r2d2_flow(ParallelRollouts(workers, mode="bulk_sync"), workers, config)
