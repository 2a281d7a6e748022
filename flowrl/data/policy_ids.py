"""Policy ids every layer agrees on."""

DEFAULT_POLICY_ID = "default_policy"
"""The id of the one policy of a single-agent run, and of the policy every agent of a
multi-agent env maps to when a config names no `policies` (shared mode)."""
