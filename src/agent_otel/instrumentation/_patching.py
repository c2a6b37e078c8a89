"""Version gating and method patching for the SDK instrumentations (openai, anthropic).

``supported`` answers "is the SDK installed and recent enough" without importing it; ``patch_all`` wraps a
list of ``(module, "Class.method", wrapper)`` targets with ``wrapt`` — a target the installed version does
not have is skipped with a debug log — and returns what it patched, which ``unpatch_all`` restores.
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


def patch_all(targets: Iterable[tuple[str, str, Callable[..., Any]]]) -> list[Patched]:
    """Wrap each ``(module, "Class.method", wrapper)``; skip (debug log) the ones that do not exist."""
    patched: list[Patched] = []
    for module_name, path, wrapper in targets:
        try:
            module = importlib.import_module(module_name)
            owner_path, _, attribute = path.rpartition(".")
            owner: Any = module
            for name in owner_path.split(".") if owner_path else ():
                owner = getattr(owner, name)
            if not hasattr(owner, attribute):
                raise AttributeError(path)
            wrapt.wrap_function_wrapper(owner, attribute, wrapper)
            patched.append((owner, attribute))
        except Exception:
            _logger.debug("agent-otel: cannot patch %s.%s; skipped", module_name, path, exc_info=True)
    return patched


def unpatch_all(patched: Iterable[Patched]) -> None:
    """Restore the originals of what ``patch_all`` returned. Never raises."""
    for owner, attribute in patched:
        try:
            unwrap(owner, attribute)
        except Exception:
            _logger.debug("agent-otel: cannot unpatch %r.%s", owner, attribute, exc_info=True)
