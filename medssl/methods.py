"""The one registry of semi-supervised methods: what a bundle's ``ssl_method`` names and ``medssl methods`` lists.

A method is one entry: its name, what it reads (nothing beyond the labelled cases, unlabelled images, or pseudo-label
files a teacher wrote), its paper, its settings with their defaults, and a builder that turns the settings into the
handlers and the unsupervised loss it attaches to the one :class:`~medssl.engines.SemiSupervisedTrainer`. Adding a
method is adding an entry with :func:`register`; nothing else names methods. A variant is a method name plus settings
(``bpl_elbo`` is ``bpl`` with ``threshold_fit="elbo"``): the benchmarks and the demo name their runs through
:data:`VARIANTS`.

A bundle carries one method block, ``"method": {...}``: overrides of the chosen method's defaults. Every key must be
a setting of some registered method (a typo is an error); keys of other methods are ignored, so one block can hold a
bundle's choices for several methods (e.g. the threshold prior of its task). A renamed setting is an error that names
its new spelling (:data:`RENAMED_SETTINGS`).

A pseudo-label method cuts with one of the :data:`CUTS`, each a :class:`~medssl.handlers.threshold.Threshold`: a new
cut is a class implementing that contract and an entry there. A method's checkpoint entry keys each stateful piece by
its name (a cut's ``name``, a handler's ``name`` or class name), so a builder may reorder its handlers.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from medssl.checks import check_bool, check_choice, check_renamed

# The pieces (handlers, losses; torch and MONAI with them) are imported by the builders that use them: the registry,
# its names, settings and descriptions (`medssl methods`, argument checks) load without them.
if TYPE_CHECKING:
    from torch import nn

    from medssl.handlers.adaptive_threshold import SelfAdaptiveThreshold
    from medssl.handlers.ema_teacher import EMATeacher
    from medssl.handlers.gate import PseudoLabelGate
    from medssl.handlers.learned_threshold import LearnedThreshold
    from medssl.handlers.threshold import FixedThreshold, Threshold

__all__ = [
    "READS",
    "ROBUST_LOSSES",
    "WEAK_STRONG_LOSSES",
    "CUTS",
    "RENAMED_SETTINGS",
    "PSEUDO_LABEL_LOSSES",
    "Method",
    "MethodContext",
    "SSLMethod",
    "REGISTRY",
    "VARIANTS",
    "register",
    "build_method",
    "method_of",
    "entry",
    "resolve_settings",
    "reads_pseudo_labels",
    "strong_views",
    "uses_unlabeled",
    "variant",
    "describe",
    "state_name",
]

#: What a method reads besides the labelled cases.
READS = ("labelled only", "unlabelled images", "pseudo-label files")
ROBUST_LOSSES = ("ce", "gce", "bce", "sce")

#: Settings of every method that trains on unlabelled data: the weight schedule of the unsupervised loss, as
#: fractions of the run (warm-up at weight 0, then a linear ramp to ``max_weight``; the authors of paper 000 start at
#: 40% of the run and reach full weight at 50%), optionally started early by the validation Dice (``start_dice``,
#: ``start_patience``), the collapse warning, and the labelled gate of 3D crops (``label_gate``: no supervised loss
#: on a labelled batch under that foreground share, as the authors do in 3D; 0 disables).
SCHEDULE = {"max_weight": 1.0, "warmup": 0.4, "ramp": 0.1, "start_dice": None, "start_patience": 3,
            "collapse_patience": 50, "label_gate": 0.0}  # fmt: skip
#: The learned threshold of paper 000, for any method that takes one (see medssl.handlers.learned_threshold).
#: ``threshold_fit``: what trains its head, the evidence lower bound on the labelled images or the KL alone.
LEARNED = {"prior_mu": 0.5, "prior_std": 0.1, "threshold_fit": "elbo", "samples": 256, "tau": 0.05, "kl_weight": 0.1}
#: Where pseudo-labels come from: the student's own predictions, an EMA teacher's (mean teacher's) with this decay, or
#: (``alternate``) AD-MT's two EMA teachers updated in turn, each active for 1 to ``alternate_period`` iterations,
#: their predictions fused by entropy (medssl.handlers.ema_teacher.AlternateEMATeachers).
SOURCE = {"source": "student", "ema_decay": 0.99, "alternate_period": 19}
#: The loss of the pseudo-label methods on their pseudo-labels (``unsup_loss``): Dice + cross-entropy (the authors'
#: Dice, with cross-entropy for multi-class), or cross-entropy alone. On ACDC, pseudo-labels of the student's own
#: prediction of the same view erase the foreground once their loss starts; cross-entropy alone slows that fall but
#: does not stop it, so the default stays (benchmarks/RESULTS.md).
PSEUDO_LABEL_LOSSES = ("dice_ce", "ce")
#: The losses of the weak-to-strong methods (FixMatch, UniMatch) on the strong views' pseudo-labels: the pseudo-label
#: losses, or one of paper 001's noise-robust losses in place of the cross-entropy (no Dice term, as in
#: teacher-student), with their parameters (``q``, ``beta``, ``alpha`` and ``gamma``, as in teacher-student).
WEAK_STRONG_LOSSES = (*PSEUDO_LABEL_LOSSES, *(loss for loss in ROBUST_LOSSES if loss != "ce"))
ROBUST = {"q": 0.7, "beta": 0.001, "alpha": 0.01, "gamma": 1.0}
#: UniMatch's feature-perturbation pass (``fp_pass``): the encoder shared with the weak view's pass as its code does,
#: a pass of its own, or ``auto`` (shared where the network allows it; see medssl.handlers.weak_strong).
FP_PASS_SETTINGS = ("auto", "shared", "separate")
#: The pseudo-label gate: no pseudo-label loss (nor KL) under this foreground share, or a threshold outside the range.
GATE = {"gate_foreground": 0.005, "gate_threshold_range": (0.01, 0.99)}
#: Method settings that were renamed (old -> new): a method block with an old spelling is an error naming the new one.
RENAMED_SETTINGS = {"threshold_mode": "cut", "mode": "threshold_fit"}


@dataclass
class MethodContext:
    """What a bundle tells a method's builder: the network and the run it trains in."""

    network: nn.Module | None = None
    #: a learned-threshold head and the network layer whose features it reads (``feature_layer``)
    head: nn.Module | None = None
    feature_layer: str | None = None
    #: the validation engine (a schedule started by the validation Dice watches it)
    evaluator: Any = None
    #: length of the run in ``unit`` ("epochs" or "iterations"), to turn schedule fractions into lengths
    run_length: float = 1.0
    unit: str = "epochs"
    #: pool the Dice of the losses on pseudo-labels and mixed labels over the batch, as a bundle of 2D slices pools its
    #: supervised Dice: most slices hold no small structure, and a Dice per slice charges each a whole term for one
    #: stray voxel (it taught the real BraTS track's models to predict no tumour core)
    dice_batch: bool = False


def _plain(state: Any) -> Any:
    """``state`` with every tensor as a plain ``torch.Tensor`` (not a subclass such as MONAI's ``MetaTensor``)."""
    import torch

    if isinstance(state, torch.Tensor):
        return state.as_subclass(torch.Tensor)
    if isinstance(state, dict):
        return type(state)((k, _plain(v)) for k, v in state.items())
    if isinstance(state, (list, tuple)):
        return type(state)(_plain(v) for v in state)
    return state


@dataclass
class SSLMethod:
    """A built method: the handlers to attach, the loss on pseudo-labels, and the modules it trains or keeps.

    It is checkpointable (``state_dict`` / ``load_state_dict`` of its ``modules``, of its handlers that keep state and
    of their cuts), so a bundle's checkpoint holds whatever a method keeps (an EMA teacher, say) under one entry, each
    piece under its name (:func:`state_name`).
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

    def _stateful(self) -> dict[str, tuple[str, Any]]:
        """``{name: (key of the piece in a checkpoint written before names, piece)}`` of every piece with state: the
        modules, the handlers with a ``state_dict``, the handlers' cuts (a cut that keeps moving averages, the
        self-adaptive one, resumes with them).

        Raises:
            ValueError: two pieces share a name.
        """
        from medssl.handlers.threshold import Threshold

        pieces = [(name, name, module) for name, module in self.modules.items()]  # (name, old key, piece)
        for i, handler in enumerate(self.handlers):
            if hasattr(handler, "state_dict"):
                pieces.append((state_name(handler), f"handler{i}", handler))
            cut = getattr(handler, "threshold", None)
            if isinstance(cut, Threshold):
                pieces.append((cut.name, f"threshold{i}", cut))
            align = getattr(handler, "align", None)
            if align is not None:  # the running class marginals of distribution alignment
                pieces.append((state_name(align), f"align{i}", align))
        items: dict[str, tuple[str, Any]] = {}
        for name, old_key, piece in pieces:
            if name in items:
                raise ValueError(f"method {self.name!r} has two pieces with state named {name!r}: name them apart")
            items[name] = (old_key, piece)
        return items

    def state_dict(self) -> dict[str, Any]:
        """What the method keeps between iterations (an EMA teacher, where a schedule started), for a checkpoint:
        each piece's state under its name. Tensors are stored as plain tensors: a statistic taken from a MONAI
        ``MetaTensor`` batch would otherwise keep its class, which ``torch.load(weights_only=True)`` refuses."""
        return {name: _plain(piece.state_dict()) for name, (_, piece) in self._stateful().items()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore each piece from its entry of ``state``, by name; a checkpoint written before the entries had names
        (``handler{i}``, ``threshold{i}``: every key of that form) by position. A piece that keeps nothing (a fixed
        cut) needs no entry.

        Raises:
            KeyError: a piece with state has no entry in ``state`` (the message lists the entries it has).
        """
        positional = bool(state) and all(_POSITIONAL_KEY.fullmatch(k) or k in self.modules for k in state)
        for name, (old_key, piece) in self._stateful().items():
            key = old_key if positional else name
            if key in state:
                piece.load_state_dict(state[key])
            elif piece.state_dict():
                raise KeyError(
                    f"the checkpoint of method {self.name!r} has no entry {key!r} for its {type(piece).__name__}; "
                    f"its entries: {sorted(state)}"
                )


#: The keys of a method's checkpoint entry before they were names: pieces by position.
_POSITIONAL_KEY = re.compile(r"(handler|threshold)\d+")


def state_name(piece: Any) -> str:
    """The key of a stateful piece in its method's checkpoint entry: its ``name``, or its class name."""
    name = getattr(piece, "name", None)
    return name if isinstance(name, str) and name else type(piece).__name__


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
    #: strongly augmented copies of each unlabelled image the loader must add (weak-to-strong methods), or the
    #: boolean setting that asks for one (a method that takes a strong view as an option: BCP's ``strong_view``)
    strong_views: int | str = 0

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
        ValueError: an unknown method, a renamed setting (the message names the new one), or a key of ``block`` that
            no registered method has.
    """
    method = REGISTRY[check_choice("ssl_method", name, tuple(REGISTRY))]
    block = dict(block or {})
    check_renamed("method setting", block, RENAMED_SETTINGS)
    unknown = sorted(set(block) - _all_settings())
    if unknown:
        raise ValueError(
            f"method settings {unknown} are not settings of any method; {name!r} takes {sorted(method.defaults)}"
        )
    # a bundle's --method#largest_component false arrives as a string
    return {k: check_bool(f"method#{k}", block[k]) if k in block and isinstance(v, bool) else block.get(k, v)
            for k, v in method.defaults.items()}  # fmt: skip


def method_of(name: str) -> tuple[str, dict[str, Any]]:
    """``(method, settings)`` of a name a bundle takes as ``ssl_method``: a registered method (no settings of its
    own) or a variant (``fixmatch_learned`` is ``fixmatch`` with ``cut`` ``learned``): every name ``medssl methods``
    lists.

    >>> method_of("fixmatch_learned")
    ('fixmatch', {'cut': 'learned'})

    Raises:
        ValueError: neither a method nor a variant (the message lists both).
    """
    if name in REGISTRY:
        return name, {}
    if name in VARIANTS:
        return VARIANTS[name]
    raise ValueError(f"ssl_method must be a method {sorted(REGISTRY)} or a variant {sorted(set(VARIANTS) - set(REGISTRY))}, "
                     f"got {name!r}")  # fmt: skip


def entry(name: str) -> Method:
    """The registry entry of a method or variant name (:func:`method_of`)."""
    return REGISTRY[method_of(name)[0]]


def build_method(name: str, block: Mapping[str, Any] | None = None, **context: Any) -> SSLMethod:
    """Build method ``name`` (a method or a variant, :func:`method_of`) with the settings of ``block`` (see
    :func:`resolve_settings`; they take precedence over a variant's) in ``context``.

    >>> build_method("supervised").handlers
    []
    >>> build_method("fixmatch_t05").settings["threshold"]
    0.5
    """
    method, preset = method_of(name)
    settings = resolve_settings(method, {**preset, **dict(block or {})})
    return REGISTRY[method].build(settings, MethodContext(**context))


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
    from medssl.handlers.gate import LabelledForegroundGate
    from medssl.handlers.weight_schedule import UnsupervisedWeightSchedule

    length = float(context.run_length)
    handlers: list[Any] = [
        UnsupervisedWeightSchedule(
            max_weight=settings["max_weight"],
            warmup=settings["warmup"] * length,
            ramp=settings["ramp"] * length,
            unit=context.unit,
            start_dice=settings["start_dice"],
            evaluator=context.evaluator if settings["start_dice"] is not None else None,
            patience=settings["start_patience"],
        )
    ]
    if settings["label_gate"] > 0:
        handlers.append(LabelledForegroundGate(settings["label_gate"]))
    return handlers


def _gate(settings: Mapping[str, Any]) -> PseudoLabelGate:
    from medssl.handlers.gate import PseudoLabelGate

    return PseudoLabelGate(settings["gate_foreground"], settings["gate_threshold_range"])


def _fixed_cut(settings: Mapping[str, Any], context: MethodContext) -> FixedThreshold:
    from medssl.handlers.threshold import FixedThreshold

    """The fixed cut at ``threshold``."""
    return FixedThreshold(settings["threshold"])


def _learned_cut(settings: Mapping[str, Any], context: MethodContext) -> LearnedThreshold:
    from medssl.handlers.learned_threshold import LearnedThreshold

    """The learned threshold of paper 000 on the bundle's head, started at the prior.

    Raises:
        ValueError: the context has no threshold head or feature layer.
    """
    if context.head is None or not context.feature_layer:
        raise ValueError("a learned threshold needs the bundle's threshold head and the feature_layer it reads.")
    getattr(context.head, "module", context.head).reset_prior(settings["prior_mu"], settings["prior_std"])
    return LearnedThreshold(
        context.head, context.feature_layer, prior_mu=settings["prior_mu"], prior_std=settings["prior_std"],
        fit=settings["threshold_fit"], samples=settings["samples"], tau=settings["tau"],
        kl_weight=settings["kl_weight"], temperature=settings["temperature"],
    )  # fmt: skip


def _adaptive_cut(settings: Mapping[str, Any], context: MethodContext) -> SelfAdaptiveThreshold:
    from medssl.handlers.adaptive_threshold import SelfAdaptiveThreshold

    """FreeMatch's self-adaptive class-wise cut, with momentum ``sat_momentum``."""
    return SelfAdaptiveThreshold(settings["sat_momentum"], settings["temperature"])


CutBuilder = Callable[[Mapping[str, Any], MethodContext], "Threshold"]
#: The cuts a pseudo-label method can take (the weak-to-strong methods' setting ``cut``), each a builder of a
#: :class:`~medssl.handlers.threshold.Threshold` from the method's settings: a fixed number (``threshold``), the
#: Bayesian head's learned threshold (paper 000; ``prior_mu``, ``threshold_fit``, ...), or FreeMatch's self-adaptive
#: class-wise threshold (``sat_momentum``). A new cut is a class implementing the contract and an entry here.
CUTS: dict[str, CutBuilder] = {"fixed": _fixed_cut, "learned": _learned_cut, "adaptive": _adaptive_cut}


def _cut(settings: Mapping[str, Any], context: MethodContext, cut: str) -> Threshold:
    """The cut registered as ``cut`` in :data:`CUTS`, built from ``settings``.

    Raises:
        ValueError: an unknown cut.
    """
    return CUTS[check_choice("cut", cut, tuple(CUTS))](settings, context)


def _method(name: str, settings: dict[str, Any], context: MethodContext, handlers: list[Any], loss=None) -> SSLMethod:
    """The method: its schedule (and labelled gate), its own handlers, then the pseudo-label statistics."""
    from medssl.handlers.pseudo_label_stats import PseudoLabelStatsHandler

    all_handlers = _schedule(settings, context) + handlers + [PseudoLabelStatsHandler(patience=settings["collapse_patience"])]
    return SSLMethod(name, settings, REGISTRY[name].reads, all_handlers, loss)


def _teacher(settings: Mapping[str, Any], context: MethodContext, restart: bool = False) -> Any:
    """The EMA teacher, or with ``source`` ``alternate`` AD-MT's two EMA teachers updated in turn."""
    from medssl.handlers.ema_teacher import AlternateEMATeachers, EMATeacher

    if context.network is None:
        raise ValueError("an EMA teacher needs the network it averages.")
    if settings.get("source") == "alternate":
        return AlternateEMATeachers(context.network, decay=settings["ema_decay"], period=settings["alternate_period"])
    return EMATeacher(context.network, decay=settings["ema_decay"], restart_when_unsupervised=restart)


def _supervised(settings: dict[str, Any], context: MethodContext) -> SSLMethod:
    from medssl.handlers.gate import LabelledForegroundGate

    gate = [LabelledForegroundGate(settings["label_gate"])] if settings["label_gate"] > 0 else []
    return SSLMethod("supervised", settings, READS[0], gate)


def _pseudo_label(name: str, cut: str) -> Builder:
    def build(settings: dict[str, Any], context: MethodContext) -> SSLMethod:
        from medssl.handlers.pseudo_label import PseudoLabelHandler
        from medssl.losses.semi_supervised import MaskedDiceCELoss

        handlers: list[Any] = [_teacher(settings, context)] if settings["source"] != "student" else []
        threshold = _cut(settings, context, cut)
        handlers.append(PseudoLabelHandler(threshold, settings["source"], settings["temperature"], _gate(settings)))
        dice = check_choice("unsup_loss", settings["unsup_loss"], PSEUDO_LABEL_LOSSES) == "dice_ce"
        loss = MaskedDiceCELoss(lambda_dice=1.0 if dice else 0.0, batch=context.dice_batch)
        return _method(name, settings, context, handlers, loss)

    return build


def _robust_loss(settings: Mapping[str, Any]) -> nn.Module:
    from medssl.losses.robust import BetaCrossEntropyLoss, GeneralizedCrossEntropyLoss, SymmetricCrossEntropyLoss
    from medssl.losses.semi_supervised import MaskedDiceCELoss

    loss = check_choice("robust_loss", settings["robust_loss"], ROBUST_LOSSES)
    if loss == "gce":
        return GeneralizedCrossEntropyLoss(q=settings["q"])
    if loss == "bce":
        return BetaCrossEntropyLoss(beta=settings["beta"])
    if loss == "sce":
        return SymmetricCrossEntropyLoss(alpha=settings["alpha"], gamma=settings["gamma"])
    return MaskedDiceCELoss(lambda_dice=0.0)  # cross-entropy


def _teacher_student(settings: dict[str, Any], context: MethodContext) -> SSLMethod:
    from medssl.handlers.offline_pseudo_label import OfflinePseudoLabelHandler

    return _method("teacher_student", settings, context, [OfflinePseudoLabelHandler()], _robust_loss(settings))


def _mean_teacher(settings: dict[str, Any], context: MethodContext) -> SSLMethod:
    from medssl.handlers.consistency import MeanTeacherConsistency

    return _method("mean_teacher", settings, context, [_teacher(settings, context), MeanTeacherConsistency()])


def _weak_strong(name: str, views: int) -> Builder:
    def build(settings: dict[str, Any], context: MethodContext) -> SSLMethod:
        from medssl.handlers.distribution_alignment import DistributionAlignment
        from medssl.handlers.weak_strong import WeakToStrongHandler
        from medssl.losses.semi_supervised import MaskedDiceCELoss
        from medssl.networks.layers import encoder_feature_layers

        threshold = _cut(settings, context, settings["cut"])
        layers = (settings["perturb_layers"] or encoder_feature_layers(context.network)) if views == 2 else []
        fp_pass = _fp_pass(settings, context) if views == 2 else "separate"
        align = None
        if settings["align"]:
            align = DistributionAlignment(settings["align_momentum"], settings["align_prior"])
        handler = WeakToStrongHandler(threshold, views=views, perturb_layers=layers, dropout=settings["dropout"],
                                      cutmix_prob=settings["cutmix_prob"], temperature=settings["temperature"],
                                      gate=_gate(settings), source=settings["source"], align=align,
                                      fp_pass=fp_pass)  # fmt: skip
        teacher = [_teacher(settings, context)] if settings["source"] != "student" else []
        loss = check_choice("unsup_loss", settings["unsup_loss"], WEAK_STRONG_LOSSES)
        if loss in PSEUDO_LABEL_LOSSES:
            unsup = MaskedDiceCELoss(lambda_dice=1.0 if loss == "dice_ce" else 0.0, batch=context.dice_batch)
        else:
            unsup = _robust_loss({**settings, "robust_loss": loss})
        return _method(name, settings, context, [*teacher, handler], unsup)

    return build


def _fp_pass(settings: Mapping[str, Any], context: MethodContext) -> str:
    """UniMatch's feature-perturbation pass: ``shared`` (its code's: the encoder run once) where the perturbed layers
    are every encoder block of a MONAI ``UNet`` (the default layers), else ``separate``; ``auto`` picks.

    Raises:
        ValueError: ``shared`` asked for where it does not apply.
    """
    choice = check_choice("fp_pass", settings["fp_pass"], FP_PASS_SETTINGS)
    network = getattr(context.network, "module", context.network)
    whole = settings["perturb_layers"] is None and type(network).__name__ == "UNet"
    if choice == "shared" and not whole:
        raise ValueError("fp_pass 'shared' decodes the kept outputs of every encoder block, which needs MONAI's UNet "
                         f"with its default perturbed layers; got {type(network).__name__} with perturb_layers "
                         f"{settings['perturb_layers']}: use 'separate' or 'auto'")  # fmt: skip
    return choice if choice != "auto" else ("shared" if whole else "separate")


def _bcp(settings: dict[str, Any], context: MethodContext) -> SSLMethod:
    from medssl.handlers.copy_paste import CopyPasteHandler

    mixer = CopyPasteHandler(settings["side_ratio"], settings["alpha"], dice_batch=context.dice_batch,
                             labelled_mix=settings["labelled_mix"], largest_component=settings["largest_component"],
                             strong_view=settings["strong_view"])  # fmt: skip
    handlers = [_teacher(settings, context, restart=True), mixer]
    return _method("bcp", settings, context, handlers)


def _vat(settings: dict[str, Any], context: MethodContext) -> SSLMethod:
    from medssl.handlers.vat import VATHandler

    handler = VATHandler(xi=settings["xi"], eps=settings["eps"], iterations=settings["power_iterations"])
    return _method("vat", settings, context, [handler])


_PAPER_000 = "Xu et al., arXiv 2305.01747"
register(
    Method("supervised", READS[0], "-", {"label_gate": 0.0}, _supervised, "the labelled cases only: the lower bound")
)
register(
    Method(
        "segpl", READS[1], _PAPER_000,
        {**SCHEDULE, "threshold": 0.5, "temperature": 1.0, **SOURCE, "unsup_loss": "dice_ce", **GATE},
        _pseudo_label("segpl", "fixed"), "EM pseudo-labels: predictions cut at a fixed threshold",
    ),
    # paired_lower_bound: SegPL with its loss weighted 0, the supervised control that shares the methods' random
    # stream: the same loaders (unlabelled images drawn), the same joint forward pass (batch norm sees the unlabelled
    # images), so its run is every method's run up to the warm-up and a method's difference from it is its loss's
    variants={"segpl": {}, "segpl_ema": {"source": "teacher"}, "segpl_ce": {"unsup_loss": "ce"},
              "paired_lower_bound": {"max_weight": 0.0}},  # fmt: skip
)
register(
    Method(
        "bpl", READS[1], _PAPER_000,
        {**SCHEDULE, **LEARNED, "temperature": 1.0, **SOURCE, "unsup_loss": "dice_ce", **GATE},
        _pseudo_label("bpl", "learned"), "Bayesian pseudo-labels: the threshold learned by variational inference",
        uses_head=True,
    ),
    # bpl_ema: the learned threshold cuts the EMA teacher's prediction (the head stays on the student), as segpl_ema
    variants={
        "bpl_kl_only": {"threshold_fit": "kl_only"}, "bpl_elbo": {"threshold_fit": "elbo"},
        "bpl_ce": {"unsup_loss": "ce"}, "bpl_ema": {"source": "teacher"},
    },
)
register(
    Method(
        "teacher_student", READS[2], "Cui, Akrami et al., arXiv 2203.01524",
        {**SCHEDULE, "robust_loss": "ce", **ROBUST},
        _teacher_student, "a teacher's offline pseudo-labels with a robust loss (ce, gce, bce, sce)",
    ),
    variants={f"ts_{loss}": {"robust_loss": loss} for loss in ROBUST_LOSSES},
)
register(
    Method(
        "mean_teacher", READS[1], "Tarvainen & Valpola, NeurIPS 2017",
        {**SCHEDULE, "max_weight": 0.1, "warmup": 0.0, "ramp": 0.4, "ema_decay": 0.99},
        _mean_teacher, "EMA teacher: consistency of the student's softmax with its moving average's",
    )
)
_WEAK_STRONG = {**SCHEDULE, "warmup": 0.0, "ramp": 0.0, "threshold": 0.95, "cut": "fixed", **LEARNED,
                "sat_momentum": 0.999, "temperature": 1.0, "cutmix_prob": 0.5, "dropout": 0.5, "perturb_layers": None,
                **GATE, **SOURCE, "unsup_loss": "dice_ce", **ROBUST, "align": False,
                "align_momentum": 0.999, "align_prior": None}  # fmt: skip
register(
    Method(
        "fixmatch", READS[1], "Sohn et al., NeurIPS 2020", _WEAK_STRONG, _weak_strong("fixmatch", 1),
        "pseudo-labels of the weak view, the loss on a strong CutMixed view where confident",
        uses_head=True, strong_views=1,
    ),
    # fixmatch_t05: the fixed cut at the ACDC prior's mean, to tell the learned threshold from a low cut;
    # fixmatch_t08: a cut between the two, the third point of a sweep of fixed cuts (0.5, 0.8, 0.95);
    # fixmatch_sat: FreeMatch's self-adaptive class-wise cut (without its fairness loss);
    # fixmatch_t05_ema: fixmatch_t05 with the EMA teacher's pseudo-labels of the weak view;
    # fixmatch_admt: pseudo-labels of the weak view from AD-MT's two EMA teachers in turn, its LA cut (0.8) and its
    # loss (cross-entropy);
    # fixmatch_t05_<loss>: fixmatch_t05 with cross-entropy alone, or paper 001's robust losses, on the pseudo-labels;
    # fixmatch_t05_da: fixmatch_t05 with ReMixMatch's distribution alignment of the weak view's prediction
    variants={"fixmatch": {}, "fixmatch_learned": {"cut": "learned"}, "fixmatch_t05": {"threshold": 0.5},
              "fixmatch_t08": {"threshold": 0.8}, "fixmatch_sat": {"cut": "adaptive"},
              "fixmatch_t05_ema": {"threshold": 0.5, "source": "teacher"},
              "fixmatch_admt": {"threshold": 0.8, "source": "alternate", "unsup_loss": "ce"},
              **{f"fixmatch_t05_{loss}": {"threshold": 0.5, "unsup_loss": loss} for loss in ROBUST_LOSSES},
              "fixmatch_t05_da": {"threshold": 0.5, "align": True}},
)
register(
    Method(
        "unimatch", READS[1], "Yang et al., CVPR 2023", {**_WEAK_STRONG, "max_weight": 0.25, "fp_pass": "auto"},
        _weak_strong("unimatch", 2), "FixMatch with two strong views and encoder-feature dropout",
        uses_head=True, strong_views=2,
    ),
    variants={"unimatch": {}, "unimatch_learned": {"cut": "learned"}},
)
register(
    Method(
        "bcp", READS[1], "Bai et al., CVPR 2023",
        {**SCHEDULE, "warmup": 0.25, "ramp": 0.0, "ema_decay": 0.99, "side_ratio": 2 / 3, "alpha": 0.5,
         "labelled_mix": True, "largest_component": False, "strong_view": False},
        _bcp, "copy-paste among labelled images in pre-training, then bidirectional copy-paste of labelled and "
        "unlabelled images with EMA-teacher pseudo-labels", strong_views="strong_view",
    ),
    # bcp_lcc: the largest connected component of each class of a pseudo-label, as BCP's LA code does (its nms=1);
    # bcp_strong: weak-to-strong with copy-paste mixing, the teacher's pseudo-labels of the weak view pasted with a
    # strong view of the same image (issue 28's composition of BCP's mixing and FixMatch's views)
    variants={"bcp": {}, "bcp_lcc": {"largest_component": True}, "bcp_strong": {"strong_view": True},
              "bcp_lcc_strong": {"largest_component": True, "strong_view": True}},  # fmt: skip
)
register(
    Method(
        "vat", READS[1], "Miyato et al., TPAMI 2018 (paper 003)",
        {**SCHEDULE, "warmup": 0.1, "ramp": 0.0, "xi": 1e-6, "eps": 2.0, "power_iterations": 1},
        _vat, "virtual adversarial training: consistency under the worst small perturbation",
    )
)


def uses_unlabeled(name: str) -> bool:
    """Whether method ``name`` trains on unlabelled images (a bundle's data pipeline asks this of the registry entry,
    before any network or method is built)."""
    return entry(name).reads != READS[0]


def reads_pseudo_labels(name: str) -> bool:
    """Whether method ``name`` reads a teacher's ``pseudo_label`` files with the unlabelled images."""
    return entry(name).reads == READS[2]


def strong_views(name: str, block: Mapping[str, Any] | None = None) -> int:
    """How many strongly augmented copies of each unlabelled image method ``name`` (a method or a variant) needs from
    the loader, with the settings of ``block`` (a bundle's ``method``; see :func:`build_method`).

    >>> strong_views("unimatch"), strong_views("bcp"), strong_views("bcp", {"strong_view": True})
    (2, 0, 1)
    """
    views = entry(name).strong_views
    if isinstance(views, int):
        return views
    method, preset = method_of(name)
    return int(resolve_settings(method, {**preset, **dict(block or {})})[views])
