"""Questions for Python code, written from the documentation of what the code calls.

A snippet's keyword query (its rarest identifiers, :func:`embedlab.finetune.pairs.keyword_pairs`) is not what a
person asks of a code corpus: people ask what the code *does*, in words, quoting the names they have ("decode a
hex string '4a4b4c' to UTF-8", "check if all elements in list `myList` are identical"). The functions a snippet
calls already say what they do, in words, in the first line of their docstrings — ``bytes.fromhex``: "create a
bytes object from a string of hexadecimal numbers"; ``all``: "return True if bool(x) is True for all values x in
the iterable". :func:`describe_snippet` parses a snippet (:mod:`ast`), resolves each call against the builtins,
the standard library and numpy/pandas when installed, and joins those first lines with the snippet's own literal
values and names, quoted the way questions quote them. No model and no network: the generator is the language's
own documentation, so it works offline for any Python corpus and makes nothing for text that is not Python.

Resolution is by name, without running the code: ``os.path.join`` imports ``os`` and walks its attributes; a
method of an unknown receiver (``x.split``) is looked up on the builtin types, then on the classes of the modules
the snippet names (``….weekday`` on ``datetime``'s classes); ``df.…`` on pandas' DataFrame, by convention. Only
standard-library modules and the few third-party ones in :data:`THIRD_PARTY` are ever imported.
"""

from __future__ import annotations

import ast
import builtins
import functools
import importlib
import importlib.util
import inspect
import re
import sys
import warnings
from collections.abc import Iterator
from typing import Any

from embedlab.data.stdlib_docs import CODE_LIKE, split_summary

THIRD_PARTY = frozenset({"numpy", "pandas"})
ALIASES = {"np": "numpy", "pd": "pandas"}
# receivers named by a convention as strong as an import: `df` is a pandas DataFrame in code that has one
CONVENTIONAL_RECEIVERS = {"df": ("pandas", "DataFrame")}
# importing these opens a browser or a window, or prints text
_NEVER_IMPORT = frozenset(
    {"antigravity", "this", "__hello__", "__phello__", "__main__", "idlelib", "tkinter", "turtle", "turtledemo"}
)
_BUILTIN_TYPES: tuple[type, ...] = (str, list, dict, set, bytes, tuple, int, float)
_MIN_WORDS = 3
_MAX_CALLS = 3
_MAX_QUOTED = 2
_MAX_LITERAL_CHARS = 30


def summary(obj: Any) -> str | None:
    """The first sentence of an object's docstring, lower-cased like the middle of a question; None if it has none.

    The sentence is :func:`~embedlab.data.stdlib_docs.split_summary`'s, as the bundled data set takes it. Where
    that reads as code, as in builtins that open with signatures, the words after the first arrow are taken:
    ``dict() -> new empty dictionary``, ``D.update([E, ]**F) -> None.  Update D from dict/iterable E and F.``
    """
    doc = inspect.getdoc(obj)
    if not doc:
        return None
    # "None.  Update D ..." -> "Update D ...": the returned type is not a description
    arrow = re.match(r".*?-{1,2}>\s*(?:\w+\.\s+)?(.+)", doc.splitlines()[0])
    for candidate in (split_summary(doc)[0], split_summary(arrow.group(1))[0] if arrow else ""):
        sentence = candidate.rstrip(".:")
        if len(sentence.split()) >= _MIN_WORDS and not CODE_LIKE.search(sentence) and not sentence.startswith(">>>"):
            # "Return ..." -> "return ...", but acronyms ("UTF-8 ...", "OS ...") keep their case
            return sentence if sentence[:2].isupper() else sentence[0].lower() + sentence[1:]
    return None


@functools.cache
def _module(name: str) -> Any | None:
    name = ALIASES.get(name, name)
    top = name.split(".")[0]
    allowed = top in sys.stdlib_module_names or top in THIRD_PARTY
    if not allowed or top in _NEVER_IMPORT or importlib.util.find_spec(top) is None:
        return None
    try:
        with warnings.catch_warnings():  # a deprecated module (imp) still describes old code
            warnings.simplefilter("ignore")
            return importlib.import_module(name)
    except Exception:  # a module that cannot load here (tkinter without Tk) describes nothing
        return None


def _walk(obj: Any, attributes: list[str]) -> Any | None:
    for attribute in attributes:
        try:
            obj = getattr(obj, attribute)
        except Exception:
            return None
    return obj


@functools.cache
def _classes_of(module_name: str) -> tuple[type, ...]:
    module = _module(module_name)
    if module is None:
        return ()
    return tuple(v for k, v in sorted(vars(module).items()) if inspect.isclass(v) and not k.startswith("_"))


def _dotted(node: ast.expr) -> list[str] | None:
    """``os.path.join`` -> ["os", "path", "join"]; None when the chain does not start at a plain name."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        return [node.id, *reversed(parts)]
    return None


def _receiver_type(node: ast.expr) -> type | None:
    """The type of a literal receiver: ``''.join`` is ``str.join``, ``[].append`` is ``list.append``."""
    if isinstance(node, ast.Constant) and type(node.value) in _BUILTIN_TYPES:
        return type(node.value)
    if isinstance(node, ast.JoinedStr):
        return str
    return {ast.List: list, ast.ListComp: list, ast.Dict: dict, ast.DictComp: dict, ast.Set: set}.get(type(node))


def _base_name(node: ast.expr) -> str | None:
    """The name a receiver expression starts from: ``df['a'].groupby('b')`` -> "df"."""
    while isinstance(node, ast.Attribute | ast.Subscript | ast.Call):
        node = node.func if isinstance(node, ast.Call) else node.value
    return node.id if isinstance(node, ast.Name) else None


def resolve_call(func: ast.expr, modules: tuple[str, ...]) -> Any | None:
    """The object a call's ``func`` names, found without running the snippet (see the module docstring)."""
    names = _dotted(func)
    if names is not None:
        root, rest = names[0], names[1:]
        if hasattr(builtins, root):
            return _walk(getattr(builtins, root), rest)
        module = _module(root)
        if module is not None:
            # a submodule not imported by its parent (xml.etree) is imported by its dotted name
            found = _walk(module, rest) or _module(".".join([ALIASES.get(root, root), *rest]))
            if found is not None:
                return found
    if not isinstance(func, ast.Attribute):
        return None
    literal = _receiver_type(func.value)
    if literal is not None:
        return getattr(literal, func.attr, None)
    convention = CONVENTIONAL_RECEIVERS.get(_base_name(func.value) or "")
    module = _module(convention[0]) if convention else None
    owner = _walk(module, [convention[1]]) if module is not None and convention else None
    if owner is not None and hasattr(owner, func.attr):
        return getattr(owner, func.attr)
    for owner in (*_BUILTIN_TYPES, *(cls for name in modules for cls in _classes_of(name))):
        if func.attr in vars(owner):
            return getattr(owner, func.attr)
    return None


def _quoted(tree: ast.AST, modules: set[str]) -> Iterator[str]:
    """The snippet's short string literals and variable names, as a question quotes them.

    Names bound inside the snippet's comprehensions and lambdas (``x`` in ``[f(x) for x in rows]``) are its own
    workings, not what a person would name.
    """
    internal = {
        n.id
        for node in ast.walk(tree)
        if isinstance(node, ast.comprehension)
        for n in ast.walk(node.target)
        if isinstance(n, ast.Name)
    }
    internal |= {a.arg for node in ast.walk(tree) if isinstance(node, ast.Lambda) for a in node.args.args}
    skipped = internal | modules | ALIASES.keys() | set(dir(builtins))
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.strip():
            if len(node.value) <= _MAX_LITERAL_CHARS:
                yield repr(node.value)
        # a name assigned to (``r = ...``) is the snippet's result, not what a person would name
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load) and node.id not in skipped:
            yield f"`{node.id}`"


def snippet_descriptions(code: str) -> tuple[list[str], list[str]]:
    """What a Python snippet's calls do, and what it quotes; two empty lists for text that is not Python.

    The descriptions are the first sentences of the callees' docstrings, outermost call first, at most three; the
    quotes are up to two of its string literals and the names it reads.
    """
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):
        return [], []
    named = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    modules = tuple(sorted(n for n in named if _module(n) is not None))
    descriptions: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            found = resolve_call(node.func, modules)
            text = summary(found) if found is not None else None
            if text and text not in descriptions:
                descriptions.append(text)
        if len(descriptions) == _MAX_CALLS:
            break
    quoted = list(dict.fromkeys(_quoted(tree, set(modules))))[:_MAX_QUOTED] if descriptions else []
    return descriptions, quoted


def snippet_questions(code: str) -> list[str]:
    """Questions for a Python snippet; none for text that is not Python or calls nothing documented.

    The first joins its calls' descriptions; where there are several, one question per call follows. Each ends with
    what the snippet quotes.
    """
    descriptions, quoted = snippet_descriptions(code)
    names = "".join(f" {q}" for q in quoted)
    each = descriptions if len(descriptions) > 1 else []
    return [f"{'; '.join(descriptions)}{names}", *(d + names for d in each)] if descriptions else []


def describe_snippet(code: str) -> str | None:
    """A question-like query for a Python snippet from what its calls' docstrings say; None if nothing resolves."""
    questions = snippet_questions(code)
    return questions[0] if questions else None
