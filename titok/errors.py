"""The one error type for bad input, shared by every layer.

`InputError` marks a problem with what the user gave (a file, a flag, a preset name, a folder, a config value):
its message is what the user sees, and the command lines turn it, and only it, into one line on stderr and exit
status 2. Anything else that escapes is a bug in this project and keeps its traceback. Raise an `InputError`
(or a subclass) where the input is judged; never catch a generic `ValueError`/`KeyError`/`OSError` to relabel
it, since a bug of ours raising one of those must not look like the user's mistake.

Subclasses also derive from the built-in type a caller of the library would expect (`ValueError` for a bad
value, `KeyError` for an unknown name, `FileNotFoundError` for a missing artifact), so library code that
catches those keeps working.
"""

from __future__ import annotations


class InputError(Exception):
    """Bad input from the user; the message says what is wrong and how to fix it."""


class DataError(InputError, ValueError):
    """An image set that can't be used as asked (empty, unreadable file under --strict, unknown name)."""


class ConfigError(InputError, ValueError):
    """A config, preset override or option that can't be used; the message names the key and the valid choices."""


class MissingFileError(InputError, FileNotFoundError):
    """A file the user named (or the run needs) is not there; the message says which, and where it comes from."""


class MissingDependencyError(InputError, ImportError):
    """An optional package the command needs is not installed; the message says how to install it."""


class NotSupportedError(ConfigError):
    """An option this machine or model can't run (CUDA graphs on a CPU): recorded as "not supported", not a bug."""
