"""Ingest: CSV/Parquet market data files → one canonical frame and a cleaning report.

The canonical frame has ``timestamp`` (datetime64[ns, UTC]), ``symbol`` (str), ``open high low
close volume`` (float64), then any passthrough columns of a ready dataset, sorted by
(symbol, timestamp) on a RangeIndex.

Files are read as their sources publish them: how a file is laid out (delimiter, banner lines
above the header, header-less files, multi-row headers, column-name spellings and aliases,
timestamp formats) is decided in ``monolith.data.layouts``, whose docstring lists every layout
accepted. This package reads the bytes, parses them with pyarrow and maps the columns, in one
of three ways detected per file from its column names:

- ``cryptodatadownload``: ``unix,date,symbol,open,high,low,close,Volume <BASE>,Volume <QUOTE>,
  tradecount`` (Binance exports; the ``https://www.CryptoDataDownload.com`` line above the
  header is skipped). ``unix`` is the truth for time; ``date`` is only cross-checked and the
  disagreements are counted.
- ``seed``: a ready dataset (``timestamp, symbol, OHLCV`` plus technical columns,
  ``llm_embedding``, ``mcp_feature_*``, ``hmm_regime``, ``level_sl``, ``level_tp``); the extra
  columns are validated and passed through.
- ``generic``: a timestamp column, OHLCV (under any alias ``layouts`` knows) and an optional
  symbol column; without one the file holds one symbol, named by yfinance's ticker row, else
  its hive folder (``symbol=BTCUSDT/``), else the file stem. Other columns are dropped and the
  drop is reported.

Times without a zone are taken as UTC: exchange data is published in UTC, and guessing a local
zone would shift every bar.

Nothing is dropped or altered silently: every cleaning step is counted per symbol and listed as
a human-readable action. The steps run in this order, so each bar is counted once, under the
first rule it breaks: non-finite OHLCV, non-positive prices, negative volume, impossible bars
(high/low not bracketing open/close), then duplicate timestamps (the first occurrence in file
order is kept), then bad ticks (range far beyond the symbol's median range). Gaps are counted
on the final series but never filled: windowing decides what to do with them.

Its rooms: ``tables`` (bytes to an Arrow table), ``mapping`` (the three layouts), ``times``
(timestamp parsing), ``values`` (prices, volumes, symbols, embeddings), ``read`` (one file),
``rules`` (one function per cleaning rule, and the table of them), ``clean`` and ``report``
(the cleaning report), ``market`` (all files together), ``listing`` (a file's symbols).
"""

from monolith.data.ingest.listing import file_symbols, quick_file_symbols
from monolith.data.ingest.market import DEFAULT_BAD_TICK_RANGE_MULTIPLE, read_market_data

__all__ = [
    "DEFAULT_BAD_TICK_RANGE_MULTIPLE",
    "file_symbols",
    "quick_file_symbols",
    "read_market_data",
]
