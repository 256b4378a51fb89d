"""The run's sections: ``data`` (where the bars come from and how they become windows),
``model`` (the architecture), ``train`` (the contrastive loop) and ``eval`` (the fixed
reference settings and probes every trial is scored with)."""

from __future__ import annotations

from dataclasses import dataclass, field

from monolith.calendar_names import check_calendar
from monolith.config.checks import check_choice, check_float, check_horizons, check_int, fail
from monolith.config.objectives import (
    DEFAULT_PROBES,
    FIXED_OBJECTIVES,
    OBJECTIVES,
    PROBE_NAME,
    PROBE_NAMES_HELP,
    PROBE_OBJECTIVE_SUFFIXES,
    objective_probe,
    probe_kind,
)
from monolith.errors import ConfigError

AUGMENTATIONS = ("jitter", "scaling", "time_masking")
SCALERS = ("standard", "robust", "minmax")
ADJUSTMENTS = ("auto", "none")


def _check_augmentation(where: str, key: str, value: str) -> None:
    """One augmentation name, or several joined with "+" (composed in order)."""
    for part in str(value).split("+"):
        if part not in AUGMENTATIONS:
            raise fail(
                where,
                key,
                value,
                f"allowed values {list(AUGMENTATIONS)} or several joined with '+'",
            )


@dataclass
class SyntheticConfig:
    """The seeded multi-symbol generator (the embedded default dataset)."""

    symbols: int = 4
    rows_per_symbol: int = 3000
    seed: int = 7
    embedding_dim: int = 0  # 0 = no llm_embedding column
    mcp_features: int = 0  # 0 = no mcp_feature_* columns
    interval: str = "1h"

    def validate(self, where: str = "data.synthetic") -> None:
        check_int(where, "symbols", self.symbols, 1, 1000)
        check_int(where, "rows_per_symbol", self.rows_per_symbol, 100)
        check_int(where, "seed", self.seed, 0)
        check_int(where, "embedding_dim", self.embedding_dim, 0, 4096)
        check_int(where, "mcp_features", self.mcp_features, 0, 1000)


@dataclass
class DataConfig:
    """Where the data comes from and how it becomes windows."""

    # "synthetic"; a CSV/Parquet file, folder or glob, local or s3://bucket/prefix (hive
    # partitions allowed); or a prepared dataset (folder or s3:// prefix).
    source: str = "synthetic"
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    sequence_length: int = 16  # L; 1 reproduces the original row mode
    label_horizon: int = 4  # H bars ahead for the `direction` probe target
    # Forward probe targets computed at preparation, per horizon H in bars: the sign of the
    # return from the next bar's open to the close H bars after t (probe ``direction_h<H>``)
    # and the realised volatility of bars t+1..t+H (``fwd_vol_h<H>``). Each uses bars after
    # t only; the split purge covers the longest horizon, so no train target reaches val.
    direction_horizons: list[int] = field(default_factory=lambda: [1, 24])
    volatility_horizons: list[int] = field(default_factory=lambda: [24])
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    # Windows never span a gap in the bar series longer than this many missing bars. A gap is
    # a bar missing while the symbol's market is open (monolith.data.calendars): nights,
    # weekends and holidays of a market that closes are not gaps.
    gap_tolerance_bars: int = 0
    # When each symbol's market trades: "auto" (decided per symbol from its bars), "24/7",
    # "fx", "weekdays" or an exchange calendar code (XNYS, XLON, XEUR, CMES, ...).
    calendar: str = "auto"
    calendars: dict[str, str] = field(default_factory=dict)  # per-symbol overrides
    # "auto": OHLC scaled by adjusted close / close where the file has an adjusted close
    # (volume inversely); "none": raw prices as published.
    adjust: str = "auto"
    scaler: str = "standard"
    hmm_states: int = 3
    hmm_seed: int = 0
    # The regime HMM is fitted on at most this many train rows (all of them below it; above
    # it, each symbol's proportional share in evenly spaced 1,000-bar chunks); None = all.
    hmm_fit_max_rows: int | None = 100_000
    # A bar whose high/low range exceeds this multiple of the symbol's median range is a
    # bad tick: it is dropped and counted in the cleaning report.
    bad_tick_range_multiple: float = 50.0
    atr_sl_multiple: float = 1.5
    atr_tp_multiple: float = 3.0

    def validate(self, where: str = "data") -> None:
        if not isinstance(self.source, str) or not self.source:
            raise fail(where, "source", self.source, "'synthetic', a path/glob or s3:// URI")
        if self.source != "synthetic":
            from monolith.uri import parse_uri

            parse_uri(self.source, f"{where}.source")
        self.synthetic.validate(f"{where}.synthetic")
        check_int(where, "sequence_length", self.sequence_length, 1, 4096)
        check_int(where, "label_horizon", self.label_horizon, 1, 1000)
        for key in ("direction_horizons", "volatility_horizons"):
            check_horizons(where, key, getattr(self, key))
        check_float(where, "val_fraction", self.val_fraction, 0.0, 0.5, lo_open=True)
        check_float(where, "test_fraction", self.test_fraction, 0.0, 0.5, lo_open=True)
        if self.val_fraction + self.test_fraction >= 0.8:
            raise fail(
                where,
                "val_fraction + test_fraction",
                self.val_fraction + self.test_fraction,
                "must be < 0.8 so that training keeps most rows",
            )
        check_int(where, "gap_tolerance_bars", self.gap_tolerance_bars, 0, 10_000)
        check_calendar(f"{where}.calendar", self.calendar)
        if not isinstance(self.calendars, dict):
            raise fail(where, "calendars", self.calendars, "a mapping {SYMBOL: CALENDAR}")
        for symbol, code in self.calendars.items():
            check_calendar(f"{where}.calendars[{symbol!r}]", code)
        check_choice(where, "adjust", self.adjust, ADJUSTMENTS)
        check_choice(where, "scaler", self.scaler, SCALERS)
        check_int(where, "hmm_states", self.hmm_states, 2, 10)
        check_int(where, "hmm_seed", self.hmm_seed, 0)
        if self.hmm_fit_max_rows is not None:
            check_int(where, "hmm_fit_max_rows", self.hmm_fit_max_rows, 1000)
        check_float(where, "bad_tick_range_multiple", self.bad_tick_range_multiple, 2.0, 1e6)
        check_float(where, "atr_sl_multiple", self.atr_sl_multiple, 0.0, 100.0, lo_open=True)
        check_float(where, "atr_tp_multiple", self.atr_tp_multiple, 0.0, 100.0, lo_open=True)

    def calendar_of(self, symbol: str) -> tuple[str, str]:
        """(calendar, the setting that chose it) for one symbol; synthetic bars never close."""
        if self.source == "synthetic":
            return "24/7", "synthetic data"
        if symbol in self.calendars:
            return self.calendars[symbol], "data.calendars"
        return self.calendar, "data.calendar"

    @property
    def target_horizons(self) -> dict[str, int]:
        """Every prepared forward target (a probe name) and its horizon in bars."""
        out = {"direction": self.label_horizon}
        out |= {f"direction_h{h}": h for h in self.direction_horizons}
        out |= {f"fwd_vol_h{h}": h for h in self.volatility_horizons}
        return out

    @property
    def probe_targets(self) -> tuple[str, ...]:
        """The label probes a dataset prepared from this config can run."""
        return ("regime", *self.target_horizons)

    @property
    def purge_bars(self) -> int:
        """Bars left out between consecutive splits: a window plus the longest target horizon
        (so the target of a split's last window never reaches the next split's bars)."""
        return self.sequence_length + max(self.target_horizons.values())


@dataclass
class ModelConfig:
    """Architecture of the MonolithModel."""

    dense_units: int = 32
    lstm_units: int = 64
    transformer_blocks: int = 3
    transformer_heads: int = 8
    transformer_ff_dim_factor: int = 2
    use_batch_norm: bool = True
    dropout_rate: float = 0.10263639892545441
    l2_reg: float = 7.224308701685084e-05
    latent_dim: int = 80
    projection_dim: int = 64
    instrument_embedding_dim: int = 8

    def validate(self, where: str = "model") -> None:
        check_int(where, "dense_units", self.dense_units, 1, 4096)
        check_int(where, "lstm_units", self.lstm_units, 1, 4096)
        check_int(where, "transformer_blocks", self.transformer_blocks, 0, 32)
        check_int(where, "transformer_heads", self.transformer_heads, 1, 64)
        check_int(where, "transformer_ff_dim_factor", self.transformer_ff_dim_factor, 1, 16)
        if not isinstance(self.use_batch_norm, bool):
            raise fail(where, "use_batch_norm", self.use_batch_norm, "expected true or false")
        check_float(where, "dropout_rate", self.dropout_rate, 0.0, 0.9)
        check_float(where, "l2_reg", self.l2_reg, 0.0, 1.0)
        check_int(where, "latent_dim", self.latent_dim, 1, 4096)
        check_int(where, "projection_dim", self.projection_dim, 1, 4096)
        check_int(where, "instrument_embedding_dim", self.instrument_embedding_dim, 1, 512)
        if self.transformer_blocks > 0 and self.lstm_units % self.transformer_heads != 0:
            raise ConfigError(
                f"{where}.transformer_heads = {self.transformer_heads} does not divide the "
                f"attention width {where}.lstm_units = {self.lstm_units}: choose heads that "
                f"divide it (e.g. {[h for h in (1, 2, 4, 8, 16) if self.lstm_units % h == 0]})"
            )


@dataclass
class TrainConfig:
    """The contrastive training loop.

    ``batch_size`` is the GLOBAL batch: the number of windows per optimizer step summed over
    all replicas (workers x local devices). Each replica gets ``batch_size // replicas``; the
    NT-Xent negatives are gathered over the whole global batch.
    """

    learning_rate: float = 0.0015562385502385044
    batch_size: int = 64
    epochs: int = 10
    contrastive_temperature: float = 0.055566784132156696
    # One augmentation name or several joined with "+" (composed in order).
    augmentation_type: str = "scaling"
    reconstruction_weight: float = 0.1
    early_stopping_patience: int = 3
    seed: int = 42
    # Cap on optimizer steps per epoch (None = one pass over the training windows).
    max_steps_per_epoch: int | None = None

    def validate(self, where: str = "train") -> None:
        check_float(where, "learning_rate", self.learning_rate, 0.0, 1.0, lo_open=True)
        check_int(where, "batch_size", self.batch_size, 2, 65536)
        check_int(where, "epochs", self.epochs, 1, 100_000)
        check_float(
            where, "contrastive_temperature", self.contrastive_temperature, 0.0, 10.0, lo_open=True
        )
        _check_augmentation(where, "augmentation_type", self.augmentation_type)
        check_float(where, "reconstruction_weight", self.reconstruction_weight, 0.0, 100.0)
        check_int(where, "early_stopping_patience", self.early_stopping_patience, 0, 10_000)
        check_int(where, "seed", self.seed, 0)
        if self.max_steps_per_epoch is not None:
            check_int(where, "max_steps_per_epoch", self.max_steps_per_epoch, 1)


@dataclass
class EvalConfig:
    """Comparable evaluation: fixed reference settings shared by every trial."""

    reference_temperature: float = 0.1
    reference_augmentation: str = "jitter+time_masking"
    reference_batch_size: int = 256
    reference_seed: int = 1234
    objective: str = "val_ref_ntxent"
    # Windows of each evaluation split (val every epoch, test at the end): a fixed sample,
    # evenly spaced over the split's windows of every symbol, the same for every trial and
    # worker; None = every window (evaluation then grows with the data).
    max_windows: int | None = 2048
    # Windows the linear probes are fitted on (train) and scored on (from the val sample),
    # drawn evenly; None = all.
    probe_max_windows: int | None = 4000
    # The probes reported every epoch (names: PROBE_NAMES_HELP); each label probe needs its
    # target prepared (data.label_horizon, data.direction_horizons, data.volatility_horizons).
    # val_probe_mean_lift is the mean of these probes' lifts.
    probes: list[str] = field(default_factory=lambda: list(DEFAULT_PROBES))

    def validate(self, where: str = "eval") -> None:
        check_float(
            where, "reference_temperature", self.reference_temperature, 0.0, 10.0, lo_open=True
        )
        _check_augmentation(where, "reference_augmentation", self.reference_augmentation)
        check_int(where, "reference_batch_size", self.reference_batch_size, 2, 65536)
        check_int(where, "reference_seed", self.reference_seed, 0)
        if self.max_windows is not None:
            check_int(where, "max_windows", self.max_windows, 10)
        if self.probe_max_windows is not None:
            check_int(where, "probe_max_windows", self.probe_max_windows, 10)
        if not isinstance(self.probes, (list, tuple)) or not self.probes:
            raise fail(
                where, "probes", self.probes, f"a non-empty list of probes; {PROBE_NAMES_HELP}"
            )
        for name in self.probes:
            if not isinstance(name, str) or not PROBE_NAME.match(name):
                raise fail(
                    where, "probes", list(self.probes), f"{name!r} is unknown; {PROBE_NAMES_HELP}"
                )
        repeated = sorted({p for p in self.probes if list(self.probes).count(p) > 1})
        if repeated:
            raise fail(where, "probes", list(self.probes), f"{repeated} listed twice")
        if self.objective not in self.objectives():
            probe = objective_probe(self.objective)
            why = f"probe {probe!r} is not configured" if probe is not None else "unknown metric"
            raise fail(
                where,
                "objective",
                self.objective,
                f"{why}; allowed values {list(FIXED_OBJECTIVES)} or "
                f"val_probe_<probe>[{'|'.join(s for s in PROBE_OBJECTIVE_SUFFIXES if s)}] for a "
                f"probe in {where}.probes = {list(self.probes)}",
            )

    def objectives(self) -> list[str]:
        """The objectives these probes allow: the reference loss, the mean lift, and each
        configured probe's score and lifts."""
        out = list(FIXED_OBJECTIVES)
        for probe in self.probes:
            out += [f"val_probe_{probe}{suffix}" for suffix in PROBE_OBJECTIVE_SUFFIXES]
        return out

    def check_targets(self, data: DataConfig, where: str = "eval") -> None:
        """Every configured label probe is prepared by ``data`` (its target column exists)."""
        available = data.probe_targets
        for name in self.probes:
            if probe_kind(name) != "retrieval" and name not in available:
                kind = (
                    "direction_horizons"
                    if name.startswith("direction_h")
                    else "volatility_horizons"
                )
                horizon = name.rsplit("_h", 1)[-1]
                raise fail(
                    where,
                    "probes",
                    list(self.probes),
                    f"{name!r} needs {horizon} in data.{kind} = {getattr(data, kind)}; "
                    f"probes these data settings prepare: {[*available, 'knn_views']}",
                )

    @property
    def mode(self) -> str:
        return OBJECTIVES[self.objective]
