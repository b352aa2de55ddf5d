"""The one registry of semi-supervised methods: what a bundle's ``ssl_method`` names and ``medssl methods`` lists.

A method is one entry: its name, what it reads (nothing beyond the labelled cases, unlabelled images, or pseudo-label
files a teacher wrote), its paper, its settings with their defaults, and a builder that turns the settings into the
handlers and the unsupervised loss it attaches to the one :class:`~medssl.engines.SemiSupervisedTrainer`. Adding a
method is adding an entry with :func:`register`; nothing else names methods. A variant is a method name plus settings
(``bpl_elbo`` is ``bpl`` with ``mode="elbo"``): the benchmarks and the demo name their runs through
:data:`VARIANTS`.

A bundle carries one method block, ``"method": {...}``: overrides of the chosen method's defaults. Every key must be
a setting of some registered method (a typo is an error); keys of other methods are ignored, so one block can hold a
bundle's choices for several methods (e.g. the threshold prior of its task).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from medssl.checks import check_choice
from medssl.handlers.bayesian_pseudo_label import BayesianPseudoLabelHandler
from medssl.handlers.offline_pseudo_label import OfflinePseudoLabelHandler
from medssl.handlers.pseudo_label_stats import PseudoLabelStatsHandler
from medssl.handlers.segpl import SegPLHandler
from medssl.handlers.weight_schedule import UnsupervisedWeightSchedule
from medssl.losses.robust import BetaCrossEntropyLoss, GeneralizedCrossEntropyLoss, SymmetricCrossEntropyLoss
from medssl.losses.semi_supervised import MaskedDiceCELoss

__all__ = [
    "READS",
    "ROBUST_LOSSES",
    "Method",
    "MethodContext",
    "SSLMethod",
    "REGISTRY",
    "VARIANTS",
    "register",
    "build_method",
    "resolve_settings",
    "reads_pseudo_labels",
    "uses_unlabeled",
    "variant",
    "describe",
]

#: What a method reads besides the labelled cases.
READS = ("labelled only", "unlabelled images", "pseudo-label files")
ROBUST_LOSSES = ("ce", "gce", "bce", "sce")

#: Settings of every method that trains on unlabelled data: the weight schedule of the unsupervised loss, as
#: fractions of the run (warm-up at weight 0, then a linear ramp to ``max_weight``), and the collapse warning.
SCHEDULE = {"max_weight": 1.0, "warmup": 0.2, "ramp": 0.2, "collapse_patience": 50}


@dataclass
class MethodContext:
    """What a bundle tells a method's builder: the network and the run it trains in."""

    network: nn.Module | None = None
    #: a learned-threshold head and the network layer whose features it reads (``feature_layer``)
    head: nn.Module | None = None
    feature_layer: str | None = None
    #: length of the run in ``unit`` ("epochs" or "iterations"), to turn schedule fractions into lengths
    run_length: float = 1.0
    unit: str = "epochs"


@dataclass
class SSLMethod:
    """A built method: the handlers to attach, the loss on pseudo-labels, and the modules it trains or keeps.

    It is checkpointable (``state_dict`` / ``load_state_dict`` of its ``modules``), so a bundle's checkpoint holds
    whatever a method keeps (an EMA teacher, say) under one entry.
    """

    name: str
    settings: dict[str, Any]
    reads: str
    handlers: list[Any] = field(default_factory=list)
    unsup_loss: nn.Module | None = None
    modules: dict[str, nn.Module] = field(default_factory=dict)

    @property
    def uses_unlabeled(self) -> bool:
        """Whether the method trains on unlabelled images (every method but ``supervised``)."""
        return self.reads != READS[0]

    @property
    def reads_pseudo_labels(self) -> bool:
        """Whether the unlabelled cases must carry a teacher's ``pseudo_label`` files."""
        return self.reads == READS[2]

    def parameters(self) -> list[nn.Parameter]:
        """The trainable parameters of the method's own modules (for the optimiser)."""
        return [p for m in self.modules.values() for p in m.parameters() if p.requires_grad]

    def state_dict(self) -> dict[str, Any]:
        return {name: m.state_dict() for name, m in self.modules.items()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        for name, m in self.modules.items():
            m.load_state_dict(state[name])


Builder = Callable[[dict[str, Any], MethodContext], SSLMethod]


@dataclass(frozen=True)
class Method:
    """A registry entry."""

    name: str
    reads: str
    paper: str
    defaults: Mapping[str, Any]
    build: Builder
    summary: str
    #: the method trains the bundle's learned-threshold head (a multi-GPU config wraps the head in DDP then)
    uses_head: bool = False

    def __post_init__(self) -> None:
        check_choice("reads", self.reads, READS)


REGISTRY: dict[str, Method] = {}
#: run name -> (method, settings): the variants that the benchmarks and the demo train
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {}


def register(method: Method, variants: Mapping[str, Mapping[str, Any]] | None = None) -> Method:
    """Add ``method`` (and named variants of it) to the registry.

    Raises:
        ValueError: the name is taken, or a variant sets an unknown setting.
    """
    if method.name in REGISTRY:
        raise ValueError(f"a method named {method.name!r} is already registered")
    REGISTRY[method.name] = method
    for name, settings in (variants or {method.name: {}}).items():
        unknown = sorted(set(settings) - set(method.defaults))
        if unknown:
            raise ValueError(f"variant {name!r} sets {unknown}, which are not settings of {method.name!r}")
        VARIANTS[name] = (method.name, dict(settings))
    return method


def _all_settings() -> set[str]:
    return {k for m in REGISTRY.values() for k in m.defaults}


def resolve_settings(name: str, block: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The settings of method ``name``: its defaults, overridden by the keys of ``block`` that are its settings.

    Raises:
        ValueError: an unknown method, or a key of ``block`` that no registered method has.
    """
    method = REGISTRY[check_choice("ssl_method", name, tuple(REGISTRY))]
    block = dict(block or {})
    unknown = sorted(set(block) - _all_settings())
    if unknown:
        raise ValueError(
            f"method settings {unknown} are not settings of any method; {name!r} takes {sorted(method.defaults)}"
        )
    return {k: block.get(k, v) for k, v in method.defaults.items()}


def build_method(name: str, block: Mapping[str, Any] | None = None, **context: Any) -> SSLMethod:
    """Build method ``name`` with the settings of ``block`` (see :func:`resolve_settings`) in ``context``.

    >>> build_method("supervised").handlers
    []
    """
    settings = resolve_settings(name, block)
    return REGISTRY[name].build(settings, MethodContext(**context))


def variant(name: str) -> tuple[str, dict[str, Any]]:
    """``(method, settings)`` of a registered variant.

    Raises:
        ValueError: an unknown variant.
    """
    return VARIANTS[check_choice("variant", name, tuple(VARIANTS))]


def describe() -> list[str]:
    """One line per method, its name first: what it reads, its paper, its settings with their defaults."""
    lines = []
    for m in REGISTRY.values():
        settings = ", ".join(f"{k}={v!r}" for k, v in m.defaults.items()) or "-"
        lines.append(f"{m.name:16s} reads: {m.reads}; {m.summary} [{m.paper}]; settings: {settings}")
    names = ", ".join(f"{v} = {m}{(' ' + str(s)) if s else ''}" for v, (m, s) in VARIANTS.items() if v != m)
    if names:
        lines.append(f"variants: {names}")
    return lines


def _schedule(settings: Mapping[str, Any], context: MethodContext) -> list[Any]:
    length = float(context.run_length)
    return [
        UnsupervisedWeightSchedule(
            max_weight=settings["max_weight"],
            warmup=settings["warmup"] * length,
            ramp=settings["ramp"] * length,
            unit=context.unit,
        )
    ]


def _with_stats(method: SSLMethod, settings: Mapping[str, Any]) -> SSLMethod:
    method.handlers.append(PseudoLabelStatsHandler(patience=settings["collapse_patience"]))
    return method


def _supervised(settings: dict[str, Any], context: MethodContext) -> SSLMethod:
    return SSLMethod("supervised", settings, READS[0])


def _segpl(settings: dict[str, Any], context: MethodContext) -> SSLMethod:
    handlers = _schedule(settings, context) + [SegPLHandler(settings["threshold"], settings["temperature"])]
    return _with_stats(SSLMethod("segpl", settings, READS[1], handlers, MaskedDiceCELoss()), settings)


def _bpl(settings: dict[str, Any], context: MethodContext) -> SSLMethod:
    if context.head is None or not context.feature_layer:
        raise ValueError("ssl_method 'bpl' needs a threshold head and the feature_layer it reads.")
    getattr(context.head, "module", context.head).reset_prior(settings["prior_mu"], settings["prior_std"])
    handler = BayesianPseudoLabelHandler(
        context.head,
        context.feature_layer,
        prior_mu=settings["prior_mu"],
        prior_std=settings["prior_std"],
        mode=settings["mode"],
        temperature=settings["temperature"],
        tau=settings["tau"],
        kl_weight=settings["kl_weight"],
    )
    method = SSLMethod("bpl", settings, READS[1], _schedule(settings, context) + [handler], MaskedDiceCELoss())
    return _with_stats(method, settings)


def _robust_loss(settings: Mapping[str, Any]) -> nn.Module:
    loss = check_choice("robust_loss", settings["robust_loss"], ROBUST_LOSSES)
    if loss == "gce":
        return GeneralizedCrossEntropyLoss(q=settings["q"])
    if loss == "bce":
        return BetaCrossEntropyLoss(beta=settings["beta"])
    if loss == "sce":
        return SymmetricCrossEntropyLoss(alpha=settings["alpha"], gamma=settings["gamma"])
    return MaskedDiceCELoss(lambda_dice=0.0)  # cross-entropy


def _teacher_student(settings: dict[str, Any], context: MethodContext) -> SSLMethod:
    handlers = _schedule(settings, context) + [OfflinePseudoLabelHandler()]
    method = SSLMethod("teacher_student", settings, READS[2], handlers, _robust_loss(settings))
    return _with_stats(method, settings)


register(Method("supervised", READS[0], "-", {}, _supervised, "the labelled cases only: the lower bound"))
register(
    Method(
        "segpl",
        READS[1],
        "Xu et al., arXiv 2305.01747",
        {**SCHEDULE, "threshold": 0.5, "temperature": 1.0},
        _segpl,
        "EM pseudo-labels: predictions cut at a fixed threshold",
    )
)
register(
    Method(
        "bpl",
        READS[1],
        "Xu et al., arXiv 2305.01747",
        {**SCHEDULE, "prior_mu": 0.5, "prior_std": 0.1, "mode": "kl_only", "temperature": 2.0, "tau": 0.05,
         "kl_weight": 0.1},  # fmt: skip
        _bpl,
        "Bayesian pseudo-labels: the threshold learned by variational inference",
        uses_head=True,
    ),
    variants={"bpl_kl_only": {"mode": "kl_only"}, "bpl_elbo": {"mode": "elbo"}},
)
register(
    Method(
        "teacher_student",
        READS[2],
        "Cui, Akrami et al., arXiv 2203.01524",
        {**SCHEDULE, "robust_loss": "ce", "q": 0.7, "beta": 0.001, "alpha": 0.01, "gamma": 1.0},
        _teacher_student,
        "a teacher's offline pseudo-labels with a robust loss (ce, gce, bce, sce)",
    ),
    variants={f"ts_{loss}": {"robust_loss": loss} for loss in ROBUST_LOSSES},
)


def uses_unlabeled(name: str) -> bool:
    """Whether method ``name`` trains on unlabelled images (a bundle's data pipeline asks this of the registry entry,
    before any network or method is built)."""
    return REGISTRY[check_choice("ssl_method", name, tuple(REGISTRY))].reads != READS[0]


def reads_pseudo_labels(name: str) -> bool:
    """Whether method ``name`` reads a teacher's ``pseudo_label`` files with the unlabelled images."""
    return REGISTRY[check_choice("ssl_method", name, tuple(REGISTRY))].reads == READS[2]
