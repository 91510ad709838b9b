"""Plain functions on the workers: :func:`submit`, :func:`map` and the :func:`remote` decorator.

The function and its arguments travel like a cell's variables (:mod:`jupyter_celery.core.codec`):
small JSON-safe values inline, anything else cloudpickled (a function or class defined in the
notebook by value, a function of an installed module by reference: the worker imports it), large
values through the object store with only their key in the message. A value that cannot be sent
is an error here, before anything is submitted.

Options (keyword-only and reserved: they are not passed to the function; to pass the function an
argument named like one, use :func:`remote`, whose ``submit`` passes every argument on):

``queue``
    ``"python_q"`` (default: many short jobs) or ``"circuit_q"`` (heavy DataFrame work).
``timeout``
    seconds a call may run (for :func:`map`: each item). At this soft limit the function gets
    ``celery.exceptions.SoftTimeLimitExceeded``, which it may catch to clean up; a little later
    (the hard limit) its process is killed and replaced, and the job ends ``failed``.
``retries``, ``retry_on``, ``retry_delay``
    try a call again up to ``retries`` times when it raises one of ``retry_on`` (exception types;
    default: ``ConnectionError`` and ``TimeoutError``, with their subclasses), after an
    exponential backoff with jitter starting at ``retry_delay`` seconds. Each retry is a
    ``retrying`` event with the attempt number. Other exceptions fail at once.
``name``
    shown in listings and widgets (default: the function's name).
"""

from __future__ import annotations

import functools
import linecache
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any, Generic, ParamSpec, TypeVar, overload

from jupyter_celery.core.codec import Encoded
from jupyter_celery.core.messages import JobSpec, environment_fingerprint
from jupyter_celery.core.objects import ObjectTag
from jupyter_celery.core.protocol import DEFAULT_QUEUE, KIND_FUNCTION, TASK_RUN_FUNCTION, new_job_id
from jupyter_celery.core.queues import profile
from jupyter_celery.core.retry import retry_policy
from jupyter_celery.kernel.client import Client, get_client
from jupyter_celery.kernel.job import Job
from jupyter_celery.kernel.mapping import MapJob

P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True)
class Options:
    """How a function is run: queue, time limit, retry policy, name."""

    queue: str = DEFAULT_QUEUE
    timeout: float | None = None
    retries: int = 0
    retry_on: tuple[type[BaseException], ...] | None = None
    retry_delay: float = 1.0
    name: str = ""

    def retry_message(self) -> dict[str, Any] | None:
        if not self.retries:
            return None
        return retry_policy(self.retries, self.retry_on, self.retry_delay).to_message()

    def checked(self) -> Options:
        profile(self.queue)  # an unknown queue is a clear error before anything is encoded
        if self.timeout is not None and not self.timeout > 0:
            raise ValueError(f"timeout must be > 0 seconds, got {self.timeout}")
        self.retry_message()  # checks retries and retry_on
        return self


SOURCE_LIMIT = 64 * 1024  # characters of a notebook cell sent with a function defined in it


@functools.cache
def _environment() -> dict[str, str]:
    return environment_fingerprint()


def function_sources(fn: Callable[..., Any]) -> dict[str, str]:
    """The text of the notebook cell that defined ``fn``, under the cell's name (``Cell In[5]``), so
    the worker's tracebacks show the cell's lines as IPython would; nothing for a function of an
    importable module (the worker has its file)."""
    code = getattr(fn, "__code__", None)
    if code is None or getattr(fn, "__module__", None) != "__main__":
        return {}
    text = "".join(linecache.getlines(code.co_filename))
    if not text or len(text) > SOURCE_LIMIT:
        return {}
    return {_cell_name(code.co_filename): text}


def _cell_name(filename: str) -> str:
    """How IPython names the cell compiled as ``filename`` in tracebacks (``Cell In[5]``)."""
    try:
        from IPython import get_ipython

        label = get_ipython().compile.format_code_name(filename)
    except Exception:  # no IPython here, or one without cell names: the file name will do
        return filename
    return " ".join(label) if label else filename


def _name_of(fn: Callable[..., Any]) -> str:
    return str(getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or type(fn).__name__)


def _unwrap(fn: Callable[..., Any], options: Options) -> tuple[Callable[..., Any], Options]:
    """The plain function behind a :class:`RemoteFunction` (whose options are the defaults)."""
    if isinstance(fn, RemoteFunction):
        return fn.__wrapped__, fn.defaults
    if not callable(fn):
        raise TypeError(f"{type(fn).__name__} object is not callable")
    return fn, options


def submit_call(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], options: Options) -> Job:
    """Encode ``fn(*args, **kwargs)`` and send it as a function job."""
    options = options.checked()
    client = get_client()
    settings = client.settings
    job_id = new_job_id()
    tag = ObjectTag(settings.owner, job_id, "input")
    codec = client.codec
    spec = JobSpec(
        id=job_id,
        kind=KIND_FUNCTION,
        queue=options.queue,
        name=options.name or _name_of(fn),
        owner=settings.owner,
        timeout=options.timeout,
        environment=_environment(),
        function=codec.encode("function", fn, tag),
        args=tuple(codec.encode(f"arg{i}", value, tag) for i, value in enumerate(args)),
        kwargs={name: codec.encode(f"kwarg.{name}", value, tag) for name, value in kwargs.items()},
        retry=options.retry_message(),
        sources=function_sources(fn),
    )
    encoded = [spec.function or {}, *spec.args, *spec.kwargs.values()]
    return client.submit(spec, TASK_RUN_FUNCTION, objects=[key for e in encoded for key in codec.keys_of(e)])


def map_items(fn: Callable[..., Any], items: Iterable[Any], options: Options, chunksize: int | None) -> MapJob:
    """Encode ``fn`` once and start a map over ``items`` (kernel/mapping.py sends the chunks)."""
    options = options.checked()
    client: Client = get_client()
    materialised = list(items)
    map_id = new_job_id()
    map_function: Encoded = client.codec.encode("function", fn, ObjectTag(client.settings.owner, map_id, "input"))
    mapping = MapJob(
        client,
        map_function,
        materialised,
        queue=options.queue,
        name=options.name or _name_of(fn),
        timeout=options.timeout,
        retry=options.retry_message(),
        environment=_environment(),
        sources=function_sources(fn),
        chunksize=chunksize,
        map_id=map_id,
    )
    client.maps[mapping.id] = mapping
    return mapping


def submit(
    fn: Callable[..., Any],
    /,
    *args: Any,
    queue: str = DEFAULT_QUEUE,
    timeout: float | None = None,
    retries: int = 0,
    retry_on: tuple[type[BaseException], ...] | None = None,
    retry_delay: float = 1.0,
    name: str = "",
    **kwargs: Any,
) -> Job:
    """Run ``fn(*args, **kwargs)`` on a worker; return its :class:`~jupyter_celery.Job` at once.

    ``job.result()`` waits for the function's return value (and raises its error, with the
    worker's traceback). The options are described in :mod:`jupyter_celery.kernel.functions`;
    they are keyword-only and never passed to ``fn``.

    >>> import jupyter_celery as jc                                     # doctest: +SKIP
    >>> def score(values, threshold):                                   # doctest: +SKIP
    ...     return sum(v > threshold for v in values) / len(values)
    >>> job = jc.submit(score, [0.2, 0.7, 0.9], 0.5, queue="circuit_q", timeout=600, retries=2)  # doctest: +SKIP
    >>> job.result()                                                    # doctest: +SKIP
    0.6666666666666666
    """
    options = Options(queue, timeout, retries, retry_on, retry_delay, name)
    fn, options = _unwrap(fn, options)
    return submit_call(fn, args, kwargs, options)


def map(
    fn: Callable[[Any], Any],
    items: Iterable[Any],
    /,
    *,
    queue: str = DEFAULT_QUEUE,
    chunksize: int | None = None,
    timeout: float | None = None,
    retries: int = 0,
    retry_on: tuple[type[BaseException], ...] | None = None,
    retry_delay: float = 1.0,
    name: str = "",
) -> MapJob:
    """Run ``fn(item)`` for each item on the workers; return the map's handle at once.

    Items are sent in chunks sized to a fraction of a second of work each, measured from the first
    items (``chunksize=`` fixes the number of items per chunk). ``result()`` is the list of results
    in the order of the items; a failing item does not stop the others: ``errors()`` lists the
    failed ones with their index and traceback. ``cancel()`` stops the whole map. In a notebook the
    handle shows as one live widget: items done / total, failures, throughput, ETA.
    ``timeout`` and ``retries`` apply to each item.

    >>> results = jc.map(simulate, range(10_000), queue="python_q")   # doctest: +SKIP
    >>> results.result()[:3]                                         # doctest: +SKIP
    [0.12, 0.57, 0.33]
    >>> results.errors()                                             # doctest: +SKIP
    []
    """
    options = Options(queue, timeout, retries, retry_on, retry_delay, name)
    fn, options = _unwrap(fn, options)
    return map_items(fn, items, options, chunksize)


class RemoteFunction(Generic[P, R]):
    """A function that runs on the workers when asked: ``f.submit(...)``, ``f.map(items)``.

    Calling it directly runs it here, unchanged. Made by :func:`remote`; it keeps the wrapped
    function's name, docstring and signature (editors show them for ``submit`` too).
    """

    __wrapped__: Callable[P, R]

    def __init__(self, fn: Callable[P, R], defaults: Options) -> None:
        functools.update_wrapper(self, fn)
        self.defaults = defaults

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.__wrapped__(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<remote function {_name_of(self.__wrapped__)} on {self.defaults.queue}>"

    def submit(self, *args: P.args, **kwargs: P.kwargs) -> Job:
        """Run the function on a worker with these arguments; its :class:`~jupyter_celery.Job` at once."""
        return submit_call(self.__wrapped__, args, kwargs, self.defaults)

    def map(self, items: Iterable[Any], *, chunksize: int | None = None) -> MapJob:
        """Run the function on each item (see :func:`jupyter_celery.map`)."""
        return map_items(self.__wrapped__, items, self.defaults, chunksize)

    def options(self, **changes: Any) -> RemoteFunction[P, R]:
        """The same function with other options: ``fit.options(queue="python_q", timeout=60).submit(df)``."""
        return RemoteFunction(self.__wrapped__, replace(self.defaults, **changes).checked())


@overload
def remote(fn: Callable[P, R], /) -> RemoteFunction[P, R]: ...


@overload
def remote(
    *,
    queue: str = ...,
    timeout: float | None = ...,
    retries: int = ...,
    retry_on: tuple[type[BaseException], ...] | None = ...,
    retry_delay: float = ...,
    name: str = ...,
) -> Callable[[Callable[P, R]], RemoteFunction[P, R]]: ...


def remote(
    fn: Callable[P, R] | None = None,
    /,
    *,
    queue: str = DEFAULT_QUEUE,
    timeout: float | None = None,
    retries: int = 0,
    retry_on: tuple[type[BaseException], ...] | None = None,
    retry_delay: float = 1.0,
    name: str = "",
) -> RemoteFunction[P, R] | Callable[[Callable[P, R]], RemoteFunction[P, R]]:
    """Make a function runnable on the workers, with default options (see :func:`submit`).

    >>> @jc.remote(queue="circuit_q", timeout=3600)                  # doctest: +SKIP
    ... def fit(frame, alpha=0.1):
    ...     ...
    >>> job = fit.submit(frame, alpha=0.5)                           # doctest: +SKIP
    >>> models = fit.map(frames)                                     # doctest: +SKIP
    >>> fit(small_frame)                                             # runs here  # doctest: +SKIP
    """
    options = Options(queue, timeout, retries, retry_on, retry_delay, name).checked()

    def decorate(function: Callable[P, R]) -> RemoteFunction[P, R]:
        return RemoteFunction(function, options)

    return decorate if fn is None else decorate(fn)
