"""Markets that close: each symbol's trading calendar puts its bars in trading order, so nights,
weekends and holidays are not gaps while a real outage still is; adjusted prices; a dataset
that cannot form a batch is refused; the encoder cuts windows as training did."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from market_bars import (
    calendar,
    daily_sessions,
    futures_with_break,
    fx_hours,
    intraday,
    ohlcv,
    write,
)

from monolith.config import DataConfig, config_from_dict
from monolith.data.calendars import trading_gaps
from monolith.data.ingest import read_market_data
from monolith.data.prepare import prepare_dataset
from monolith.data.windows import METADATA_FILE, load_prepared_frame, valid_window_ends
from monolith.errors import ConfigError, DataError

REPO = Path(__file__).resolve().parents[2]
MONOLITH = str(Path(sys.executable).with_name("monolith"))
EQUITY_DAILY = REPO.parent / "shared" / "data" / "equity-daily" / "nvda-1999-2014.txt"
L = 8


def _ns(times: pd.DatetimeIndex) -> np.ndarray:
    return times.tz_convert("UTC").tz_localize(None).as_unit("ns").asi8


# --------------------------------------------------------------------------------------------
# One symbol's bars in trading order


def test_daily_equity_bars_find_their_exchange_and_have_no_gaps() -> None:
    days = daily_sessions("XNYS", "2022-01-01", "2023-12-31")
    info, missing = trading_gaps(_ns(days), "auto", "data.calendar")
    assert (info.calendar, info.chosen_by, info.bar) == ("XNYS", "auto", "1d")
    assert info.match == pytest.approx(1.0) and "XNYS" in info.why
    assert info.gaps == 0 and not missing.any()
    # every weekend and mid-week holiday is a closure spanned: 2 years ~ 104 weekends + ~5
    assert 100 <= info.closures <= 115
    # the same bars as a 24/7 market: each closure is a gap
    always = trading_gaps(_ns(days), "24/7", "data.calendar")[0]
    assert always.gaps == info.closures
    # a session missing from the file (not a holiday) is a gap of one bar
    _, holed = trading_gaps(_ns(days.delete(100)), "XNYS", "data.calendar")
    assert holed.tolist().count(1) == 1 and holed.sum() == 1


def test_hourly_equity_spans_nights_weekends_dst_and_half_days() -> None:
    bars = intraday("XNYS", "2023-01-01", "2023-12-31")  # DST 12 Mar / 5 Nov; half days
    assert {"2023-07-03", "2023-11-24"} <= set(bars.tz_convert("America/New_York").strftime("%F"))
    info, missing = trading_gaps(_ns(bars), "auto", "data.calendar")
    assert (info.calendar, info.bar, info.timezone) == ("XNYS", "1h", "America/New_York")
    assert info.gaps == 0 and info.learned_breaks == [] and info.bars_outside_sessions == 0
    assert info.closures == len(daily_sessions("XNYS", "2023-01-01", "2023-12-31")) - 1
    # a bar lost mid-session is a gap, of exactly that one bar
    local = bars.tz_convert("America/New_York")
    lost = np.flatnonzero(local.strftime("%F %H:%M") == "2023-03-14 11:30")
    _, holed = trading_gaps(_ns(bars.delete(lost)), "XNYS", "data.calendars")
    assert holed.sum() == 1


def test_futures_maintenance_break_is_learned_not_a_gap() -> None:
    bars = futures_with_break("2023-05-01", "2023-07-31")  # Memorial Day, Juneteenth, 4 July
    info, missing = trading_gaps(_ns(bars), "auto", "data.calendar")
    assert info.calendar == "CMES", info.why
    # exchange_calendars 4.13.3 closes CME sessions at 16:00 Chicago (the hour is the
    # calendar's own); older releases ran 17:00 to 17:00 and the empty hour is learned
    close = calendar("CMES", "2023-05-01", "2023-05-31").schedule["close"].iloc[0]
    listed = close.tz_convert("America/Chicago").hour == 16
    assert info.learned_breaks == ([] if listed else ["16:00-17:00 America/Chicago"])
    assert info.gaps == 0 and not missing.any()
    # the recorded break is reused on new bars (how the encoder cuts them)
    again = trading_gaps(
        _ns(bars[:200]), "CMES", "bundle", interval=info.interval_ns,
        closed_slots=info.closed_slots,
    )[0]  # fmt: skip
    assert again.gaps == 0


def test_a_daily_break_the_calendar_does_not_list_is_learned_not_a_gap() -> None:
    bars = intraday("XNYS", "2023-01-01", "2023-06-30")  # bars at :30 past each hour
    local = bars.tz_convert("America/New_York")
    lunch = bars[~((local.hour == 12) & (local.minute == 30))]  # no bar 12:30 on any day
    info, missing = trading_gaps(_ns(lunch), "auto", "data.calendar")
    assert info.calendar == "XNYS", info.why
    assert info.learned_breaks == ["12:00-13:00 America/New_York"] and info.closed_slots == [12]
    assert info.gaps == 0 and not missing.any()
    # one day's 12:30 bar back is inside the learned break, not outside the sessions
    info_one, _ = trading_gaps(_ns(lunch.append(bars[local.hour == 12][:1]).sort_values()),
                               "XNYS", "data.calendars")  # fmt: skip
    assert info_one.learned_breaks == info.learned_breaks and info_one.gaps == 0


def test_fx_trades_sunday_evening_to_friday_evening() -> None:
    bars = fx_hours("2023-01-01", "2023-04-30")  # across the US DST change
    info, missing = trading_gaps(_ns(bars), "auto", "data.calendar")
    assert (info.calendar, info.timezone) == ("fx", "America/New_York")
    assert info.gaps == 0 and info.closures == 16  # one closure per weekend, none else
    after = bars[1:][np.diff(_ns(bars)) > 3600 * 10**9].tz_convert("America/New_York")
    assert set(zip(after.day_of_week, after.hour, strict=True)) == {(6, 17)}  # Sunday 17:00


def test_a_24_7_outage_still_breaks_the_series() -> None:
    hours = pd.date_range("2023-01-01", "2023-02-01", freq="h", tz="UTC", inclusive="left")
    outage = hours[(hours >= "2023-01-14 06:00") & (hours < "2023-01-14 18:00")]
    bars = hours.difference(outage)
    info, missing = trading_gaps(_ns(bars), "auto", "data.calendar")
    assert info.calendar == "24/7" and "Saturdays" in info.why
    assert info.gaps == 1 and missing.max() == 12 and info.closures == 0


def test_unknown_market_uses_weekdays_with_holidays_and_learned_hours() -> None:
    days = pd.bdate_range("2021-01-04", "2022-12-30", tz="UTC")
    holidays = days[[7, 60, 61, 200, 333]]  # single and two-day closures: holidays
    daily = days.difference(holidays)
    info, missing = trading_gaps(_ns(daily), "auto", "data.calendar")
    assert info.calendar == "weekdays" and "no calendar matches" in info.why
    assert info.gaps == 0
    outage = daily.difference(daily[400:405])  # a week without bars is an outage
    assert trading_gaps(_ns(outage), "weekdays", "data.calendar")[0].gaps == 1
    # intraday: 03:00-11:00 UTC on weekdays; the hours are learned from the bars
    hourly = pd.DatetimeIndex([d + pd.Timedelta(hours=h) for d in days[:120] for h in range(3, 11)])
    info, missing = trading_gaps(_ns(hourly), "weekdays", "data.calendar")
    assert info.gaps == 0 and info.learned_breaks == ["00:00-03:00 UTC", "11:00-24:00 UTC"]
    assert trading_gaps(_ns(hourly.delete(50)), "weekdays", "data.calendar")[0].gaps == 1


def test_calendar_names_are_checked_with_a_suggestion() -> None:
    DataConfig(
        source="bars.csv", calendar="XLON", calendars={"ES": "CMES", "BTC": "24/7"}
    ).validate()
    with pytest.raises(ConfigError, match=r"data.calendar = 'XNYZ' is not a calendar.*XNYS"):
        DataConfig(source="bars.csv", calendar="XNYZ").validate()
    with pytest.raises(ConfigError, match=r"data.calendars\['ES'\] = 'CMEX'"):
        DataConfig(source="bars.csv", calendars={"ES": "CMEX"}).validate()
    with pytest.raises(ConfigError, match=r"data.adjust"):
        DataConfig(source="bars.csv", adjust="split").validate()


# --------------------------------------------------------------------------------------------
# Adjusted prices


def _split_file(tmp_path: Path) -> tuple[Path, pd.DataFrame, int]:
    """Daily bars with a 2-for-1 split at row 150: raw prices halve there; Adj Close is the
    close with the split taken out (and a small dividend factor before row 60)."""
    days = daily_sessions("XNYS", "2022-01-01", "2022-12-31")
    bars = ohlcv(days, seed=3)
    split = 150
    for column in ("open", "high", "low", "close"):
        bars.loc[: split - 1, column] *= 2.0
    bars.loc[: split - 1, "volume"] /= 2.0
    factor = np.where(np.arange(len(bars)) < split, 0.5, 1.0)
    factor = factor * np.where(np.arange(len(bars)) < 60, 0.99, 1.0)
    frame = pd.DataFrame(
        {"Date": days.strftime("%Y-%m-%d"), "Open": bars.open, "High": bars.high,
         "Low": bars.low, "Close": bars.close, "Adj Close": bars.close * factor,
         "Volume": bars.volume.round()}
    )  # fmt: skip
    path = tmp_path / "SPLT.csv"
    frame.to_csv(path, index=False)
    return path, frame, split


def test_adjusted_close_scales_ohlcv_by_its_ratio(tmp_path: Path) -> None:
    path, raw, split = _split_file(tmp_path)
    frame, report = read_market_data(path)
    ratio = (raw["Adj Close"] / raw["Close"]).to_numpy()
    for column in ("Open", "High", "Low", "Close"):
        np.testing.assert_allclose(frame[column.lower()], raw[column] * ratio, rtol=1e-12)
    np.testing.assert_allclose(frame["volume"], raw["Volume"] / ratio, rtol=1e-12)
    assert report["symbols"]["SPLT"]["price_adjustment"] == "OHLCV by 'Adj Close'"
    assert "split_sized_jumps" not in report["symbols"]["SPLT"]  # the split is taken out
    assert any("prices adjusted by 'Adj Close'" in a for a in report["actions"])

    kept, report = read_market_data(path, adjust="none")
    np.testing.assert_allclose(kept["close"], raw["Close"])
    jumps = report["symbols"]["SPLT"]["split_sized_jumps"]
    assert [j["looks_like"] for j in jumps] == ["2-for-1 split"]
    assert jumps[0]["timestamp"].startswith(str(raw["Date"][split]))
    assert any("the size of a split" in a and "kept as published" in a for a in report["actions"])


# --------------------------------------------------------------------------------------------
# A mixed dataset: prepared by each symbol's calendar, trained, embedded

TINY = {
    "data": {"sequence_length": L, "label_horizon": 2, "direction_horizons": [1, 5],
             "volatility_horizons": [5]},
    "model": {"dense_units": 16, "lstm_units": 16, "transformer_blocks": 1,
              "transformer_heads": 2, "latent_dim": 8, "projection_dim": 8},
    "train": {"batch_size": 32, "epochs": 1, "max_steps_per_epoch": 3, "seed": 1},
    "eval": {"reference_batch_size": 64, "probe_max_windows": 300, "max_windows": 400,
             "probes": ["regime", "direction", "direction_h1", "direction_h5", "fwd_vol_h5"]},
}  # fmt: skip


def _mixed_bars(folder: Path) -> dict[str, pd.DatetimeIndex]:
    hours = pd.date_range("2023-01-01", "2023-03-15", freq="h", tz="UTC", inclusive="left")
    outage = (hours >= "2023-02-04 06:00") & (hours < "2023-02-04 18:00")
    times = {
        "EQD": daily_sessions("XNYS", "2019-01-01", "2023-12-31"),
        "EQH": intraday("XNYS", "2023-01-01", "2023-12-31"),
        "FUT": futures_with_break("2023-05-01", "2023-07-31"),
        "FXH": fx_hours("2023-01-01", "2023-04-30"),
        "BTC": hours[~outage],
    }
    for i, (symbol, index) in enumerate(times.items()):
        frame = ohlcv(index, seed=20 + i)
        if symbol == "EQD":  # a daily file dated by day, as published
            frame["timestamp"] = frame["timestamp"].dt.strftime("%Y-%m-%d")
        write(frame, folder / f"{symbol}.csv", symbol)
    return times


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    root = tmp_path_factory.mktemp("calendars")
    times = _mixed_bars(root / "bars")
    cfg = config_from_dict({**TINY, "data": {**TINY["data"], "source": str(root / "bars")}})
    meta = prepare_dataset(cfg.data, root / "prepared", global_batch=cfg.train.batch_size)
    return {"root": root, "cfg": cfg, "meta": meta, "times": times}


def test_each_symbol_is_prepared_by_its_own_calendar(mixed) -> None:
    meta = mixed["meta"]
    found = {s: c["calendar"] for s, c in meta["calendars"].items()}
    assert found == {"BTC": "24/7", "EQD": "XNYS", "EQH": "XNYS", "FUT": "CMES", "FXH": "fx"}
    assert {s: c["gaps"] for s, c in meta["calendars"].items()} == {
        "BTC": 1, "EQD": 0, "EQH": 0, "FUT": 0, "FXH": 0
    }  # fmt: skip
    assert meta["cleaning"]["symbols"]["EQD"]["gaps"] == 0
    assert meta["cleaning"]["symbols"]["BTC"]["missing_bars"] == 12
    assert meta["segments"] == {"BTC": 2, "EQD": 1, "EQH": 1, "FUT": 1, "FXH": 1}
    for symbol in ("EQD", "EQH", "FUT", "FXH"):
        # one gap-free run: every train row from the window's length on ends a window
        train_rows = meta["splits"][symbol]["train"]["rows"]
        assert meta["windows_per_symbol"][symbol]["train"] == train_rows - L + 1
    assert sum(w["train"] for w in meta["windows_per_symbol"].values()) == meta["windows"]["train"]


def test_window_target_and_purge_next_to_a_weekend_are_the_bars_in_trading_order(mixed) -> None:
    frame = load_prepared_frame(mixed["root"] / "prepared")
    eqd = frame[frame["symbol"] == "EQD"].reset_index(drop=True)
    sessions = pd.DatetimeIndex(calendar("XNYS", "2019-01-01", "2023-12-31").sessions)
    sessions = sessions.tz_localize("UTC")
    position = sessions.get_indexer(pd.DatetimeIndex(eqd["timestamp"]))
    assert (position >= 0).all() and (np.diff(position) == 1).all()  # no bar invented/skipped
    # a window ending on a Monday holds the L sessions before it, in order
    ends = valid_window_ends(
        eqd["instrument_id"].to_numpy(), eqd["segment"].to_numpy(),
        eqd["split"].cat.codes.to_numpy(), ~eqd["target_direction"].isna().to_numpy(), L,
    )  # fmt: skip
    monday = next(e for e in ends if eqd["timestamp"][e].day_of_week == 0 and e >= L)
    window = pd.DatetimeIndex(eqd["timestamp"][monday - L + 1 : monday + 1])
    assert window.equals(sessions[position[monday] - L + 1 : position[monday] + 1])
    assert window[-2].day_of_week == 4  # Friday, then Monday: the weekend is no gap
    # a Friday's 1-bar forward target is Monday's open-to-close
    friday = np.flatnonzero(eqd["timestamp"].dt.day_of_week.to_numpy() == 4)
    friday = friday[friday + 1 < len(eqd)][:50]
    expected = eqd["close"][friday + 1].to_numpy() > eqd["open"][friday + 1].to_numpy()
    np.testing.assert_array_equal(eqd["target_direction_h1"][friday].to_numpy(), expected)
    # the purge between train and val: exactly purge_bars consecutive sessions
    split = eqd["split"].astype(str).to_numpy()
    last_train = np.flatnonzero(split == "train")[-1]
    first_val = np.flatnonzero(split == "val")[0]
    assert first_val - last_train - 1 == mixed["meta"]["purge_bars"]
    assert (split[last_train + 1 : first_val] == "purge").all()


@pytest.mark.slow
def test_mixed_calendars_train_and_embed_like_the_final_run(mixed) -> None:
    from monolith import Encoder
    from monolith.training import FINGERPRINT_FILE, train_on_prepared, write_final_bundle

    cfg, root = mixed["cfg"], mixed["root"]
    result = train_on_prepared(cfg, root / "prepared", train_split="train+val")
    assert len(result.rows) == 1 and all(np.isfinite(v) for v in result.rows[0].values())
    assert "test_probe_direction_h1_lift" in result.test_metrics
    bundle = root / "bundle"
    write_final_bundle(result, cfg, root / "prepared", bundle, cfg.hyperparameters())
    enc = Encoder.load(bundle)
    assert enc.metadata["calendars"]["EQH"]["calendar"] == "XNYS"
    out = enc.embed(root / "bars")
    windows = json.loads((bundle / FINGERPRINT_FILE).read_text())["windows"]
    assert {w["symbol"] for w in windows} >= {"EQD", "EQH"}
    latent = [c for c in out.columns if c.startswith("latent_")]
    index = out.set_index(["symbol", "timestamp"])
    for w in windows:
        row = index.loc[(w["symbol"], pd.Timestamp(w["end"]))]
        np.testing.assert_allclose(row[latent].to_numpy(np.float64), w["latent"], atol=2e-5)
    report = enc.last_report.to_dict()
    assert report["symbols"]["EQD"]["segments"] == 1
    assert report["bars_outside_calendar"] == {}
    # a Saturday bar of an equity is outside the calendar recorded at training: reported
    eqd = pd.read_csv(root / "bars" / "EQD.csv")
    extra = eqd.iloc[[-1]].assign(timestamp="2023-12-30")
    enc.embed(pd.concat([eqd, extra]).assign(timestamp=lambda f: pd.to_datetime(f.timestamp)))
    assert enc.last_report.to_dict()["bars_outside_calendar"] == {"EQD": 1}


# --------------------------------------------------------------------------------------------
# A dataset that cannot form a batch


def _cut_daily_config(tmp_path: Path) -> Path:
    bars = ohlcv(daily_sessions("XNYS", "2023-01-01", "2023-12-31"), seed=4)
    bars["timestamp"] = bars["timestamp"].dt.strftime("%Y-%m-%d")
    write(bars, tmp_path / "bars" / "ACME.csv")
    config = yaml.safe_load((REPO / "configs" / "local.yaml").read_text())
    config["data"] = {"source": str(tmp_path / "bars"), "calendar": "24/7"}
    config["tune"]["search_space"] = str(REPO / "configs" / "search_space.yaml")
    path = tmp_path / "cut.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_too_few_windows_are_refused_by_prepare_and_the_tune_job_before_ray(
    tmp_path: Path,
) -> None:
    config = _cut_daily_config(tmp_path)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "RAY_ADDRESS": ""}
    done = subprocess.run(
        [MONOLITH, "data", "prepare", "--config", str(config), "--output", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr[-2000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in done.stderr
    line = errors[0]
    assert "split 'train' has 0 windows" in line and "ACME" in line
    assert "gaps under calendar 24/7" in line and "set data.calendar" in line
    assert not (tmp_path / "out").exists()
    assert not any(p.name.startswith("out") for p in tmp_path.iterdir())  # no temp sibling

    job = subprocess.run(
        [sys.executable, "-m", "ray_jobs.tune", "--config", str(config), "--name", "cut",
         "--storage", str(tmp_path / "experiments")],
        capture_output=True, text=True, timeout=300, env=env, cwd=REPO,
    )  # fmt: skip
    assert job.returncode == 2, job.stderr[-2000:]
    job_errors = [x for x in job.stderr.splitlines() if x.startswith("error:")]
    assert len(job_errors) == 1 and "Traceback" not in job.stderr
    # the same line, for the smallest global batch a trial can draw (the search space's)
    assert "split 'train' has 0 windows" in job_errors[0] and "batch of 32" in job_errors[0]
    assert "ACME" in job_errors[0] and "set data.calendar" in job_errors[0]
    assert "Ray" not in job.stdout  # refused before it connected to (or started) Ray
    assert not (tmp_path / "experiments" / "cut" / "prepared").exists()


@pytest.mark.skipif(not EQUITY_DAILY.is_file(), reason="../shared/data/equity-daily not present")
def test_the_real_daily_equity_file_finds_the_nyse_calendar(tmp_path: Path) -> None:
    meta = prepare_dataset(DataConfig(source=str(EQUITY_DAILY)), tmp_path / "nvda")
    (symbol,) = meta["instruments"]
    assert symbol == "nvda-1999-2014"  # the file names the instrument, less ".txt"
    calendar = meta["calendars"][symbol]
    assert (calendar["calendar"], calendar["chosen_by"], calendar["gaps"]) == ("XNYS", "auto", 0)
    assert calendar["closures"] > 800
    assert meta["segments"][symbol] == 1
    assert meta["windows"]["train"] > 2000 and meta["windows"]["test"] > 400
    assert meta["cleaning"]["symbols"][symbol]["price_adjustment"] == "OHLCV by 'Adj Close'"
    assert json.loads((tmp_path / "nvda" / METADATA_FILE).read_text())["adjust"] == "auto"
    with pytest.raises(DataError, match=r"gaps under calendar 24/7"):
        prepare_dataset(
            DataConfig(source=str(EQUITY_DAILY), calendar="24/7"), tmp_path / "cut",
            global_batch=64,
        )  # fmt: skip
    assert not (tmp_path / "cut").exists()
