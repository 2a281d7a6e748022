"""ARS: augmented random search (Mania, Guy and Recht, 2018).

Paper: https://arxiv.org/abs/1803.07055

Implementation details:
1. The shared noise table, antithetic pairs, stale-result dropping and observation filter of
   ES (`flowrl.plans.es`): the same dataflow with another update.
2. Linear policies by default (`fcnet_hiddens: []`, weights starting at zero), the paper's
   point: a linear map of normalized observations (ARS V2).
3. Each update collects `ars_num_directions` pairs; the `ars_top_directions` pairs with the
   best max(R⁺, R⁻) are kept; the step is θ += lr / (b σ_R) Σ (R⁺ − R⁻) ε, where σ_R is the
   std of the 2b kept returns. Raw returns, no ranks, no weight decay, plain SGD.
4. Noise-free evaluation episodes (probability `eval_prob` per request) are the episodes the
   Trainer reports.

Metrics reported: `info/learner/default_policy/{perturbed_return_mean, perturbed_return_max,
pairs, update_norm, weights_norm, weights_version, kept_returns_std, grad_norm}`, plus the
counters ES reports (`flowrl.plans.es`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from flowrl.config import ModelConfig
from flowrl.iter import LocalIterator
from flowrl.ops import BroadcastWeights, TrainResult
from flowrl.ops.gradient_free import (
    CollectPerturbations,
    DropStaleResults,
    MergeObservationStats,
    PerturbationRollouts,
    SyncObservationFilter,
    UpdateFromReturns,
    returns_std,
    top_directions,
)
from flowrl.plans.es import GradientFreeConfig
from flowrl.policy.gradient_free import GradientFreePolicySpec
from flowrl.workers import WorkerSet
from flowrl.workers.noise_table import SharedNoiseTable


@dataclass(frozen=True, kw_only=True)
class ARSConfig(GradientFreeConfig):
    """ARS hyperparameters (defaults from Mania et al. 2018 / RLlib)."""

    ars_num_directions: int = 32
    """Antithetic directions (pairs) per update, N; typically 4-256."""
    ars_top_directions: int = 32
    """Best directions kept for the update, b <= N; typically N/4 to N."""
    pairs_per_request: int = 1
    """Directions a worker runs per request; 1 keeps few stale pairs per update."""
    train_batch_size: int = 1
    """Minimum env steps per update besides the directions; 1: the directions alone decide."""
    model: ModelConfig = field(default_factory=lambda: ModelConfig(fcnet_hiddens=()))
    """Network settings; () is ARS's linear policy."""

    def _validate(self) -> None:
        super()._validate()
        self._check_at_least("ars_num_directions", 1)
        self._check_in_range(
            "ars_top_directions", 1, self.ars_num_directions,
            fix=f"Keep at most ars_num_directions={self.ars_num_directions} directions.")


@dataclass(frozen=True)
class ARSGradient:
    """ARS's step from the top-b directions, scaled by the std of their returns (a value,
    like a loss): returns the gradient of the loss to minimize, −g."""

    top_directions: int = 32

    def __call__(self, returns: np.ndarray, noise: np.ndarray, theta: np.ndarray
                 ) -> tuple[np.ndarray, dict[str, float]]:
        kept = top_directions(returns, self.top_directions)
        std = returns_std(returns[kept])
        differences = returns[kept, 0] - returns[kept, 1]
        gradient = differences @ noise[kept].astype(np.float64) / (len(kept) * std)
        return -gradient, {"kept_returns_std": std,
                           "grad_norm": float(np.linalg.norm(gradient))}


ARS_POLICY = GradientFreePolicySpec(name="ars", optimizer="sgd", config_class=ARSConfig)
"""ARS's policy: a flat parameter vector (linear by default) stepped with plain SGD."""


def ars_plan(workers: WorkerSet, config: ARSConfig) -> LocalIterator[TrainResult]:
    """ARS as a dataflow: ES's fan-out and fan-in with the top-b, std-scaled update."""
    noise = SharedNoiseTable(size=config.noise_size, seed=config.seed or 0)
    # Every worker evaluates antithetic directions; results arrive tagged with their weights.
    results = PerturbationRollouts(
        workers, noise, pairs_per_request=config.pairs_per_request,
        noise_stdev=config.noise_stdev, eval_prob=config.eval_prob, seed=config.seed,
        requests_in_flight=config.max_sample_requests_in_flight_per_worker)
    # Observations count for the filter even when the result itself is stale.
    fresh = results.for_each(MergeObservationStats(workers)).filter(DropStaleResults(workers))
    batches = fresh.combine(CollectPerturbations(min_pairs=config.ars_num_directions,
                                                 min_steps=config.train_batch_size))
    updated = batches.for_each(UpdateFromReturns(
        workers, noise, estimator=ARSGradient(config.ars_top_directions)))
    # Filter and weights go back to the workers as explicit stages.
    return updated.for_each(SyncObservationFilter(workers)).for_each(BroadcastWeights(workers))
