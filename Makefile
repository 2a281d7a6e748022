# flowrl developer commands. `make train` and `make test` are the README's two commands.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.flowrl-installed

.PHONY: setup train test test-all lint bench clean

# Creates the virtual environment and installs flowrl with torch (CPU, pinned), TensorFlow and
# the test tools. Idempotent: reinstalls only when pyproject.toml or constraints.txt change.
setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[torch,tf,test,tune,atari,video]'
	touch $(STAMP)

# Trains PPO on CartPole-v1 until the 100-episode mean return reaches 450, on a local Ray cluster,
# and saves a checkpoint under checkpoints/ (replay it with `flowrl rollout <path>`).
train: setup
	$(BIN)/flowrl train --run PPO --env CartPole-v1 --config-file examples/tuned/ppo-cartpole.yaml \
		--stop '{"episode_reward_mean": 450}' --checkpoint-dir checkpoints

# The CI test suite: everything except the long learning benchmarks.
test: setup
	$(BIN)/python -m pytest -m "not slow" -q

# Including the slow learning tests.
test-all: setup
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check flowrl tests benchmarks examples

bench: setup
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[torch,tf,test,bench]'
	$(BIN)/python benchmarks/iter_overhead.py
	$(BIN)/python benchmarks/policy_speed.py
	$(BIN)/python benchmarks/ppo_cartpole.py

clean:
	rm -rf $(VENV) build *.egg-info
