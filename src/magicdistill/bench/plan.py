"""What ``magicdistill bench`` runs: the units (one sampler or distilled generator each) and the tables.

A *unit* is one model evaluated once: a sampler on the teacher (Euler, nothing trained) or a
generator distilled for a given number of iterations. Tables are views over units, so a unit shared
by two tables is trained and evaluated once: 4-step W2S is a Table 1 row, the alpha_weak = 0.25
ablation row and the last point of the W2S iteration curve; 4-step DMD2 is alpha_weak = 0 (the
trainer sets alpha_weak = 0 for ``dmd``: the same update, the method.md definition of vanilla DMD2).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace



@dataclass(frozen=True)
class Unit:
    method: str  # euler | lcm | dmd | w2s
    steps: int
    alpha_weak: float = 0.25  # w2s only (dmd is 0 by definition)
    lambda_reg: float = 0.0  # w2s only: MagicDistillation's ground-truth term L_reg
    iters: int = 0  # distillation iterations (0 for euler)
    teacher: str = "ti2v"  # ti2v (the shipped teacher) | t2v (--t2v-teacher)
    # dmd only: the real score's CFG is W2S's first-order equivalent for this alpha_weak, w_eff = 1 + (w - 1) /
    # (1 - alpha), w the teacher's (docs/METHOD.md, "W2S and DMD2 to first order"); 0 = the teacher's w
    weff_alpha: float = 0.0
    # the collapse regime (MagicDistillation Fig. 2): "paper" = the learning rates of `distill --preset paper`
    # (config.DISTILL_PRESETS); real_cfg_x > 0 = the real score's CFG at that multiple of the teacher's own
    lrs: str = ""
    real_cfg_x: float = 0.0

    @property
    def trained(self) -> bool:
        return self.method != "euler"

    @property
    def run_id(self) -> str:
        """The distillation run this unit is a snapshot of (units differing only in iters share it)."""
        rid = f"{self.teacher}-{self.method}-{self.steps}step"
        if self.method == "w2s":
            rid += f"-a{self.alpha_weak:g}-reg{self.lambda_reg:g}"
        if self.weff_alpha:
            rid += f"-weff{self.weff_alpha:g}"
        if self.lrs:  # (after the older fields: the run ids of units without them stay what they were)
            rid += f"-lr{self.lrs}"
        if self.real_cfg_x:
            rid += f"-cfgx{self.real_cfg_x:g}"
        return rid

    @property
    def id(self) -> str:
        return f"{self.run_id}-it{self.iters}" if self.trained else f"{self.teacher}-euler-{self.steps}step"

    @property
    def label(self) -> str:
        if self.method == "euler":
            return f"Euler {self.steps}-step (CFG teacher)" + (" [T2V]" if self.teacher == "t2v" else "")
        name = {"lcm": "LCM", "dmd": "DMD2", "w2s": "W2S"}[self.method]
        if self.method == "w2s" and self.alpha_weak != 0.25:
            name += f" (alpha_weak {self.alpha_weak:g})"
        if self.lambda_reg:
            name += f" + L_reg ({self.lambda_reg:g})"
        if self.weff_alpha:
            name += f" (real CFG w_eff of alpha {self.weff_alpha:g})"
        if self.lrs or self.real_cfg_x:
            name += " (" + ", ".join(([f"{self.lrs} lrs"] if self.lrs else [])
                                     + ([f"real CFG {self.real_cfg_x:g}× the teacher's"] if self.real_cfg_x else [])) + ")"
        if self.teacher == "t2v":
            name += " [T2V]"
        return f"{name} {self.steps}-step"

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Settings:
    """Sizes of one bench. ``curve_iters`` ends at ``iters``: the curve's last point is the table's row."""

    iters: int = 200  # the paper's optimum for a 4-step generator (Magic 1-For-1 section 4.2)
    clips: int = 32  # held-out clips (first frames), sampled with every sampling seed
    clip_block: int = 8  # clips per metric cell: FVD/FID are set metrics, computed over each block of clips
    seeds: int = 2  # sampling seeds (noise) per clip
    # distillation seeds per trained row: each is its own run (seed, data order, noise); the 95% interval of a
    # trained row is over these, each averaged over its clip blocks x sampling seeds (stats.nested_ci)
    distill_seeds: int = 2
    num_clips: int = 1000  # encoded training clips (one latent cache shared by every run)
    curve_iters: tuple[int, ...] = (25, 50, 100, 200)
    lambda_reg: float = 1.0  # [decision] L_reg at the weight of L_DMD: both are normalised gradients
    alphas: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75)  # the paper's alpha_weak ablation
    euler_steps: tuple[int, ...] = (1, 4, 8, 16, 28, 50)
    reference_steps: int = 50  # the 50-step CFG teacher: the reference of every NFE / wall-time ratio
    # [decision] EMA decay of the evaluated generator. distill's default (0.99) suits long runs; 200
    # iterations are 40 generator updates (r = 5), after which a 0.99 EMA is still 67% the teacher it
    # started from and the rows barely differ. 0.9 is 99% the trained generator after 40 updates.
    ema_decay: float = 0.9
    distilled_steps: tuple[int, ...] = (1, 4)
    seed: int = 0

    def __post_init__(self):
        if self.iters < 1 or self.clips < 1 or self.seeds < 1 or self.distill_seeds < 1:
            raise ValueError("--iters, --clips, --seeds and --distill-seeds must be >= 1")
        if not 1 <= self.clip_block <= self.clips or self.clips % self.clip_block:
            raise ValueError(f"--clips ({self.clips}) must be a multiple of --clip-block ({self.clip_block}), "
                             "the clips per metric cell")
        if not self.curve_iters or self.curve_iters[-1] != self.iters or list(self.curve_iters) != sorted(set(self.curve_iters)):
            raise ValueError(f"curve_iters must increase and end at iters={self.iters}, got {self.curve_iters}")
        if self.reference_steps not in self.euler_steps:
            raise ValueError(f"the Euler steps must include the {self.reference_steps}-step reference")

    @property
    def distill_seed_values(self) -> tuple[int, ...]:
        """The distillation seeds of a trained row: seed, seed + 1, ..."""
        return tuple(self.seed + k for k in range(self.distill_seeds))

    def as_dict(self) -> dict:
        return asdict(self)


# --quick: every table, at sizes that run in a few minutes on 2 idle cores (docs/RESULTS.md says
# how long it took on the day); distilled generators barely leave their initialisation in 16 iterations.
QUICK = Settings(iters=16, clips=4, clip_block=2, seeds=1, distill_seeds=2, num_clips=32, curve_iters=(4, 8, 16))
# the full plan adds 2 steps, where N-step Euler is far from the teacher (1 and 2 steps are the regimes with a gap
# for distillation to close; at 4 steps Euler is already near the teacher on this data)
FULL = Settings(euler_steps=(1, 2, 4, 8, 16, 28, 50), distilled_steps=(1, 2, 4))


COLLAPSE_CFG_X = 3.0  # the collapse regime's real-score CFG, a multiple of the teacher's (make_plan says why)


def curve_points(iters: int) -> tuple[int, ...]:
    """Iteration counts for the curves: iters/8, iters/4, iters/2, iters (distinct, >= 1)."""
    return tuple(sorted({max(1, iters // d) for d in (8, 4, 2, 1)}))


@dataclass(frozen=True)
class Plan:
    table1: list[Unit]  # MagicDistillation Table 1 in miniature
    alpha: list[Unit]  # the alpha_weak ablation (W2S, 4 steps, no L_reg)
    curves: dict[str, list[Unit]] = field(default_factory=dict)  # metric vs distillation iterations
    t2v: bool = False  # whether the T2V-vs-TI2V curve is in the plan (needs --t2v-teacher)
    reference: Unit = Unit("euler", 50)  # the CFG teacher every NFE and wall-time ratio is relative to
    collapse: list[Unit] = field(default_factory=list)  # the collapse regime: DMD2 and W2S, paper lrs, high real CFG

    def teacher_references(self) -> dict[str, Unit]:
        """teacher -> its sampler at the reference steps: the samples each of that teacher's rows is also measured
        against (FVD vs teacher). The TI2V teacher's is ``reference``; another teacher's, where the plan has it."""
        all_units = [self.reference, *(u for c in self.curves.values() for u in c), *self.table1, *self.alpha,
                     *self.collapse]
        return {u.teacher: u for u in reversed(all_units)
                if not u.trained and u.steps == self.reference.steps and u.teacher != self.reference.teacher} | {
            self.reference.teacher: self.reference}

    def units(self) -> list[Unit]:
        """Every distinct unit, in run order: the teachers' references first (every ratio and FVD vs teacher
        needs them), then the curves' runs (4-step W2S and DMD2, the headline comparison: first in a partial
        bench), then Table 1, the collapse regime and the alpha_weak ablation (least informative: to first order a
        real-CFG sweep; last in a partial bench). A run's snapshots go together by increasing iterations, so each
        run is trained once, continued from snapshot to snapshot."""
        groups: dict[str, list[Unit]] = {}
        refs = [self.reference, *(u for u in self.teacher_references().values() if u != self.reference)]
        for u in [*refs, *(u for c in self.curves.values() for u in c), *self.table1, *self.collapse, *self.alpha]:
            group = groups.setdefault(u.run_id if u.trained else u.id, [])
            if u not in group:
                group.append(u)
        return [u for g in groups.values() for u in sorted(g, key=lambda u: u.iters)]


def make_plan(s: Settings, *, t2v: bool = False) -> Plan:
    table1 = [Unit("euler", n) for n in s.euler_steps]
    for n in s.distilled_steps:
        table1 += [Unit("lcm", n, iters=s.iters), Unit("dmd", n, alpha_weak=0.0, iters=s.iters),
                   Unit("w2s", n, iters=s.iters), Unit("w2s", n, lambda_reg=s.lambda_reg, iters=s.iters)]
    # W2S's first-order twin: DMD2 whose real CFG is w_eff of W2S's alpha (4 steps, the ablation's setting)
    table1.append(Unit("dmd", 4, alpha_weak=0.0, iters=s.iters, weff_alpha=0.25))
    alpha = [Unit("dmd", 4, alpha_weak=0.0, iters=s.iters) if a == 0 else Unit("w2s", 4, alpha_weak=a, iters=s.iters)
             for a in s.alphas]
    curves = {"W2S 4-step (TI2V)": [Unit("w2s", 4, iters=k) for k in s.curve_iters],
              "DMD2 4-step (TI2V)": [Unit("dmd", 4, alpha_weak=0.0, iters=k) for k in s.curve_iters]}
    if t2v:
        curves["W2S 4-step (T2V)"] = [Unit("w2s", 4, iters=k, teacher="t2v") for k in s.curve_iters]
        # what each curve converges towards: its own teacher at the reference steps (plotted at iteration 0).
        # A T2V model never sees the first frame, so its metrics against the truth are worse whatever the
        # distillation; the distance to its own teacher is the speed comparison.
        curves["TI2V teacher (Euler 50-step CFG)"] = [Unit("euler", s.reference_steps)]
        curves["T2V teacher (Euler 50-step CFG)"] = [Unit("euler", s.reference_steps, teacher="t2v")]
    # [decision] MagicDistillation Fig. 2: vanilla DMD2 collapses under a high real-score CFG at the paper's learning
    # rates, W2S does not. 3x the teacher's CFG (2 -> 6) is the scale of a full-size video teacher's CFG (Wan 2.1 5,
    # HunyuanVideo 6) and well above the w_eff (2.33) that the alpha ablation already covers.
    collapse = [Unit("dmd", 4, alpha_weak=0.0, iters=s.iters, lrs="paper", real_cfg_x=COLLAPSE_CFG_X),
                Unit("w2s", 4, iters=s.iters, lrs="paper", real_cfg_x=COLLAPSE_CFG_X)]
    return Plan(table1, alpha, curves, t2v, Unit("euler", s.reference_steps), collapse)


def settings_for(quick: bool, *, iters: int | None = None, clips: int | None = None, seeds: int | None = None,
                 num_clips: int | None = None, distill_seeds: int | None = None,
                 clip_block: int | None = None) -> Settings:
    """The --quick or full preset with the command line's overrides (a new --iters moves the curve too;
    --clips below the preset's block size makes the block all the clips)."""
    base = QUICK if quick else FULL
    upd = {k: v for k, v in dict(clips=clips, seeds=seeds, num_clips=num_clips, distill_seeds=distill_seeds,
                                 clip_block=clip_block).items() if v is not None}
    if clips is not None and clip_block is None and (clips < base.clip_block or clips % base.clip_block):
        upd["clip_block"] = clips
    if iters is not None and iters != base.iters:
        upd.update(iters=iters, curve_iters=curve_points(iters))
    return replace(base, **upd)
