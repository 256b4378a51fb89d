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


@dataclass
class _Row:
    number: int
    status: str = "PENDING"
    epoch: int = 0
    objective: float = math.nan
    best: float = math.nan
    params: dict[str, Any] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)


class TrialTable(Callback):
    """Tune callback: the live table of trials (trial, status, epoch, objective, best so far,
    a few key parameters) and one line per finished trial."""

    def __init__(
        self,
        metric: str,
        mode: str,
        max_epochs: int,
        searched: list[str],
        stream: TextIO | None = None,
    ) -> None:
        self.metric, self.mode, self.max_epochs = metric, mode, max_epochs
        self.params = [p for p in KEY_PARAMS if p in searched][:4] or searched[:4]
        self._stream = stream
        self.rows: dict[str, _Row] = {}
        self._drawn = 0

    # Tune pickles its callbacks with the experiment (for --resume): the stream is the
    # console of whichever process runs the experiment.
    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_stream": None, "_drawn": 0}

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
        row.objective = float(result.get(self.metric.removeprefix("best_"), math.nan))
        row.best = float(result.get(self.metric, math.nan))
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

    def _best(self) -> tuple[float, int | None]:
        sign = 1.0 if self.mode == "min" else -1.0
        scored = [(r.best, r.number) for r in self.rows.values() if math.isfinite(r.best)]
        if not scored:
            return math.nan, None
        return min(scored, key=lambda s: (sign * s[0], s[1]))

    def _line(self, row: _Row, event: str) -> str:
        best, which = self._best()
        seconds = time.monotonic() - row.started
        head = f"trial {row.number:>2} {event:<9} epoch {row.epoch}/{self.max_epochs}"
        if event == "started":
            params = " ".join(f"{_SHORT.get(k, k)}={_fmt(v)}" for k, v in row.params.items())
            return f"{head}  {params}"
        figures = f"{self.metric.removeprefix('best_')} {_fmt(row.objective)} (trial best {_fmt(row.best)})"
        overall = f"best so far {_fmt(best)} (trial {which})" if which else ""
        return f"{head}  {figures}  {overall}  {seconds:.0f} s"

    def table(self) -> str:
        names = ["trial", "status", "epoch", "objective", "best"] + [
            _SHORT.get(p, p) for p in self.params
        ]
        body = [
            [
                str(r.number),
                r.status,
                f"{r.epoch}/{self.max_epochs}",
                _fmt(r.objective),
                _fmt(r.best),
            ]
            + [_fmt(r.params.get(p)) for p in self.params]
            for r in sorted(self.rows.values(), key=lambda r: r.number)
        ]
        widths = [max(len(x) for x in col) for col in zip(names, *body, strict=True)]
        lines = [
            "  ".join(x.rjust(w) for x, w in zip(line, widths, strict=True))
            for line in [names, *body]
        ]
        best, which = self._best()
        if which is not None:
            lines.append(
                f"best so far: {self.metric.removeprefix('best_')} {_fmt(best)} (trial {which})"
            )
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
