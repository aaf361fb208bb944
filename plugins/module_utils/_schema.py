# Copyright (c) kiln developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# This module util is PRIVATE to kiln.flatcar. It can change at any time. Do not use it from other collections.

"""A small JSON-Schema (draft 2020-12) validator for the subset kiln's own schemas use.

Modules run on builder hosts with Python >= 3.9 where the ``jsonschema`` library may be missing, so the
build record is checked by this one copy. Supported keywords: ``type``, ``enum``, ``const``, ``properties``,
``required``, ``additionalProperties`` (boolean or schema), ``propertyNames``, ``items``, ``maxItems``,
``pattern``, ``minLength``, ``maxLength``, ``minimum``, ``maximum`` and ``$ref`` to ``#/$defs/<name>``;
``$schema``, ``$id``, ``$defs``, ``$comment``, ``title`` and ``description`` are annotations. Any other
keyword raises ``SchemaError`` (a schema must never be half-checked). tests/unit/test_record_schema.py
checks this against the ``jsonschema`` library on a corpus of valid and invalid records.
"""

from __future__ import annotations

import re

ANNOTATIONS = frozenset(("$schema", "$id", "$defs", "$comment", "title", "description"))
KEYWORDS = frozenset(("type", "enum", "const", "properties", "required", "additionalProperties", "propertyNames",
                      "items", "maxItems", "pattern", "minLength", "maxLength", "minimum", "maximum", "$ref"))
_PATTERNS = {}


class SchemaError(Exception):
    """The schema uses something this validator does not implement (a kiln bug, not bad data)."""


def _is_type(value, name):
    if name == "object":
        return isinstance(value, dict)
    if name == "array":
        return isinstance(value, list)
    if name == "string":
        return isinstance(value, str)
    if name == "boolean":
        return isinstance(value, bool)
    if name == "null":
        return value is None
    if isinstance(value, bool):
        return False
    if name == "integer":
        return isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    if name == "number":
        return isinstance(value, (int, float))
    raise SchemaError("unknown JSON-Schema type %r" % (name,))


def _equal(a, b):
    """JSON equality: booleans are not numbers, 1 == 1.0, containers compare element-wise."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return set(a) == set(b) and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    return type(a) is type(b) and a == b


def _pattern(text):
    compiled = _PATTERNS.get(text)
    if compiled is None:
        compiled = _PATTERNS[text] = re.compile(text)
    return compiled


def _short(value):
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def json_path(parts):
    """``$.stages["vm_image:qemu"].outputs[0].path`` for a list of keys and indexes."""
    out = "$"
    for part in parts:
        if isinstance(part, int):
            out += "[%d]" % part
        elif re.match(r"^[A-Za-z_][A-Za-z0-9_]*\Z", part):
            out += "." + part
        else:
            out += "[%s]" % _short(part)
    return out


def _resolve(root, ref):
    if not ref.startswith("#/$defs/") or "/" in ref[len("#/$defs/"):]:
        raise SchemaError("unsupported $ref %r" % (ref,))
    try:
        return root["$defs"][ref[len("#/$defs/"):]]
    except KeyError:
        raise SchemaError("unresolvable $ref %r" % (ref,))


def iter_errors(instance, schema, root=None, path=()):
    """Yield ``(path, message)`` for every violation, in a stable order (schema keyword order, then keys)."""
    root = schema if root is None else root
    if schema is True:
        return
    if schema is False:
        yield list(path), "is not allowed here"
        return
    if not isinstance(schema, dict):
        raise SchemaError("a schema must be an object or a boolean, not %r" % (schema,))
    unknown = set(schema) - KEYWORDS - ANNOTATIONS
    if unknown:
        raise SchemaError("unsupported JSON-Schema keyword(s) %s" % ", ".join(sorted(unknown)))
    if "$ref" in schema:
        yield from iter_errors(instance, _resolve(root, schema["$ref"]), root, path)
    if "type" in schema:
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(_is_type(instance, t) for t in types):
            yield list(path), "%s is not of type %s" % (_short(instance), " or ".join(types))
            return  # the other keywords would only repeat the type error
    if "const" in schema and not _equal(instance, schema["const"]):
        yield list(path), "%s is not %s" % (_short(instance), _short(schema["const"]))
    if "enum" in schema and not any(_equal(instance, choice) for choice in schema["enum"]):
        yield list(path), "%s is not one of %s" % (_short(instance), ", ".join(_short(c) for c in schema["enum"]))
    if isinstance(instance, str):
        if "minLength" in schema and len(instance) < schema["minLength"]:
            yield list(path), "%s is shorter than %d characters" % (_short(instance), schema["minLength"])
        if "maxLength" in schema and len(instance) > schema["maxLength"]:
            yield list(path), "%s is longer than %d characters" % (_short(instance), schema["maxLength"])
        if "pattern" in schema and not _pattern(schema["pattern"]).search(instance):
            yield list(path), "%s does not match %s" % (_short(instance), schema["pattern"])
    if isinstance(instance, (int, float)) and not isinstance(instance, bool):
        if "minimum" in schema and instance < schema["minimum"]:
            yield list(path), "%s is less than the minimum of %s" % (_short(instance), schema["minimum"])
        if "maximum" in schema and instance > schema["maximum"]:
            yield list(path), "%s is greater than the maximum of %s" % (_short(instance), schema["maximum"])
    if isinstance(instance, list):
        if "maxItems" in schema and len(instance) > schema["maxItems"]:
            yield list(path), "has more than %d items" % schema["maxItems"]
        if "items" in schema:
            for index, item in enumerate(instance):
                yield from iter_errors(item, schema["items"], root, path + (index,))
    if isinstance(instance, dict):
        for key in schema.get("required", ()):
            if key not in instance:
                yield list(path), "%r is a required property" % key
        properties = schema.get("properties", {})
        if "propertyNames" in schema:
            for key in sorted(instance):
                for _p, message in iter_errors(key, schema["propertyNames"], root, ()):
                    yield list(path) + [key], "property name " + message
        for key, sub in properties.items():
            if key in instance:
                yield from iter_errors(instance[key], sub, root, path + (key,))
        if "additionalProperties" in schema:
            extra = schema["additionalProperties"]
            for key in sorted(k for k in instance if k not in properties):
                if extra is False:
                    yield list(path) + [key], "additional property %s is not allowed" % _short(key)
                else:
                    yield from iter_errors(instance[key], extra, root, path + (key,))


def first_error(instance, schema):
    """``None`` when ``instance`` is valid, else ``(json path, message)`` of the first violation."""
    for parts, message in iter_errors(instance, schema):
        return json_path(parts), message
    return None
