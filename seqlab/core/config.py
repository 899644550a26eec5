"""Typed, printable, overridable configs.

A configurable class nests ``@dataclass class Config(seqlab.core.config.Config)``; the
nested class learns its owner through :class:`Configurable`, and ``config.build()`` makes
the object. Configs print as sorted ``a.b.c = value`` lines, diff against each other, take
``a.b.c=value`` overrides coerced by the field's declared type, and round-trip through a
JSON-safe dict (used by checkpoints) without executing code. A ``dict[str, ...]`` field (e.g.
named sub-task configs) prints, diffs and takes overrides per entry: ``tasks.en_es.x = 1``.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import enum
import importlib
import types
import typing
from typing import Any, ClassVar, Self, TypeVar

T = TypeVar("T")

_CLASS_KEY = "__class__"
# Config classes may only be re-created from these packages when read from a file.
_TRUSTED_MODULE_PREFIXES = ("seqlab.",)
# ... and from the user's own modules, imported on purpose (``seqlab --import``).
_trusted_user_modules: set[str] = set()


def trust_user_module(name: str) -> None:
    """Lets configs read from files re-create config classes of module ``name`` (and of its
    submodules): the user's own code, which the user chose to import."""
    _trusted_user_modules.add(name)


class ConfigError(ValueError):
    """A config key or value is wrong; the message names the key and what would be right."""


@dataclasses.dataclass(frozen=True)
class Bounds:
    """The range a numeric field's value must lie in; ``None`` leaves that side open."""

    at_least: float | None = None
    above: float | None = None
    at_most: float | None = None
    below: float | None = None

    def __str__(self) -> str:
        limits = ((">=", self.at_least), (">", self.above), ("<=", self.at_most), ("<", self.below))
        return " and ".join(f"{op} {limit:g}" for op, limit in limits if limit is not None)

    def contain(self, value: float) -> bool:
        return not (
            (self.at_least is not None and value < self.at_least)
            or (self.above is not None and value <= self.above)
            or (self.at_most is not None and value > self.at_most)
            or (self.below is not None and value >= self.below)
        )


def param(
    default: Any = dataclasses.MISSING,
    doc: str = "",
    *,
    at_least: float | None = None,
    above: float | None = None,
    at_most: float | None = None,
    below: float | None = None,
    **kwargs: Any,
) -> Any:
    """Declares a config field with a one-line description and, for numbers, the range its
    value must lie in (checked by ``set`` and ``validate``; an enumeration is a ``Literal``
    type instead).

    Mutable defaults (configs, lists, dicts) are copied per instance automatically.
    """
    metadata: dict[str, Any] = {"doc": doc}
    bounds = Bounds(at_least, above, at_most, below)
    if bounds != Bounds():
        metadata["bounds"] = bounds
    if default is not dataclasses.MISSING and (
        isinstance(default, Config | list | dict | set)
        or (isinstance(default, tuple) and any(isinstance(v, Config) for v in default))
    ):
        proto = default
        return dataclasses.field(
            default_factory=lambda: _deep_copy(proto), metadata=metadata, **kwargs
        )
    return dataclasses.field(default=default, metadata=metadata, **kwargs)


def _deep_copy(value: Any) -> Any:
    if isinstance(value, Config):
        return value.copy()
    if isinstance(value, list):
        return [_deep_copy(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_deep_copy(v) for v in value)
    if isinstance(value, dict):
        return {k: _deep_copy(v) for k, v in value.items()}
    if isinstance(value, set):
        return set(value)
    return value


@dataclasses.dataclass
class Config:
    """Base of every config: inert data that ``build()`` turns into its owner object."""

    owner: ClassVar[type | None] = None

    def build(self, *args: Any, **kwargs: Any) -> Any:
        """Constructs the owning class from this config, once its own leaves are valid."""
        if self.owner is None:
            raise ConfigError(f"{type(self).__qualname__} is not nested in a class it could build")
        # Its sections are checked when they build; a whole tree by validate() beforehand.
        self.validate(f"{_class_label(type(self))}.", recursive=False)
        return self.owner(self.copy(), *args, **kwargs)

    def copy(self) -> Self:
        """A deep copy (child configs and containers are copied too)."""
        values = {f.name: _deep_copy(getattr(self, f.name)) for f in dataclasses.fields(self)}
        return type(self)(**values)

    # ---- printing -------------------------------------------------------------------------
    def flatten(self, prefix: str = "") -> dict[str, Any]:
        """Maps every leaf's dotted key to its value; a child config also yields ``key.cls``."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            key = f"{prefix}{f.name}"
            value = getattr(self, f.name)
            out.update(_flatten_value(key, value))
        return out

    def to_text(self) -> str:
        """Sorted ``a.b.c = value`` lines, one per leaf."""
        flat = self.flatten()
        return "".join(f"{k} = {_format_value(flat[k])}\n" for k in sorted(flat))

    def diff(self, base: Config) -> str:
        """Lines ``key: base_value -> value`` for every leaf that differs from ``base``."""
        mine, theirs = self.flatten(), base.flatten()
        lines = []
        for key in sorted(set(mine) | set(theirs)):
            a = theirs.get(key, "<absent>")
            b = mine.get(key, "<absent>")
            if a != b or type(a) is not type(b):
                lines.append(f"{key}: {_format_value(a)} -> {_format_value(b)}\n")
        return "".join(lines)

    def describe(self) -> dict[str, str]:
        """Maps every leaf's dotted key to its field's description."""
        out: dict[str, str] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Config):
                out.update({f"{f.name}.{k}": v for k, v in value.describe().items()})
            elif isinstance(value, dict) and any(isinstance(v, Config) for v in value.values()):
                for name, entry in value.items():
                    out.update({f"{f.name}.{name}.{k}": v for k, v in entry.describe().items()})
            else:
                for key in _flatten_value(f.name, value):
                    out[key] = f.metadata.get("doc", "")
        return out

    # ---- overrides ------------------------------------------------------------------------
    def set(self, key: str, text: str) -> None:
        """Sets the leaf ``key`` (dotted) from its text form, coerced by the field type.

        ``section.cls = Name`` replaces a whole config section by the config of another class
        its field accepts (e.g. ``trainer.optimizer.cls=SGD``): the new section starts from
        that class's defaults and keeps the values of same-named, same-typed fields.

        Raises:
          ConfigError: naming the key and its nearest match when the key is unknown, or the
            expected type when the value does not parse.
        """
        parts = key.split(".")
        if len(parts) > 1 and parts[-1] == "cls":
            node, name, hint, current = self._locate(key, parts[:-1])
            if isinstance(current, Config) or (current is None and _config_bases(hint)):
                _assign(node, name, _section_of_class(current, hint, text, key))
                return
        node, name, hint, current = self._locate(key, parts)
        if isinstance(current, Config) or (isinstance(current, dict) and current):
            first = (
                dataclasses.fields(current)[0].name
                if isinstance(current, Config)
                else next(iter(current))
            )
            raise ConfigError(
                f"'{key}' is a config section, not a value; set one of its keys, e.g. "
                f"'{key}.{first}' (or '{key}.cls' to change its class)"
            )
        value = parse_value(text, hint, key)
        check_value(value, hint, _field_bounds(node, name), key)
        _assign(node, name, value)

    def _locate(self, key: str, parts: list[str]) -> tuple[Any, str, Any, Any]:
        """Walks ``parts``; returns (container, name, declared type, current value) of the last.

        The container is a Config or a ``dict[str, ...]`` field's dict.
        """
        node: Config | dict[str, Any] = self
        node_hint: Any = type(self)  # a dict node's declared type gives its entries' type
        for i, name in enumerate(parts):
            if isinstance(node, Config):
                if name not in {f.name for f in dataclasses.fields(node)}:
                    raise ConfigError(_unknown_key_message(key, self))
                hint = typing.get_type_hints(type(node))[name]
                current = getattr(node, name)
            else:
                if name not in node:
                    raise ConfigError(_unknown_key_message(key, self))
                hint = _dict_value_hint(node_hint)
                current = node[name]
            if i == len(parts) - 1:
                return node, name, hint, current
            if not isinstance(current, Config | dict):
                raise ConfigError(_unknown_key_message(key, self))
            node, node_hint = current, hint
        raise ConfigError(f"empty key {key!r}")

    def validate(self, prefix: str = "", recursive: bool = True) -> None:
        """Checks every leaf against its declared type's choices (``Literal``) and its
        ``param`` bounds, in this section and (if ``recursive``) every section below it.

        Raises:
          ConfigError: naming the first wrong key (``prefix`` + its dotted name).
        """
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            key, value = f"{prefix}{f.name}", getattr(self, f.name)
            sections = value.items() if isinstance(value, dict) else [(None, value)]
            for name, entry in sections:
                if isinstance(entry, Config) and recursive:
                    entry.validate(f"{key}.{name}." if name is not None else f"{key}.")
            if not isinstance(value, Config | dict):
                check_value(value, hints[f.name], f.metadata.get("bounds"), key)

    def apply_overrides(self, overrides: list[str]) -> Self:
        """Applies ``key=value`` strings in order (as given by ``--set``); returns self."""
        for item in overrides:
            if "=" not in item:
                raise ConfigError(f"override {item!r} must look like 'a.b.c=value'")
            key, text = item.split("=", 1)
            self.set(key.strip(), text.strip())
        return self

    # ---- serialization --------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict that records the config class of every section."""
        out: dict[str, Any] = {_CLASS_KEY: f"{type(self).__module__}:{type(self).__qualname__}"}
        for f in dataclasses.fields(self):
            out[f.name] = _to_json(getattr(self, f.name))
        return out

    @staticmethod
    def from_dict(data: dict[str, Any]) -> Config:
        """Re-creates a config written by :meth:`to_dict`; imports only seqlab classes."""
        cls = _import_config_class(data[_CLASS_KEY])
        data = cls.upgrade(dict(data))
        hints = typing.get_type_hints(cls)
        kwargs = {}
        names = {f.name for f in dataclasses.fields(cls)}
        for name, value in data.items():
            if name == _CLASS_KEY:
                continue
            if name not in names:
                raise ConfigError(
                    f"{cls.__qualname__} has no field '{name}' (config from another version?)"
                )
            if isinstance(value, dict) and _CLASS_KEY in value:
                kwargs[name] = Config.from_dict(value)
            else:
                kwargs[name] = _from_json(value, hints[name])
        return cls(**kwargs)

    @classmethod
    def upgrade(cls, data: dict[str, Any]) -> dict[str, Any]:
        """Rewrites the fields of a config written by an earlier version (renamed or removed
        fields) into this version's, for ``from_dict``; returns ``data`` unchanged here.

        Raises:
          ConfigError: naming the field, when an old value has no equivalent.
        """
        return data


class Configurable:
    """Mixin: a nested ``Config`` class defined in the class body builds this class."""

    Config: ClassVar[type[Config]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        nested = cls.__dict__.get("Config")
        if isinstance(nested, type) and issubclass(nested, Config):
            nested.owner = cls


# ---- helpers ------------------------------------------------------------------------------


def _assign(node: Config | dict[str, Any], name: str, value: Any) -> None:
    if isinstance(node, Config):
        setattr(node, name, value)
    else:
        node[name] = value


def _field_bounds(node: Config | dict[str, Any], name: str) -> Bounds | None:
    """The declared bounds of field ``name`` of ``node`` (none for a dict's entries)."""
    if isinstance(node, Config):
        return next(f for f in dataclasses.fields(node) if f.name == name).metadata.get("bounds")
    return None


def check_value(value: Any, hint: Any, bounds: Bounds | None, key: str) -> None:
    """Raises ConfigError naming ``key`` when ``value`` is not one of a ``Literal`` hint's
    choices or lies outside ``bounds``."""
    inner, optional = _strip_optional(hint)
    if value is None and optional:
        return
    if typing.get_origin(inner) is typing.Literal and value not in typing.get_args(inner):
        raise ConfigError(f"'{key}' must be one of {list(typing.get_args(inner))}, got {value!r}")
    numbers = value if isinstance(value, tuple | list) else [value]
    for number in numbers:
        if bounds is not None and isinstance(number, int | float) and not bounds.contain(number):
            raise ConfigError(f"'{key}' must be {bounds}, got {value!r}")


def _config_subclasses(base: type[Config]) -> list[type[Config]]:
    """``base`` and every (imported) subclass of it that builds an object."""
    found, todo = [], [base]
    while todo:
        cls = todo.pop()
        if cls not in found:
            found.append(cls)
            todo.extend(cls.__subclasses__())
    return [c for c in found if c.owner is not None]


def _config_bases(hint: Any) -> list[type[Config]]:
    """The config classes a field of type ``hint`` declares (``Optional`` and unions too)."""
    inner, _ = _strip_optional(hint)
    if typing.get_origin(inner) in (typing.Union, types.UnionType):
        args = typing.get_args(inner)
    else:
        args = (inner,)
    return [a for a in args if isinstance(a, type) and issubclass(a, Config)]


def _section_of_class(current: Config | None, hint: Any, text: str, key: str) -> Config | None:
    """The config of the class named ``text`` that may replace ``current`` (``key`` = x.cls).

    ``None`` empties an optional section.
    """
    label = text.strip().strip("'\"")
    if label.lower() == "none" and _strip_optional(hint)[1]:
        return None
    candidates = [c for b in _config_bases(hint) or [Config] for c in _config_subclasses(b)]
    matches = [
        c
        for c in candidates
        if label in (_class_label(c), c.__qualname__, f"{c.__module__}:{c.__qualname__}")
    ]
    if len(matches) != 1:
        names = sorted({_class_label(c) for c in candidates})
        close = difflib.get_close_matches(label, names, n=1)
        hint_text = f"; did you mean '{close[0]}'?" if close else ""
        what = "is ambiguous" if matches else "is not a class this section accepts"
        raise ConfigError(f"'{key}': {label!r} {what} (one of {names}){hint_text}")
    cls = matches[0]
    try:
        new = cls()
    except TypeError as e:
        raise ConfigError(f"'{key}': {label} has fields without defaults ({e})") from None
    if current is None:
        return new
    old_hints, new_hints = typing.get_type_hints(type(current)), typing.get_type_hints(cls)
    for f in dataclasses.fields(new):
        if f.name in old_hints and old_hints[f.name] == new_hints[f.name]:
            setattr(new, f.name, _deep_copy(getattr(current, f.name)))
    return new


def _class_label(cls: type) -> str:
    return cls.__qualname__.removesuffix(".Config")


def _flatten_value(key: str, value: Any) -> dict[str, Any]:
    """The printed leaves of the field (or dict entry) ``key``; a dict prints per entry."""
    if isinstance(value, Config):
        return {f"{key}.cls": _class_label(type(value)), **value.flatten(prefix=f"{key}.")}
    if isinstance(value, dict) and value and all(isinstance(k, str) for k in value):
        out: dict[str, Any] = {}
        for name, entry in value.items():
            out.update(_flatten_value(f"{key}.{name}", entry))
        return out
    return {key: value}


def _dict_value_hint(hint: Any) -> Any:
    """The entry type of a ``dict[str, X]`` hint (``Any`` when not declared)."""
    args = typing.get_args(_strip_optional(hint)[0])
    return args[1] if len(args) == 2 else Any


def _format_value(value: Any) -> str:
    if isinstance(value, enum.Enum):
        return value.name
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, tuple | list):
        return repr(type(value)(value))
    return repr(value)


def all_keys(config: Config) -> list[str]:
    """Every settable dotted key of ``config``."""
    return [k for k in config.flatten() if not k.endswith(".cls")]


def _unknown_key_message(key: str, root: Config) -> str:
    keys = all_keys(root)
    close = difflib.get_close_matches(key, keys, n=1, cutoff=0.0)
    # Also match on the last component, which catches keys put under the wrong section.
    last = key.rsplit(".", 1)[-1]
    by_leaf = [k for k in keys if k.rsplit(".", 1)[-1] == last]
    suggestion = by_leaf[0] if by_leaf and not close else (close[0] if close else None)
    if by_leaf and close and by_leaf[0] != close[0]:
        ratio_close = difflib.SequenceMatcher(None, key, close[0]).ratio()
        ratio_leaf = difflib.SequenceMatcher(None, key, by_leaf[0]).ratio()
        suggestion = by_leaf[0] if ratio_leaf >= ratio_close else close[0]
    hint = f"; did you mean '{suggestion}'?" if suggestion else ""
    return f"unknown key '{key}'{hint}"


def _strip_optional(hint: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(hint)) == 2:
            return args[0], True
    return hint, False


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def parse_value(text: str, hint: Any, key: str = "") -> Any:
    """Parses ``text`` into a value of type ``hint`` (int, float, bool, str, enum, Literal,
    Optional, tuple/list of those).

    Raises:
      ConfigError: naming ``key`` and the expected type.
    """
    inner, optional = _strip_optional(hint)
    if optional and text.strip().lower() in ("none", "null"):
        return None

    def fail(expected: str) -> ConfigError:
        return ConfigError(f"'{key}' expects {expected}, got {text!r}")

    origin = typing.get_origin(inner)
    if inner is bool:
        low = text.strip().lower()
        if low in ("true", "1", "yes", "on"):
            return True
        if low in ("false", "0", "no", "off"):
            return False
        raise fail("a bool (true/false)")
    if inner is int:
        try:
            return int(text.strip().replace("_", ""))
        except ValueError:
            try:
                as_float = float(text)
            except ValueError:
                raise fail("an int") from None
            if as_float.is_integer():
                return int(as_float)
            raise fail("an int") from None
    if inner is float:
        try:
            return float(text.strip())
        except ValueError:
            raise fail("a float") from None
    if inner is str:
        stripped = text.strip()
        if len(stripped) >= 2 and stripped[0] == stripped[-1] and stripped[0] in "'\"":
            try:
                value = ast.literal_eval(stripped)
            except (ValueError, SyntaxError):
                value = None
            if not isinstance(value, str):
                raise fail("a str (quoted, it must be one valid string literal)")
            return value
        return text
    if isinstance(inner, type) and issubclass(inner, enum.Enum):
        names = [m.name for m in inner]
        for member in inner:
            if member.name.lower() == text.strip().lower():
                return member
        raise fail(f"one of {names}")
    if origin is typing.Literal:
        choices = typing.get_args(inner)
        stripped = text.strip()
        # Accept string choices quoted, as to_text prints them.
        quoted = len(stripped) >= 2 and stripped[0] == stripped[-1] and stripped[0] in "'\""
        for choice in choices:
            if str(choice) == stripped or (
                isinstance(choice, str) and quoted and choice == stripped[1:-1]
            ):
                return choice
        raise fail(f"one of {list(choices)}")
    if origin in (tuple, list):
        args = typing.get_args(inner)
        elem = args[0] if args else str
        stripped = text.strip()
        if stripped.startswith(("(", "[")):
            try:
                literal = ast.literal_eval(stripped)
            except (ValueError, SyntaxError):
                raise fail(f"a {origin.__name__} of {_type_name(elem)}") from None
            # "(3)" evaluates to 3, not a tuple; read it as one element.
            items = list(literal) if isinstance(literal, tuple | list) else [literal]
            parsed = [parse_value(str(x), elem, key) for x in items]
        elif stripped == "":
            parsed = []
        else:
            parsed = [parse_value(x, elem, key) for x in stripped.split(",")]
        return origin(parsed)
    raise fail(f"a value of type {_type_name(hint)} (not settable from text)")


def _to_json(value: Any) -> Any:
    if isinstance(value, Config):
        return value.to_dict()
    if isinstance(value, enum.Enum):
        return value.name
    if isinstance(value, tuple | list):
        return [_to_json(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _to_json(v) for k, v in value.items()}
    return value


def _from_json(value: Any, hint: Any) -> Any:
    inner, _ = _strip_optional(hint)
    if value is None:
        return None
    if isinstance(inner, type) and issubclass(inner, enum.Enum):
        return inner[value]
    origin = typing.get_origin(inner)
    if origin is tuple and isinstance(value, list):
        args = typing.get_args(inner)
        elem = args[0] if args else Any
        return tuple(_from_json(v, elem) for v in value)
    if origin is dict and isinstance(value, dict):
        return {k: _from_json(v, _dict_value_hint(inner)) for k, v in value.items()}
    if isinstance(value, dict) and _CLASS_KEY in value:
        return Config.from_dict(value)
    return value


# Config classes that moved, by the name older logdirs' config.json files record.
_MOVED_CLASSES = {
    "seqlab.distributed.config:DistributedConfig": (
        "seqlab.train.parallelism_config:ParallelismConfig"
    ),
}


def _import_config_class(path: str) -> type[Config]:
    path = _MOVED_CLASSES.get(path, path)
    module_name, _, qualname = path.partition(":")
    user = any(module_name.partition(".")[0] == m.partition(".")[0] for m in _trusted_user_modules)
    if not (module_name.startswith(_TRUSTED_MODULE_PREFIXES) or user):
        raise ConfigError(
            f"refusing to load config class {path!r}: not part of seqlab; if it is your own "
            "code, import it with `seqlab --import MODULE_OR_PATH ...`"
        )
    obj: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise ConfigError(f"config class {path!r} does not exist in this version of seqlab")
    if not (isinstance(obj, type) and issubclass(obj, Config)):
        raise ConfigError(f"{path!r} is not a config class")
    return obj
