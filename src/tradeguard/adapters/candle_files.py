"""Read and write candles in Freqtrade's data-directory layout (feather, parquet, json, json.gz) and CSV.

Layout (as Freqtrade writes it):
- spot:    ``DIR/BTC_USDT-1h.feather``
- futures: ``DIR/futures/BTC_USDT_USDT-1h-futures.feather`` (pair ``BTC/USDT:USDT``)
- funding: ``DIR/futures/BTC_USDT_USDT-8h-funding_rate.feather`` (rate in the ``open`` column)
A file whose name merely ends with the expected name (``exported_BTC_USDT-1h.feather``) is accepted when it
is the only such file.
"""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd

from tradeguard.core.candles import COLUMNS, validate_frame
from tradeguard.errors import DataFormatError, DataNotFoundError, InputError

FORMATS = ("feather", "parquet", "json", "json.gz", "csv")
_PAIR = re.compile(r"^[A-Z0-9._-]+/[A-Z0-9._-]+(:[A-Z0-9._-]+)?$", re.IGNORECASE)


def parse_pair(pair: str) -> str:
    """Normalise a ccxt pair (``BTC/USDT`` spot, ``BTC/USDT:USDT`` futures); raise InputError if malformed."""
    pair = pair.strip().upper()
    if not _PAIR.match(pair):
        raise InputError(f"invalid pair {pair!r}: use ccxt form, e.g. BTC/USDT or BTC/USDT:USDT")
    return pair


def is_futures(pair: str) -> bool:
    return ":" in pair


def pair_to_filename(pair: str) -> str:
    """Freqtrade's file stem for a pair: ``BTC/USDT:USDT`` -> ``BTC_USDT_USDT``."""
    return re.sub(r"[/ .@$+:-]", "_", pair)


def candle_stem(pair: str, timeframe: str, candle_type: str | None = None) -> str:
    """File name without extension; candle_type defaults to futures for ``:SETTLE`` pairs, else spot."""
    candle_type = candle_type or ("futures" if is_futures(pair) else "spot")
    suffix = "" if candle_type == "spot" else f"-{candle_type}"
    return f"{pair_to_filename(pair)}-{timeframe}{suffix}"


def _folder(data_dir: Path, candle_type: str) -> Path:
    return data_dir if candle_type == "spot" else data_dir / "futures"


def find_candle_file(data_dir: Path, pair: str, timeframe: str, candle_type: str | None = None) -> Path:
    """Locate the file for a pair and timeframe, trying every supported format."""
    candle_type = candle_type or ("futures" if is_futures(pair) else "spot")
    folder = _folder(Path(data_dir), candle_type)
    stem = candle_stem(pair, timeframe, candle_type)
    if not folder.is_dir():
        raise DataNotFoundError(f"data directory {folder} does not exist")
    for fmt in FORMATS:
        exact = folder / f"{stem}.{fmt}"
        if exact.is_file():
            return exact
    for fmt in FORMATS:
        loose = sorted(folder.glob(f"*{stem}.{fmt}"))
        if len(loose) == 1:
            return loose[0]
    available = ", ".join(available_pairs(Path(data_dir), timeframe)) or "none"
    raise DataNotFoundError(
        f"no {timeframe} candles for {pair} in {folder} (looked for {stem}.{{{','.join(FORMATS)}}}); "
        f"pairs with {timeframe} data there: {available}"
    )


def available_pairs(data_dir: Path, timeframe: str) -> list[str]:
    """Pairs with candle files of this timeframe (spot at the top level, futures in ``futures/``)."""
    found: set[str] = set()
    spot = re.compile(rf"(?:^|_)([A-Z0-9]+)_([A-Z0-9]+)-{re.escape(timeframe)}\.(?:{'|'.join(FORMATS)})$")
    fut = re.compile(
        rf"(?:^|_)([A-Z0-9]+)_([A-Z0-9]+)_([A-Z0-9]+)-{re.escape(timeframe)}-futures\.(?:{'|'.join(FORMATS)})$"
    )
    if data_dir.is_dir():
        for path in data_dir.iterdir():
            if m := spot.search(path.name):
                found.add(f"{m[1]}/{m[2]}")
    if (data_dir / "futures").is_dir():
        for path in (data_dir / "futures").iterdir():
            if m := fut.search(path.name):
                found.add(f"{m[1]}/{m[2]}:{m[3]}")
    return sorted(found)


def read_candle_file(path: Path) -> pd.DataFrame:
    """Read one candle file of any supported format into a validated Freqtrade frame."""
    path = Path(path)
    name = path.name.lower()
    try:
        if name.endswith(".feather"):
            df = pd.read_feather(path)
        elif name.endswith(".parquet"):
            df = pd.read_parquet(path)
        elif name.endswith((".json", ".json.gz")):
            df = _read_freqtrade_json(path)
        elif name.endswith(".csv"):
            df = _read_csv(path)
        else:
            raise DataFormatError(f"{path}: unknown format (expected one of {', '.join(FORMATS)})")
        if "date" in df.columns:
            df["date"] = _to_utc(df["date"])
        return validate_frame(df)
    except (ValueError, KeyError, TypeError, OSError) as exc:
        if isinstance(exc, DataFormatError | DataNotFoundError):
            raise
        raise DataFormatError(f"{path}: {exc}") from exc


def load_candles(data_dir: Path, pair: str, timeframe: str, candle_type: str | None = None) -> pd.DataFrame:
    """Find and read the candles of a pair; see the module docstring for the layout."""
    return read_candle_file(find_candle_file(Path(data_dir), parse_pair(pair), timeframe, candle_type))


def candle_path(data_dir: Path, pair: str, timeframe: str, fmt: str = "feather") -> Path:
    """Where Freqtrade keeps (and `write_candles` writes) a pair's candles in format `fmt`."""
    candle_type = "futures" if is_futures(pair) else "spot"
    return _folder(Path(data_dir), candle_type) / f"{candle_stem(pair, timeframe, candle_type)}.{fmt}"


def write_candles(df: pd.DataFrame, data_dir: Path, pair: str, timeframe: str, fmt: str = "feather") -> Path:
    """Write candles where Freqtrade would look for them; returns the path written."""
    if fmt not in FORMATS:
        raise InputError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    path = candle_path(data_dir, pair, timeframe, fmt)
    path.parent.mkdir(parents=True, exist_ok=True)
    frame = validate_frame(df).reset_index(drop=True)
    tmp = path.with_name(path.name + ".tmp")
    if fmt == "feather":
        frame.to_feather(tmp, compression="lz4")
    elif fmt == "parquet":
        frame.to_parquet(tmp, index=False)
    elif fmt == "csv":
        frame.assign(date=frame["date"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")).to_csv(tmp, index=False)
    else:
        rows = frame.assign(date=frame["date"].astype("int64") // 1_000_000).to_numpy().tolist()
        payload = json.dumps([[int(r[0]), *r[1:]] for r in rows]).encode()
        tmp.write_bytes(gzip.compress(payload) if fmt == "json.gz" else payload)
    tmp.replace(path)
    return path


def _read_freqtrade_json(path: Path) -> pd.DataFrame:
    raw = path.read_bytes()
    if path.name.lower().endswith(".gz"):
        raw = gzip.decompress(raw)
    rows = json.loads(raw)
    if not isinstance(rows, list) or (rows and len(rows[0]) != len(COLUMNS)):
        raise DataFormatError(f"{path}: expected Freqtrade json, a list of [ms, o, h, l, c, v] rows")
    return pd.DataFrame(rows, columns=COLUMNS)


def _read_csv(path: Path) -> pd.DataFrame:
    df = pd.read_csv(path)
    df.columns = [str(c).strip().lower() for c in df.columns]
    for alias in ("timestamp", "time", "datetime", "open_time"):
        if "date" not in df.columns and alias in df.columns:
            df = df.rename(columns={alias: "date"})
    return df


def _to_utc(values: pd.Series) -> pd.Series:
    """Dates as epoch seconds/ms/ns or ISO strings -> UTC timestamps; naive strings are read as UTC."""
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        return values.dt.tz_convert("UTC")
    if pd.api.types.is_datetime64_dtype(values.dtype):
        return values.dt.tz_localize("UTC")
    if pd.api.types.is_numeric_dtype(values.dtype):
        arr = values.to_numpy(dtype="float64")
        magnitude = np.nanmax(np.abs(arr)) if len(arr) else 0.0
        unit = "s" if magnitude < 1e11 else "ms" if magnitude < 1e14 else "ns"
        return pd.to_datetime(values.astype("int64"), unit=unit, utc=True)
    return pd.to_datetime(values, utc=True, format="ISO8601")
