"""Version gating and method patching for every instrumentation (openai, anthropic, LangChain, LangGraph).

``supported`` answers "is the library installed and recent enough" without importing it; ``patch_all`` wraps
a list of ``(module, "Class.method", wrapper)`` targets with ``wrapt`` — a target the installed version does
not have is skipped with a debug log — and returns what it patched, which ``unpatch_all`` restores.
``replace_all`` does the same with plain functions, for the few methods a ``wrapt`` proxy cannot stand in for.
"""

from __future__ import annotations

import importlib
import logging
import re
from collections.abc import Callable, Iterable
from importlib import metadata
from typing import Any

import wrapt
from opentelemetry.instrumentation.utils import unwrap

_logger = logging.getLogger(__name__)

Patched = tuple[Any, str]
"""(owner class, attribute name) of one patched method."""


def parse_version(text: str) -> tuple[int, ...]:
    """The leading numeric release of a version string (``"3.54.0rc1"`` -> ``(3, 54, 0)``)."""
    numbers = []
    for piece in text.split("."):
        match = re.match(r"\d+", piece)
        if match is None:
            break
        numbers.append(int(match.group(0)))
        if match.end() != len(piece):
            break
    return tuple(numbers)


def supported(package: str, minimum: tuple[int, ...]) -> bool:
    """True when ``package`` is installed at ``minimum`` or later (debug log otherwise). Never raises."""
    try:
        version = metadata.version(package)
    except metadata.PackageNotFoundError:
        _logger.debug("agent-otel: %s is not installed; its instrumentation is skipped", package)
        return False
    except Exception:
        _logger.debug("agent-otel: cannot read the version of %s; skipped", package, exc_info=True)
        return False
    if parse_version(version) < minimum:
        _logger.debug(
            "agent-otel: %s %s is older than %s; its instrumentation is skipped",
            package,
            version,
            ".".join(map(str, minimum)),
        )
        return False
    return True


def _resolve(module_name: str, path: str) -> Patched:
    """(owner, attribute) of ``module_name`` + ``"Class.method"`` (or ``"function"``); raises if absent."""
    owner_path, _, attribute = path.rpartition(".")
    owner: Any = importlib.import_module(module_name)
    for name in owner_path.split(".") if owner_path else ():
        owner = getattr(owner, name)
    if getattr(owner, attribute, None) is None:
        raise AttributeError(path)
    return owner, attribute


def patch_all(targets: Iterable[tuple[str, str, Callable[..., Any]]]) -> list[Patched]:
    """Wrap each ``(module, "Class.method", wrapper)``; skip (debug log) the ones that do not exist."""
    patched: list[Patched] = []
    for module_name, path, wrapper in targets:
        try:
            owner, attribute = _resolve(module_name, path)
            wrapt.wrap_function_wrapper(owner, attribute, wrapper)
            patched.append((owner, attribute))
        except Exception:
            _logger.debug("agent-otel: cannot patch %s.%s; skipped", module_name, path, exc_info=True)
    return patched


def replace_all(
    targets: Iterable[tuple[str, str, Callable[[Callable[..., Any]], Callable[..., Any]]]],
) -> list[Patched]:
    """Replace each ``(module, "Class.method", make)`` by ``make(original)``, a plain function.

    For methods handed to code that inspects them (``ExitStack.push`` takes a ``wrapt`` proxy, which
    forwards ``__exit__``, for a context manager). ``unpatch_all`` restores the original. Only attributes
    the class defines itself are replaced.
    """
    patched: list[Patched] = []
    for module_name, path, make in targets:
        try:
            owner, attribute = _resolve(module_name, path)
            original = vars(owner)[attribute]
            if not callable(original):
                raise TypeError(f"{path} is not a function")
            replacement = make(original)
            replacement.__agent_otel_original__ = original  # type: ignore[attr-defined]
            setattr(owner, attribute, replacement)
            patched.append((owner, attribute))
        except Exception:
            _logger.debug("agent-otel: cannot replace %s.%s; skipped", module_name, path, exc_info=True)
    return patched


def unpatch_all(patched: Iterable[Patched]) -> None:
    """Restore the originals of what ``patch_all`` / ``replace_all`` returned. Never raises."""
    for owner, attribute in patched:
        try:
            original = getattr(vars(owner).get(attribute), "__agent_otel_original__", None)
            if original is not None:
                setattr(owner, attribute, original)
            else:
                unwrap(owner, attribute)
        except Exception:
            _logger.debug("agent-otel: cannot unpatch %r.%s", owner, attribute, exc_info=True)
