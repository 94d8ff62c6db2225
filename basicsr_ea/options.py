"""Options as small typed objects, checked in one place: an unknown key, a wrong type or a missing required key is
an ``OptionError`` naming the option's path (``train.ea.fitness.patch_size``), never a silent default.

``parse(cls, data, where)`` builds a dataclass from a mapping of the YAML options, recursing into fields that are
dataclasses, lists and optionals; a dataclass's ``__post_init__`` checks values and raises ``OptionError`` with
the field name first. ``check_call(fn, kwargs, where)`` checks the keyword arguments of a constructor the options
name by ``type`` (archs, losses, optimizers, schedulers) against its signature.
"""
import dataclasses
import inspect
import types
import typing

NUMBER_HINT = ' (YAML reads 1e-4 as a string: write 1.0e-4 or !!float 1e-4)'


class OptionError(ValueError):
    """An option that cannot be used as given; the message starts with its path in the options."""


def _describe(value):
    return f'{value!r} ({type(value).__name__})'


def _convert(hint, value, where):
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return parse(hint, value, where)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _convert(arg, value, where)
            except OptionError as err:
                errors.append(str(err))
        raise OptionError(errors[0] if len(errors) == 1 else f'{where}: {_describe(value)} fits none of {hint}')
    if origin is typing.Literal:
        if value not in args:
            raise OptionError(f'{where}: must be one of {", ".join(map(repr, args))}, got {value!r}')
        return value
    if origin in (list, tuple) or hint in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise OptionError(f'{where}: expected a list, got {_describe(value)}')
        item = args[0] if args else typing.Any
        items = [_convert(item, v, f'{where}[{k}]') for k, v in enumerate(value)]
        return tuple(items) if (origin or hint) is tuple else items
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise OptionError(f'{where}: expected a mapping, got {_describe(value)}')
        return {k: _convert(args[1], v, f'{where}.{k}') for k, v in value.items()} if args else dict(value)
    if hint is typing.Any:
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise OptionError(f'{where}: expected a number, got {_describe(value)}' +
                              (NUMBER_HINT if isinstance(value, str) else ''))
        return float(value)
    if hint is int and isinstance(value, bool) or not isinstance(value, hint):
        raise OptionError(f'{where}: expected {hint.__name__}, got {_describe(value)}')
    return value


def parse(cls, data, where):
    """``cls`` (a dataclass) from the mapping ``data`` found at the option path ``where`` (None: all defaults)."""
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise OptionError(f'{where}: expected a mapping, got {_describe(data)}')
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise OptionError(f'{where}.{unknown[0]}: unknown option; known: {", ".join(sorted(fields))}')
    hints = typing.get_type_hints(cls)
    values = {}
    for name, field in fields.items():
        if name in data:
            values[name] = _convert(hints[name], data[name], f'{where}.{name}')
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise OptionError(f'{where}.{name}: required option missing')
    try:
        return cls(**values)
    except OptionError as err:
        raise OptionError(f'{where}.{err}') from None


def check_call(fn, kwargs, where, skip=0, named_only=False):
    """Raise unless ``fn(**kwargs)`` (after ``skip`` positional parameters) takes every key, with a value of the
    type of the parameter's default (any number where the default is one; lists for tuples). ``named_only``: only
    the named parameters count, for functions that take ``**kwargs`` and drop what they do not know (BasicSR's
    metrics)."""
    params = list(inspect.signature(fn).parameters.values())[skip:]
    if named_only or not any(p.kind is p.VAR_KEYWORD for p in params):
        known = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise OptionError(f'{where}.{unknown[0]}: unknown option of {fn.__name__}; known: '
                              f'{", ".join(sorted(known))}')
    for p in params:
        if p.name not in kwargs or p.default in (None, inspect.Parameter.empty):
            continue
        value, default = kwargs[p.name], p.default
        if isinstance(default, bool):
            expected = bool
        elif isinstance(default, (int, float)):
            expected = float
        elif isinstance(default, (tuple, list)):
            expected = list
        elif isinstance(default, str):
            expected = str
        else:
            continue
        _convert(expected, value, f'{where}.{p.name}')


def registered(registry, name):
    """Whether ``registry.get(name)`` finds ``name``: BasicSR registers some archs as ``<name>_basicsr``
    (SRVGGNetCompact, to leave the name to Real-ESRGAN) and ``get`` falls back to that."""
    return name in registry or f'{name}_basicsr' in registry


def check_buildable(registry, opt, where, skip=0):
    """``{type: name, **kwargs}`` naming a class or function of ``registry`` (BasicSR's registries, or the
    optimizer registry) whose signature takes the kwargs after its first ``skip`` parameters."""
    if not isinstance(opt, dict) or 'type' not in opt:
        raise OptionError(f'{where}: expected a mapping with a type, got {_describe(opt)}')
    if not registered(registry, opt['type']):
        raise OptionError(f'{where}.type: no {opt["type"]!r} in the {registry._name} registry (a typo, or a plugin '
                          'that is not imported?)')
    kwargs = {k: v for k, v in opt.items() if k != 'type'}
    fn = registry.get(opt['type'])
    # BasicSR's own constructors that take **kwargs drop them (SwinIR): a misspelt key would build the default
    check_call(fn, kwargs, where, skip, named_only=fn.__module__.startswith('basicsr.'))
    for key, value in kwargs.items():  # a network inside a network (PopulationFusion's backbone)
        if isinstance(value, dict) and isinstance(value.get('type'), str) and registered(registry, value['type']):
            check_buildable(registry, value, f'{where}.{key}')
    return opt


@dataclasses.dataclass(frozen=True)
class DiskBackend:
    """``io_backend: {type: disk}``: BasicSR's disk client takes no other key."""
    type: typing.Literal['disk']


@dataclasses.dataclass(frozen=True)
class LmdbBackend:
    """``io_backend: {type: lmdb}`` with ``lmdb.open``'s flags; the datasets set ``db_paths`` and ``client_keys``."""
    type: typing.Literal['lmdb']
    readonly: bool = True
    lock: bool = False
    readahead: bool = False


def check_io_backend(opt, where='io_backend'):
    """An ``io_backend`` this project's datasets can open: a typo in it would otherwise fail at the first image."""
    backend = LmdbBackend if isinstance(opt, dict) and opt.get('type') == 'lmdb' else DiskBackend
    return parse(backend, opt, where)
