"""The package's one cattrs converter: snake_case models <-> PascalCase wire dicts.

Every attrs class is mapped by a two-argument hook factory (so ``converter.copy(...)`` variants,
such as the strict ``forbid_extra_keys`` copy the tests use, keep working):

* field names are renamed ``snake_case`` -> ``PascalCase`` (``group_id`` -> ``GroupId``), with an
  exceptions table (``from_account`` -> ``From_Account``) and per-field overrides through
  :func:`wire_field` metadata (group attributes use lower-case ``key`` / ``value``);
* fields that have a default are left out of request bodies while they hold that default, so
  optional wire fields the caller did not give are never sent (``StartSeq`` when 0,
  ``From_Account`` when ``None``);
* an attrs class may define a static ``_wire_in(obj)`` that normalises alternative wire shapes
  before structuring.

Wire types are strict: ``int`` accepts only JSON integers (not ``true``, ``5.7`` or ``"5"``),
``bool`` only JSON booleans, ``str`` only JSON strings, sequences only JSON arrays. Unknown extra
fields in answers are ignored (the API adds fields over time).

:func:`structure` turns any decoding failure into :class:`~tim_async.errors.TimTransportError`
naming the API and the bad field (``$.ExtensionList[3].Seq``). The hot path runs the hooks
generated without detailed validation; only after a failure is the answer decoded again with a
detailed-validation copy of the converter to describe the bad field.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final, TypeVar, get_args, get_origin

import attrs
from cattrs import Converter
from cattrs.cols import homogenous_tuple_structure_factory, list_structure_factory
from cattrs.errors import (
    ClassValidationError,
    ForbiddenExtraKeysError,
    IterableValidationError,
)
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override
from cattrs.preconf.orjson import make_converter

from tim_async.errors import TimTransportError

__all__ = [
    "WIRE_NAME_EXCEPTIONS",
    "converter",
    "field_wire_names",
    "structure",
    "unstructure",
    "wire_field",
    "wire_name",
]

T = TypeVar("T")

#: attrs field metadata key holding an explicit wire name.
WIRE_NAME: Final = "tim_async.wire_name"

#: Field names whose wire spelling does not follow the PascalCase rule.
WIRE_NAME_EXCEPTIONS: Final[Mapping[str, str]] = {
    "from_account": "From_Account",
    "to_account": "To_Account",
}


def wire_name(field_name: str) -> str:
    """Wire name of a snake_case field name: ``msg_seq`` -> ``MsgSeq`` (see the exceptions)."""
    exception = WIRE_NAME_EXCEPTIONS.get(field_name)
    if exception is not None:
        return exception
    return "".join(part[:1].upper() + part[1:] for part in field_name.split("_"))


def field_wire_names(cls: type[Any]) -> tuple[str, ...]:
    """The wire names of an attrs class's fields, in field order (for hand-written hot paths
    that must agree with the converter)."""
    return tuple(
        field.metadata.get(WIRE_NAME) or wire_name(field.name) for field in attrs.fields(cls)
    )


def wire_field(name: str) -> dict[str, str]:
    """attrs field metadata that pins the wire name: ``attrs.field(metadata=wire_field("key"))``."""
    return {WIRE_NAME: name}


# --------------------------------------------------------------------------- strict primitives


def _describe(value: Any) -> str:
    text = repr(value)
    if len(text) > 40:
        text = text[:37] + "..."
    return f"{type(value).__name__} {text}"


def _structure_int(value: Any, _: Any) -> int:
    if type(value) is int:
        return value
    raise TypeError(f"expected an integer, got {_describe(value)}")


def _structure_bool(value: Any, _: Any) -> bool:
    if type(value) is bool:
        return value
    raise TypeError(f"expected a boolean, got {_describe(value)}")


def _structure_str(value: Any, _: Any) -> str:
    if type(value) is str:
        return value
    raise TypeError(f"expected a string, got {_describe(value)}")


def _is_sequence_type(tp: Any) -> bool:
    origin = get_origin(tp)
    if origin is list:
        return True
    if origin is tuple:
        args = get_args(tp)
        return len(args) == 2 and args[1] is Ellipsis
    return False


def _sequence_factory(tp: Any, conv: Converter) -> Callable[[Any, Any], Any]:
    """Structure ``list[X]`` / ``tuple[X, ...]`` from JSON arrays only (not strings or objects)."""
    if conv.detailed_validation:
        # The slow path: cattrs' own hooks record the index of a bad element.
        inner: Callable[[Any, Any], Any]
        if get_origin(tp) is list:
            inner = list_structure_factory(tp, conv)
        else:
            inner = homogenous_tuple_structure_factory(tp, conv)

        def structure_sequence(value: Any, type_: Any) -> Any:
            if type(value) is not list and type(value) is not tuple:
                raise TypeError(f"expected an array, got {_describe(value)}")
            return inner(value, type_)

        return structure_sequence

    element_type = get_args(tp)[0]
    element = conv.get_structure_hook(element_type)
    make = list if get_origin(tp) is list else tuple

    def structure_sequence_fast(value: Any, _: Any) -> Any:
        if type(value) is not list and type(value) is not tuple:
            raise TypeError(f"expected an array, got {_describe(value)}")
        return make([element(item, element_type) for item in value])

    return structure_sequence_fast


# --------------------------------------------------------------------------- attrs classes


def _overrides(cls: type[Any]) -> dict[str, Any]:
    result = {}
    for field in attrs.fields(cls):
        name = field.metadata.get(WIRE_NAME) or wire_name(field.name)
        result[field.name] = override(rename=name)
    return result


def _attrs_structure_factory(cls: type[Any], conv: Converter) -> Callable[[Any, Any], Any]:
    generated = make_dict_structure_fn(cls, conv, **_overrides(cls))
    normalise: Callable[[Any], Any] | None = getattr(cls, "_wire_in", None)
    if not conv.detailed_validation and normalise is None:
        # The fast path: a non-object fails inside the generated code (TypeError) and
        # structure() then describes it through the detailed path below.
        return generated

    def structure_attrs(value: Any, type_: Any) -> Any:
        if not isinstance(value, Mapping):
            raise TypeError(f"expected an object, got {_describe(value)}")
        if normalise is not None:
            value = normalise(value)
        return generated(value, type_)

    return structure_attrs


def _attrs_unstructure_factory(cls: type[Any], conv: Converter) -> Callable[[Any], Any]:
    overrides = _overrides(cls)
    for field in attrs.fields(cls):
        if field.default is not attrs.NOTHING:
            overrides[field.name] = override(
                rename=overrides[field.name].rename, omit_if_default=True
            )
    return make_dict_unstructure_fn(cls, conv, **overrides)


def _configure(conv: Converter) -> None:
    conv.register_structure_hook(int, _structure_int)
    conv.register_structure_hook(bool, _structure_bool)
    conv.register_structure_hook(str, _structure_str)
    conv.register_structure_hook_factory(_is_sequence_type, _sequence_factory)
    conv.register_structure_hook_factory(attrs.has, _attrs_structure_factory)
    conv.register_unstructure_hook_factory(attrs.has, _attrs_unstructure_factory)


#: The package's converter (orjson flavour, no detailed validation: the fast path).
converter: Final[Converter] = make_converter(
    detailed_validation=False,
    unstruct_collection_overrides={tuple: list},
)
_configure(converter)

_detailed: Converter | None = None


def _detailed_converter() -> Converter:
    global _detailed
    if _detailed is None:
        _detailed = converter.copy(detailed_validation=True)
    return _detailed


def _format_error(exc: BaseException) -> str:
    if isinstance(exc, KeyError):
        return "required field missing"
    if isinstance(exc, ForbiddenExtraKeysError):
        return f"unexpected fields {sorted(exc.extra_fields)}"
    return str(exc) or type(exc).__name__


def _field_wire_name(cls: Any, name: str) -> str:
    try:
        field = attrs.fields_dict(cls)[name]
    except (TypeError, KeyError):  # pragma: no cover - cattrs only reports attrs fields
        return name
    explicit: str | None = field.metadata.get(WIRE_NAME)
    return explicit or wire_name(name)


def _error_lines(exc: BaseException, path: str) -> list[str]:
    """Like ``cattrs.transform_error``, but paths use wire names (``$.ExtensionList[3].Seq``)."""
    if isinstance(exc, IterableValidationError):
        lines = []
        with_notes, without = exc.group_exceptions()
        for sub, index_note in with_notes:
            lines.extend(_error_lines(sub, f"{path}[{index_note.index!r}]"))
        for sub in without:
            lines.extend(_error_lines(sub, path))
        return lines
    if isinstance(exc, ClassValidationError):
        lines = []
        with_attr_notes, without = exc.group_exceptions()
        for sub, attr_note in with_attr_notes:
            lines.extend(_error_lines(sub, f"{path}.{_field_wire_name(exc.cl, attr_note.name)}"))
        for sub in without:
            lines.extend(_error_lines(sub, path))
        return lines
    return [f"{path}: {_format_error(exc)}"]


def describe_failure(value: Any, cls: type[Any], conv: Converter | None = None) -> str:
    """Decode ``value`` again with detailed validation and describe what is wrong with it,
    e.g. ``$.ExtensionList[3].Seq: expected an integer, got str '5'``."""
    base = conv if conv is not None else converter
    detailed = _detailed_converter() if base is converter else base.copy(detailed_validation=True)
    try:
        detailed.structure(value, cls)
    except Exception as exc:
        lines = _error_lines(exc, "$")
        if len(lines) > 3:
            lines = [*lines[:3], f"and {len(lines) - 3} more"]
        return "; ".join(lines)
    return "answer could not be decoded"  # pragma: no cover - the fast path failed, this did not


def structure(value: Any, cls: type[T], *, api: str, conv: Converter | None = None) -> T:
    """Decode a server answer (or part of one) into ``cls``.

    A malformed answer (missing field, wrong JSON type) raises
    :class:`~tim_async.errors.TimTransportError` naming ``api`` and the bad field; never a bare
    ``KeyError``/``TypeError`` or a cattrs exception. ``conv`` selects another converter (tests
    pass a strict ``forbid_extra_keys`` copy)."""
    use = conv if conv is not None else converter
    try:
        return use.structure(value, cls)
    except Exception as exc:
        detail = describe_failure(value, cls, use)
        raise TimTransportError(f"malformed answer: {detail}", api=api) from exc


def unstructure(obj: Any) -> dict[str, Any]:
    """Encode an attrs request model into a fresh JSON-ready wire dict."""
    result: dict[str, Any] = converter.unstructure(obj)
    return result
