"""Retrying transient failures: which exceptions are transient, and how long to wait before the next try.

The kernel turns the exception types a user names into their qualified names (a message stays
JSON); the worker matches a raised exception against them by walking its classes, so a subclass of
a named type is transient too, and a class defined in the notebook (module ``__main__``) matches by
name on the worker as well.

>>> policy = retry_policy(retries=3, on=(ConnectionError,), delay=1.0)
>>> policy.on
('builtins.ConnectionError',)
>>> is_transient(ConnectionResetError("reset"), policy.on), is_transient(ValueError(), policy.on)
(True, False)
>>> 0.5 <= backoff(1, policy) <= 1.0 and 2.0 <= backoff(3, policy) <= 4.0
True
"""

from __future__ import annotations

import random
from collections.abc import Iterable

from jupyter_celery.core.messages import RetryPolicy

# What is retried when the user names nothing: connection errors and timeouts. The job's own time
# limit is not among them (a job that ran over its limit would most likely do it again).
DEFAULT_TRANSIENT: tuple[type[BaseException], ...] = (ConnectionError, TimeoutError)


def type_name(kind: type[BaseException]) -> str:
    """``module.QualName`` of an exception type."""
    return f"{kind.__module__}.{kind.__qualname__}"


def retry_policy(
    retries: int = 0,
    on: Iterable[type[BaseException]] | None = None,
    delay: float = 1.0,
    max_delay: float = 60.0,
) -> RetryPolicy:
    """A policy from exception types (``on=None``: connection errors and timeouts)."""
    if retries < 0:
        raise ValueError(f"retries must be >= 0, got {retries}")
    if delay < 0 or max_delay < 0:
        raise ValueError("retry delays must be >= 0")
    kinds = DEFAULT_TRANSIENT if on is None else tuple(on)
    for kind in kinds:
        if not (isinstance(kind, type) and issubclass(kind, BaseException)):
            raise TypeError(f"retry_on takes exception types, got {kind!r}")
    return RetryPolicy(retries=retries, on=tuple(type_name(k) for k in kinds), delay=delay, max_delay=max_delay)


def is_transient(exc: BaseException, names: Iterable[str]) -> bool:
    """Whether ``exc`` is an instance of one of the types named ``names``."""
    wanted = set(names)
    return any(type_name(kind) in wanted for kind in type(exc).__mro__)


def backoff(attempt: int, policy: RetryPolicy) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1 for the first): exponential, capped,
    with jitter (between half and all of the exponential delay, so retries of many jobs spread out)."""
    ceiling = min(policy.max_delay, policy.delay * 2.0 ** max(0, attempt - 1))
    return ceiling * random.uniform(0.5, 1.0)  # jitter, not cryptography
