"""``--config.a.b=value`` overrides of an experiment config, through ml_collections' own parser.

Text from the command line is converted by ``ml_collections.config_flags`` (the overrides of
``DEFINE_config_dict``, on a private ``absl.flags.FlagValues``, so nothing global is touched and
the command line can stay argparse's): the value takes the type of the field it replaces, with
that library's rules (``true``/``false``/``1``/``0`` for booleans, Python literals for tuples).
What is added here is what a one-line command-line error needs: unknown keys and sections are
named before parsing, and absl's errors become one :class:`ConfigLoadError` line that says what
the field expects.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import ml_collections
from absl import flags
from ml_collections import config_flags

OVERRIDE_PREFIX = "--config."
_FLAG = OVERRIDE_PREFIX[2:-1]  # "config"
# Words that stand for a value of a numeric field on the command line.
NAMED_VALUES: dict[str, dict[str, Any]] = {"optim.microbatches": {"auto": 0}}


class ConfigLoadError(ValueError):
    """A config file or override cannot be used (message names the file/key and the problem)."""


def _expected(current: Any) -> str:
    """What an override of a field holding ``current`` must look like, in words."""
    if isinstance(current, bool):
        return "true or false"
    if isinstance(current, int):
        return "an integer"
    if isinstance(current, float):
        return "a number"
    if isinstance(current, str):
        return "a string"
    return f"a Python literal like the current value {current!r}"


def _lookup(config: ml_collections.ConfigDict, key: str) -> tuple[ml_collections.ConfigDict, str]:
    """``(section, leaf name)`` of the leaf ``key`` (``a.b.c``); an unknown key or a section is an error."""
    *parents, leaf = key.split(".")
    node = config
    for depth, name in enumerate(parents):
        if not isinstance(node, ml_collections.ConfigDict) or name not in node:
            raise ConfigLoadError(
                f"unknown config key config.{'.'.join(parents[: depth + 1])} (in override of config.{key})"
            )
        node = node[name]
    if not isinstance(node, ml_collections.ConfigDict) or leaf not in node:
        section = ".".join(parents)
        known = ", ".join(sorted(node.keys())) if isinstance(node, ml_collections.ConfigDict) else ""
        raise ConfigLoadError(
            f"unknown config key config.{key}" + (f" (config.{section} has: {known})" if section and known else "")
        )
    if isinstance(node[leaf], ml_collections.ConfigDict):
        raise ConfigLoadError(f"config.{key} is a section, not a value")
    return node, leaf


def _split(arg: str) -> tuple[str, str]:
    """``--config.a.b=v`` (or ``a.b=v``) -> ``("a.b", "v")``."""
    text = arg[len(OVERRIDE_PREFIX) :] if arg.startswith(OVERRIDE_PREFIX) else arg
    if "=" not in text:
        raise ConfigLoadError(f"override {arg!r}: expected --config.key=value")
    key, value = text.split("=", 1)
    return key, value


def _parse_command_line(config: ml_collections.ConfigDict, pairs: Sequence[tuple[str, str]]) -> None:
    """Sets every ``(key, text)`` on ``config`` in place with ml_collections' override parser."""
    current = {}
    for key, _ in pairs:
        node, leaf = _lookup(config, key)
        current[key] = node[leaf]
    argv = ["trm-jax"] + [f"{OVERRIDE_PREFIX}{key}={value}" for key, value in pairs]
    flag_values = flags.FlagValues()
    try:
        config_flags.DEFINE_config_dict(_FLAG, config, flag_values=flag_values, lock_config=False, sys_argv=argv)
        flag_values(argv)
    except flags.Error as err:
        failed = next((key for key, _ in pairs if f"{OVERRIDE_PREFIX}{key}=" in str(err)), None)
        detail = " ".join(str(err).split())
        if failed is None:
            raise ConfigLoadError(f"config overrides: {detail}") from None
        words = "".join(f" or {word}" for word in NAMED_VALUES.get(failed, {}))
        raise ConfigLoadError(f"config.{failed}: expected {_expected(current[failed])}{words} ({detail})") from None
    except config_flags.UnsupportedOperationError as err:
        raise ConfigLoadError(" ".join(str(err).split())) from None


def apply_overrides(
    config: ml_collections.ConfigDict, overrides: Sequence[str] | Mapping[str, Any]
) -> ml_collections.ConfigDict:
    """Sets ``a.b=value`` on ``config`` (in place) and returns it.

    ``overrides`` is a sequence of command-line strings (``--config.a.b=value`` or
    ``a.b=value``), parsed by ml_collections to the type of the current value, or a mapping
    ``{"a.b": value}`` of Python values, assigned with ``ConfigDict``'s typed assignment (an int
    is accepted for a float field). Only existing leaf keys can be set.
    """
    if not isinstance(overrides, Mapping):
        pairs = [(key, str(NAMED_VALUES.get(key, {}).get(value, value))) for key, value in map(_split, overrides)]
        if pairs:
            _parse_command_line(config, pairs)
        return config
    for key, value in overrides.items():
        value = NAMED_VALUES.get(key, {}).get(value, value) if isinstance(value, str) else value
        node, leaf = _lookup(config, key)
        if isinstance(node[leaf], float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        try:
            node[leaf] = value
        except TypeError as err:
            raise ConfigLoadError(f"config.{key}={value!r}: {err}") from None
    return config
