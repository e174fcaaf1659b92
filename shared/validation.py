"""Marshmallow helpers shared by the API and the task registry."""

from __future__ import annotations

import functools

from marshmallow import Schema


@functools.cache
def schema_instance(schema_class: type[Schema]) -> Schema:
    """One instance per schema class, made on first use. Making one deep-copies all its
    fields (a few percent of a task submission's CPU, profiled), and loading with one
    keeps no state, so requests and threads can share it."""
    return schema_class()
