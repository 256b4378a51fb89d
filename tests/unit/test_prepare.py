"""The prepare pipeline end to end: metadata, leakage, windows, atomic output, bad input."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from monolith.config import DataConfig, SyntheticConfig
from monolith.data.features import TECHNICAL_COLUMNS
from monolith.data.prepare import prepare_dataset
from monolith.data.prepared import FORMAT_VERSION
from monolith.data.windows import METADATA_FILE, Shard, WindowSource, load_prepared_frame
from monolith.errors import DataError

L = 8
H = 3
# Forward probe targets. The longest horizon is what the purge must cover; it exceeds L + H,
# so a purge of a window plus the label horizon alone would let train targets reach val.
DIRECTIONS = [1, 6]
VOLATILITIES = [24]
LONGEST = 24


def _cfg(**kw) -> DataConfig:
    base = dict(
        source="synthetic",
        synthetic=SyntheticConfig(
            symbols=3, rows_per_symbol=900, seed=11, embedding_dim=6, mcp_features=4
        ),
        sequence_length=L,
        label_horizon=H,
        direction_horizons=DIRECTIONS,
        volatility_horizons=VOLATILITIES,
    )
    base.update(kw)
    cfg = DataConfig(**base)
    cfg.validate()
    return cfg


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("prep") / "data"
    prepare_dataset(_cfg(), out)
    return out


def test_metadata_describes_the_dataset(prepared):
    meta = json.loads((prepared / METADATA_FILE).read_text())
    assert meta["features"]["technical"] == list(TECHNICAL_COLUMNS)
    assert len(meta["features"]["technical"]) == 43
    assert meta["features"]["embedding_dim"] == 6
    assert len(meta["features"]["mcp"]) == 4
    assert meta["input_spec"] == {
        "sequence_length": L,
        "n_technical": 43,
        "n_instruments": 3,
        "embedding_dim": 6,
        "mcp_dim": 4,
        "cot_dim": 0,
    }
    assert sorted(meta["instruments"].values()) == [0, 1, 2]
    assert meta["format_version"] == FORMAT_VERSION == 3
    assert meta["purge_bars"] == L + LONGEST
    assert meta["target_horizons"] == {
        "direction": H,
        "direction_h1": 1,
        "direction_h6": 6,
        "fwd_vol_h24": 24,
    }
    assert meta["features"]["targets"] == {
        "regime": "hmm_regime",
        "direction": "target_direction",
        "direction_h1": "target_direction_h1",
        "direction_h6": "target_direction_h6",
        "fwd_vol_h24": "target_fwd_vol_h24",
    }
    for sym, bounds in meta["splits"].items():
        assert bounds["train"]["end"] < bounds["val"]["start"] < bounds["val"]["end"]
        assert bounds["val"]["end"] < bounds["test"]["start"]
        assert sym in meta["cleaning"]["symbols"]
    assert all(meta["windows"][s] > 0 for s in ("train", "val", "test"))
    for split in ("train", "val", "test"):
        assert meta["rows"][split] == sum(b[split]["rows"] for b in meta["splits"].values())
    assert meta["rows"]["prepared"] == sum(
        meta["rows"][k] for k in ("train", "val", "test", "purge")
    )
    assert meta["scaler"]["kind"] == "standard"
    for name in ("scalers.pkl", "scalers.json"):
        assert (prepared / name).is_file()


def test_scalers_are_the_train_rows_own_statistics(prepared):
    frame = load_prepared_frame(prepared)
    params = json.loads((prepared / "scalers.json").read_text())
    with open(prepared / "scalers.pkl", "rb") as fh:
        scalers = pickle.load(fh)
    for sym, rows in frame.groupby("symbol"):
        train = rows.loc[rows["split"] == "train", list(TECHNICAL_COLUMNS)].to_numpy()
        np.testing.assert_allclose(
            params["symbols"][sym]["offset"], train.mean(axis=0), rtol=1e-9, atol=1e-9
        )
        np.testing.assert_allclose(
            params["symbols"][sym]["scale"],
            np.where(train.std(axis=0) == 0, 1, train.std(axis=0)),
            rtol=1e-7,
        )
        np.testing.assert_allclose(scalers[sym].mean_, train.mean(axis=0), rtol=1e-9, atol=1e-9)
        assert params["symbols"][sym]["n_samples_seen"] == len(train)


def test_hmm_never_sees_val_or_test_rows(tmp_path):
    """Rewriting every val/test bar must leave the fitted regime model unchanged."""
    from monolith.data.synthetic import generate_synthetic

    cfg = _cfg(synthetic=SyntheticConfig(symbols=2, rows_per_symbol=700, seed=5))
    raw = generate_synthetic(cfg.synthetic)
    a = tmp_path / "a.parquet"
    raw.to_parquet(a)
    meta_a = prepare_dataset(_cfg(source=str(a)), tmp_path / "pa")
    # the last 25% of each symbol lies inside val + test: scramble it
    poisoned = raw.copy()
    for _, idx in poisoned.groupby("symbol").indices.items():
        tail = idx[int(len(idx) * 0.75) :]
        factor = np.linspace(1.0, 3.0, len(tail))
        for col in ("open", "high", "low", "close"):
            poisoned.loc[tail, col] = poisoned.loc[tail, col].to_numpy() * factor
        poisoned.loc[tail, "volume"] *= 7
    b = tmp_path / "b.parquet"
    poisoned.to_parquet(b)
    meta_b = prepare_dataset(_cfg(source=str(b)), tmp_path / "pb")
    assert meta_a["hmm"] == meta_b["hmm"]
    fa, fb = load_prepared_frame(tmp_path / "pa"), load_prepared_frame(tmp_path / "pb")
    train = fa["split"] == "train"
    np.testing.assert_array_equal(fa.loc[train, "hmm_regime"], fb.loc[train, "hmm_regime"])
    assert not np.allclose(fa.loc[~train, "close"], fb.loc[~train, "close"])


def test_no_target_of_a_split_reaches_the_next_split(prepared):
    """Every defined target at a row of a split uses bars of that split or of the purge after
    it, never the next split's: the purge covers the longest horizon."""
    frame = load_prepared_frame(prepared)
    meta = json.loads((prepared / METADATA_FILE).read_text())
    for _, rows in frame.groupby("symbol"):
        split = rows["split"].to_numpy()
        for name, horizon in meta["target_horizons"].items():
            defined = np.flatnonzero(np.isfinite(rows[meta["features"]["targets"][name]]))
            defined = defined[split[defined] != "purge"]  # no window ends in a purge
            for h in range(1, horizon + 1):
                later = split[defined + h]
                assert ((later == split[defined]) | (later == "purge")).all(), (name, h)
        # the longest horizon does reach into the purge: the check above has teeth
        last_train = np.flatnonzero(split == "train")[-1]
        assert np.isfinite(rows["target_fwd_vol_h24"].iloc[last_train])
        assert split[last_train + LONGEST] == "purge"


def test_prepared_targets_are_the_forward_targets_of_the_prepared_bars(prepared):
    from monolith.data.features import forward_return_sign, forward_volatility

    frame = load_prepared_frame(prepared)
    for _, rows in frame.groupby("symbol"):
        o, c, seg = (rows[k].to_numpy() for k in ("open", "close", "segment"))
        np.testing.assert_array_equal(
            rows["target_direction_h6"].to_numpy(), forward_return_sign(o, c, seg, 6)
        )
        np.testing.assert_array_equal(
            rows["target_fwd_vol_h24"].to_numpy(), forward_volatility(o, c, seg, 24)
        )


def test_samples_carry_every_probe_target_by_name(prepared):
    src = WindowSource(prepared, samples={"val": None, "train": 50})
    frame = load_prepared_frame(prepared)
    _, targets = src.arrays("val")
    assert set(targets) == {
        "regime", "direction", "direction_h1", "direction_h6", "fwd_vol_h24", "end_time"
    }  # fmt: skip
    assert targets["direction_h6"].dtype == np.int32 and targets["fwd_vol_h24"].dtype == np.float32
    # each sample's targets are its last bar's row (found by its end time and instrument)
    symbols = {n: s for s, n in src.metadata["instruments"].items()}
    feats, _ = src.arrays("val")
    keyed = frame.set_index(["symbol", "timestamp"])
    for i in range(0, len(targets["regime"]), 37):
        when = pd.Timestamp(targets["end_time"][i], tz="UTC")
        row = keyed.loc[(symbols[int(feats["instrument_input"][i])], when)]
        for name in ("direction_h1", "direction_h6"):
            expected = row[f"target_{name}"]
            assert targets[name][i] == (-1 if np.isnan(expected) else int(expected))
        np.testing.assert_allclose(targets["fwd_vol_h24"][i], row["target_fwd_vol_h24"], rtol=1e-6)
    # a horizon longer than the label's runs past a symbol's last windows: -1 / NaN there
    _, test_targets = WindowSource(prepared, samples={"test": None}).arrays("test")
    assert (test_targets["direction_h6"] == -1).sum() == 3 * (6 - H)
    assert np.isnan(test_targets["fwd_vol_h24"]).sum() == 3 * (LONGEST - H)
    # the training stream carries what training reads, not the probe targets
    assert set(src._rows) == {"instrument", "regime", "direction", "embeddings_input", "mcp_input"}


def test_a_dataset_of_an_older_format_is_refused(prepared, tmp_path):
    import shutil

    old = tmp_path / "old"
    shutil.copytree(prepared, old)
    meta = json.loads((old / METADATA_FILE).read_text())
    meta["format_version"] = 2
    (old / METADATA_FILE).write_text(json.dumps(meta))
    with pytest.raises(DataError, match="format 2; this version reads format 3"):
        WindowSource(old)


def _all_windows(prepared: Path, split: str, **kw) -> WindowSource:
    return WindowSource(prepared, fit_split=None, samples={split: None}, **kw)


def test_windows_stay_inside_one_symbol_split_and_contiguous_bars(prepared):
    frame = load_prepared_frame(prepared)
    scalers = json.loads((prepared / "scalers.json").read_text())
    step = pd.Timedelta(hours=1)
    for split in ("train", "val", "test"):
        src = _all_windows(prepared, split)
        feats, targets = src.arrays(split)
        assert len(targets["regime"]) == src.num_windows(split) > 0
        # every sampled window is L consecutive hourly bars of one symbol inside one split:
        # find each window's rows in the prepared frame by its scaled first and last bar
        for i in range(0, len(targets["regime"]), 97):
            symbol = next(
                s
                for s, n in src.metadata["instruments"].items()
                if n == feats["instrument_input"][i]
            )
            rows = frame[frame["symbol"] == symbol].reset_index(drop=True)
            params = scalers["symbols"][symbol]
            raw = rows[list(TECHNICAL_COLUMNS)].to_numpy()
            scaled = ((raw - params["offset"]) / params["scale"]).astype(np.float32)
            end = int(np.flatnonzero((scaled == feats["technical_input"][i, -1]).all(axis=1))[0])
            start = end - L + 1
            np.testing.assert_allclose(scaled[start : end + 1], feats["technical_input"][i])
            assert set(rows["split"].iloc[start : end + 1]) == {split}
            span = rows["timestamp"].iloc[end] - rows["timestamp"].iloc[start]
            assert span == step * (L - 1)


def test_tf_dataset_shapes_and_window_contents(prepared):
    src = WindowSource(prepared)
    ds = src.dataset(16, shuffle=False, repeat=False)
    feats, targets = next(iter(ds))
    assert feats["technical_input"].shape == (16, L, 43)
    assert feats["instrument_input"].shape == (16,)
    assert feats["embeddings_input"].shape == (16, 6)
    assert feats["mcp_input"].shape == (16, 4)
    assert set(np.unique(targets["direction"].numpy())) <= {0, 1}
    # the first window equals the scaled rows it claims to cover
    end = src.window_ends()[0]
    np.testing.assert_allclose(
        feats["technical_input"][0].numpy(), src.technical[end - L + 1 : end + 1]
    )
    assert len(src.window_ends()) == src.num_windows("train")


def test_worker_shards_hold_disjoint_rows_that_cover_the_training_split(prepared):
    """With 2 workers, each loads only its rows: disjoint, together the whole train split;
    no window crosses a symbol, split, gap or the cut between the shards."""
    frame = load_prepared_frame(prepared)
    train = frame[frame["split"] == "train"]
    whole = WindowSource(prepared)
    shards = [WindowSource(prepared, shard=Shard(i, 2)) for i in range(2)]
    for src in shards:
        assert src.technical.shape[0] < 0.6 * whole.technical.shape[0]
    # Per symbol, shard 0's rows then shard 1's are exactly that symbol's train rows in time
    # order (closes identify bars): disjoint, contiguous, nothing missing, nothing extra.
    closes = [_unscaled_close(src, prepared) for src in shards]
    for inst, rows in train.groupby("instrument_id"):
        parts = [c[src._rows["instrument"] == inst] for c, src in zip(closes, shards, strict=True)]
        assert all(len(p) > 0 for p in parts)
        np.testing.assert_allclose(np.concatenate(parts), rows["close"].to_numpy(), rtol=1e-6)
    for src in shards:
        ends = src.window_ends()
        inst = src._rows["instrument"]
        # each window's rows are consecutive train bars of one symbol
        for e in ends[:: max(1, len(ends) // 200)]:
            assert len(set(inst[e - L + 1 : e + 1])) == 1
    counts = shards[0]._shard_counts
    assert counts == shards[1]._shard_counts
    assert sum(counts) == sum(len(s.window_ends()) for s in shards)
    # only the windows straddling a cut are lost: L - 1 per symbol
    assert whole.num_windows("train") - sum(counts) <= (L - 1) * 3
    steps = shards[0].steps_per_epoch(16)
    assert steps == min(counts) // 8 == shards[1].steps_per_epoch(16)


def test_a_worker_reads_only_its_row_groups_once_the_samples_are_cached(tmp_path, monkeypatch):
    """Partitions are written in row groups. The first reader builds the row layout and the
    evaluation samples from every row and caches them; after that a worker of two reads only
    the row groups of its shard, and holds the same arrays as a reader that reads everything."""
    import pyarrow.parquet as pq

    from monolith import experiment
    from monolith.config import MonolithConfig
    from monolith.data.prepare import partitions as prepare

    monkeypatch.setattr(prepare, "ROW_GROUP_ROWS", 128)
    out = tmp_path / "data"
    prepare_dataset(_cfg(), out)
    parts = sorted((out / "dataset").rglob("*.parquet"))
    assert all(pq.ParquetFile(p).metadata.num_row_groups >= 6 for p in parts)
    fingerprint = experiment.data_fingerprint(MonolithConfig(data=_cfg(source=str(out))))
    samples = {"val": 40, "train": 60}

    first = WindowSource(out, shard=Shard(0, 2), samples=samples)
    total = sum(pq.ParquetFile(p).metadata.num_rows for p in parts)
    assert first.rows_read == total  # built the samples: every row
    cached = sorted(p.name.split("-")[0] for p in (out / "cache").iterdir())
    assert cached == ["layout", "train", "val"]
    shards = [WindowSource(out, shard=Shard(i, 2), samples=samples) for i in range(2)]
    for src in shards:
        assert src.rows_read < 0.6 * total
    assert sum(src.rows_read for src in shards) < total  # val and test rows not read at all

    import shutil

    shutil.rmtree(out / "cache")
    uncached = [WindowSource(out, shard=Shard(i, 2), samples=samples) for i in range(2)]
    for a, b in zip(shards, uncached, strict=True):
        np.testing.assert_array_equal(a.technical, b.technical)
        np.testing.assert_array_equal(a.window_ends(), b.window_ends())
        for key in b._rows:
            np.testing.assert_array_equal(a._rows[key], b._rows[key])
        for split in samples:
            for got, want in zip(a.arrays(split), b.arrays(split), strict=True):
                assert set(got) == set(want)
                for key in want:
                    np.testing.assert_array_equal(got[key], want[key])
    # the cache is not part of the dataset's identity: experiments keep their fingerprint
    again = experiment.data_fingerprint(MonolithConfig(data=_cfg(source=str(out))))
    assert again["key"] == fingerprint["key"]


def test_a_cache_that_cannot_be_written_or_read_costs_a_warning_not_the_run(tmp_path, caplog):
    """Storage where the cache cannot go (here a file named like its folder): every reader
    builds the layout and samples itself, and says so once per file it could not cache. A
    damaged cache file is ignored the same way."""
    import logging

    out = tmp_path / "data"
    prepare_dataset(_cfg(), out)
    (out / "cache").write_text("not a folder")
    samples = {"val": 40}
    with caplog.at_level(logging.WARNING, logger="monolith.data.windows"):
        blocked = WindowSource(out, shard=Shard(1, 2), samples=samples)
    warnings = [r.getMessage() for r in caplog.records if "not cached at" in r.getMessage()]
    assert len(warnings) == 2 and all(str(out / "cache") in w for w in warnings)
    (out / "cache").unlink()
    fresh = WindowSource(out, shard=Shard(1, 2), samples=samples)
    # a damaged cache file is set aside with a warning, the reader builds it again
    for cached in (out / "cache").iterdir():
        cached.write_bytes(b"not an npz")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="monolith.data.windows"):
        rebuilt = WindowSource(out, shard=Shard(1, 2), samples=samples)
    ignored = [r.getMessage() for r in caplog.records if "ignoring the cache" in r.getMessage()]
    assert len(ignored) == 2
    assert rebuilt.rows_read == len(load_prepared_frame(out))  # every row, as uncached
    np.testing.assert_array_equal(rebuilt.technical, fresh.technical)
    np.testing.assert_array_equal(blocked.technical, fresh.technical)
    for got, want in zip(blocked.arrays("val"), fresh.arrays("val"), strict=True):
        for key in want:
            np.testing.assert_array_equal(got[key], want[key])


def _unscaled_close(src: WindowSource, prepared: Path) -> np.ndarray:
    scalers = json.loads((prepared / "scalers.json").read_text())
    names = {n: s for s, n in src.metadata["instruments"].items()}
    column = list(TECHNICAL_COLUMNS).index("close")
    out = np.empty(len(src.technical))
    for inst in np.unique(src._rows["instrument"]):
        rows = src._rows["instrument"] == inst
        params = scalers["symbols"][names[int(inst)]]
        out[rows] = (
            src.technical[rows, column].astype(np.float64) * params["scale"][column]
            + params["offset"][column]
        )
    return out


def test_evaluation_samples_are_fixed_and_the_same_on_every_shard(prepared):
    a = WindowSource(prepared, shard=Shard(0, 2), samples={"val": 50, "train": 40})
    b = WindowSource(prepared, shard=Shard(1, 2), samples={"val": 50, "train": 40})
    c = WindowSource(prepared, samples={"val": 50, "train": 40})
    for split, n in (("val", 50), ("train", 40)):
        fa, ta = a.arrays(split)
        assert len(ta["regime"]) == n
        for other in (b, c):
            fo, to = other.arrays(split)
            np.testing.assert_array_equal(fa["technical_input"], fo["technical_input"])
            np.testing.assert_array_equal(ta["direction"], to["direction"])
    # evenly spread over every symbol
    assert len(set(a.arrays("val")[0]["instrument_input"])) == 3


def test_window_memory_does_not_grow_with_sequence_length(prepared):
    short = WindowSource(prepared, sequence_length=2)
    full = WindowSource(prepared)
    assert short.technical.nbytes == full.technical.nbytes
    assert short.num_windows("train") > full.num_windows("train")


def test_sequence_length_one_row_mode(tmp_path):
    meta = prepare_dataset(
        _cfg(sequence_length=1, synthetic=SyntheticConfig(symbols=2, rows_per_symbol=400)),
        tmp_path / "p",
    )
    src = _all_windows(tmp_path / "p", "val")
    feats, _ = src.arrays("val")
    assert feats["technical_input"].shape[1:] == (1, 43)
    assert meta["windows"]["val"] == src.num_windows("val") == len(feats["technical_input"])


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_bad_input_leaves_nothing_behind(tmp_path):
    bad = tmp_path / "in.csv"
    pd.DataFrame({"timestamp": ["2024-01-01"], "open": [1.0], "close": [1.0]}).to_csv(bad)
    out = tmp_path / "out"
    with pytest.raises(DataError, match="in.csv"):
        prepare_dataset(_cfg(source=str(bad)), out)
    assert _leftovers(tmp_path) == ["in.csv"]


def test_existing_output_needs_overwrite(tmp_path, prepared):
    out = tmp_path / "o"
    cfg = _cfg(synthetic=SyntheticConfig(symbols=2, rows_per_symbol=400))
    prepare_dataset(cfg, out)
    with pytest.raises(DataError, match="already exists"):
        prepare_dataset(cfg, out)
    prepare_dataset(cfg, out, overwrite=True)
    assert _leftovers(tmp_path) == ["o"]
    other = tmp_path / "not-a-dataset"
    other.mkdir()
    (other / "keep.txt").write_text("precious")
    with pytest.raises(DataError, match="not a prepared dataset"):
        prepare_dataset(cfg, other, overwrite=True)
    assert (other / "keep.txt").read_text() == "precious"


def test_real_files_prepare_with_cleaning_report(tmp_path, shared_data_dir):
    meta = prepare_dataset(DataConfig(source=str(shared_data_dir)), tmp_path / "real")
    symbols = meta["cleaning"]["symbols"]
    assert set(symbols) == {"ADA/USDT", "BNB/USDT", "BTC/USDT", "ETH/USDT"}
    assert symbols["BTC/USDT"]["duplicates_removed"] == 2649
    assert symbols["ETH/USDT"]["duplicates_removed"] == 2649
    assert symbols["BTC/USDT"]["bad_ticks"] >= 1
    assert {f["name"] for f in meta["source_files"]} == {
        p.name for p in shared_data_dir.glob("*.csv")
    }
    assert all(len(f["sha256"]) == 64 for f in meta["source_files"])
    warm = meta["feature_engineering"]["warmup_rows_dropped"]
    assert all(warm[s] > 0 for s in symbols)
    assert meta["rows"]["prepared"] == sum(s["rows_out"] for s in symbols.values()) - sum(
        warm.values()
    )
