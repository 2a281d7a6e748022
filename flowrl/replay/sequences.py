"""`SequenceBuilder`: cuts rollout steps into the fixed-length sequences R2D2 replays.

A rollout batch holds steps, each env's steps in time order, with the recurrent state the
policy had before each step (`state_in_{i}`), the episode id `eps_id` and the step index `t`.
R2D2 (Kapturowski et al., 2019) replays whole sequences instead: runs of one episode's steps,
each stored with the state the actor had at its first step, so the learner can restart the
recurrent network where the actor was.

Layout of one sequence (every sequence of a builder has the same length
`T = burn_in + train_length + n_step`, in episode time):

```
 position:  0 ........ burn_in ............ burn_in + train_length ....... T
 time:      s - burn_in     s                s + train_length          s + train_length + n_step
            [ burn-in      )[ trained steps  )[ only bootstrap from here  )
```

The trained parts of an episode start at `s = origin + k * stride` (k = 0, 1, ...; stride =
`train_length - overlap`), so with `overlap=0` they tile the episode and every step is trained
exactly once. The burn-in of sequence k is the `burn_in` steps before `s`; for the first
sequences of an episode it reaches before the episode's start, and those positions are zero
padding at the front (`burn_in_steps < burn_in`). After an episode's last step the sequence is
zero-padded at the end, except for one position right after it that holds the episode's final
observation (`new_obs` of the last step), so a truncated episode bootstraps from it.

Why the builder keeps a tail per episode across batches (instead of sampling with
`batch_mode="complete_episodes"`): a sampling round covers `rollout_fragment_length` steps per
env, so an episode spans many batches. Keeping each running episode's unfinished steps here
leaves sampling rounds at their fixed size, so `training_intensity`'s replay ratio and the
epsilon schedule stay as configured, and a sequence is stored as soon as its steps exist
rather than when its episode ends. A tail is keyed by `eps_id` (unique per rollout worker:
`worker_index * 10**9 + count`) and checked by `t`: a step that does not continue its tail
(a replaced worker restarting its ids) starts a new one.

Columns of the sequences (S of them):

- `obs` [S, T, ...], `actions` [S, T], `rewards` [S, T]: padding is zeros (actions repeat a
  real action, so they stay valid for the action space);
- `state_in_{i}` [S, ...]: the stored state at the sequence's first real position;
- `seq_lens` [S]: real positions, counted from the first one (the final observation counts);
- `burn_in_steps` [S]: real positions before the trained part (`burn_in` minus front padding);
- `loss_mask` [S, T]: positions whose TD error is trained (real steps of the trained part);
- `n_step_returns` [S, T]: `sum_{i<k} gamma^i r_{t+i}` with `k = min(n_step, steps left)`;
- `bootstrap_index` [S, T]: the position of the observation each step bootstraps from (`+k`);
- `bootstrap_discount` [S, T]: `gamma^k`, or 0 where the episode terminated within the k steps.

Examples:
    >>> builder = SequenceBuilder(burn_in=1, train_length=2, n_step=1, gamma=0.5)
    >>> steps = SampleBatch(
    ...     obs=np.arange(3.0)[:, None], new_obs=np.arange(1.0, 4.0)[:, None],
    ...     actions=np.zeros(3, np.int64), rewards=np.ones(3, np.float32),
    ...     terminateds=np.array([False, False, True]), truncateds=np.zeros(3, bool),
    ...     eps_id=np.zeros(3, np.int64), t=np.arange(3), state_in_0=np.zeros((3, 4)))
    >>> sequences = builder(steps)
    >>> sequences["obs"][:, :, 0].tolist()  # 4 positions: 1 burn-in, 2 trained, 1 bootstrap
    [[0.0, 0.0, 1.0, 2.0], [1.0, 2.0, 3.0, 0.0]]
    >>> sequences["burn_in_steps"].tolist(), sequences["seq_lens"].tolist()
    ([0, 1], [3, 3])
    >>> sequences["loss_mask"].tolist()
    [[False, True, True, False], [False, True, False, False]]
    >>> sequences["bootstrap_discount"][1].tolist()  # the last step terminated
    [0.0, 0.0, 0.0, 0.0]
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from flowrl.data.sample_batch import SampleBatch

BURN_IN_STEPS = "burn_in_steps"
LOSS_MASK = "loss_mask"
N_STEP_RETURNS = "n_step_returns"
BOOTSTRAP_INDEX = "bootstrap_index"
BOOTSTRAP_DISCOUNT = "bootstrap_discount"
SEQ_LENS = SampleBatch.SEQ_LENS
STATE_IN_PREFIX = SampleBatch.STATE_IN_PREFIX

_STEP_COLUMNS = ("obs", "new_obs", "actions", "rewards", "terminateds", "truncateds", "eps_id",
                 "t")
_KEPT = ("obs", "actions", "rewards")


@dataclass
class _Tail:
    """One running episode's steps that a future sequence still needs."""

    origin: int
    """Episode time of the first step this tail ever held (0 unless the start was missed)."""
    offset: int
    """Episode time of `rows[...][0]`."""
    rows: dict[str, np.ndarray]
    next_sequence: int = 0
    """k of the next sequence to cut (its trained part starts at origin + k * stride)."""
    last_seen: int = 0
    state_names: list[str] = field(default_factory=list)

    @property
    def end(self) -> int:
        """Episode time one past the last step held."""
        return self.offset + len(self.rows["actions"])


class SequenceBuilder:
    """Cuts time-ordered step rows into fixed-length replay sequences (module docstring).

    Call it with each rollout batch; it returns the sequences that are complete so far (a
    batch of zero sequences when none is), and keeps every running episode's unfinished tail
    for the next call.

    Args:
        burn_in: positions before the trained part that only warm the recurrent state.
        train_length: trained positions per sequence (R2D2: 80 on Atari).
        n_step: rewards summed before bootstrapping; the sequence holds `n_step` positions
            after its trained part so that its last trained step bootstraps inside it.
        gamma: the discount.
        overlap: trained positions shared by adjacent sequences of an episode (0: they tile
            the episode; R2D2 on Atari: 40 of 80).
        max_idle_batches: a tail that got no step for this many calls is dropped (its worker
            is gone).

    Raises:
        ValueError: an argument out of range (naming it).
    """

    def __init__(self, *, burn_in: int, train_length: int, n_step: int, gamma: float,
                 overlap: int = 0, max_idle_batches: int = 100) -> None:
        if burn_in < 0 or train_length < 1 or n_step < 1 or max_idle_batches < 1:
            raise ValueError(f"SequenceBuilder needs burn_in >= 0, train_length >= 1, n_step "
                             f">= 1 and max_idle_batches >= 1; got {burn_in=}, "
                             f"{train_length=}, {n_step=}, {max_idle_batches=}")
        if not 0 <= overlap < train_length:
            raise ValueError(f"SequenceBuilder needs 0 <= overlap < train_length (adjacent "
                             f"sequences must advance); got {overlap=}, {train_length=}")
        self.burn_in, self.train_length, self.n_step = burn_in, train_length, n_step
        self.gamma, self.overlap, self.max_idle_batches = float(gamma), overlap, max_idle_batches
        self._tails: dict[int, _Tail] = {}
        self._calls = 0

    @property
    def sequence_length(self) -> int:
        """T: positions per sequence (`burn_in + train_length + n_step`)."""
        return self.burn_in + self.train_length + self.n_step

    @property
    def stride(self) -> int:
        """Episode steps between the trained parts of adjacent sequences."""
        return self.train_length - self.overlap

    @property
    def num_pending_episodes(self) -> int:
        """Running episodes with a tail kept for the next call."""
        return len(self._tails)

    def __call__(self, batch: SampleBatch) -> SampleBatch:
        """The sequences `batch`'s steps complete (with the tails kept from earlier calls)."""
        state_names = _check_columns(batch)
        self._calls += 1
        order = np.lexsort((batch["t"], batch["eps_id"]))
        eps_ids = np.asarray(batch["eps_id"])[order]
        bounds = np.flatnonzero(np.diff(eps_ids)) + 1
        sequences: list[dict[str, np.ndarray]] = []
        for rows in np.split(order, bounds):
            if len(rows):
                sequences.extend(self._add_episode_rows(batch, rows, state_names))
        self._drop_idle_tails()
        return self._stack(sequences, batch, state_names)

    def _add_episode_rows(self, batch: SampleBatch, rows: np.ndarray,
                          state_names: list[str]) -> list[dict[str, np.ndarray]]:
        eps_id, first_t = int(batch["eps_id"][rows[0]]), int(batch["t"][rows[0]])
        if np.any(np.diff(batch["t"][rows]) != 1):
            raise ValueError(f"SequenceBuilder needs consecutive steps per episode; episode "
                             f"{eps_id} has steps t={batch['t'][rows].tolist()}")
        new = {name: np.asarray(batch[name])[rows] for name in (*_KEPT, *state_names)}
        tail = self._tails.get(eps_id)
        if tail is None or tail.end != first_t:  # a new episode, or one whose steps were lost
            tail = _Tail(origin=first_t, offset=first_t, rows=new, state_names=state_names)
        else:
            tail.rows = {name: np.concatenate([tail.rows[name], new[name]]) for name in new}
        tail.last_seen = self._calls
        last = rows[-1]
        finished = bool(batch["terminateds"][last] or batch["truncateds"][last])
        final_obs = np.asarray(batch["new_obs"])[last] if finished else None
        out = self._cut(tail, final_obs, terminated=bool(batch["terminateds"][last]))
        if finished:
            self._tails.pop(eps_id, None)
        else:
            self._tails[eps_id] = tail
            keep_from = tail.origin + tail.next_sequence * self.stride - self.burn_in
            drop = min(max(keep_from - tail.offset, 0), tail.end - tail.offset)
            tail.rows = {name: value[drop:] for name, value in tail.rows.items()}
            tail.offset += drop
        return out

    def _cut(self, tail: _Tail, final_obs: np.ndarray | None,
             terminated: bool) -> list[dict[str, np.ndarray]]:
        """The sequences of `tail` whose positions are all known (all of them once the episode
        ended: `final_obs` is its last observation)."""
        out = []
        while True:
            start = tail.origin + tail.next_sequence * self.stride
            if final_obs is None and start + self.train_length + self.n_step > tail.end:
                return out
            if final_obs is not None and start >= tail.end:
                return out
            out.append(self._sequence(tail, start, final_obs, terminated))
            tail.next_sequence += 1

    def _sequence(self, tail: _Tail, start: int, final_obs: np.ndarray | None,
                  terminated: bool) -> dict[str, np.ndarray]:
        length, burn_in, n_step = self.sequence_length, self.burn_in, self.n_step
        times = start - burn_in + np.arange(length)
        steps_end = tail.end  # one past the last step held
        obs_end = steps_end + (1 if final_obs is not None else 0)  # the final observation
        first_time = max(times[0], tail.origin)
        is_step = (times >= first_time) & (times < steps_end)
        is_obs = (times >= first_time) & (times < obs_end)
        index = np.clip(times - tail.offset, 0, steps_end - tail.offset - 1)
        rows = tail.rows
        obs = np.zeros((length, *rows["obs"].shape[1:]), rows["obs"].dtype)
        obs[is_step] = rows["obs"][index[is_step]]
        if final_obs is not None:
            obs[times == steps_end] = final_obs
        actions = rows["actions"][index]  # padding repeats a real action (valid for the space)
        rewards = np.where(is_step, rows["rewards"][index], 0.0).astype(np.float32)
        position = np.arange(length)
        trained = is_step & (position >= burn_in) & (position < burn_in + self.train_length)
        # n-step returns: padded rewards are 0, so summing n positions sums the steps left.
        padded = np.concatenate([rewards, np.zeros(n_step, np.float32)])
        returns = sum(self.gamma**i * padded[i:i + length] for i in range(n_step))
        # k: rewards summed; fewer than n_step only where the episode ends within n_step.
        steps_left = steps_end - times if final_obs is not None else np.full(length, n_step)
        k = np.clip(steps_left, 1, n_step)
        ends_episode = (times + k == steps_end) & terminated & (final_obs is not None)
        discount = np.where(ends_episode, 0.0, self.gamma**k)
        bootstrap = np.clip(position + k, 0, length - 1)
        state_row = first_time - tail.offset
        sequence = {
            "obs": obs, "actions": actions, "rewards": rewards,
            N_STEP_RETURNS: np.where(trained, returns, 0.0).astype(np.float32),
            BOOTSTRAP_INDEX: np.where(trained, bootstrap, position).astype(np.int64),
            BOOTSTRAP_DISCOUNT: np.where(trained, discount, 0.0).astype(np.float32),
            LOSS_MASK: trained,
            SEQ_LENS: np.int64(is_obs.sum()),
            BURN_IN_STEPS: np.int64(is_obs[:burn_in].sum()),
        }
        for name in tail.state_names:
            sequence[name] = rows[name][state_row]
        return sequence

    def _drop_idle_tails(self) -> None:
        idle = [eps_id for eps_id, tail in self._tails.items()
                if self._calls - tail.last_seen >= self.max_idle_batches]
        for eps_id in idle:
            del self._tails[eps_id]

    def _stack(self, sequences: list[dict[str, np.ndarray]], batch: SampleBatch,
               state_names: list[str]) -> SampleBatch:
        if sequences:
            return SampleBatch({name: np.stack([s[name] for s in sequences])
                                for name in sequences[0]})
        length = self.sequence_length
        empty = {name: np.zeros((0, length, *np.shape(batch[name])[1:]),
                                np.asarray(batch[name]).dtype) for name in _KEPT}
        empty["rewards"] = empty["rewards"].astype(np.float32)
        empty.update({N_STEP_RETURNS: np.zeros((0, length), np.float32),
                      BOOTSTRAP_INDEX: np.zeros((0, length), np.int64),
                      BOOTSTRAP_DISCOUNT: np.zeros((0, length), np.float32),
                      LOSS_MASK: np.zeros((0, length), bool),
                      SEQ_LENS: np.zeros(0, np.int64), BURN_IN_STEPS: np.zeros(0, np.int64)})
        for name in state_names:
            empty[name] = np.zeros((0, *np.shape(batch[name])[1:]), np.asarray(batch[name]).dtype)
        return SampleBatch(empty)

    def __repr__(self) -> str:
        return (f"SequenceBuilder(burn_in={self.burn_in}, train_length={self.train_length}, "
                f"n_step={self.n_step}, overlap={self.overlap})")


def _check_columns(batch: SampleBatch) -> list[str]:
    """The batch's `state_in_{i}` names, in order; a clear error for missing columns."""
    if not isinstance(batch, SampleBatch):
        raise TypeError(f"SequenceBuilder cuts single-agent SampleBatches of steps, got "
                        f"{type(batch).__name__}")
    missing = [name for name in _STEP_COLUMNS if name not in batch]
    state_names = sorted((name for name in batch.columns if name.startswith(STATE_IN_PREFIX)),
                         key=lambda name: int(name[len(STATE_IN_PREFIX):]))
    if missing or not state_names:
        missing += [] if state_names else ["state_in_*"]
        raise ValueError(
            f"SequenceBuilder needs rollout steps with columns {list(_STEP_COLUMNS)} and the "
            f"recurrent state state_in_0, ...; {missing=}. A batch without state_in_* columns "
            "was sampled by a stateless model: R2D2 needs a recurrent one "
            "(model.use_lstm=True, or a recurrent custom_model).")
    return state_names
