"""Bring your own model: a :class:`~celljepa.models.base.PerturbationModel` subclass named ``"package.module:Class"``.

A user model is found by its import path (:func:`load_model_class`), made once per model seed with its options
(:func:`make_model`) and identified in every fold's config by its class, options and the digest of its module's
source (:func:`model_identity`), so a changed model or option never passes for a finished fold. The benchmark
scores it beside the baselines: it joins the comparator pool like any non-JEPA method (role ``"baseline"`` or
``"peer"``), unless the run names it the primary model (``EvalConfig.primary``); see
``docs/bring-your-own-model.md``.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import json
import re
import sys

from .._errors import InputError
from ..data._keys import suggest
from .base import PerturbationModel

__all__ = [
    "ALLOWED_ROLES",
    "BUILTIN_JEPA_NAMES",
    "builtin_method_names",
    "check_user_models",
    "load_model_class",
    "make_model",
    "model_identity",
    "model_key",
]

#: Roles a user model may take: both join the comparator pool (the non-JEPA methods) unless it is the primary.
ALLOWED_ROLES = ("baseline", "peer")
#: The JEPA transition models and their PCA twins that a benchmark scores (names no user model may take).
BUILTIN_JEPA_NAMES = ("jepa_prototype", "jepa_set", "pca_prototype", "pca_set")
# a method name ends up in file and column names: plain letters, digits, _ and -
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")
_FIX_IMPORT = (
    "Fix: put the folder that holds the module on PYTHONPATH (e.g. `PYTHONPATH=docs/examples celljepa "
    "benchmark --model my_model:ShrunkMeanShift ...`) or pip install its package"
)


def _spec_form(spec: str) -> tuple[str, str]:
    module, sep, attr = str(spec).strip().partition(":")
    if not sep or not module or not attr or ":" in attr:
        raise InputError(
            f"model {spec!r} is not of the form 'package.module:Class'. Fix: name the module and the class, "
            "e.g. 'my_model:ShrunkMeanShift'."
        )
    return module.strip(), attr.strip()


def _model_classes(module) -> list[str]:
    """Names of the concrete PerturbationModel subclasses a module defines or imports."""
    return sorted(
        n
        for n, v in vars(module).items()
        if isinstance(v, type) and issubclass(v, PerturbationModel) and not inspect.isabstract(v)
    )


def _check_class(obj, what: str) -> type[PerturbationModel]:
    if not (isinstance(obj, type) and issubclass(obj, PerturbationModel)):
        kind = type(obj).__name__ if not isinstance(obj, type) else f"class {obj.__name__}"
        raise InputError(
            f"{what} is a {kind}, not a subclass of celljepa.models.PerturbationModel. Fix: subclass "
            "PerturbationModel and implement fit(train, refit=...) and predict(condition) "
            "(docs/bring-your-own-model.md)."
        )
    if inspect.isabstract(obj):
        missing = ", ".join(sorted(obj.__abstractmethods__))
        raise InputError(f"{what} is abstract: it does not implement {missing}. Fix: implement them.")
    return obj


def load_model_class(spec: str | type) -> type[PerturbationModel]:
    """The :class:`~celljepa.models.base.PerturbationModel` subclass named by ``"package.module:Class"``.

    The module is imported as Python imports it (its folder must be on ``sys.path``, e.g. via
    ``PYTHONPATH``); ``Class`` may be dotted (``Outer.Inner``). A class is checked and returned as it is.

    Parameters
    ----------
    spec
        ``"package.module:Class"``, or a PerturbationModel subclass.

    Returns
    -------
    type
        The class.

    Raises
    ------
    InputError
        The module is not importable, has no such attribute (with a did-you-mean on the class name), or the
        attribute is not a concrete PerturbationModel subclass.

    Examples
    --------
    >>> from celljepa.models.plugins import load_model_class
    >>> load_model_class("celljepa.models.baselines:MeanShift").name
    'mean_shift'
    >>> load_model_class("celljepa.models.baselines:MeanShfit")
    Traceback (most recent call last):
    ...
    celljepa._errors.InputError: model 'celljepa.models.baselines:MeanShfit': module ...
    """
    if isinstance(spec, type):
        return _check_class(spec, f"model class {spec.__module__}:{spec.__qualname__}")
    if not isinstance(spec, str):
        raise InputError(
            f"model {spec!r} is neither 'package.module:Class' nor a PerturbationModel subclass. Fix: pass one "
            "of the two."
        )
    module_name, attr = _spec_form(spec)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        missing = err.name or ""
        if missing and (module_name == missing or module_name.startswith(missing + ".")):
            raise InputError(
                f"model {spec!r}: module {module_name!r} is not importable (no module named {missing!r} on "
                f"the Python path). {_FIX_IMPORT}."
            ) from None
        raise InputError(
            f"model {spec!r}: importing module {module_name!r} failed: it needs {missing!r}, which is not "
            f"installed. Fix: install it in this environment."
        ) from err
    except Exception as err:  # the user's module raised while it was imported
        raise InputError(
            f"model {spec!r}: importing module {module_name!r} raised {type(err).__name__}: {err}. Fix: run "
            f"`python -c 'import {module_name}'` and correct the module."
        ) from err
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            choices = _model_classes(module) if obj is module else [n for n in vars(obj) if not n.startswith("_")]
            shown = (
                f" It defines the model classes: {', '.join(choices)}."
                if choices and obj is module
                else " It defines no PerturbationModel subclass."
                if obj is module
                else ""
            )
            raise InputError(
                f"model {spec!r}: module {module_name!r} has no attribute {part!r}.{suggest(part, choices)}{shown}"
                f" Fix: name a class of {module_name} after the ':'."
            )
        obj = getattr(obj, part)
    return _check_class(obj, f"model {spec!r}")


def model_key(spec: str | type) -> str:
    """How a model is named in a run config: its spec string as given, or ``"module:qualname"`` of a class.

    Examples
    --------
    >>> from celljepa.models.baselines import MeanShift
    >>> model_key(MeanShift), model_key(" my_model:ShrunkMeanShift ")
    ('celljepa.models.baselines:MeanShift', 'my_model:ShrunkMeanShift')
    """
    if isinstance(spec, type):
        return f"{spec.__module__}:{spec.__qualname__}"
    return str(spec).strip()


def _init_parameters(cls: type) -> tuple[dict[str, inspect.Parameter], bool]:
    try:
        params = dict(inspect.signature(cls).parameters)
    except (TypeError, ValueError):  # a signature Python cannot read: options are passed as they are
        return {}, True
    var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    named = {
        n: p
        for n, p in params.items()
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    }
    return named, var_kw


def make_model(spec_or_class: str | type, *, seed: int, options: dict | None = None) -> PerturbationModel:
    """One instance of a user model: ``Class(seed=seed, **options)``.

    ``seed=`` (the run's model seed) is passed only when the constructor has a ``seed`` parameter; every option
    is a keyword argument. A model whose ``name`` is the base class's default (``"model"``) is named after its
    class. The name must be a plain identifier (letters, digits, ``_``, ``-``) and the role one of
    :data:`ALLOWED_ROLES`.

    Parameters
    ----------
    spec_or_class
        ``"package.module:Class"`` or the class (:func:`load_model_class`).
    seed
        The model seed of this instance.
    options
        Keyword arguments of the constructor (JSON values: they are recorded in every fold's config).

    Raises
    ------
    InputError
        An option the constructor does not take (naming the ones it does), ``seed`` given as an option, an
        option that is not a JSON value, a constructor that refuses the options, a bad name or role.

    Examples
    --------
    >>> from celljepa.models.plugins import make_model
    >>> m = make_model("celljepa.models.baselines:RidgeShift", seed=0, options={"alphas": [1.0, 10.0]})
    >>> m.name, m.role
    ('ridge', 'baseline')
    >>> make_model("celljepa.models.baselines:RidgeShift", seed=0, options={"alpha": 1.0})
    Traceback (most recent call last):
    ...
    celljepa._errors.InputError: model celljepa.models.baselines:RidgeShift has no option 'alpha'. ...
    """
    cls = load_model_class(spec_or_class)
    key = model_key(spec_or_class if isinstance(spec_or_class, str) else cls)
    options = dict(options or {})
    if "seed" in options:
        raise InputError(
            f"model {key}: 'seed' is not an option: each instance gets the run's model seed (--model-seeds)."
        )
    try:
        json.dumps(options, allow_nan=True)
    except (TypeError, ValueError):
        raise InputError(
            f"model {key}: options {options!r} are not plain values (numbers, strings, booleans, lists, "
            "mappings); they are recorded in every fold's config. Fix: pass plain values."
        ) from None
    named, var_kw = _init_parameters(cls)
    accepted = [n for n in named if n != "seed"]
    unknown = [k for k in options if k not in named] if not var_kw else []
    if unknown:
        raise InputError(
            f"model {key} has no option {unknown[0]!r}.{suggest(unknown[0], accepted)} Its constructor takes: "
            f"{', '.join(accepted) or '(no option)'}. Fix: --model-option NAME=VALUE with one of them."
        )
    kwargs = dict(options)
    if "seed" in named:
        kwargs["seed"] = int(seed)
    try:
        model = cls(**kwargs)
    except (TypeError, ValueError) as err:
        raise InputError(
            f"model {key}: {cls.__name__}({', '.join(f'{k}={v!r}' for k, v in kwargs.items())}) raised "
            f"{type(err).__name__}: {err}. Fix: check its options."
        ) from err
    if model.name == PerturbationModel.name:
        model.name = cls.__name__
    if not isinstance(model.name, str) or not _NAME.match(model.name):
        raise InputError(
            f"model {key}: its name {model.name!r} is not a plain name (a letter, then letters, digits, _ or -); "
            "it names the model's rows, columns and files. Fix: set the class attribute name = 'my_model'."
        )
    if model.role not in ALLOWED_ROLES:
        raise InputError(
            f"model {key} ({model.name}): role {model.role!r} is not one a user model may take "
            f"({', '.join(ALLOWED_ROLES)}): a user model joins the comparator pool like any non-JEPA method, "
            "unless the run names it the primary (EvalConfig.primary / --primary). Fix: role = 'baseline'."
        )
    return model


def _source_digest(cls: type) -> str | None:
    """sha256 (16 hex digits) of the source of the module that defines ``cls``, else of the class; None if unknown."""
    module = sys.modules.get(cls.__module__)
    for obj in (module, cls):
        if obj is None:
            continue
        try:
            text = inspect.getsource(obj)
        except (OSError, TypeError):
            continue
        return hashlib.sha256(text.encode()).hexdigest()[:16]
    return None


def model_identity(cls: str | type, options: dict | None = None) -> dict:
    """What identifies a user model in a fold's config: class, name, role, options and its source's digest.

    A fold finished with another class, option or source of the model is not read back as finished (the
    benchmark refuses it, naming what changed).

    Returns
    -------
    dict
        ``{"class": "module:qualname", "name", "role", "options", "source_digest"}``; ``source_digest`` is the
        sha256 of the source of the class's module (None when Python cannot read it).

    Examples
    --------
    >>> from celljepa.models.plugins import model_identity
    >>> ident = model_identity("celljepa.models.baselines:MeanShift", {})
    >>> ident["class"], ident["name"], ident["role"], len(ident["source_digest"])
    ('celljepa.models.baselines:MeanShift', 'mean_shift', 'baseline', 16)
    """
    klass = load_model_class(cls)
    options = dict(options or {})
    model = make_model(klass, seed=0, options=options)
    return {
        "class": model_key(klass),
        "name": model.name,
        "role": model.role,
        "options": options,
        "source_digest": _source_digest(klass),
    }


def builtin_method_names() -> frozenset[str]:
    """Names of every built-in method of a benchmark: each baseline, the JEPA models and their PCA twins.

    Examples
    --------
    >>> from celljepa.models.plugins import builtin_method_names
    >>> {"mean_shift", "jepa_set", "pca_set"} <= builtin_method_names()
    True
    """
    from .baselines import default_baselines

    base = default_baselines(combos=True, gene_perturbations=True, contexts=True)
    return frozenset({m.name for m in base} | set(BUILTIN_JEPA_NAMES))


def check_user_models(models: list[PerturbationModel], *, reserved=()) -> None:
    """Refuse user models whose names clash with a built-in method, a name in ``reserved`` or each other.

    Examples
    --------
    >>> from celljepa.models.baselines import MeanShift
    >>> check_user_models([MeanShift()])
    Traceback (most recent call last):
    ...
    celljepa._errors.InputError: user model celljepa.models.baselines:MeanShift is named 'mean_shift', ...
    """
    taken = builtin_method_names() | frozenset(reserved)
    seen: dict[str, str] = {}
    for m in models:
        who = model_key(type(m))
        if m.name in taken:
            raise InputError(
                f"user model {who} is named {m.name!r}, the name of a built-in method (or peer) of the "
                "benchmark; its rows would be mixed with that method's. Fix: give the class another name "
                "attribute (name = 'my_model')."
            )
        if m.name in seen:
            raise InputError(
                f"user models {seen[m.name]} and {who} are both named {m.name!r}. Fix: give each its own name "
                "attribute (or an option that sets it)."
            )
        seen[m.name] = who
