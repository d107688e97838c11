"""``ensemble-distill config``: every config key with its default and the comment written
beside it in the source, then the registered names a key may take."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import io
import textwrap
import tokenize
from collections.abc import Iterator
from typing import Any

import yaml

from ensemble_distill.config import Config
from ensemble_distill.data import DATASETS, dataset_args_of
from ensemble_distill.methods import METHODS
from ensemble_distill.methods.perturbations import PERTURBATIONS
from ensemble_distill.models import MODELS


def config_listing() -> str:
    """``ensemble-distill config``: every key as ``key = default  # meaning``, each section
    headed by its docstring's first line, then the registered names a key may take."""
    lines = ["# Every config key and its default: set it as key=value or in a --config FILE."]
    lines += section_lines(Config(), "")
    lines += [
        "",
        f"# datasets (dataset=NAME): {', '.join(DATASETS.names())}",
        *(
            f"#   {name} takes dataset_args: {', '.join(args)}"
            for name in DATASETS.names()
            if (args := dataset_args_of(name))
        ),
        f"# models (model=NAME, student.model=NAME): {', '.join(MODELS.names())}",
        f"# methods (methods=[NAME, ...]): {', '.join(METHODS.names())}",
        f"# inputs (methods=[METHOD+NAME]): {', '.join(PERTURBATIONS.names())}",
    ]
    return "\n".join(lines)


def section_lines(section: Any, prefix: str) -> Iterator[str]:
    """``prefix + key = default  # comment`` for every field of ``section`` (a config
    dataclass instance), nested sections after a blank line and their docstring's summary."""
    comments = field_comments(type(section))
    for item in dataclasses.fields(section):
        value = getattr(section, item.name)
        if dataclasses.is_dataclass(value):
            yield ""
            summary = section_summary(type(value))
            yield f"# {prefix}{item.name}: {summary}" if summary else f"# {prefix}{item.name}"
            yield from section_lines(value, f"{prefix}{item.name}.")
        else:
            comment = comments.get(item.name)
            line = f"{prefix}{item.name} = {yaml_text(value)}"
            yield f"{line}  # {comment}" if comment else line


def yaml_text(value: Any) -> str:
    """``value`` as it is written after ``key=`` on the command line (YAML flow style)."""
    text = yaml.safe_dump(value, default_flow_style=True, width=1_000_000, sort_keys=False)
    return text.removesuffix("\n...\n").strip()


def section_summary(cls: type) -> str | None:
    """The first paragraph of a section's own docstring, on one line (None for the signature
    that dataclasses make up when a section has no docstring)."""
    doc = inspect.getdoc(cls)
    if not doc or doc.startswith(f"{cls.__name__}("):
        return None
    return " ".join(doc.split("\n\n")[0].split())


def field_comments(cls: type) -> dict[str, str]:
    """The source comments of each field of the dataclass ``cls`` (and of its dataclass
    bases): the comment lines right above the field, then the one at its end, joined — the
    only place the config's keys are explained next to their defaults."""
    comments: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if dataclasses.is_dataclass(klass):
            comments |= own_field_comments(klass)
    return comments


def own_field_comments(cls: type) -> dict[str, str]:
    """:func:`field_comments` of the fields written in ``cls``'s own class body."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):  # made by make_dataclass (Config), or no source installed
        return {}
    comments: dict[int, tuple[str, bool]] = {}  # line → (text, alone on its line)
    lines = source.splitlines()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            row, column = token.start
            alone = lines[row - 1][:column].strip() == ""
            comments[row] = (token.string.lstrip("#").strip(), alone)
    found = {}
    for node in ast.parse(source).body[0].body:  # type: ignore[attr-defined]
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            parts, row = [], node.lineno - 1
            while row in comments and comments[row][1]:
                parts.insert(0, comments[row][0])
                row -= 1
            end = comments.get(node.end_lineno or node.lineno)
            parts += [end[0]] if end and not end[1] else []
            if parts:
                found[node.target.id] = " ".join(parts)
    return found
