"""The exception family: one base, one kind per edge (config, data, storage, bundle).

The CLI and the Ray entrypoints catch ``MonolithError`` and print one line; tests assert
the kind of failure.
"""

from __future__ import annotations


class MonolithError(Exception):
    """Base of every error the platform raises on purpose."""


class ConfigError(MonolithError, ValueError):
    """A config file, key or value is wrong: the message names the key and what is allowed."""


class DataError(MonolithError, ValueError):
    """Input data is unusable: the message names the file, column and first bad row."""


class StorageError(MonolithError, OSError):
    """Storage is unreachable, refuses our credentials, or lacks a bucket."""


class BundleError(MonolithError):
    """An artifact bundle is incomplete or fails verification."""
