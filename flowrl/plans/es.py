"""ES: evolution strategies as a scalable alternative to RL (Salimans et al., 2017).

Paper: https://arxiv.org/abs/1703.03864

Implementation details:
1. A shared noise table (`noise_size` float32, once per node in Ray's object store, read
   zero-copy); a perturbation travels as an integer offset into it.
2. Antithetic pairs: every offset is evaluated as θ + σε and θ − σε from the same env seed.
3. Returns of all 2N episodes become centered ranks in [-0.5, 0.5]; the gradient estimate is
   g = Σ (rank⁺ − rank⁻) ε / 2N, and Adam (`lr`) minimizes −g + `l2_coeff` · θ.
4. Observations are normalized by a mean/std filter merged from every worker's observations
   after each update and sent back with the weights.
5. Results are taken as they arrive and tagged with their weights' version; results for old
   weights are dropped (`gradient_free/stale_results_dropped`). An iteration collects at least
   `episodes_per_batch` episodes and `train_batch_size` steps, whatever the number of workers.
6. With probability `eval_prob` a request also runs one noise-free episode of θ: those are the
   episodes the Trainer reports (`episode_reward_mean`).
7. Policies are a flat vector: a numpy linear map or MLP by default (`numpy_policy`), or any
   built-in Torch/TF model through its flat weights.

Metrics reported: `info/learner/default_policy/{perturbed_return_mean, perturbed_return_max,
pairs, update_norm, weights_norm, weights_version, grad_norm}`, counters `sampler/env_steps`,
`learner/steps_trained`, `learner/weight_broadcasts`, `gradient_free/perturbed_episodes`,
`gradient_free/eval_episodes`, `gradient_free/stale_results_dropped`,
`gradient_free/stale_env_steps_dropped`; info `gradient_free/noise_table_creation_s`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from flowrl.config import AlgorithmConfig, ModelConfig
from flowrl.iter import LocalIterator
from flowrl.ops import BroadcastWeights, TrainResult
from flowrl.ops.gradient_free import (
    CollectPerturbations,
    DropStaleResults,
    MergeObservationStats,
    PerturbationRollouts,
    SyncObservationFilter,
    UpdateFromReturns,
    centered_ranks,
)
from flowrl.policy.gradient_free import GradientFreePolicySpec
from flowrl.workers import WorkerSet
from flowrl.workers.noise_table import DEFAULT_NOISE_SIZE, SharedNoiseTable


@dataclass(frozen=True, kw_only=True)
class GradientFreeConfig(AlgorithmConfig):
    """Settings ES and ARS share: the noise table, perturbations, filter, policy backend."""

    noise_stdev: float = 0.02
    """σ, the std of the parameter perturbations; typically 0.01-0.1."""
    noise_size: int = DEFAULT_NOISE_SIZE
    """Float32 entries of the shared noise table (25M = 100 MB per node); checked against memory."""
    pairs_per_request: int = 5
    """Antithetic pairs a worker runs per request (amortizes call overhead); typically 1-20."""
    max_sample_requests_in_flight_per_worker: int = 1
    """Requests queued on each worker; 1 wastes least work on stale weights."""
    eval_prob: float = 0.03
    """Chance a request also runs one noise-free episode (the reported episodes); 0.003-0.1."""
    observation_filter: Literal["MeanStdFilter", "NoFilter"] = "MeanStdFilter"
    """Normalize observations by their running mean/std, merged from every worker."""
    numpy_policy: bool = True
    """Act with a numpy linear/MLP policy (no framework on workers); False: the framework's."""
    action_noise_std: float = 0.0
    """Gaussian noise added to Box actions in perturbed episodes; typically 0-0.1."""
    lr: float = 0.01
    """Step size of the flat optimizer; typically 0.005-0.05."""
    num_cpus_per_worker: float = 1.0
    """CPUs Ray reserves for each rollout worker actor; typically 0.5-2."""
    metrics_num_episodes_for_smoothing: int = 20
    """Reported episode metrics average this many recent noise-free evaluation episodes."""

    def _warn_if_batch_smaller_than_sample_round(self) -> None:
        """No warning: these plans run whole episodes, never fragments of a sampling round."""

    def _validate(self) -> None:
        super()._validate()
        self._check_in_range("noise_stdev", 0.0, 10.0, low_open=True)
        self._check_at_least("noise_size", 1)
        self._check_at_least("pairs_per_request", 1)
        self._check_at_least("max_sample_requests_in_flight_per_worker", 1)
        self._check_in_range("eval_prob", 0.0, 1.0)
        self._check_at_least("action_noise_std", 0.0)
        hiddens = self.model.fcnet_hiddens
        if self.numpy_policy and self.model.conv_filters:
            raise ValueError(
                f"numpy_policy=True runs linear and MLP policies only; got conv_filters="
                f"{self.model.conv_filters}. Set numpy_policy=False to use the {self.framework} "
                "model, or remove conv_filters.")
        if self.numpy_policy and sum(hiddens) > 1024:
            self._warn(f"numpy_policy with fcnet_hiddens={hiddens} evaluates a large MLP in "
                       "numpy on every step; numpy_policy=False may be faster.")


@dataclass(frozen=True, kw_only=True)
class ESConfig(GradientFreeConfig):
    """ES hyperparameters (defaults from Salimans et al. 2017 / RLlib)."""

    episodes_per_batch: int = 1000
    """Minimum episodes per update (two per antithetic pair); typically 100-10000."""
    train_batch_size: int = 10_000
    """Minimum env steps per update, with episodes_per_batch; typically 1000-100000."""
    l2_coeff: float = 0.005
    """L2 weight decay added to the ES gradient; typically 0-0.01."""
    model: ModelConfig = field(default_factory=lambda: ModelConfig(fcnet_hiddens=(32, 32)))
    """Network settings; ES perturbs every weight, so small nets: (32, 32) or smaller."""

    def _validate(self) -> None:
        super()._validate()
        self._check_at_least("episodes_per_batch", 2, "An antithetic pair is two episodes.")
        self._check_at_least("l2_coeff", 0.0)

    @property
    def min_pairs_per_batch(self) -> int:
        """Antithetic pairs an update needs: episodes_per_batch / 2, rounded up."""
        return math.ceil(self.episodes_per_batch / 2)


@dataclass(frozen=True)
class ESGradient:
    """ES's gradient estimate from centered ranks of all returns, plus L2 decay (a value,
    like a loss): returns the gradient of the loss to minimize, −g + l2_coeff · θ."""

    l2_coeff: float = 0.005

    def __call__(self, returns: np.ndarray, noise: np.ndarray, theta: np.ndarray
                 ) -> tuple[np.ndarray, dict[str, float]]:
        ranks = centered_ranks(returns)
        weights = ranks[:, 0] - ranks[:, 1]
        gradient = weights @ noise.astype(np.float64) / returns.size
        return -gradient + self.l2_coeff * theta, {"grad_norm": float(np.linalg.norm(gradient))}


ES_POLICY = GradientFreePolicySpec(name="es", optimizer="adam", config_class=ESConfig)
"""ES's policy: a flat parameter vector stepped with Adam."""


def es_plan(workers: WorkerSet, config: ESConfig) -> LocalIterator[TrainResult]:
    """ES as a dataflow: offsets fan out to the workers, returns fan in, one Adam step, sync."""
    noise = SharedNoiseTable(size=config.noise_size, seed=config.seed or 0)
    # Every worker evaluates antithetic pairs; results arrive tagged with their weights.
    results = PerturbationRollouts(
        workers, noise, pairs_per_request=config.pairs_per_request,
        noise_stdev=config.noise_stdev, eval_prob=config.eval_prob, seed=config.seed,
        requests_in_flight=config.max_sample_requests_in_flight_per_worker)
    # Observations count for the filter even when the result itself is stale.
    fresh = results.for_each(MergeObservationStats(workers)).filter(DropStaleResults(workers))
    batches = fresh.combine(CollectPerturbations(min_pairs=config.min_pairs_per_batch,
                                                 min_steps=config.train_batch_size))
    updated = batches.for_each(UpdateFromReturns(workers, noise,
                                                 estimator=ESGradient(config.l2_coeff)))
    # Filter and weights go back to the workers as explicit stages.
    return updated.for_each(SyncObservationFilter(workers)).for_each(BroadcastWeights(workers))
