"""Retries with the policy (what, how often), backoff (how long) and budget (how many in all)
kept apart from the mechanism (how to call again), in tower's style."""

from ._backoff import Backoff, ExponentialBackoff
from ._budget import RetryBudget
from ._policy import RetryPolicy
from ._retry import Retry

__all__ = ["Backoff", "ExponentialBackoff", "Retry", "RetryBudget", "RetryPolicy"]
