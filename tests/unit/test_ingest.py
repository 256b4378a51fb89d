"""Ingest: the real Binance files, the generic and ready-dataset layouts, and bad input."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from monolith.data.ingest import read_market_data
from monolith.errors import DataError

REAL_SYMBOLS = ("ADA/USDT", "BNB/USDT", "BTC/USDT", "ETH/USDT")
# What the four real files hold (checked by hand against the CSVs; see the README there).
REAL_COUNTS = {
    "ADA/USDT": {"rows_in": 7478, "duplicates_removed": 0, "bad_ticks": 0, "gaps": 7,
                 "missing_bars": 12, "zero_volume_bars": 2},
    "BNB/USDT": {"rows_in": 7478, "duplicates_removed": 0, "bad_ticks": 0, "gaps": 7,
                 "missing_bars": 12, "zero_volume_bars": 2},
    "BTC/USDT": {"rows_in": 36062, "duplicates_removed": 2649, "duplicates_conflicting": 2649,
                 "bad_ticks": 1, "gaps": 8, "missing_bars": 16, "zero_volume_bars": 117},
    "ETH/USDT": {"rows_in": 36062, "duplicates_removed": 2649, "duplicates_conflicting": 2648,
                 "bad_ticks": 2, "gaps": 9, "missing_bars": 17, "zero_volume_bars": 119},
}  # fmt: skip
REMOVED_KEYS = (
    "duplicates_removed",
    "impossible_bars",
    "non_positive_prices",
    "negative_volume",
    "nan_inf_rows",
    "bad_ticks",
)


def _write(path: Path, text: str) -> Path:
    path.write_text(text.strip() + "\n")
    return path


def _ohlcv_rows(n: int, start: int = 1_600_000_000, step: int = 3600) -> pd.DataFrame:
    close = 100.0 + np.arange(n, dtype=float)
    return pd.DataFrame(
        {
            "timestamp": start + step * np.arange(n),
            "open": close - 0.5,
            "high": close + 1.0,
            "low": close - 1.0,
            "close": close,
            "volume": 10.0 + np.arange(n),
        }
    )


# --------------------------------------------------------------------------------------------
# Real files


@pytest.fixture(scope="module")
def real(shared_data_dir: Path) -> tuple[pd.DataFrame, dict]:
    return read_market_data(shared_data_dir)


def test_real_files_counts(real: tuple[pd.DataFrame, dict]) -> None:
    frame, report = real
    assert sorted(report["symbols"]) == list(REAL_SYMBOLS)
    for symbol, expected in REAL_COUNTS.items():
        stats = report["symbols"][symbol]
        for key, value in expected.items():
            assert stats[key] == value, (symbol, key, stats[key])
        removed = sum(stats[k] for k in REMOVED_KEYS)
        assert stats["rows_out"] == stats["rows_in"] - removed
        assert stats["rows_out"] == int((frame["symbol"] == symbol).sum())
        assert stats["interval_seconds"] == 3600
    json.dumps(report)  # the report goes to data_processing_metadata.json as is


def test_real_files_frame_is_canonical(real: tuple[pd.DataFrame, dict]) -> None:
    frame, _ = real
    assert list(frame.columns) == ["timestamp", "symbol", "open", "high", "low", "close", "volume"]
    assert str(frame["timestamp"].dtype) == "datetime64[ns, UTC]"
    assert isinstance(frame.index, pd.RangeIndex)
    assert not frame.duplicated(["symbol", "timestamp"]).any()
    for _, part in frame.groupby("symbol"):
        assert part["timestamp"].is_monotonic_increasing
    assert frame["symbol"].is_monotonic_increasing
    assert all(frame[c].dtype == np.float64 for c in ("open", "high", "low", "close", "volume"))


def test_real_files_bad_tick_and_duplicates(real: tuple[pd.DataFrame, dict]) -> None:
    frame, report = real
    btc = frame[frame["symbol"] == "BTC/USDT"]
    # The oldest BTC bar (high 16199.91 against a close of 4308.83) is the bad tick.
    assert btc["timestamp"].iloc[0] == pd.Timestamp("2017-08-17 05:00", tz="UTC")
    assert btc["high"].max() < 70000
    # Duplicates keep the first occurrence in file order: the millisecond-precision row.
    bar = btc[btc["timestamp"] == pd.Timestamp("2020-08-01 23:00", tz="UTC")]
    assert bar["open"].item() == 11783.31
    assert bar["volume"].item() == pytest.approx(2194.598589)
    assert any("BTC/USDT: dropped 1 bad tick" in a for a in report["actions"])


def test_real_files_report_files(real: tuple[pd.DataFrame, dict], shared_data_dir: Path) -> None:
    _, report = real
    assert [f["name"] for f in report["files"]] == sorted(
        p.name for p in shared_data_dir.glob("*.csv")
    )
    for entry in report["files"]:
        data = Path(entry["path"]).read_bytes()
        assert entry["sha256"] == hashlib.sha256(data).hexdigest()
        assert entry["bytes"] == len(data)
        assert entry["layout"] == "cryptodatadownload"
    mismatches = {f["name"]: f["date_mismatches"] for f in report["files"]}
    # 91 old rows carry a 'date' 4 hours off their 'unix'; unix is used.
    assert mismatches["Binance_BTCUSDT_1h.csv"] == 91
    assert mismatches["Binance_ADAUSDT_1h.csv"] == 0


def test_real_file_as_downloaded_with_its_banner_line(
    real: tuple[pd.DataFrame, dict], shared_data_dir: Path, tmp_path: Path
) -> None:
    # Files downloaded from CryptoDataDownload start with its URL above the header (the
    # shared copies come from a repository without it): read either way, the data is the same.
    name = "Binance_BTCUSDT_1h.csv"
    downloaded = tmp_path / name
    banner = b"https://www.CryptoDataDownload.com\n"
    downloaded.write_bytes(banner + (shared_data_dir / name).read_bytes())
    frame, report = read_market_data(downloaded)
    plain_frame, plain_report = real
    pd.testing.assert_frame_equal(
        frame, plain_frame[plain_frame["symbol"] == "BTC/USDT"].reset_index(drop=True)
    )
    assert report["symbols"]["BTC/USDT"] == plain_report["symbols"]["BTC/USDT"]
    (entry,) = report["files"]
    assert entry["skipped_lines"] == 1 and entry["first_data_line"] == 3
    # Cleaning examples name lines one further down than in the file without the banner.
    tick = next(a for a in report["actions"] if "BTC/USDT: dropped 1 bad tick" in a)
    plain_tick = next(a for a in plain_report["actions"] if "BTC/USDT: dropped 1 bad tick" in a)
    line = int(plain_tick.split(f"{name} line ")[1].split(" ")[0])
    assert f"{name} line {line + 1} " in tick


def test_real_files_no_normal_bar_is_a_bad_tick(shared_data_dir: Path) -> None:
    # The flagged bars are far beyond every normal bar: a stricter threshold flags no more.
    _, strict = read_market_data(shared_data_dir, bad_tick_range_multiple=40.0)
    assert {s: v["bad_ticks"] for s, v in strict["symbols"].items()} == {
        "ADA/USDT": 0,
        "BNB/USDT": 0,
        "BTC/USDT": 1,
        "ETH/USDT": 2,
    }


# --------------------------------------------------------------------------------------------
# Layouts


def test_cryptodatadownload_layout_small(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "Binance_XYZUSDT_1h.csv",
        """
unix,date,symbol,open,high,low,close,Volume XYZ,Volume USDT,tradecount
1600009200000,2020-09-13 15:00:00,XYZ/USDT,3,4,2,3.5,10,35,7
1600005600000,2020-09-13 14:00:00,XYZ/USDT,2,3,1.5,3,11,33,8
1600005600.0,2020-09-13 02-PM,XYZ/USDT,2.01,3,1.5,3,11,33,NULL
1600002000.0,2020-09-13 05-PM,XYZ/USDT,1,2.5,1,2,0,0,NULL
""",
    )
    frame, report = read_market_data(path)
    assert report["files"][0]["layout"] == "cryptodatadownload"
    assert frame["symbol"].tolist() == ["XYZ/USDT"] * 3
    assert frame["timestamp"].tolist() == list(
        pd.date_range("2020-09-13 13:00", periods=3, freq="h", tz="UTC")
    )
    assert frame["volume"].tolist() == [0.0, 11.0, 10.0]  # the base-asset volume
    stats = report["symbols"]["XYZ/USDT"]
    assert stats["duplicates_removed"] == 1 and stats["duplicates_conflicting"] == 1
    assert stats["zero_volume_bars"] == 1
    assert frame["open"].iloc[1] == 2.0  # first occurrence in file order
    assert report["files"][0]["date_mismatches"] == 1  # 05-PM is not what unix says


@pytest.mark.parametrize("unit", ["s", "ms"])
def test_generic_epochs_and_odd_case(tmp_path: Path, unit: str) -> None:
    rows = _ohlcv_rows(5)
    if unit == "ms":
        rows["timestamp"] = rows["timestamp"] * 1000
    rows = rows.rename(
        columns={
            "timestamp": " Open_Time ",
            "open": "OPEN",
            "high": "High",
            "close": "Close",
            "volume": "VOLUME",
        }
    )
    path = tmp_path / "ABC-USD.csv"
    rows.to_csv(path, index=False)
    frame, report = read_market_data(path)
    assert report["files"][0]["layout"] == "generic"
    assert frame["symbol"].unique().tolist() == ["ABC-USD"]  # the file stem
    assert frame["timestamp"].iloc[0] == pd.Timestamp(1_600_000_000, unit="s", tz="UTC")
    assert frame["close"].tolist() == rows["Close"].tolist()


def test_generic_iso_strings_with_and_without_zone(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "iso.csv",
        """
Date,Symbol,Open,High,Low,Close,Volume
2021-01-01T02:00:00+02:00,AAA,1,2,0.5,1.5,3
2021-01-01 01:00:00,AAA,1.5,2,1,1.8,4
""",
    )
    frame, _ = read_market_data(path)
    # +02:00 becomes 00:00 UTC; the naive time is taken as UTC.
    assert frame["timestamp"].tolist() == [
        pd.Timestamp("2021-01-01 00:00", tz="UTC"),
        pd.Timestamp("2021-01-01 01:00", tz="UTC"),
    ]


def test_parquet_folder_and_glob(tmp_path: Path) -> None:
    first = _ohlcv_rows(4)
    first["timestamp"] = pd.to_datetime(first.pop("timestamp"), unit="s", utc=True)
    first["symbol"] = "PQ"
    first.to_parquet(tmp_path / "a.parquet")
    second = _ohlcv_rows(3).rename(columns={"timestamp": "time"})
    second.to_csv(tmp_path / "b.csv", index=False)
    (tmp_path / "notes.txt").write_text("ignored")
    by_folder, report = read_market_data(tmp_path)
    assert [f["name"] for f in report["files"]] == ["a.parquet", "b.csv"]
    assert by_folder.groupby("symbol").size().to_dict() == {"PQ": 4, "b": 3}
    by_glob, _ = read_market_data(str(tmp_path / "*.parquet"))
    assert by_glob["symbol"].unique().tolist() == ["PQ"]
    pd.testing.assert_frame_equal(by_glob, by_folder[by_folder["symbol"] == "PQ"])


def test_seed_schema_passthrough_with_json_embeddings(tmp_path: Path) -> None:
    rows = _ohlcv_rows(3)
    rows.insert(1, "symbol", "S1")
    rows["sma_short"] = [1.0, 2.0, 3.0]  # technical names match case-insensitively
    rows["llm_embedding"] = ["[0.1, 0.2]", "[0.3, 0.4]", "[0.5, 0.6]"]
    rows["mcp_feature_000"] = [0.0, 1.0, 2.0]
    rows["note"] = ["a", "b", "c"]
    rows.to_csv(tmp_path / "seed.csv", index=False)
    frame, report = read_market_data(tmp_path / "seed.csv")
    assert report["files"][0]["layout"] == "seed"
    assert list(frame.columns)[7:] == ["SMA_short", "llm_embedding", "mcp_feature_000", "note"]
    assert frame["llm_embedding"].iloc[1] == [0.3, 0.4]
    assert frame["note"].tolist() == ["a", "b", "c"]


# --------------------------------------------------------------------------------------------
# Cleaning


def test_bad_rows_are_dropped_and_counted(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "dirty.csv",
        """
timestamp,open,high,low,close,volume
1600000000,10,11,9,10.5,5
1600003600,10,inf,9,10.5,5
1600007200,10,11,9,,5
1600010800,10,11,9,10.5,-1
1600014400,10,9.5,9,10.5,5
1600018000,0,11,9,10.5,5
1600021600,10,11,9,10.5,0
1600025200,10,11,9,10.5,5
1600025200,10,11,9,10.6,5
1600036000,10,11,9,10.5,5
1600039600,10,11,9,10.5,5
1600043200,10,11,9,10.5,5
1600046800,10,11,9,10.5,5
""",
    )
    frame, report = read_market_data(path)
    stats = report["symbols"]["dirty"]
    assert stats["nan_inf_rows"] == 2
    assert stats["negative_volume"] == 1
    assert stats["impossible_bars"] == 1
    assert stats["non_positive_prices"] == 1
    assert stats["duplicates_removed"] == 1 and stats["duplicates_conflicting"] == 1
    assert stats["zero_volume_bars"] == 1
    assert stats["rows_out"] == len(frame) == 7
    # Bars left at hours 0, 6, 7, 10, 11, 12, 13: two gaps, 5 + 2 missing bars.
    assert stats["gaps"] == 2 and stats["missing_bars"] == 7
    action = next(a for a in report["actions"] if "NaN/inf" in a)
    assert "high: 1" in action and "close: 1" in action and "dirty.csv line 3" in action


def test_bad_tick_dropped(tmp_path: Path) -> None:
    rows = _ohlcv_rows(200)
    rows.loc[100, "high"] = rows.loc[100, "close"] * 5
    rows.to_csv(tmp_path / "tick.csv", index=False)
    frame, report = read_market_data(tmp_path / "tick.csv")
    assert report["symbols"]["tick"]["bad_ticks"] == 1
    assert len(frame) == 199
    assert report["symbols"]["tick"]["gaps"] == 1  # the dropped bar leaves a hole


# --------------------------------------------------------------------------------------------
# Bad input


def test_missing_column(tmp_path: Path) -> None:
    _write(tmp_path / "m.csv", "timestamp,open,high,low,close\n1600000000,1,2,0.5,1.5")
    with pytest.raises(
        DataError, match=r"m\.csv: missing required column\(s\) \['volume'\]; found"
    ):
        read_market_data(tmp_path / "m.csv")


def test_unparseable_timestamp_names_file_column_row(tmp_path: Path) -> None:
    _write(
        tmp_path / "t.csv",
        "Time,open,high,low,close,volume\n2021-01-01T00:00:00Z,1,2,0.5,1.5,1\nyesterday,1,2,0.5,1.5,1",
    )
    with pytest.raises(DataError) as info:
        read_market_data(tmp_path / "t.csv")
    message = str(info.value)
    assert "t.csv" in message and "'Time'" in message and "line 3" in message
    assert "'yesterday'" in message


def test_non_numeric_price(tmp_path: Path) -> None:
    _write(
        tmp_path / "p.csv",
        "timestamp,open,high,low,close,volume\n1600000000,1,2,0.5,1.5,1\n1600003600,1,2,0.5,abc,1",
    )
    with pytest.raises(DataError, match=r"p\.csv: column 'close', line 3.*'abc'"):
        read_market_data(tmp_path / "p.csv")


def test_too_short_symbol(tmp_path: Path) -> None:
    _ohlcv_rows(5).to_csv(tmp_path / "short.csv", index=False)
    with pytest.raises(DataError, match=r"symbol 'short' has 5 row\(s\).*at least 10"):
        read_market_data(tmp_path / "short.csv", min_rows=10)


def test_empty_folder_and_glob(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no market data found at folder"):
        read_market_data(tmp_path)
    with pytest.raises(DataError, match="no market data found at glob"):
        read_market_data(str(tmp_path / "*.csv"))


def test_bad_embedding_row(tmp_path: Path) -> None:
    rows = _ohlcv_rows(3)
    rows.insert(1, "symbol", "S1")
    rows["llm_embedding"] = ["[0.1, 0.2]", "[0.3]", "[0.5, 0.6]"]
    rows.to_csv(tmp_path / "emb.csv", index=False)
    with pytest.raises(DataError, match=r"emb\.csv: column 'llm_embedding', line 3.*width 1"):
        read_market_data(tmp_path / "emb.csv")
