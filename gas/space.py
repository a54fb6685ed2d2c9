"""Search spaces: the interface every space implements, and how gas finds one by name.

A space is one module in `search_spaces/` (or any importable module) exposing `SPACE`, a `SearchSpace`
subclass. `get_space("turbovit")` imports `search_spaces.turbovit`; options follow a colon
(`"turbovit:q_pools=2"`) and become constructor arguments. Nothing else in gas names a space: what gas
needs to know of a space's networks (their cost, how to export them, the parts the latency model times)
the space declares through the types below.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gas.cost import Cost, Count
from gas.errors import GasError, GenomeError
from gas.genome import Genome, read_json

if TYPE_CHECKING:  # annotations only: `gas --help` should not wait for torch and optuna to import
    import optuna
    from torch import nn


@dataclass(frozen=True)
class ExportConstant:
    """One module-level constant of an exported file: `NAME = value`, with a comment line above it."""

    name: str  # an UPPER_CASE identifier
    value: Any  # None, bool, int, float or str, or lists, tuples and str-keyed dicts of these
    comment: str = ""


@dataclass(frozen=True)
class ExportRecipe:
    """How a standalone file rebuilds a genome's model; what `SearchSpace.export_recipe` returns.

    The file `gas export` writes is, in order: the imports of `model_module`, the `constants`, the rest of
    `model_module`'s source verbatim, `GENOME`, and

        def build_model(num_classes: int = <the genome's num_classes>) -> torch.nn.Module:
            return <constructor>(<name>=<expression>, ...)   # one line per item of `arguments`
    """

    #: Dotted name of the model family module whose source is copied (e.g. "gas.models.hiera").
    model_module: str
    #: The genome's data, written at the top of the file in this order.
    constants: tuple[ExportConstant, ...]
    #: Name of the model class (or factory function) defined at the top level of `model_module`.
    constructor: str
    #: Keyword arguments of the constructor call: name → Python expression, in call order.
    arguments: Mapping[str, str] = field(default_factory=dict)


#: A part's key: plain numbers and flags, so it is hashable and round-trips through JSON.
Key = tuple[int | float | bool, ...]


@dataclass(frozen=True)
class PartKind:
    """One kind of part a space's networks run (a stem, a kind of block, a head), for the latency model.

    A part's key holds everything its latency depends on once the device is fixed: its layer widths and
    options and the grid it runs on. Two parts of a kind with equal keys run the same computation, so one
    timing serves both, in any genome. `build` makes the real module (the one the network runs, not a
    stand-in); `features` gives the work figures (multiply-adds, elements moved, attention problems) the
    latency model regresses the kind's timings on, which is what lets it predict a part it never timed.
    """

    #: Unique over all spaces (e.g. 'hiera.block'): the latency model's table and cache files are keyed by
    #: it, so a kind whose key or work figures change meaning needs a new name.
    name: str
    #: Names of the key's entries, in order; "name..." takes all the rest.
    fields: tuple[str, ...] = field(compare=False)
    #: Names of the work figures `features` returns, in order; the first is always 'calls' (= 1).
    feature_names: tuple[str, ...] = field(compare=False)
    #: key → work figures of one example (one image), the regression's inputs.
    features: Callable[[Key], tuple[float, ...]] = field(compare=False)
    #: key → (the real module, the shape of one example's input without the batch axis).
    build: Callable[[Key], tuple[nn.Module, tuple[int, ...]]] = field(compare=False)

    def __repr__(self) -> str:
        return f"PartKind({self.name!r})"


@dataclass(frozen=True)
class Part:
    """One stage of a network's forward pass: its kind and the key of its shapes."""

    kind: PartKind
    key: Key


class SearchSpace(ABC):
    """What genomes may be, how a trial samples one, how to build, cost and time it, and named references."""

    #: The name genomes carry in their "space" field (with options, e.g. "turbovit:q_pools=2").
    name: str
    genome_type: type[Genome]

    @property
    @abstractmethod
    def references(self) -> Mapping[str, Genome]:
        """Named genomes that ship with the space (e.g. published architectures)."""

    @abstractmethod
    def check(self, genome: Genome) -> None:
        """Raise GenomeError naming the first rule `genome` breaks."""

    @abstractmethod
    def sample(self, trial: optuna.Trial, resolution: int = 224, num_classes: int = 1000) -> Genome:
        """Draw a valid genome define-by-run from an Optuna trial."""

    @abstractmethod
    def build(self, genome: Genome) -> nn.Module:
        """The PyTorch model of `genome` at `genome.resolution`."""

    @abstractmethod
    def cost(self, genome: Genome) -> Cost:
        """Parameters and FLOPs of `genome` at `genome.resolution`, computed without building it."""

    def least_cost(self, resolution: int = 224) -> Count | None:
        """The fewest FLOPs and the fewest params a genome the sampler draws at `resolution` can have (the two
        may belong to different genomes), or None where the space cannot tell.

        A budget under either is refused at once, without drawing genomes to find that none fits.
        """
        return None

    def scale(self, genome: Genome, how: str, fits: Callable[[Genome], bool]) -> Genome | None:
        """The largest copy of `genome` scaled by `how` for which `fits` holds, or None if even the smallest fails.

        `how` is "width" (every width scaled alike) or "depth" (blocks added or dropped). A space implements
        this to have its references scaled to a study's limits as baselines (`gas compare`, `gas.scaling`);
        `fits` may measure, so a scaler should ask it about few genomes.
        """
        raise GasError(f"the {self.name} space cannot scale its genomes by {how} (it does not implement scale)")

    @abstractmethod
    def describe(self, genome: Genome) -> dict[str, str]:
        """A few short columns that tell genomes apart in a table (depth, widths, attention layout...)."""

    def export_recipe(self, genome: Genome) -> ExportRecipe:
        """How `gas export` writes `genome`'s model as a file that needs only torch; see `ExportRecipe`.

        A space implements this to make its genomes exportable. The contract:

        - `model_module` imports only torch and the standard library (never gas or another package); its
          top-level imports come first, after its docstring and `from __future__ import annotations`, and
          include `import torch`. Everything after the imports is copied verbatim, so the module must not
          read its own `__name__`/`__file__` or define `GENOME` or `build_model`.
        - `constants` hold the genome as plain data (what a reader looks at first): UPPER_CASE names that
          the model module does not define, with literal values only. A list or tuple of rows (lists or
          tuples) is written one row per line, so use it for per-block tables and name the columns in
          the comment.
        - Each expression in `arguments` may use the constants, the model module's top-level names and
          `num_classes` (the parameter of `build_model`), and nothing else. Pass `num_classes` through.
          An argument is written on one line (`name=expression,` indented 8), which must fit in 120
          characters; string literals take double quotes. Logic longer than that belongs in a function
          of the model module (e.g. one that builds nested specs from plain dicts).
        - `build_model()` must return the model `self.build(genome)` returns: the same parameter names and
          shapes (so a state_dict loads with strict=True), the same FLOPs and the same outputs for the same
          weights. `gas export` refuses to write a file whose parameters differ.

        Example (the turbovit space):

            ExportRecipe(
                model_module="gas.models.hiera",
                constants=(ExportConstant("BLOCKS", [(128, 4, 3.0, "mask_unit", False), ...], "dim, heads, ..."),),
                constructor="Hiera",
                arguments={"blocks": "[BlockSpec(*row) for row in BLOCKS]", ..., "num_classes": "num_classes"},
            )
        """
        raise GasError(f"the {self.name} space does not support export (it does not implement export_recipe)")

    def parts(self, genome: Genome) -> list[Part]:
        """The parts `genome`'s network runs one after another (stem, blocks, head), for the latency model.

        A space implements this to have its genomes' latency predicted. The contract: the parts' modules
        (`part.kind.build(part.key)`), each given the input shape its `build` states and run in order,
        take the image to the logits with the parameters of `self.build(genome)`. Like `cost`, it reads
        the genome's fields and builds nothing.
        """
        known = ", ".join(name for name in space_names() if type(get_space(name)).parts is not SearchSpace.parts)
        raise GasError(f"the latency model does not know the {self.name} space's networks; it knows {known}")

    def parse(self, data: Mapping[str, Any]) -> Genome:
        """A checked genome from its JSON document."""
        genome = self.genome_type.from_dict({**data, "space": self.name})
        self.check(genome)
        return genome


def draw_genomes(
    space: SearchSpace, n: int, seed: int, resolution: int, fits: Callable[[Cost], bool], draws: int
) -> list[tuple[Genome, Cost]]:
    """Up to `n` distinct genomes the space's sampler draws at `resolution` whose cost `fits`, with their
    costs, in the order first drawn: seeded random draws, at most `draws` of them."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    found: dict[str, tuple[Genome, Cost]] = {}
    for _ in range(draws):
        trial = study.ask()
        genome = space.sample(trial, resolution=resolution)
        study.tell(trial, 0.0)
        cost = space.cost(genome)
        if fits(cost):
            found.setdefault(genome.to_json(), (genome, cost))
            if len(found) == n:
                break
    return list(found.values())


def space_names() -> list[str]:
    """Spaces that ship in `search_spaces/`."""
    import search_spaces

    return sorted(module.name for module in pkgutil.iter_modules(search_spaces.__path__))


def _parse_options(text: str) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for item in filter(None, text.split(",")):
        key, sep, raw = item.partition("=")
        if not sep:
            raise GasError(f"space option {item!r} must be written key=value")
        try:
            options[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            options[key.strip()] = raw
    return options


def get_space(spec: str) -> SearchSpace:
    """The space named `spec`: a module in `search_spaces/`, or a dotted module path, plus options.

    >>> get_space("turbovit").name
    'turbovit'
    """
    module_name, _, option_text = spec.partition(":")
    qualified = module_name if "." in module_name else f"search_spaces.{module_name}"
    if "." not in module_name and module_name not in space_names():
        raise GasError(f"unknown space {module_name!r}; available: {', '.join(space_names())}")
    try:
        module = importlib.import_module(qualified)
    except ImportError as error:
        raise GasError(f"cannot import space module {qualified!r}: {error}") from None
    space_class = getattr(module, "SPACE", None)
    if not (isinstance(space_class, type) and issubclass(space_class, SearchSpace)):
        raise GasError(f"module {qualified!r} does not define SPACE as a SearchSpace subclass")
    try:
        return space_class(**_parse_options(option_text))
    except TypeError as error:
        raise GasError(f"space {module_name!r} does not take those options: {error}") from None


def reference_names() -> dict[str, str]:
    """Every shipped reference genome name, mapped to the space it belongs to."""
    return {name: space for space in space_names() for name in get_space(space).references}


def load_genome(source: str | Path | Mapping[str, Any]) -> Genome:
    """A checked genome from a JSON document, a path to one, or a reference name like 'hiera_tiny'."""
    if isinstance(source, Mapping):
        data = dict(source)
    elif Path(source).suffix == ".json" or Path(source).exists():
        data = read_json(source)
    else:
        owners = reference_names()
        if str(source) not in owners:
            known = ", ".join(sorted(owners))
            raise GasError(f"{source!r} is neither a genome file nor a reference; references: {known}")
        return get_space(owners[str(source)]).references[str(source)]
    if not isinstance(data.get("space"), str):
        raise GenomeError("genome has no 'space' field naming its search space")
    return get_space(data["space"]).parse(data)
