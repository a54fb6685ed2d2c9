"""`gas export`: write a genome's model as one readable PyTorch file that needs only torch, or as ONNX.

The file is assembled from what the genome's space returns from `SearchSpace.export_recipe`: the model
family module's imports, the genome as data (the block list first thing a reader sees), the family's
source copied verbatim, `GENOME`, and `build_model(num_classes)`. Nothing here knows a particular space.

The output is deterministic (same genome and provenance, same bytes) and laid out the way `ruff format`
would lay it out, so it can be committed and diffed. Before writing, the file is executed once and its
model's state_dict keys and shapes are checked against the model gas builds from the genome.

`export_onnx` writes the model gas builds from the genome as an ONNX file (`gas.onnx_model`): batch
dimension dynamic, initializers named as the model's state_dict, so trained weights can be put in by name.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import json
import keyword
import sys
import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from gas.errors import GasError, GenomeError
from gas.genome import Genome
from gas.provenance import Provenance
from gas.source_layout import (
    INDENT,
    LINE_LENGTH,
    comment_lines,
    docstring_text,
    is_table,
    render_literal,
    wrap_line,
)
from gas.space import ExportConstant, ExportRecipe, SearchSpace, get_space
from gas.units import format_count

RESERVED_NAMES = frozenset({"GENOME", "build_model"})


@dataclass(frozen=True)
class OnnxExported:
    """A written ONNX file and the numbers worth printing about it."""

    path: Path
    opset: int
    size: int  # bytes
    initializers: int


@dataclass(frozen=True)
class Exported:
    """A written export and the numbers worth printing about it."""

    path: Path
    module_name: str
    genome: Genome
    params: int
    flops: int  # at the genome's resolution
    flops_224: int | None  # at 224px, None when the genome does not build there
    provenance: Provenance


# ---- the family module -----------------------------------------------------------------------------


@dataclass(frozen=True)
class FamilySource:
    """A torch-only model module split the way an export needs it."""

    name: str
    docstring: str
    imports: str  # the import block, verbatim, without `from __future__`
    body: str  # everything after the imports, verbatim
    top_level_names: frozenset[str]


def _import_roots(node: ast.Import | ast.ImportFrom) -> list[str]:
    if isinstance(node, ast.ImportFrom):
        return [(node.module or "").split(".")[0]] if node.level == 0 else ["."]
    return [alias.name.split(".")[0] for alias in node.names]


def read_family(module_name: str) -> FamilySource:
    """Split `module_name`'s source into docstring, imports and body; enforce the export contract on it."""
    try:
        module = importlib.import_module(module_name)
        source = inspect.getsource(module)
    except (ImportError, OSError, TypeError) as error:
        raise GasError(f"cannot read the source of model module {module_name!r}: {error}") from None
    tree = ast.parse(source)
    lines = source.splitlines()
    statements = list(tree.body)
    docstring = ast.get_docstring(tree) or ""
    if docstring:
        statements = statements[1:]
    imports: list[ast.Import | ast.ImportFrom] = []
    while statements and isinstance(statements[0], ast.Import | ast.ImportFrom):
        imports.append(statements.pop(0))
    allowed = set(sys.stdlib_module_names) | {"torch"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            if node not in imports:
                raise GasError(f"{module_name}: line {node.lineno} imports below the top; exports need imports first")
            bad = [root for root in _import_roots(node) if root not in allowed]
            if bad:
                raise GasError(
                    f"{module_name}: line {node.lineno} imports {bad[0]!r}; an exportable model module may "
                    "import only torch and the standard library"
                )
    plain = [node for node in imports if not (isinstance(node, ast.ImportFrom) and node.module == "__future__")]
    if not any(
        isinstance(node, ast.Import) and any(alias.name == "torch" and not alias.asname for alias in node.names)
        for node in plain
    ):
        raise GasError(f"{module_name}: an exportable model module must `import torch`")
    import_text = "\n".join(lines[plain[0].lineno - 1 : plain[-1].end_lineno]) if plain else ""
    body_start = imports[-1].end_lineno if imports else (tree.body[0].end_lineno if docstring else 0)
    body = "\n".join(lines[body_start:]).strip("\n")
    names = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign | ast.AugAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {name.id for target in targets for name in ast.walk(target) if isinstance(name, ast.Name)}
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names |= {(alias.asname or alias.name).split(".")[0] for alias in node.names}
    return FamilySource(module_name, docstring, import_text, body, frozenset(names))


def _check_constants(constants: Sequence[ExportConstant], family: FamilySource) -> None:
    seen = set()
    for constant in constants:
        name = constant.name
        if not name.isidentifier() or keyword.iskeyword(name) or name != name.upper():
            raise GasError(f"export constant {name!r} must be an UPPER_CASE identifier")
        if name in family.top_level_names or name in RESERVED_NAMES or name in seen:
            raise GasError(f"export constant {name!r} clashes with a name the exported file already defines")
        seen.add(name)


def _check_arguments(recipe: ExportRecipe) -> None:
    for name, expression in recipe.arguments.items():
        if not name.isidentifier() or keyword.iskeyword(name):
            raise GasError(f"export recipe argument {name!r} is not a keyword argument name")
        try:
            ast.parse(expression, mode="eval")
        except SyntaxError as error:
            raise GasError(f"export recipe argument {name}={expression!r} is not an expression: {error.msg}") from None
        line = f"{INDENT * 2}{name}={expression},"
        if len(line) > LINE_LENGTH or "\n" in expression:
            raise GasError(
                f"export recipe argument {name!r} does not fit on one {LINE_LENGTH}-character line; "
                "move its logic into a function of the model module"
            )
    if not recipe.constructor.isidentifier():
        raise GasError(f"export recipe constructor {recipe.constructor!r} must be a name the model module defines")


def _describe_cost(genome: Genome, space: SearchSpace) -> tuple[int, int, int | None]:
    """Params and FLOPs at the genome's resolution, and FLOPs at 224px (None if it does not build there)."""
    cost = space.cost(genome)
    if genome.resolution == 224:
        return cost.params, cost.flops, cost.flops
    try:
        at_224 = space.cost(genome.at_resolution(224)).flops
    except GenomeError:
        at_224 = None
    return cost.params, cost.flops, at_224


def render_module(genome: Genome, provenance: Provenance, module_name: str, space: SearchSpace | None = None) -> str:
    """The full text of the exported file; `space` defaults to the one the genome names."""
    space = space or get_space(genome.space)
    recipe: ExportRecipe = space.export_recipe(genome)
    family = read_family(recipe.model_module)
    _check_constants(recipe.constants, family)
    _check_arguments(recipe)
    if recipe.constructor not in family.top_level_names:
        raise GasError(f"export recipe constructor {recipe.constructor!r} is not defined in {family.name}")
    params, flops, flops_224 = _describe_cost(genome, space)

    doc = [
        f"{module_name}: an architecture from gas's {genome.space} search space, as standalone PyTorch.",
        "",
        f"Source: {provenance.source}",
        *provenance.details,
        f"Parameters: {params:,} ({format_count(params)}) at {genome.resolution}px",
    ]
    convention = "fvcore convention: one multiply-add = one FLOP, attention matmuls included"
    if flops_224 is not None:
        doc.append(f"FLOPs at 224px: {flops_224:,} ({format_count(flops_224)}; {convention})")
    if genome.resolution != 224:
        doc.append(
            f"FLOPs at {genome.resolution}px, the resolution this file builds: {flops:,} ({format_count(flops)})"
        )
    if provenance.accuracy is not None:
        detail = f" {provenance.accuracy_detail}" if provenance.accuracy_detail else ""
        doc.append(f"Proxy accuracy: {provenance.accuracy:.2%}{detail}")
    if provenance.command:
        doc.append(f"Exported with: {provenance.command}")
    doc += [
        "",
        "Usage:",
        "",
        f"    from {module_name} import build_model",
        "",
        f"    model = build_model(num_classes={genome.num_classes})",
        "",
        "`GENOME` is the genome this file was exported from, and `build_model` builds the model gas builds from it:",
        "the same parameter names and shapes, FLOPs and outputs, so a state_dict saved from either model loads into",
        "the other with strict=True. The constants below are that genome as data; the classes after them are the",
        f"model family, copied from {family.name}.",
    ]
    doc_lines = [wrapped for line in doc for wrapped in wrap_line(docstring_text(line))]
    out = ['"""' + doc_lines[0], *doc_lines[1:], '"""', "", "from __future__ import annotations", ""]
    if family.imports:
        out += [family.imports, ""]
    out += comment_lines(f"The {genome.space} genome as data, at {genome.resolution}px.")
    for constant in recipe.constants:
        out.append("")
        if constant.comment:
            out += comment_lines(constant.comment)
        value = constant.value
        explode = is_table(value) or (
            isinstance(value, Mapping) and any(isinstance(item, Mapping | list | tuple) for item in value.values())
        )
        out += render_literal(value, prefix=f"{constant.name} = ", explode=explode)
    out += ["", ""]
    out += comment_lines(f"The model family, copied verbatim from {family.name}:")
    if family.docstring:
        out += comment_lines("")
        out += comment_lines(family.docstring)
        out.append("")
    out += [family.body, "", ""]
    out += comment_lines(
        "The genome this file was exported from; saved with json.dump it is a genome file `gas cost` and "
        "`gas export` read."
    )
    # Through JSON so GENOME holds exactly what a genome file holds (lists, not tuples).
    out += render_literal(json.loads(genome.to_json()), prefix="GENOME = ", explode=True)
    out += ["", ""]
    out.append(f"def build_model(num_classes: int = {genome.num_classes}) -> torch.nn.Module:")
    out.append(f'{INDENT}"""The model with freshly initialised weights; load trained ones with `load_state_dict`."""')
    out.append(f"{INDENT}return {recipe.constructor}(")
    out += [f"{INDENT * 2}{name}={expression}," for name, expression in recipe.arguments.items()]
    out.append(f"{INDENT})")
    return "\n".join(out) + "\n"


# ---- checking and writing --------------------------------------------------------------------------


def load_exported(source: str, module_name: str) -> types.ModuleType:
    """Execute an exported file's text as a fresh module (never registered for later imports)."""
    module = types.ModuleType(module_name)
    module.__file__ = f"<gas export {module_name}>"
    # dataclasses resolves a class's string annotations through sys.modules while the class is created.
    sys.modules[module_name] = module
    try:
        exec(compile(source, module.__file__, "exec"), module.__dict__)
    finally:
        sys.modules.pop(module_name, None)
    return module


def check_export(source: str, genome: Genome, space: SearchSpace | None = None) -> None:
    """Refuse an export whose model's state_dict differs in keys or shapes from the model gas builds."""
    module = load_exported(source, f"_gas_export_check_{id(source)}")
    # On the meta device no memory is allocated and no weights are drawn: keys and shapes are all this needs.
    with torch.device("meta"):
        exported = module.build_model().state_dict()
        expected = (space or get_space(genome.space)).build(genome).state_dict()
    exported_shapes = {name: tuple(tensor.shape) for name, tensor in exported.items()}
    expected_shapes = {name: tuple(tensor.shape) for name, tensor in expected.items()}
    if exported_shapes != expected_shapes:
        # In model order, so the message names the first layer that went wrong.
        missing = [name for name in expected_shapes if name not in exported_shapes]
        extra = [name for name in exported_shapes if name not in expected_shapes]
        reshaped = [
            name
            for name in expected_shapes
            if name in exported_shapes and exported_shapes[name] != expected_shapes[name]
        ]
        what = (
            f"lacks {missing[0]}"
            if missing
            else f"adds {extra[0]}"
            if extra
            else f"shapes {reshaped[0]} {exported_shapes[reshaped[0]]} instead of {expected_shapes[reshaped[0]]}"
        )
        raise GasError(f"export of the {genome.space} genome is wrong: its model {what}; fix the space's export_recipe")


def module_name_for(out: str | Path) -> str:
    """The import name of `out`, which must be a .py file named like a Python module."""
    path = Path(out)
    if path.suffix != ".py":
        raise GasError(f"--out {out} must be a .py file")
    if not path.stem.isidentifier() or keyword.iskeyword(path.stem):
        raise GasError(f"--out {out}: {path.stem!r} is not importable; use letters, digits and underscores")
    return path.stem


def export_genome(
    genome: Genome, out: str | Path, provenance: Provenance, space: SearchSpace | None = None
) -> Exported:
    """Render, check and write `genome`'s standalone module to `out`; `space` defaults to the genome's."""
    space = space or get_space(genome.space)
    module_name = module_name_for(out)
    source = render_module(genome, provenance, module_name, space)
    check_export(source, genome, space)
    path = Path(out)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source)
    except OSError as error:
        raise GasError(f"cannot write {path}: {error.strerror}") from None
    params, flops, flops_224 = _describe_cost(genome, space)
    return Exported(path, module_name, genome, params, flops, flops_224, provenance)


def onnx_path_for(out: str | Path) -> Path:
    """`out` as the path of an ONNX file, which must end in .onnx."""
    path = Path(out)
    if path.suffix != ".onnx":
        raise GasError(f"--onnx {out} must be a .onnx file")
    return path


def export_onnx(genome: Genome, out: str | Path, source: str = "", space: SearchSpace | None = None) -> OnnxExported:
    """Write the model gas builds from `genome` to `out` as ONNX, with a dynamic batch dimension.

    Its weights are the fresh ones `build_model()` draws, from a fixed seed, so a genome writes the same file
    each time; initializer names are the model's state_dict keys, for trained weights to be put in by name.
    The genome and `source` (where it came from) are kept in the file's metadata as `gas_genome` and
    `gas_source`.
    """
    from gas.onnx_model import OPSET, require, to_onnx

    path = onnx_path_for(out)
    onnx, _ = require("--onnx")
    space = space or get_space(genome.space)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = space.build(genome)
    exported = to_onnx(model, (3, genome.resolution, genome.resolution), "--onnx")
    onnx.helper.set_model_props(exported, {"gas_genome": genome.to_json(), "gas_source": source})
    data = exported.SerializeToString()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    except OSError as error:
        raise GasError(f"cannot write {path}: {error.strerror}") from None
    return OnnxExported(path, OPSET, len(data), len(exported.graph.initializer))


def readme_row(exported: Exported) -> str:
    """The line `generated/README.md` lists this export with."""
    flops = exported.flops_224 if exported.flops_224 is not None else exported.flops
    where = "224px" if exported.flops_224 is not None else f"{exported.genome.resolution}px"
    accuracy = "-" if exported.provenance.accuracy is None else f"{exported.provenance.accuracy:.2%}"
    return (
        f"| [{exported.path.name}]({exported.path.name}) | {exported.provenance.source} | "
        f"{format_count(exported.params)} | {format_count(flops)} ({where}) | {accuracy} | "
        f"`{exported.provenance.command}` |"
    )
