"""Layouts: market data files as their sources publish them, each built here in miniature.

Every file is written by its test (never copied from a source); each test checks the
canonical frame (exact UTC times, OHLCV, symbol) and what the report says about the layout.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from monolith.data.ingest import file_symbols, read_market_data
from monolith.data.ingest import listing as ingest
from monolith.data.layouts import (
    alias_key,
    map_columns,
    normalise_name,
    parse_numbers,
    sniff_csv,
    time_formats,
)
from monolith.data.sources import resolve_sources
from monolith.errors import DataError

CDD_BANNER = "https://www.CryptoDataDownload.com"
CDD_HEADER = "unix,date,symbol,open,high,low,close,Volume XYZ,Volume USDT,tradecount"
MONOLITH = Path(sys.executable).with_name("monolith")


def _write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text.lstrip("\n"), encoding=encoding)
    return path


def _utc(*stamps: str) -> list[pd.Timestamp]:
    return [pd.Timestamp(s, tz="UTC") for s in stamps]


def _one_file(report: dict) -> dict:
    (entry,) = report["files"]
    return entry


def _bars(n: int = 3) -> pd.DataFrame:
    """Hourly bars from 2021-01-01 00:00 on a DatetimeIndex, as pandas users hold them."""
    close = 10.0 + np.arange(n)
    index = pd.date_range("2021-01-01", periods=n, freq="h")
    return pd.DataFrame(
        {"Open": close - 0.5, "High": close + 1, "Low": close - 1, "Close": close, "Volume": 5.0},
        index=index,
    )


def _assert_bars(frame: pd.DataFrame, symbol: str, n: int = 3) -> None:
    expected = _bars(n)
    assert frame["timestamp"].tolist() == list(expected.index.tz_localize("UTC"))
    assert frame["symbol"].unique().tolist() == [symbol]
    assert frame["close"].tolist() == expected["Close"].tolist()
    assert frame["open"].tolist() == expected["Open"].tolist()
    assert frame["volume"].tolist() == expected["Volume"].tolist()


def _one_line_error(info: pytest.ExceptionInfo[DataError], name: str, *needles: str) -> str:
    message = str(info.value)
    assert "\n" not in message
    assert name in message
    for needle in needles:
        assert needle in message, message
    return message


# --------------------------------------------------------------------------------------------
# 1. Lines above the header


def test_cryptodatadownload_banner_line_is_skipped_and_reported(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "Binance_XYZUSDT_1h.csv",
        f"""
{CDD_BANNER}
{CDD_HEADER}
1600005600000,2020-09-13 14:00:00,XYZ/USDT,2,3,1.5,3,11,33,8
1600002000000,2020-09-13 13:00:00,XYZ/USDT,1,2.5,1,2,12,24,9
""",
    )
    frame, report = read_market_data(path)
    assert frame["timestamp"].tolist() == _utc("2020-09-13 13:00", "2020-09-13 14:00")
    assert frame["symbol"].unique().tolist() == ["XYZ/USDT"]
    assert frame["close"].tolist() == [2.0, 3.0]
    assert frame["volume"].tolist() == [12.0, 11.0]  # the base-asset volume
    entry = _one_file(report)
    assert entry["layout"] == "cryptodatadownload"
    assert entry["skipped_lines"] == 1 and entry["skipped_first"] == CDD_BANNER
    assert entry["first_data_line"] == 3
    assert (
        f"Binance_XYZUSDT_1h.csv: skipped 1 line(s) above the header (first: '{CDD_BANNER}')"
        in report["actions"]
    )


def test_lines_after_a_banner_are_counted_from_the_top_of_the_file(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "bad.csv",
        f"{CDD_BANNER}\n{CDD_HEADER}\n1600005600000,x,XYZ/USDT,2,3,1.5,oops,11,33,8\n",
    )
    with pytest.raises(DataError) as info:
        read_market_data(path)
    _one_line_error(info, "bad.csv", "column 'close', line 3 (data row 1)", "'oops'")


def test_cleaning_examples_count_lines_from_the_top_of_the_file(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "gap.csv",
        f"""
{CDD_BANNER}
{CDD_HEADER}
1600009200000,2020-09-13 15:00:00,XYZ/USDT,3,4,2,3.5,10,35,7
1600005600000,2020-09-13 14:00:00,XYZ/USDT,2,3,1.5,3,,33,8
1600002000000,2020-09-13 13:00:00,XYZ/USDT,1,2.5,1,2,12,24,9
""",
    )
    _, report = read_market_data(path)
    action = next(a for a in report["actions"] if "NaN/inf" in a)
    assert "(gap.csv line 4 (data row 2))" in action


def test_comments_and_blank_lines_above_the_header(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "commented.csv",
        """
# exported by some tool
# times are UTC

timestamp,open,high,low,close,volume
2021-01-01 00:00:00,9.5,11,9,10,5
2021-01-01 01:00:00,10.5,12,10,11,5
2021-01-01 02:00:00,11.5,13,11,12,5
""",
    )
    frame, report = read_market_data(path)
    _assert_bars(frame, "commented")
    entry = _one_file(report)
    assert entry["skipped_lines"] == 3 and entry["skipped_first"] == "# exported by some tool"
    assert any("skipped 3 line(s) above the header" in a for a in report["actions"])


# --------------------------------------------------------------------------------------------
# 2. An unnamed first column of datetimes (a pandas index)


@pytest.mark.parametrize("index_label", [None, "Unnamed: 0"])
def test_pandas_index_csv(tmp_path: Path, index_label: str | None) -> None:
    path = tmp_path / "frame.csv"
    _bars().to_csv(path, index_label=index_label)
    assert path.read_text().startswith(f"{index_label or ''},Open,High")
    frame, report = read_market_data(path)
    _assert_bars(frame, "frame")
    assert _one_file(report)["timestamp_column"] == (index_label or "")
    assert any("a pandas index" in a for a in report["actions"])


@pytest.mark.parametrize("index_name", [None, "Date"])
def test_pandas_index_parquet(tmp_path: Path, index_name: str | None) -> None:
    bars = _bars()
    bars.index.name = index_name
    bars.to_parquet(tmp_path / "frame.parquet")  # the DatetimeIndex is kept as a column
    frame, report = read_market_data(tmp_path / "frame.parquet")
    _assert_bars(frame, "frame")
    assert _one_file(report)["timestamp_column"] == (index_name or "__index_level_0__")


def test_unnamed_row_counter_is_not_taken_as_times(tmp_path: Path) -> None:
    bars = _bars().reset_index(drop=True)
    bars.to_csv(tmp_path / "counter.csv")  # first column 0, 1, 2: row numbers
    with pytest.raises(DataError) as info:
        read_market_data(tmp_path / "counter.csv")
    _one_line_error(
        info, "counter.csv", "missing required column(s) ['timestamp']", "unnamed column ''",
        "a row number",
    )  # fmt: skip


# --------------------------------------------------------------------------------------------
# 3. Timestamp column names


@pytest.mark.parametrize(
    "name",
    [
        "Unix Timestamp",
        "Unix",
        "Date",
        "Datetime",
        "Time",
        "Timestamp",
        "Open time",
        "open_time",
        "Gmt time",
        "Local time",
        "date_time",
        "ts",
        "t",
    ],
)
def test_timestamp_column_names(tmp_path: Path, name: str) -> None:
    bars = _bars()
    bars.index = (bars.index - pd.Timestamp("1970-01-01")) // pd.Timedelta("1ms")  # epoch ms
    bars.to_csv(tmp_path / "named.csv", index_label=name)
    frame, report = read_market_data(tmp_path / "named.csv")
    _assert_bars(frame, "named")
    assert _one_file(report)["timestamp_column"] == name


def test_metatrader_date_and_time_columns_tab_separated(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "EURUSD_H1.csv",
        "<DATE>\t<TIME>\t<OPEN>\t<HIGH>\t<LOW>\t<CLOSE>\t<TICKVOL>\t<VOL>\t<SPREAD>\n"
        "2020.01.02\t00:00:00\t1.1210\t1.1220\t1.1200\t1.1215\t120\t0\t2\n"
        "2020.01.02\t01:00:00\t1.1215\t1.1230\t1.1210\t1.1225\t80\t0\t2\n",
    )
    frame, report = read_market_data(path)
    assert frame["timestamp"].tolist() == _utc("2020-01-02 00:00", "2020-01-02 01:00")
    assert frame["open"].tolist() == [1.1210, 1.1215]
    assert frame["close"].tolist() == [1.1215, 1.1225]
    assert frame["volume"].tolist() == [120.0, 80.0]  # <VOL> is all zero: tick volume
    entry = _one_file(report)
    assert entry["delimiter"] == "\t"
    assert entry["timestamp_column"] == ["<DATE>", "<TIME>"]
    assert entry["volume_column"] == "<TICKVOL>"
    assert (
        "EURUSD_H1.csv: volume from the tick volume '<TICKVOL>' (price changes per bar): "
        "'<VOL>' is all zero" in report["actions"]
    )
    assert (
        "EURUSD_H1.csv (generic layout): ignored column(s) ['<VOL>', '<SPREAD>']"
        in (report["actions"])
    )


def test_metatrader_real_volume_wins_when_not_all_zero(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "US500.csv",
        "<DATE>\t<TIME>\t<OPEN>\t<HIGH>\t<LOW>\t<CLOSE>\t<TICKVOL>\t<VOL>\t<SPREAD>\n"
        "2020.01.02\t00:00\t3200\t3210\t3190\t3205\t120\t0\t2\n"
        "2020.01.02\t01:00\t3205\t3215\t3200\t3210\t80\t7\t2\n",
    )
    frame, report = read_market_data(path)
    assert frame["volume"].tolist() == [0.0, 7.0]
    assert _one_file(report)["volume_column"] == "<VOL>"
    assert "US500.csv: volume from '<VOL>'; tick volume '<TICKVOL>' ignored" in report["actions"]


def test_stooq_numeric_date_and_time_and_ticker_column(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "aapl.us.txt.csv",
        """
<TICKER>,<PER>,<DATE>,<TIME>,<OPEN>,<HIGH>,<LOW>,<CLOSE>,<VOL>,<OPENINT>
AAPL.US,60,20200102,090000,74.06,74.1,73.8,74.0,1000,0
AAPL.US,60,20200102,100000,74.0,74.5,73.9,74.4,1200,0
""",
    )
    frame, report = read_market_data(path)
    assert frame["timestamp"].tolist() == _utc("2020-01-02 09:00", "2020-01-02 10:00")
    assert frame["symbol"].unique().tolist() == ["AAPL.US"]
    assert frame["close"].tolist() == [74.0, 74.4]
    assert frame["volume"].tolist() == [1000.0, 1200.0]
    assert "ignored column(s) ['<PER>', '<OPENINT>']" in report["actions"][-1]


# --------------------------------------------------------------------------------------------
# 4. Odd column names


def test_yahoo_page_export_close_star_and_adj_close_ignored(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "SPY.csv",
        """
Date,Open,High,Low,Close*,Adj Close**,Volume
"Jan 03, 2020",321.00,323.60,320.90,322.40,300.10,"77,709,700"
"Jan 02, 2020",320.50,322.10,319.80,321.90,299.60,"59,151,200"
""",
    )
    frame, report = read_market_data(path, adjust="none")
    assert frame["timestamp"].tolist() == _utc("2020-01-02", "2020-01-03")
    assert frame["close"].tolist() == [321.90, 322.40]  # Close*, not Adj Close**
    assert frame["volume"].tolist() == [59_151_200.0, 77_709_700.0]
    assert "SPY.csv (generic layout): ignored column(s) ['Adj Close**']" in report["actions"]
    # By default (data.adjust: auto) the bar is scaled by Adj Close** / Close*.
    adjusted, report = read_market_data(path)
    assert adjusted["close"].tolist() == pytest.approx([299.60, 300.10])
    assert adjusted["open"].tolist() == pytest.approx(
        [320.50 * 299.60 / 321.90, 321.00 * 300.10 / 322.40]
    )
    assert adjusted["volume"].tolist() == pytest.approx(
        [59_151_200.0 * 321.90 / 299.60, 77_709_700.0 * 322.40 / 300.10]
    )
    assert report["symbols"]["SPY"]["price_adjustment"] == "OHLCV by 'Adj Close**'"


def test_polygon_single_letter_columns(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "X_BTCUSD.csv",
        """
v,vw,o,c,h,l,t,n
12.5,100.2,100,100.5,101,99.5,1609459200000,40
10,100.6,100.5,100.8,101.2,100.1,1609462800000,35
""",
    )
    frame, report = read_market_data(path)
    assert frame["timestamp"].tolist() == _utc("2021-01-01 00:00", "2021-01-01 01:00")
    assert frame[["open", "high", "low", "close", "volume"]].iloc[0].tolist() == [
        100.0,
        101.0,
        99.5,
        100.5,
        12.5,
    ]
    assert "ignored column(s) ['vw', 'n']" in report["actions"][-1]


def test_spelled_out_price_names_case_spaces_and_vol(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "spelled.csv",
        """
 DATETIME , Open Price ,HIGH PRICE,low price,Close Price,Vol.
2021-01-01 00:00:00,9.5,11,9,10,5
2021-01-01 01:00:00,10.5,12,10,11,5
2021-01-01 02:00:00,11.5,13,11,12,5
""",
    )
    frame, report = read_market_data(path)
    _assert_bars(frame, "spelled")
    assert _one_file(report)["volume_column"] == "Vol."


def test_investing_com_price_is_close_and_suffixed_volumes(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "Bitcoin Historical Data.csv",
        """
"Date","Price","Open","High","Low","Vol.","Change %"
"01/16/2020","8,720.0","8,800.5","8,850.0","8,700.0","2.1B","-0.91%"
"01/15/2020","8,800.5","8,700.0","8,900.0","8,650.0","4.5M","1.15%"
"01/14/2020","8,700.0","8,100.0","8,750.0","8,090.0","1.23K","7.41%"
"01/13/2020","8,100.0","8,150.0","8,200.0","8,050.0","-","-0.61%"
""",
    )
    frame, report = read_market_data(path)
    # mm/dd/yyyy: 13..16 cannot be months. The bar without a volume is dropped, and counted.
    assert frame["timestamp"].tolist() == _utc("2020-01-14", "2020-01-15", "2020-01-16")
    assert frame["close"].tolist() == [8700.0, 8800.5, 8720.0]
    assert frame["volume"].tolist() == [1230.0, 4_500_000.0, 2_100_000_000.0]
    symbol = report["symbols"]["Bitcoin Historical Data"]
    assert symbol["nan_inf_rows"] == 1
    assert "Bitcoin Historical Data.csv: 'Price' taken as the close" in report["actions"]
    assert "ignored column(s) ['Change %']" in " ".join(report["actions"])


def test_day_first_slash_dates_when_only_that_reads_every_value(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "dayfirst.csv",
        "Date,Price,Open,High,Low,Vol.\n13/01/2020,10,9.5,11,9,1K\n14/01/2020,11,10.5,12,10,1K\n",
    )
    frame, _ = read_market_data(path)
    assert frame["timestamp"].tolist() == _utc("2020-01-13", "2020-01-14")


# --------------------------------------------------------------------------------------------
# 5. Files without a header


def test_binance_vision_kline_without_header_ms_and_us(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "BTCUSDT-1h-2025-01.csv",
        # 2024-12-31 23:00 in milliseconds, then 2025-01-01 00:00 in microseconds (since 2025)
        "1735686000000,93000.1,93500,92900,93400.5,120.5,1735689599999,1.1e7,5000,60,5.6e6,0\n"
        "1735689600000000,93400.5,94000,93300,93900,130.25,1735693199999999,1.2e7,5100,61,5.7e6,0\n",
    )
    frame, report = read_market_data(path)
    assert frame["timestamp"].tolist() == _utc("2024-12-31 23:00", "2025-01-01 00:00")
    assert frame["symbol"].unique().tolist() == ["BTCUSDT-1h-2025-01"]
    assert frame["close"].tolist() == [93400.5, 93900.0]
    assert frame["volume"].tolist() == [120.5, 130.25]
    entry = _one_file(report)
    assert entry["headerless"] == "binance_kline" and entry["first_data_line"] == 1
    assert any("no header line; columns named as a data.binance.vision kline" in a for a in
               report["actions"])  # fmt: skip
    assert "ignored column(s) ['close_time', 'quote_volume', 'count'" in report["actions"][-1]


def test_kraken_ohlcvt_without_header(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "XBTUSD_60.csv",
        "1609459200,28990.1,29100,28950,29050.5,12.25,340\n"
        "1609462800,29050.5,29200,29000,29150,8.5,210\n",
    )
    frame, report = read_market_data(path)
    assert frame["timestamp"].tolist() == _utc("2021-01-01 00:00", "2021-01-01 01:00")
    assert frame["close"].tolist() == [29050.5, 29150.0]
    assert frame["volume"].tolist() == [12.25, 8.5]
    assert _one_file(report)["headerless"] == "kraken_ohlcvt"
    assert "ignored column(s) ['trades']" in report["actions"][-1]


def test_histdata_ascii_bars_semicolon_without_header(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "DAT_ASCII_EURUSD_M1_2020.csv",
        "20200101 170000;1.121110;1.121210;1.121010;1.121150;0\n"
        "20200101 170100;1.121150;1.121300;1.121100;1.121250;0\n",
    )
    frame, report = read_market_data(path)
    assert frame["timestamp"].tolist() == _utc("2020-01-01 17:00", "2020-01-01 17:01")
    assert frame["close"].tolist() == [1.12115, 1.12125]
    entry = _one_file(report)
    assert entry["headerless"] == "histdata" and entry["delimiter"] == ";"
    assert any("times taken as UTC" in a for a in report["actions"])


def test_metatrader_history_export_without_header(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "EURUSD60.csv",
        "2020.01.02,00:00,1.1210,1.1220,1.1200,1.1215,120\n"
        "2020.01.02,01:00,1.1215,1.1230,1.1210,1.1225,80\n",
    )
    frame, report = read_market_data(path)
    assert frame["timestamp"].tolist() == _utc("2020-01-02 00:00", "2020-01-02 01:00")
    assert frame["close"].tolist() == [1.1215, 1.1225]
    assert frame["volume"].tolist() == [120.0, 80.0]
    entry = _one_file(report)
    assert entry["headerless"] == "metatrader" and entry["timestamp_column"] == ["date", "time"]


def test_headerless_file_of_no_known_layout_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path / "six.csv", "1609459200,1,2,0.5,1.5,10\n1609462800,1,2,0.5,1.5,10\n")
    with pytest.raises(DataError) as info:
        read_market_data(path)
    _one_line_error(info, "six.csv", "no header", "6 ','-separated columns", "add a header line")


# --------------------------------------------------------------------------------------------
# 6. Delimiters


@pytest.mark.parametrize("delimiter", [";", "\t", ","])
def test_delimiters(tmp_path: Path, delimiter: str) -> None:
    path = tmp_path / "delimited.csv"
    _bars().to_csv(path, sep=delimiter, index_label="Date")
    frame, report = read_market_data(path)
    _assert_bars(frame, "delimited")
    assert _one_file(report)["delimiter"] == delimiter


# --------------------------------------------------------------------------------------------
# 7. yfinance's multi-row header


YF_TEXT = """
Price,Close,High,Low,Open,Volume
Ticker,AAPL,AAPL,AAPL,AAPL,AAPL
Date,,,,,
2024-01-02,185.64,188.44,183.89,187.15,82488700
2024-01-03,184.25,185.88,183.43,184.22,58414500
"""


def test_yfinance_multirow_header_names_the_symbol(tmp_path: Path) -> None:
    path = _write(tmp_path / "download.csv", YF_TEXT)
    frame, report = read_market_data(path)
    assert frame["timestamp"].tolist() == _utc("2024-01-02", "2024-01-03")
    assert frame["symbol"].unique().tolist() == ["AAPL"]
    assert frame["close"].tolist() == [185.64, 184.25]
    assert frame["open"].tolist() == [187.15, 184.22]
    assert frame["volume"].tolist() == [82488700.0, 58414500.0]
    entry = _one_file(report)
    assert entry["header_rows"] == 3 and entry["ticker"] == "AAPL"
    assert entry["first_data_line"] == 4
    assert any("yfinance multi-row header (3 lines); symbol 'AAPL'" in a for a in report["actions"])
    assert file_symbols(resolve_sources(path)[0]) == {"AAPL": 2}


def test_yfinance_several_tickers_side_by_side_are_refused(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "two.csv",
        "Price,Close,Close\nTicker,AAPL,MSFT\nDate,,\n2024-01-02,185.64,370.87\n",
    )
    with pytest.raises(DataError) as info:
        read_market_data(path)
    _one_line_error(info, "two.csv", "2 tickers side by side (AAPL, MSFT")


# --------------------------------------------------------------------------------------------
# 8. Timestamp formats


@pytest.mark.parametrize(
    ("name", "first", "second"),
    [
        ("Gmt time", "01.01.2020 00:00:00.000", "01.01.2020 01:00:00.000"),  # Dukascopy
        ("Local time", "01.01.2020 01:00:00.000 GMT+0100", "01.01.2020 02:00:00.000 GMT+0100"),
        ("Date", "2020.01.01 00:00", "2020.01.01 01:00"),  # MetaTrader
        ("Date", "20200101 000000", "20200101 010000"),  # histdata
        ("Date", "2020-01-01T05:30:00+05:30", "2020-01-01T01:00:00+00:00"),  # offsets
        ("Date", "2020-01-01 00:00:00Z", "2020-01-01 01:00:00Z"),
    ],
)
def test_timestamp_formats(tmp_path: Path, name: str, first: str, second: str) -> None:
    path = _write(
        tmp_path / "formats.csv",
        f"{name},Open,High,Low,Close,Volume\n{first},1,2,0.5,1.5,3\n{second},1.5,2,1,1.8,4\n",
    )
    frame, _ = read_market_data(path)
    assert frame["timestamp"].tolist() == _utc("2020-01-01 00:00", "2020-01-01 01:00")


def test_ambiguous_day_month_dates_are_refused(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "ambiguous.csv",
        "Date,Price,Open,High,Low,Vol.\n01/02/2020,10,9.5,11,9,1K\n03/02/2020,11,10.5,12,10,1K\n",
    )
    with pytest.raises(DataError) as info:
        read_market_data(path)
    _one_line_error(
        info, "ambiguous.csv", "column 'Date'", "%m/%d/%Y", "%d/%m/%Y", "cannot be told apart"
    )


def test_a_value_off_the_first_values_format_names_its_line(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "mixed.csv",
        "Date,Open,High,Low,Close,Volume\n2020.01.01 00:00,1,2,0.5,1.5,3\n2020-01-01,1,2,1,1.8,4\n",
    )
    with pytest.raises(DataError) as info:
        read_market_data(path)
    _one_line_error(info, "mixed.csv", "column 'Date', line 3", "'2020-01-01'", "%Y.%m.%d %H:%M")


# --------------------------------------------------------------------------------------------
# 9. Bad input: one DataError line naming the file and the problem


BAD_FILES = {
    "header_only.csv": ("timestamp,open,high,low,close,volume\n", "has a header", "no data rows"),
    "zero_bytes.csv": ("", "is empty (0 bytes)"),
    "banner_only.csv": (f"{CDD_BANNER}\n", "no header or data rows", "banner text", CDD_BANNER),
    "comments_only.csv": ("# nothing yet\n\n", "no header or data rows", "'#' comments"),
    "no_header.csv": ("1609459200,1,2,0.5,1.5,10\n", "no header"),
    "ambiguous.csv": ("Date,Price,Open,High,Low,Vol.\n01/02/2020,10,9.5,11,9,1K\n", "told apart"),
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_bad_input_is_one_data_error_line(tmp_path: Path, name: str) -> None:
    text, *needles = BAD_FILES[name]
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(DataError) as info:
        read_market_data(path)
    _one_line_error(info, str(path), *needles)
    if name != "ambiguous.csv":  # file_symbols reads no times; the rest it refuses alike
        with pytest.raises(DataError) as info:
            file_symbols(resolve_sources(path)[0])
        _one_line_error(info, str(path), *needles)


def test_parquet_without_rows_or_bytes(tmp_path: Path) -> None:
    _bars().iloc[:0].to_parquet(tmp_path / "norows.parquet")
    (tmp_path / "empty.parquet").write_bytes(b"")
    with pytest.raises(DataError) as info:
        read_market_data(tmp_path / "norows.parquet")
    _one_line_error(info, "norows.parquet", "holds no rows")
    with pytest.raises(DataError) as info:
        read_market_data(tmp_path / "empty.parquet")
    _one_line_error(info, "empty.parquet", "is empty (0 bytes)")


def test_utf16_metatrader_export(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "GBPUSD.csv",
        "<DATE>\t<TIME>\t<OPEN>\t<HIGH>\t<LOW>\t<CLOSE>\t<TICKVOL>\n"
        "2020.01.02\t00:00\t1.3\t1.31\t1.29\t1.305\t50\n",
        encoding="utf-16",
    )
    frame, report = read_market_data(path)
    assert frame["timestamp"].tolist() == _utc("2020-01-02")
    assert frame["volume"].tolist() == [50.0]
    assert _one_file(report)["encoding"] == "utf-16"


# --------------------------------------------------------------------------------------------
# file_symbols: what the cluster planner reads before any file is read whole


def test_file_symbols_parquet_under_hive_folder_reads_only_the_footer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bars = _bars(5)
    bars.index.name = "Date"
    folder = tmp_path / "symbol=ABC"
    folder.mkdir()
    bars.to_parquet(folder / "part-0.parquet")  # no symbol column: the folder names it
    (file,) = resolve_sources(tmp_path)
    _, report = read_market_data(tmp_path)
    assert report["symbols"]["ABC"]["rows_in"] == 5

    def no_reading(*args: object, **kwargs: object) -> None:
        raise AssertionError("file_symbols read the file")

    monkeypatch.setattr(ingest, "read_source", no_reading)
    monkeypatch.setattr(ingest.pq.ParquetFile, "read", no_reading)
    assert file_symbols(file) == {"ABC": 5}


def test_file_symbols_csv_symbol_column_with_two_symbols(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "two.csv",
        f"""
{CDD_BANNER}
timestamp,symbol,open,high,low,close,volume
1600000000, AAA ,1,2,0.5,1.5,3
1600000000,BBB,1,2,0.5,1.5,3
1600003600,AAA,1,2,0.5,1.5,3
1600003600,BBB ,1,2,0.5,1.5,3
1600007200,BBB,1,2,0.5,1.5,3
""",
    )
    assert file_symbols(resolve_sources(path)[0]) == {"AAA": 2, "BBB": 3}
    _, report = read_market_data(path)
    assert {s: v["rows_in"] for s, v in report["symbols"].items()} == {"AAA": 2, "BBB": 3}


def test_file_symbols_parquet_symbol_column(tmp_path: Path) -> None:
    bars = _bars(4).reset_index(names="timestamp")
    bars["symbol"] = ["X", "Y", "X", "X"]
    bars.to_parquet(tmp_path / "both.parquet")
    assert file_symbols(resolve_sources(tmp_path / "both.parquet")[0]) == {"X": 3, "Y": 1}


def test_file_symbols_headerless_binance(tmp_path: Path) -> None:
    row = "1735686000000,93000.1,93500,92900,93400.5,120.5,1735689599999,1.1e7,5000,60,5.6e6,0\n"
    path = _write(tmp_path / "BTCUSDT-1h-2024-12.csv", row * 3)
    assert file_symbols(resolve_sources(path)[0]) == {"BTCUSDT-1h-2024-12": 3}


# --------------------------------------------------------------------------------------------
# Pure pieces of layouts


def test_column_names_normalise_and_alias() -> None:
    assert normalise_name(" <OPEN> ") == "open"
    assert normalise_name("Adj Close**") == "adj close"
    assert alias_key("Open_Time") == "open time"
    mapped = map_columns(["Date", "Price", "Open", "High", "Low", "Vol.", "Change %"])
    assert (mapped.time, mapped.close, mapped.close_from_price, mapped.volume) == (
        "Date",
        "Price",
        True,
        "Vol.",
    )
    mapped = map_columns(["<DATE>", "<TIME>", "<OPEN>", "<TICKVOL>", "<VOL>"])
    assert (mapped.date_part, mapped.time_part) == ("<DATE>", "<TIME>")
    assert (mapped.volume, mapped.tick_volume) == ("<VOL>", "<TICKVOL>")


def test_time_formats_from_one_value() -> None:
    assert time_formats("2020-01-01 00:00:00") == ()  # ISO 8601: pandas reads it as such
    assert time_formats("01.01.2020 00:00:00.000") == ("%d.%m.%Y %H:%M:%S.%f",)
    assert time_formats("01.01.2020 00:00:00.000 GMT+0100") == ("%d.%m.%Y %H:%M:%S.%f GMT%z",)
    assert time_formats("2020.01.02 00:00") == ("%Y.%m.%d %H:%M",)
    assert time_formats("20200101 170000") == ("%Y%m%d %H%M%S",)
    assert time_formats("01/02/2020") == ("%m/%d/%Y", "%d/%m/%Y")
    assert time_formats("Jan 02, 2020") == ("%b %d, %Y",)


def test_parse_numbers_suffixes_and_separators() -> None:
    texts = pd.Series(["1.23K", "4.5M", "2B", "7,200.8", None, "abc", "12"], dtype=object)
    numbers = parse_numbers(texts, suffixes=True)
    np.testing.assert_allclose(numbers[:4], [1230.0, 4.5e6, 2e9, 7200.8])
    assert np.isnan(numbers[4]) and np.isnan(numbers[5]) and numbers[6] == 12.0
    assert np.isnan(parse_numbers(texts, suffixes=False)[0])  # a price has no K suffix


def test_sniff_reads_only_complete_lines() -> None:
    head = b"x\ntimestamp;open;high;low;close;volume\n1600000000;1;2;0.5;1.5;3\n16000"
    shape = sniff_csv(head, complete=False, where="cut.csv")
    assert (shape.delimiter, shape.skip_rows, shape.header_rows) == (";", 1, 1)
    assert shape.names[0] == "timestamp"


# --------------------------------------------------------------------------------------------
# The command line: one clear line, exit 2, nothing written; and a banner file that prepares


def _prepare(source: Path, out: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(MONOLITH), "data", "prepare", "--input", str(source), "--output", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_cli_bad_input_one_error_line(tmp_path: Path, name: str) -> None:
    text, *needles = BAD_FILES[name]
    path = tmp_path / name
    path.write_text(text)
    done = _prepare(path, tmp_path / "out")
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: ") and name in lines[0]
    assert all(needle in lines[0] for needle in needles), lines[0]
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_cli_prepares_a_cryptodatadownload_file_with_its_banner(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    n = 600
    close = 30_000 * np.exp(np.cumsum(rng.normal(0, 0.005, n)))
    open_ = np.r_[close[0], close[:-1]]
    high = np.maximum(open_, close) * (1 + rng.uniform(0.0005, 0.004, n))
    low = np.minimum(open_, close) * (1 - rng.uniform(0.0005, 0.004, n))
    volume = rng.uniform(50, 500, n)
    unix = 1_600_000_000_000 + 3_600_000 * np.arange(n)
    rows = [
        f"{u},{pd.Timestamp(u, unit='ms'):%Y-%m-%d %H:%M:%S},BTC/USDT,{o:.2f},{h:.2f},{lo:.2f},"
        f"{c:.2f},{v:.4f},{v * c:.2f},{int(v * 10)}"
        for u, o, h, lo, c, v in zip(unix, open_, high, low, close, volume, strict=True)
    ][::-1]  # newest first, as CryptoDataDownload writes them
    header = "unix,date,symbol,open,high,low,close,Volume BTC,Volume USDT,tradecount"
    path = _write(tmp_path / "Binance_BTCUSDT_1h.csv", "\n".join([CDD_BANNER, header, *rows]))
    done = _prepare(path, tmp_path / "out")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    assert done.stdout.startswith("prepared ")
    metadata = (tmp_path / "out" / "data_processing_metadata.json").read_text()
    assert CDD_BANNER in metadata  # the skipped banner line is on record
