"""What a person sees while a job runs: one live trial table, a line per finished trial, and
nothing else unless asked for (``-v``).

On a terminal the table is redrawn in place; in a log (``ray job submit``, CI, a file) each
report is one line instead. Workers' Python and TensorFlow logs go to their log files under the
experiment (``ray_jobs.train_adapter``), Ray's own to its session logs; a failed trial's error
is printed in full.
"""

from __future__ import annotations

import logging
import math
import os
import re
import sys
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, TextIO

from ray.tune import Callback

from monolith.tuning import Objective

# A few hyperparameters people scan the table for, when the search space varies them.
KEY_PARAMS = (
    "learning_rate",
    "batch_size",
    "latent_dim",
    "lstm_units",
    "contrastive_temperature",
    "augmentation_type",
)
_SHORT = {
    "learning_rate": "lr",
    "batch_size": "batch",
    "latent_dim": "latent",
    "lstm_units": "lstm",
    "contrastive_temperature": "tau",
    "augmentation_type": "aug",
}
_TAG = re.compile(r"^(\d+)_")


def quiet(verbose: bool) -> None:
    """Driver-side logging: our lines only, unless ``-v`` asks for everyone's."""
    level = logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(message)s", force=True)
    for name in ("ray", "ray.tune", "ray.train", "optuna", "botocore", "urllib3", "filelock"):
        logging.getLogger(name).setLevel(level)
    if not verbose:
        # Tune's legacy reporter honours verbose=0 (the new one prints its header anyway);
        # the trial table replaces both.
        os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)


def say(text: str = "", stream: TextIO | None = None) -> None:
    print(text, file=stream or sys.stdout, flush=True)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if not math.isfinite(value):
            return "-"
        return f"{value:.4g}" if abs(value) < 1e4 else f"{value:.3e}"
    return str(value)


def short_name(metric: str) -> str:
    """A column-sized name: ``val_probe_mean_lift`` -> ``probe_mean_lift``."""
    return metric.removeprefix("best_").removeprefix("val_")


@dataclass
class _Row:
    number: int
    status: str = "PENDING"
    epoch: int = 0
    # Per objective metric: the last epoch's value and the trial's best so far.
    last: dict[str, float] = field(default_factory=dict)
    best: dict[str, float] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)


class TrialTable(Callback):
    """Tune callback: the live table of trials (trial, status, epoch, every objective's last
    value and best so far, a few key parameters) and one line per finished trial."""

    def __init__(
        self,
        objectives: list[Objective],
        max_epochs: int,
        searched: list[str],
        stream: TextIO | None = None,
    ) -> None:
        self.objectives, self.max_epochs = list(objectives), max_epochs
        self.params = [p for p in KEY_PARAMS if p in searched][:4] or searched[:4]
        self._stream = stream
        self.rows: dict[str, _Row] = {}
        self._drawn = 0

    # Tune pickles its callbacks with the experiment (for --resume): the stream is the
    # console of whichever process runs the experiment.
    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_stream": None, "_drawn": 0}

    def __setstate__(self, state: dict[str, Any]) -> None:
        # An experiment started before several objectives existed pickled metric and mode.
        if "objectives" not in state:
            metric = str(state.pop("metric", "best_val_ref_ntxent")).removeprefix("best_")
            state["objectives"] = [Objective(metric, state.pop("mode", "min"))]
            state["rows"] = {}
        self.__dict__.update(state)

    @property
    def multi(self) -> bool:
        return len(self.objectives) > 1

    @property
    def stream(self) -> TextIO:
        return self._stream or sys.stdout

    @property
    def live(self) -> bool:
        return self.stream.isatty()

    # -- Tune's hooks ---------------------------------------------------------------------
    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        row = self._row(trial)
        row.status = "RUNNING"
        self._show(None if self.live else self._line(row, "started"))

    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
    ) -> None:
        row = self._row(trial)
        row.status = "RUNNING"
        row.epoch = int(result.get("epoch", row.epoch))
        for o in self.objectives:
            row.last[o.metric] = _float(result.get(o.metric))
            row.best[o.metric] = _float(result.get(o.reported))
        self._show(None if self.live else self._line(row, "epoch"))

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        row = self._row(trial)
        row.status = "DONE"
        how = "completed" if row.epoch >= self.max_epochs else "stopped"
        self._show(self._line(row, how))

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        row = self._row(trial)
        row.status = "ERROR"
        self._show(self._line(row, "failed") + "\n" + _error_text(trial))

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        if self.live:
            self._clear()
            self._write(self.table())

    # -- drawing --------------------------------------------------------------------------
    def _row(self, trial: Any) -> _Row:
        row = self.rows.get(trial.trial_id)
        if row is None:
            match = _TAG.match(str(getattr(trial, "experiment_tag", "")))
            number = int(match.group(1)) if match else len(self.rows) + 1
            config = getattr(trial, "config", {}) or {}
            row = self.rows[trial.trial_id] = _Row(
                number, params={p: config.get(p) for p in self.params}
            )
        return row

    def _best(self, objective: Objective) -> tuple[float, int | None]:
        """The best value of ``objective`` over all trials so far, and whose it is."""
        sign = 1.0 if objective.mode == "min" else -1.0
        scored = [
            (r.best.get(objective.metric, math.nan), r.number)
            for r in self.rows.values()
            if math.isfinite(r.best.get(objective.metric, math.nan))
        ]
        if not scored:
            return math.nan, None
        return min(scored, key=lambda s: (sign * s[0], s[1]))

    def _line(self, row: _Row, event: str) -> str:
        seconds = time.monotonic() - row.started
        head = f"trial {row.number:>2} {event:<9} epoch {row.epoch}/{self.max_epochs}"
        if event == "started":
            params = " ".join(f"{_SHORT.get(k, k)}={_fmt(v)}" for k, v in row.params.items())
            return f"{head}  {params}"
        figures = "; ".join(
            f"{o.metric} {_fmt(row.last.get(o.metric, math.nan))} "
            f"(trial best {_fmt(row.best.get(o.metric, math.nan))})"
            for o in self.objectives
        )
        overall = ""
        if not self.multi:  # with several objectives "best" is a front: the final table
            best, which = self._best(self.objectives[0])
            overall = f"best so far {_fmt(best)} (trial {which})" if which else ""
        return f"{head}  {figures}  {overall}  {seconds:.0f} s"

    def table(self) -> str:
        if self.multi:
            figures = [f"best {short_name(o.metric)}" for o in self.objectives]
        else:
            figures = ["objective", "best"]
        names = ["trial", "status", "epoch", *figures] + [_SHORT.get(p, p) for p in self.params]

        def values(r: _Row) -> list[str]:
            if self.multi:
                return [_fmt(r.best.get(o.metric, math.nan)) for o in self.objectives]
            metric = self.objectives[0].metric
            return [_fmt(r.last.get(metric, math.nan)), _fmt(r.best.get(metric, math.nan))]

        body = [
            [str(r.number), r.status, f"{r.epoch}/{self.max_epochs}", *values(r)]
            + [_fmt(r.params.get(p)) for p in self.params]
            for r in sorted(self.rows.values(), key=lambda r: r.number)
        ]
        widths = [max(len(x) for x in col) for col in zip(names, *body, strict=True)]
        lines = [
            "  ".join(x.rjust(w) for x, w in zip(line, widths, strict=True))
            for line in [names, *body]
        ]
        bests = []
        for o in self.objectives:
            best, which = self._best(o)
            if which is not None:
                bests.append(f"{o.metric} {_fmt(best)} (trial {which})")
        if bests:
            lines.append("best so far: " + "; ".join(bests))
        return "\n".join(lines)

    def _show(self, line: str | None) -> None:
        if not self.live:
            if line:
                self._write(line)
            return
        self._clear()
        if line:
            self._write(line)
        table = self.table()
        self._write(table)
        self._drawn = table.count("\n") + 1

    def _clear(self) -> None:
        if self.live and self._drawn:
            self.stream.write(f"\x1b[{self._drawn}F\x1b[J")
            self._drawn = 0

    def _write(self, text: str) -> None:
        self.stream.write(text + "\n")
        self.stream.flush()


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _error_text(trial: Any) -> str:
    """A failed trial's error, in full (Tune keeps it in the trial folder)."""
    try:
        error = trial.get_error()
    except Exception:  # the error file could not be read: say where it is
        error = None
    if error is not None:
        return str(error).rstrip()
    path = getattr(trial, "error_file", None)
    return f"(error details in {path})" if path else "(no error details recorded)"
