"""Agents that act in the rlhf_env environments through the Gymnasium API."""
