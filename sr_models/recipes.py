"""Presets and one recipe per method: what each method trains and what it ships.

A :class:`Preset` is a model size and a training budget.  A :class:`Recipe` says, for
one method, which network trains (:meth:`Recipe.arch`), how the training is split
(:meth:`Recipe.train_specs`: one model per group, one joint model, one dynamic model
or none) and which models the asset ships, each as a :class:`ShippedModel` with the
group it serves.  The encode's stages ask the recipe instead of comparing method names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fitcast.errors import InvalidInputError
from fitcast.options import EncodeOptions, Method
from sr_models.generic import generic_arch, generic_weights, has_generic

if TYPE_CHECKING:  # torch loads only when something trains: the upload handler checks recipes without it
    from sr_models.train import TrainSpec


@dataclass(frozen=True)
class Preset:
    """Model size and training budget."""

    patch: int  # LR patch side
    channels: int
    body: int  # hidden convolutions after the first
    iterations: int  # per group (a joint or dynamic model trains k times as many)
    batch_size: int
    samples_per_group: int  # training patches drawn from each group
    loss: str = "l1"
    lr: float = 2e-3
    arch: str = "espcn_r"

    def iterations_for(self, seconds: float) -> int:
        """The budget for a source of ``seconds``: the preset's up to ``SHORT_SOURCE`` seconds, then
        growing as the square root of the length (more content to fit, and the model's bits spread
        over more video), at most ``MAX_BUDGET_FACTOR`` times: a 20 s clip 1.6x, 2 min and longer 4x."""
        factor = min(MAX_BUDGET_FACTOR, max(1.0, (max(seconds, 0.0) / SHORT_SOURCE) ** 0.5))
        return round(self.iterations * factor)


SHORT_SOURCE = 8.0  # seconds a preset's training budget is made for
MAX_BUDGET_FACTOR = 4.0

PRESETS: dict[str, Preset] = {
    "fast": Preset(patch=32, channels=16, body=1, iterations=300, batch_size=32, samples_per_group=2000),
    # For real-time playback on a weak CPU: a 16-channel, one-body-layer net on 64-pixel patches
    # (less halo overhead per patch), trained as long as balanced.
    "realtime": Preset(patch=64, channels=16, body=1, iterations=1500, batch_size=32, samples_per_group=6000),
    "balanced": Preset(patch=32, channels=32, body=2, iterations=1500, batch_size=32, samples_per_group=6000),
    "best": Preset(patch=32, channels=48, body=3, iterations=5000, batch_size=32, samples_per_group=20000),
}


# Bits per weight of the int8 export's own grid (sr_models.export.INT8_WEIGHT_BITS); an encode may
# ship fewer (sr_models.compact).
FULL_WEIGHT_BITS = 7


@dataclass
class ShippedModel:
    """One model an asset ships: its id, the group it serves (``None``: every group), its
    architecture spec and fp32 network; the export stage adds the ONNX files."""

    id: str
    group: int | None
    arch: dict[str, Any]
    net: Any  # torch.nn.Module, in eval mode
    calibration_group: int | None  # whose samples calibrate its int8 variant (None: all)
    fp32: bytes = b""
    int8: bytes | None = None
    params: int = 0
    macs_per_lr_px: int = 0
    weight_bits: int = FULL_WEIGHT_BITS  # bits per weight of the shipped grid (sr_models.compact)

    def shipped_bytes(self, int8: bool) -> bytes:
        """What a default player runs: the int8 variant where there is one."""
        return self.int8 if int8 and self.int8 is not None else self.fp32


@dataclass(frozen=True)
class SampleFiles:
    """Training pairs written by the sample stage: one file per group, or one joint file
    whose ``group`` array labels every pair."""

    per_group: list[Path] = field(default_factory=list)
    joint: Path | None = None

    def for_group(self, group: int | None) -> tuple[Path, int | None]:
        """(file, group to select within it) holding the pairs of ``group`` (None: all)."""
        if self.per_group and group is not None:
            return self.per_group[group], None
        assert self.joint is not None
        return self.joint, group


class Recipe:
    """One method.  Subclasses override what differs; nothing outside asks for a method's name."""

    name: Method
    per_group_samples = False  # the sample stage writes one file per group
    trains = True

    def weight_bits(self, options: EncodeOptions) -> int | None:
        """The bits per weight it ships (None: chosen per model by the export stage)."""
        return options.weight_bits

    def check(self, options: EncodeOptions) -> None:
        """Refuse options this method cannot serve (one line)."""
        if options.warm_start:
            _require_generic(options.scale)

    def arch(self, options: EncodeOptions, preset: Preset) -> dict[str, Any]:
        """The architecture spec this method trains."""
        if options.arch is not None:
            return _searched_arch(options)
        if options.warm_start is True:
            return generic_arch(options.scale)
        return {"name": preset.arch, "scale": options.scale, "channels": preset.channels, "body": preset.body}

    def lr(self, preset: Preset) -> float:
        return preset.lr

    def warm_start(self, options: EncodeOptions, preset: Preset) -> bool:
        """Whether training starts from the shipped generic model: as asked, else (auto) whenever
        the network is the generic one (balanced, x2 and x4): measured +1.60 dB held out after
        300 iterations against +0.51 from scratch, +1.88 against +1.24 after 1,500 (README)."""
        if options.warm_start is not None:
            return options.warm_start
        if options.arch is not None or not has_generic(options.scale):
            return False
        return self.arch(options, preset) == generic_arch(options.scale)

    def iterations(self, options: EncodeOptions, preset: Preset) -> int:
        return options.iterations or preset.iterations

    def group_weights(self, options: EncodeOptions, k: int) -> tuple[float, ...] | None:
        return None

    def train_specs(self, samples: SampleFiles, arch: dict[str, Any], *, k: int, options: EncodeOptions,
                    preset: Preset, overlap: int, work: Path) -> list[TrainSpec]:
        """One joint model on the pairs of all ``k`` groups, k times a group's budget (stdo: one each)."""
        from sr_models.train import TrainSpec

        assert samples.joint is not None
        return [TrainSpec(samples=samples.joint, out=work / "model.pt", iterations=self.iterations(options, preset) * k,
                          seed=options.seed, group_weights=self.group_weights(options, k),
                          **_common(self, arch, options, preset, overlap))]

    def models(self, arch: dict[str, Any], states: list[Path], k: int) -> list[ShippedModel]:
        """The models the asset ships, from the trained state files."""
        from sr_models.export import load_model

        return [ShippedModel(self.name, None, arch, load_model(arch, states[0]), None)]

    def group_models(self, k: int) -> list[str]:
        """The id of the model that serves each group."""
        return [self.name] * k


class Stdo(Recipe):
    """STDO: one compact model per difficulty group."""

    name = "stdo"
    per_group_samples = True

    def train_specs(self, samples, arch, *, k, options, preset, overlap, work):
        from sr_models.train import TrainSpec

        return [TrainSpec(samples=path, out=work / f"model_g{g}.pt", iterations=self.iterations(options, preset),
                          seed=options.seed + g, **_common(self, arch, options, preset, overlap))
                for g, path in enumerate(samples.per_group)]

    def models(self, arch, states, k):
        from sr_models.export import load_model

        return [ShippedModel(f"stdo-g{g}", g, arch, load_model(arch, states[g]), g) for g in range(k)]

    def group_models(self, k):
        return [f"stdo-g{g}" for g in range(k)]


class Jstdo(Recipe):
    """JSTDO: one joint model, hard groups drawn more often (data-aware sampling)."""

    name = "jstdo"

    def group_weights(self, options, k):
        return options.group_weights or default_group_weights(k)


class Generic(Recipe):
    """The shipped generic model as it is: nothing trains (the baseline)."""

    name = "generic"
    trains = False

    def check(self, options):
        _require_generic(options.scale)

    def arch(self, options, preset):
        return generic_arch(options.scale)

    def warm_start(self, options, preset):
        return False

    def train_specs(self, samples, arch, *, k, options, preset, overlap, work):
        return []

    def models(self, arch, states, k):
        from sr_models.export import load_model

        return [ShippedModel("generic", None, arch, load_model(arch, generic_weights(arch["scale"])), None)]

    def weight_bits(self, options):
        return FULL_WEIGHT_BITS  # the baseline: the packaged weights as they are


class Dydca(Recipe):
    """Dy-DCA: one dynamic model, a branch per group (the hardest the largest), each branch
    shipped as its own static graph that the player batches per branch."""

    name = "dydca"

    def arch(self, options, preset):
        from sr_models.archs.dynamic import default_branches

        branches = default_branches(options.k, widest=preset.channels + 8, narrowest=max(8, preset.channels // 2),
                                    deepest=preset.body + 1, shallowest=max(1, preset.body - 1))
        return {"name": "dydca", "scale": options.scale, "branches": [list(b) for b in branches]}

    def lr(self, preset):
        # The dynamic model's larger branches diverge at 2e-3 on detailed content (bear: +0.13 dB
        # over lanczos at 2e-3, +0.70 dB at 1e-3), so it trains at a lower rate.
        return 1e-3

    def warm_start(self, options, preset):
        return False  # its branches have other shapes than the generic network

    def models(self, arch, states, k):
        from sr_models.export import load_model

        dyn = load_model(arch, states[0])
        out = []
        for g in range(k):
            branch = dyn.branch(g)
            spec = {"name": "espcn_r", "scale": arch["scale"], "channels": branch.channels, "body": branch.depth,
                    "dynamic": {"of": arch["name"], "branch": g, "branches": k}}
            out.append(ShippedModel(f"dydca-b{g}", g, spec, branch, g))
        return out

    def group_models(self, k):
        return [f"dydca-b{g}" for g in range(k)]


RECIPES: dict[str, Recipe] = {r.name: r for r in (Stdo(), Jstdo(), Dydca(), Generic())}


def recipe_for(options: EncodeOptions) -> Recipe:
    """The recipe of ``options.method``, after checking that it can serve ``options``."""
    recipe = RECIPES[options.method]
    recipe.check(options)
    return recipe


def default_group_weights(k: int) -> tuple[float, ...]:
    """JSTDO's default data-aware sampling: the hardest group twice as often as the easiest."""
    if k == 1:
        return (1.0,)
    return tuple(2.0 - g / (k - 1) for g in range(k))


def receptive_radius(arch: dict[str, Any]) -> int:
    """LR pixels of context a network reads each side (the patch halo that makes tiles seamless)."""
    from sr_models.archs import build_from_spec

    return int(build_from_spec(arch).receptive_radius)


def _common(recipe: Recipe, arch: dict[str, Any], options: EncodeOptions, preset: Preset,
            overlap: int) -> dict[str, Any]:
    return dict(arch=arch, overlap=overlap, batch_size=preset.batch_size, loss=preset.loss, lr=recipe.lr(preset),
                device=options.train_device, init=generic_weights(options.scale) if recipe.warm_start(options, preset)
                else None)


def _searched_arch(options: EncodeOptions) -> dict[str, Any]:
    from sr_models.archs import build_from_spec

    arch = dict(options.arch or {})
    try:
        build_from_spec(arch)
    except (TypeError, ValueError, KeyError) as exc:
        raise InvalidInputError(f"bad architecture {arch}: {exc}") from None
    if int(arch.get("scale", 0)) != options.scale:
        raise InvalidInputError(f"the architecture is for x{arch.get('scale')}, the encode is x{options.scale}")
    return arch


def _require_generic(scale: int) -> None:
    try:
        generic_weights(scale)
    except FileNotFoundError as exc:
        raise InvalidInputError(str(exc)) from None
