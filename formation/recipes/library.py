"""Reading recipes: from text, from a file, from the built-in library (package data), or by name-or-path."""

from __future__ import annotations

import json
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from formation.bounds import check_document, is_file, read_input_text
from formation.errors import RecipeError
from formation.recipes.model import Recipe
from formation.recipes.parse import parse_recipe

RecipeFormat = Literal["toml", "json"]


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # JSON silently keeps the last of two equal keys; TOML refuses them, and so do we.
    table: dict[str, Any] = {}
    for key, value in pairs:
        if key in table:
            raise ValueError(f"duplicate key {key!r}")
        table[key] = value
    return table


def loads_recipe(text: str, fmt: RecipeFormat, source: str = "<recipe>") -> Recipe:
    """Parse and validate a recipe from TOML or JSON ``text``; ``source`` names it in errors."""
    data: object
    if fmt == "toml":
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise RecipeError("", f"invalid TOML: {exc}", source=source) from exc
        except RecursionError:
            raise RecipeError("", "invalid TOML: nested too deeply", source=source) from None
    elif fmt == "json":
        try:
            data = json.loads(text, object_pairs_hook=_no_duplicate_keys)
        except json.JSONDecodeError as exc:
            reason = f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
            raise RecipeError("", reason, source=source) from exc
        except ValueError as exc:
            raise RecipeError("", f"invalid JSON: {exc}", source=source) from exc
        except RecursionError:
            raise RecipeError("", "invalid JSON: nested too deeply", source=source) from None
    else:
        raise RecipeError("", f"unknown recipe format {fmt!r} (expected toml or json)", source=source)
    check_document(data, lambda field, reason: RecipeError(field, reason, source=source))
    return parse_recipe(data, source, source_text=text)


def load_recipe(path: str | Path) -> Recipe:
    """Load and validate a ``.toml`` or ``.json`` recipe file."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".toml", ".json"):
        raise RecipeError("", "a recipe file ends in .toml or .json", source=str(path))
    text = read_input_text(path, "the file", lambda field, reason: RecipeError(field, reason, source=str(path)))
    return loads_recipe(text, "toml" if suffix == ".toml" else "json", source=str(path))


def _library() -> Any:
    return resources.files("formation.recipes").joinpath("library")


def builtin_recipes() -> list[str]:
    """Names of the built-in recipes, sorted (``lfp-280ah-formation``, ``ncm21700-formation``, ...)."""
    return sorted(entry.name.removesuffix(".toml") for entry in _library().iterdir() if entry.name.endswith(".toml"))


def load_builtin(name: str) -> Recipe:
    """The built-in recipe ``name`` (``RecipeError`` naming the built-ins when there is none)."""
    if name not in builtin_recipes():
        raise RecipeError("", f"no built-in recipe {name!r} (built-ins: {', '.join(builtin_recipes())})")
    text = _library().joinpath(f"{name}.toml").read_text(encoding="utf-8")
    return loads_recipe(text, "toml", source=f"builtin:{name}")


def resolve_recipe(name_or_path: str | Path) -> Recipe:
    """A recipe file when ``name_or_path`` exists, else the built-in of that name, else ``RecipeError``."""
    path = Path(name_or_path)
    if is_file(path):
        return load_recipe(path)
    if str(name_or_path) in builtin_recipes():
        return load_builtin(str(name_or_path))
    raise RecipeError(
        "",
        f"{str(name_or_path)!r} is neither a recipe file nor a built-in recipe "
        f"(built-ins: {', '.join(builtin_recipes())})",
    )
