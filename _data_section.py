# --- BEGIN DEV IMPORTS (deleted when merged into common.py)
import ast
import csv
import glob
import gzip
import hashlib
import http.client
import io
import json
import os
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass
from functools import partial
from typing import Callable

import numpy as np
from tqdm import tqdm

from common import Interactions, RecError, positions_within_users
# --- END DEV IMPORTS


# ----------------------------------------------------------------------------------------------------------
# 2b. Real datasets: registry, download, parsers, preprocessing, cache
# ----------------------------------------------------------------------------------------------------------
# `load_dataset(name)` looks in <data_dir>/<name>/ (and its immediate subfolders) for the files below, in this
# priority order: the official raw file, the official archive, a RecBole atomic `*.inter`, then the community's
# preprocessed files. When none is there it downloads the official file (checksum verified) or, for Yelp,
# says where to get it. `load_dataset("path/to/file.csv")` reads a custom `user,item[,rating[,timestamp]]` file.
#
# | name        | official source (downloaded on first use)               | community files       | default on raw files            | follows        | terms of use |
# |-------------|---------------------------------------------------------|-----------------------|---------------------------------|----------------|--------------|
# | ml-100k     | grouplens.org ml-100k.zip (md5 from GroupLens)          | RecBole ml-100k.inter | rating >= 3, 10-core            | ICPNS          | GroupLens: research only, no redistribution, no commercial use, cite Harper & Konstan 2015 |
# | ml-1m       | grouplens.org ml-1m.zip (md5 from GroupLens)            | SASRec ml-1m.txt      | rating >= 3, 10-core            | ICPNS          | as ml-100k |
# | beauty      | SNAP reviews_Beauty_5.json.gz (no checksum published)   | S3-Rec Beauty.txt     | all ratings, 5-core             | S3-Rec, MDCNS  | Amazon 2014 (McAuley, UCSD): research only, no licence, cite He & McAuley 2016, McAuley et al. 2015 |
# | sports      | SNAP reviews_Sports_and_Outdoors_5.json.gz              | S3-Rec Sports_and_Outdoors.txt | all ratings, 5-core    | S3-Rec, MDCNS  | as beauty |
# | toys        | SNAP reviews_Toys_and_Games_5.json.gz                   | S3-Rec Toys_and_Games.txt | all ratings, 5-core         | S3-Rec, MDCNS  | as beauty |
# | video-games | SNAP reviews_Video_Games_5.json.gz                      | SASRec Video.txt      | all ratings, 5-core             | S3-Rec recipe  | as beauty, cite SASRec |
# | yelp        | none: accept Yelp's Dataset License at yelp.com/dataset | S3-Rec Yelp.txt       | reviews of 2019, all, 5-core    | S3-Rec         | Yelp Dataset License: non-commercial, no redistribution |
# | lastfm      | grouplens.org hetrec2011-lastfm-2k.zip (community sha256) | S3-Rec LastFM.txt, LightGCN data1.txt+test1.txt | all taggings, 5-core | S3-Rec, MDCNS | HetRec 2011: non-commercial, cite Cantador et al. 2011 |
# | gowalla     | SNAP loc-gowalla_totalCheckins.txt.gz                   | LightGCN train.txt+test.txt | all check-ins, 10-core    | NGCF, LightGCN | SNAP: research, cite Cho et al. KDD 2011 |
# | steam       | UCSD steam_reviews.json.gz                              | SASRec Steam.txt      | all reviews, 5-core             | SASRec         | UCSD (McAuley): research, cite Kang & McAuley ICDM 2018 |
# | yelp2018    | none: Yelp licence; the split is in kuandeng/LightGCN   | LightGCN train.txt+test.txt | as published            | NGCF, LightGCN | Yelp Dataset License |
# | amazon-book | kuandeng/LightGCN Data/amazon-book/{train,test}.txt     | (that is the source)  | as published                    | NGCF, LightGCN | Amazon 2014: research only |
#
# Preprocessing, in RecBole's order (`Dataset._data_filtering`): rows are sorted per user by time (stable: equal
# timestamps and files without time keep file order); the time window (yelp only); duplicates: the first
# (chronological) occurrence of each (user, item) pair is kept, later ones dropped; rating threshold; iterative
# k-core on users and items. Community preprocessed files (SASRec, S3-Rec, LightGCN) are used as published by
# default (no rating, no further k-core, only the duplicate rule: S3-Rec's Yelp.txt loses its 11,830 repeats);
# an explicit --k-core filters them too. LightGCN's train/test files are concatenated (train lines, then test
# lines, file order); their split is not kept, the project re-splits. Ids are remapped by first appearance.
# Results are cached in <data_dir>/<name>/processed/<key>.npz, or in $XDG_CACHE_HOME/negsampling/<name>/
# (default ~/.cache/negsampling/<name>/) when the data folder is read-only. The key hashes each source file's
# path, size and modification time with every preprocessing setting.


@dataclass
class _Columns:
    """What a reader returns: one entry per interaction row, in file order."""

    user: np.ndarray
    item: np.ndarray
    rating: np.ndarray | None = None   # float64
    time: np.ndarray | None = None     # float64 seconds (or the file's unit: only the order matters)


@dataclass(frozen=True)
class FileFormat:
    description: str                           # printed on every load
    read: Callable[[list], _Columns]           # read([(path, zip member or None), ...])
    published: bool = False                    # a community file, already preprocessed: used as published


@dataclass(frozen=True)
class DatasetSpec:
    title: str
    files: tuple            # accepted local files, in priority order: ((file names or globs), FileFormat, member)
    downloads: tuple = ()   # ((url, file name, sha256, md5), ...) fetched into <data_dir>/<name>/ if nothing is found
    min_rating: float | None = None  # default threshold, applied to files that have ratings
    k_core: int = 0                  # default k-core, applied to files that are not already preprocessed
    time_window: tuple | None = None  # default [start, end) in unix seconds, for raw files with timestamps
    follows: str = ""
    terms: str = ""
    manual: str = ""        # where to get the files by hand when there is no download


# ---------------------------------------------------------------- readers: file -> _Columns (file order)
def _open_text(path: str, member: str | None, encoding: str):
    if member is not None:  # archive members used here are small (ratings.dat: 24 MB), read whole
        with zipfile.ZipFile(path) as archive:
            if member not in archive.namelist():
                raise RecError(f"{path} has no member {member}; delete it and run again to download a fresh copy")
            return io.StringIO(archive.read(member).decode(encoding))
    if path.endswith(".gz"):
        return gzip.open(path, "rt", encoding=encoding)
    return open(path, encoding=encoding)


def _line_chunks(path: str, member: str | None, encoding: str, chunk_bytes: int = 1 << 24):
    """Yield (1-based line numbers, lines) of the non-blank lines, about `chunk_bytes` of text at a time."""
    with _open_text(path, member, encoding) as f:
        first = 1
        while lines := f.readlines(chunk_bytes):
            stripped = [line.rstrip("\r\n") for line in lines]
            nonblank = np.fromiter((bool(line.strip()) for line in stripped), bool, len(stripped))
            yield np.arange(first, first + len(lines))[nonblank], [s for s, k in zip(stripped, nonblank) if k]
            first += len(lines)


def _where(path: str, member: str | None) -> str:
    return f"{path}:{member}" if member else path


def _first_bad(values, numbers, convert, where: str, what: str):
    """Slow path, only after a vectorised conversion failed: name the first offending line."""
    for value, number in zip(values, numbers):
        try:
            convert(value)
        except (ValueError, TypeError):
            raise RecError(f"{where}, line {number}: {what} {value!r} is not valid") from None
    raise RecError(f"{where}: could not read the {what} column")


def _is_number(text) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def _to_float(values, numbers, where: str, what: str) -> np.ndarray:
    try:
        return np.asarray(values).astype(np.float64)
    except (ValueError, TypeError):
        _first_bad(values, numbers, float, where, what)


def _to_seconds(values, numbers, where: str) -> np.ndarray:
    """Unix timestamps as they are; ISO dates and date-times ('2019-01-01 10:00:00', '...T23:55:27Z') as seconds."""
    values = np.asarray(values)
    if values.dtype.kind in "iuf":
        return values.astype(np.float64)
    if _is_number(values[0]):
        return _to_float(values, numbers, where, "timestamp")
    try:
        return _as_date(values).astype(np.int64).astype(np.float64)
    except ValueError:
        _first_bad(values, numbers, _as_date, where, "timestamp")


def _as_date(values) -> np.ndarray:
    return np.asarray(np.char.rstrip(np.asarray(values, dtype=str), "Z")).astype("datetime64[s]")  # UTC


def _split(lines: list, sep: str | None) -> list:
    if sep == ",":
        return list(csv.reader(lines))  # honours quoted fields
    return [line.split(sep) for line in lines]  # sep None: runs of whitespace


def _read_delimited(sources, sep: str | None, n_fields: int, columns: dict, skip_header: int = 0,
                    encoding: str = "utf-8") -> _Columns:
    """Rows of exactly `n_fields` fields; `columns` maps user/item/rating/time to field indices."""
    parts = {name: [] for name in columns}
    for path, member in sources:
        where, skip = _where(path, member), skip_header
        for numbers, lines in _line_chunks(path, member, encoding):
            numbers, lines = numbers[skip:], lines[skip:]
            skip = 0
            if sep in ("\t", "::"):  # fast path for the official files: one split for the whole chunk
                lengths = np.char.count(np.array(lines), sep) + 1
                rows = sep.join(lines).split(sep)
            else:
                rows = _split(lines, sep)
                lengths = np.fromiter(map(len, rows), np.int64, len(rows))
            bad = np.flatnonzero(lengths != n_fields)
            if bad.size:
                raise RecError(f"{where}, line {numbers[bad[0]]}: expected {n_fields} fields separated by "
                               f"{sep or 'whitespace'!r}, found {lengths[bad[0]]}: {lines[bad[0]][:80]!r}")
            if not rows:
                continue
            table = np.char.strip(np.array(rows, dtype=str)).reshape(len(lines), n_fields)  # (rows, fields)
            for name, column in columns.items():
                values = table[:, column]
                if name == "rating":
                    values = _to_float(values, numbers, where, "rating")
                elif name == "time":
                    values = _to_seconds(values, numbers, where)
                parts[name].append(values)
    return _Columns(**{name: np.concatenate(p) if p else np.array([]) for name, p in parts.items()})


def _read_bytes(path: str, member: str | None) -> bytes:
    if member is not None:
        with zipfile.ZipFile(path) as archive:
            return archive.read(member)
    with (gzip.open if path.endswith(".gz") else open)(path, "rb") as f:
        return f.read()


def _read_user_items(sources) -> _Columns:
    """Lines `user item item ...` (S3-Rec, LightGCN) or `user item` (SASRec): the same rule reads both. Ids are
    non-negative integers; a line with a user and no item (LightGCN: a user without test items) adds nothing.
    Parsed from the bytes at once (no per-line Python): ml-1m.txt's million lines take well under a second."""
    users, items = [], []
    for path, member in sources:
        data = _read_bytes(path, member)
        b = np.frombuffer(data, dtype=np.uint8)                                      # (bytes,)
        line = np.cumsum(b == ord("\n")) - (b == ord("\n"))                         # 0-based line of each byte
        token = ~np.isin(b, np.frombuffer(b" \t\r\n", dtype=np.uint8))
        bad = np.flatnonzero(token & ((b < ord("0")) | (b > ord("9"))))
        if bad.size:
            begin = data.rfind(b"\n", 0, bad[0]) + 1
            text = data[begin:begin + 80].split(b"\n")[0]
            raise RecError(f"{_where(path, member)}, line {line[bad[0]] + 1}: expected integer ids "
                           f"`user item ...`, found {text.decode('latin-1')!r}")
        start = np.flatnonzero(token & ~np.r_[False, token[:-1]])                  # (T,) first byte of each token
        if not start.size:
            continue
        digits = (b[token] - ord("0")).astype(np.int64)                            # token bytes, in order
        first = np.cumsum(np.r_[0, np.diff(np.flatnonzero(token)) > 1])             # token of each token byte
        length = np.bincount(first)                                                 # (T,) digits per token
        if length.max(initial=0) > 18:
            raise RecError(f"{_where(path, member)}: an id has more than 18 digits")
        place = np.cumsum(length)[first] - 1 - np.arange(len(digits))               # 10^place of each digit
        value = np.add.reduceat(digits * 10 ** place, np.cumsum(length) - length)   # (T,)
        token_line = line[start]                                                    # (T,)
        opens = np.r_[True, token_line[1:] != token_line[:-1]]                      # (T,) first token of a line
        users.append(value[opens][np.cumsum(opens) - 1][~opens])
        items.append(value[~opens])
    return _Columns(*(np.concatenate(p) if p else np.array([], dtype=np.int64) for p in (users, items)))


def _read_json_lines(sources, user: str, item: str, rating: str | None = None, time: str | None = None) -> _Columns:
    """One record per line: JSON, or a Python dict literal (the Steam files and Amazon 2014 metadata use those)."""
    fields = [f for f in (user, item, rating, time) if f]
    parts = {f: [] for f in fields}
    for path, member in sources:
        parse = None
        for numbers, lines in _line_chunks(path, member, "utf-8"):
            if parse is None:
                parse = json.loads if lines[0].lstrip().startswith("{\"") else ast.literal_eval
            values = {f: [] for f in fields}
            for number, line in zip(numbers, lines):
                try:
                    record = parse(line)
                    for f in fields:
                        values[f].append(record[f])
                except (ValueError, SyntaxError, KeyError, TypeError) as error:
                    raise RecError(f"{path}, line {number}: not a record with fields {fields} "
                                   f"({type(error).__name__}: {error})") from None
            parts[user].append(np.array(values[user], dtype=str))
            parts[item].append(np.array(values[item], dtype=str))
            if rating:
                parts[rating].append(_to_float(values[rating], numbers, path, "rating"))
            if time:
                parts[time].append(_to_seconds(values[time], numbers, path))
    joined = {f: np.concatenate(p) if p else np.array([]) for f, p in parts.items()}
    return _Columns(joined[user], joined[item], joined.get(rating), joined.get(time))


def _read_recbole(sources) -> _Columns:
    """RecBole atomic `.inter`: tab-separated, header `user_id:token item_id:token [rating:float] [timestamp:float]`
    in any column order (RecBole's docs, "Atomic files")."""
    (path, member), = sources
    with _open_text(path, member, "utf-8") as f:
        header = [field.split(":")[0] for field in f.readline().rstrip("\r\n").split("\t")]
    wanted = {"user": "user_id", "item": "item_id", "rating": "rating", "time": "timestamp"}
    if "user_id" not in header or "item_id" not in header:
        raise RecError(f"{path}, line 1: a RecBole .inter header needs user_id and item_id, found {header}")
    columns = {name: header.index(field) for name, field in wanted.items() if field in header}
    return _read_delimited(sources, "\t", len(header), columns, skip_header=1)


_HEADER_NAMES = {"user", "users", "userid", "user_id", "uid"}


def _read_custom(sources) -> _Columns:
    """A user's file `user,item[,rating[,timestamp]]`.

    Separator: the first of `::`, tab, comma found on every one of the first 20 lines, else whitespace.
    Header: the first line is a header when its first field is a user column name (user, user_id, userid, uid,
    with an optional RecBole `:type`) or one of its fields is not a number where the second line has one.
    Text is UTF-8, or Latin-1 when it is not valid UTF-8 (MovieLens files). Timestamps: unix numbers or ISO dates.
    """
    try:
        return _read_custom_encoded(sources, "utf-8")
    except UnicodeDecodeError:
        return _read_custom_encoded(sources, "latin-1")


def _read_custom_encoded(sources, encoding: str) -> _Columns:
    (path, member), = sources
    with _open_text(path, member, encoding) as f:
        head = [line.rstrip("\r\n") for line in f.readlines(1 << 16) if line.strip()][:20]
    if not head:
        raise RecError(f"{path}: the file is empty")
    sep = next((s for s in ("::", "\t", ",") if all(s in line for line in head)), None)
    first = [field.strip() for field in _split(head[:1], sep)[0]]
    second = [field.strip() for field in _split(head[1:2], sep)[0]] if len(head) > 1 else first
    header = first[0].split(":")[0].lower() in _HEADER_NAMES or any(
        not _is_number(a) and _is_number(b) for a, b in zip(first, second))
    if len(first) < 2:
        raise RecError(f"{path}, line 1: expected at least `user{sep or ' '}item`, found {head[0][:80]!r}")
    names = ("user", "item", "rating", "time")[:len(first)]  # further columns are read but not used
    return _read_delimited(sources, sep, len(first), {name: i for i, name in enumerate(names)},
                           skip_header=int(header), encoding=encoding)


# ---------------------------------------------------------------- the registry
def _movielens(sep: str, description: str) -> FileFormat:
    return FileFormat(description, partial(_read_delimited, sep=sep, n_fields=4, encoding="latin-1",
                                           columns={"user": 0, "item": 1, "rating": 2, "time": 3}))


_ML100K = _movielens("\t", "official MovieLens u.data (tab: user item rating timestamp)")
_ML1M = _movielens("::", "official MovieLens ratings.dat (UserID::MovieID::Rating::Timestamp)")
_AMAZON = FileFormat("official Amazon 2014 reviews (JSON lines: reviewerID, asin, overall, unixReviewTime)",
                     partial(_read_json_lines, user="reviewerID", item="asin", rating="overall", time="unixReviewTime"))
_YELP = FileFormat("official Yelp reviews (JSON lines: user_id, business_id, stars, date)",
                   partial(_read_json_lines, user="user_id", item="business_id", rating="stars", time="date"))
_STEAM = FileFormat("official Steam reviews (Python-literal lines: username, product_id, date)",
                    partial(_read_json_lines, user="username", item="product_id", time="date"))
_HETREC = FileFormat("official HetRec 2011 user_taggedartists-timestamps.dat (tab: userID artistID tagID timestamp)",
                     partial(_read_delimited, sep="\t", n_fields=4, skip_header=1,
                             columns={"user": 0, "item": 1, "time": 3}))
_GOWALLA = FileFormat("official SNAP Gowalla check-ins (tab: user, time, latitude, longitude, location)",
                      partial(_read_delimited, sep="\t", n_fields=5, columns={"user": 0, "item": 4, "time": 1}))
_RECBOLE = FileFormat("RecBole atomic .inter", _read_recbole)
_SEQUENCES = FileFormat("SASRec `user item` / S3-Rec `user item item ...` lines, chronological, as published",
                        _read_user_items, published=True)
_LIGHTGCN = FileFormat("LightGCN train.txt + test.txt (`user item item ...`, no time), as published",
                       _read_user_items, published=True)
_LIGHTGCN_LASTFM = FileFormat("LightGCN lastfm data1.txt + test1.txt (tab: user item weight, no time), as published",
                              partial(_read_delimited, sep="\t", n_fields=3, columns={"user": 0, "item": 1}),
                              published=True)
_CUSTOM = FileFormat("custom user,item[,rating[,timestamp]] file", _read_custom)

_GROUPLENS_TERMS = ("GroupLens: research use only; no redistribution; no commercial use without permission; "
                    "acknowledge it and cite Harper & Konstan, ACM TiiS 2015")
_AMAZON_TERMS = ("Amazon 2014 reviews (McAuley, UCSD): no formal licence, research use only, do not redistribute; "
                 "cite He & McAuley WWW 2016 and McAuley et al. SIGIR 2015")
_YELP_TERMS = ("Yelp Dataset License: personal, educational and academic use only; no redistribution; "
               "download it yourself after accepting the licence")
_SNAP_AMAZON = "https://snap.stanford.edu/data/amazon/productGraph/categoryFiles/"
_LIGHTGCN_DATA = "https://raw.githubusercontent.com/kuandeng/LightGCN/master/Data/"


def _amazon(category: str, community: str, follows: str, title: str) -> DatasetSpec:
    archive = f"reviews_{category}_5.json.gz"
    return DatasetSpec(
        title, files=(((archive,), _AMAZON, None), (("*.inter",), _RECBOLE, None), ((community,), _SEQUENCES, None)),
        downloads=((_SNAP_AMAZON + archive, archive, None, None),), k_core=5, follows=follows, terms=_AMAZON_TERMS)


DATASETS = {
    "ml-100k": DatasetSpec(
        "MovieLens 100K", files=((("u.data",), _ML100K, None), (("ml-100k.zip",), _ML100K, "ml-100k/u.data"),
                                 (("*.inter",), _RECBOLE, None)),
        downloads=(("https://files.grouplens.org/datasets/movielens/ml-100k.zip", "ml-100k.zip",
                    "50d2a982c66986937beb9ffb3aa76efe955bf3d5c6b761f4e3a7cd717c6a3229",
                    "0e33842e24a9c977be4e0107933c0723"),),
        min_rating=3, k_core=10, terms=_GROUPLENS_TERMS,
        follows="ICPNS (RecBole yaml: rating in [3,inf), users and items in [10,inf))"),
    "ml-1m": DatasetSpec(
        "MovieLens 1M", files=((("ratings.dat",), _ML1M, None), (("ml-1m.zip",), _ML1M, "ml-1m/ratings.dat"),
                               (("*.inter",), _RECBOLE, None), (("ml-1m.txt",), _SEQUENCES, None)),
        downloads=(("https://files.grouplens.org/datasets/movielens/ml-1m.zip", "ml-1m.zip",
                    "a6898adb50b9ca05aa231689da44c217cb524e7ebd39d264c56e2832f2c54e20",
                    "c4d9eecfca2ab87c1945afe126590906"),),
        min_rating=3, k_core=10, terms=_GROUPLENS_TERMS,
        follows="ICPNS (RecBole: 6,034 users, 3,124 items, 834,449 interactions); SASRec's ml-1m.txt "
                "(all ratings, items >= 5) as published"),
    "beauty": _amazon("Beauty", "Beauty.txt", "S3-Rec / MDCNS (all ratings, iterative 5-core)", "Amazon Beauty 2014"),
    "sports": _amazon("Sports_and_Outdoors", "Sports_and_Outdoors.txt", "S3-Rec / MDCNS (all ratings, 5-core)",
                      "Amazon Sports and Outdoors 2014"),
    "toys": _amazon("Toys_and_Games", "Toys_and_Games.txt", "S3-Rec / MDCNS (all ratings, 5-core)",
                    "Amazon Toys and Games 2014"),
    # Note: SASRec's Video.txt was built from the full review file with a single-pass 5 filter; from the official
    # 5-core file we apply S3-Rec's recipe (iterative 5-core), so the raw-file statistics differ from SASRec's.
    "video-games": _amazon("Video_Games", "Video.txt", "S3-Rec's recipe on the 5-core file (SASRec's Video.txt "
                           "as published)", "Amazon Video Games 2014"),
    "yelp": DatasetSpec(
        "Yelp Open Dataset (2019 reviews)",
        files=((("yelp_academic_dataset_review.json",), _YELP, None), (("*.inter",), _RECBOLE, None),
               (("Yelp.txt",), _SEQUENCES, None)),
        k_core=5, time_window=(1546300800, 1577836800), terms=_YELP_TERMS,  # [2019-01-01, 2020-01-01) UTC
        follows="S3-Rec (reviews dated 2019, all ratings, iterative 5-core); ICPNS's yaml uses rating >= 3, "
                "10-core: pass --min-rating 3 --k-core 10",
        manual="Yelp requires accepting its Dataset License: get the dataset from https://www.yelp.com/dataset, "
               "extract yelp_academic_dataset_review.json"),
    "lastfm": DatasetSpec(
        "Last.fm HetRec 2011 (lastfm-2k)",
        files=((("user_taggedartists-timestamps.dat",), _HETREC, None),
               (("hetrec2011-lastfm-2k.zip",), _HETREC, "user_taggedartists-timestamps.dat"),
               (("*.inter",), _RECBOLE, None), (("LastFM.txt",), _SEQUENCES, None),
               (("data1.txt", "test1.txt"), _LIGHTGCN_LASTFM, None)),
        downloads=(("https://files.grouplens.org/datasets/hetrec2011/hetrec2011-lastfm-2k.zip",
                    "hetrec2011-lastfm-2k.zip",
                    # pinned by third-party projects (omnirec and others), not published by GroupLens
                    "6738f48195667ff03caaab4d32ca9a3133d8cc026b7c3cdaf6ce1010e913c59c", None),),
        k_core=5, follows="S3-Rec / MDCNS (first tagging time of each user-artist pair, iterative 5-core)",
        terms="HetRec 2011: non-commercial use; cite Cantador, Brusilovsky & Kuflik, HetRec 2011, and Last.fm"),
    "gowalla": DatasetSpec(
        "Gowalla check-ins (SNAP)",
        files=((("loc-gowalla_totalCheckins.txt.gz",), _GOWALLA, None), (("*.inter",), _RECBOLE, None),
               (("train.txt", "test.txt"), _LIGHTGCN, None)),
        downloads=(("https://snap.stanford.edu/data/loc-gowalla_totalCheckins.txt.gz",
                    "loc-gowalla_totalCheckins.txt.gz", None, None),),
        k_core=10, follows="NGCF / LightGCN (10-core; their split: 29,858 users, 40,981 items, 1,027,370)",
        terms="SNAP: research use; cite Cho, Myers & Leskovec, KDD 2011 (and NGCF/LightGCN for the split)"),
    "steam": DatasetSpec(
        "Steam reviews (UCSD, SASRec)",
        files=((("steam_reviews.json.gz",), _STEAM, None), (("*.inter",), _RECBOLE, None),
               (("Steam.txt",), _SEQUENCES, None)),
        downloads=(("https://cseweb.ucsd.edu/~wckang/steam_reviews.json.gz", "steam_reviews.json.gz", None, None),),
        k_core=5, follows="SASRec (users and items with >= 5 reviews; applied iteratively here)",
        terms="UCSD (McAuley lab): research use; cite Kang & McAuley ICDM 2018"),
    "yelp2018": DatasetSpec(
        "Yelp2018 (NGCF / LightGCN split)", files=((("train.txt", "test.txt"), _LIGHTGCN, None),),
        follows="NGCF / LightGCN (10-core upstream; 31,668 users, 38,048 items, 1,561,406)", terms=_YELP_TERMS,
        manual="this Yelp derivative is distributed only inside github.com/kuandeng/LightGCN (Data/yelp2018/) under "
               "Yelp's Dataset License: after accepting it, save train.txt and test.txt"),
    "amazon-book": DatasetSpec(
        "Amazon-Book (NGCF / LightGCN split)", files=((("train.txt", "test.txt"), _LIGHTGCN, None),),
        downloads=((_LIGHTGCN_DATA + "amazon-book/train.txt", "train.txt", None, None),
                   (_LIGHTGCN_DATA + "amazon-book/test.txt", "test.txt", None, None)),
        follows="NGCF / LightGCN (10-core upstream; 52,643 users, 91,599 items, 2,984,108)", terms=_AMAZON_TERMS),
}


# ---------------------------------------------------------------- preprocessing
def k_core_filter(user, item, k: int) -> np.ndarray:
    """Boolean mask of the interactions in the k-core: repeatedly drop every interaction whose user or item has
    fewer than k kept interactions, until nothing changes. The result is the largest subset in which every user
    and item has >= k interactions (unique, whatever the removal order). Rows count as given: deduplicate first."""
    user = np.unique(np.asarray(user), return_inverse=True)[1].reshape(-1)
    item = np.unique(np.asarray(item), return_inverse=True)[1].reshape(-1)
    keep = np.ones(len(user), dtype=bool)
    while k > 1:
        user_count = np.bincount(user[keep], minlength=user.max(initial=0) + 1)     # (U,)
        item_count = np.bincount(item[keep], minlength=item.max(initial=0) + 1)     # (I,)
        still = keep & (user_count[user] >= k) & (item_count[item] >= k)
        if still.sum() == keep.sum():
            break
        keep = still
    return keep


def _preprocess(columns: _Columns, name: str, min_rating, k_core: int, time_window) -> tuple[Interactions, str]:
    """Time window, duplicates (first chronological occurrence kept), rating threshold, iterative k-core: in
    RecBole's order. Returns the interactions and a one-line summary of what each step removed."""
    n = len(columns.user)
    user = np.unique(columns.user, return_inverse=True)[1].reshape(-1)
    item = np.unique(columns.item, return_inverse=True)[1].reshape(-1)
    time = columns.time if columns.time is not None else np.zeros(n)
    rows = np.lexsort((np.arange(n), time, user))       # per user, chronological; ties keep file order
    log = [f"{n:,} rows"]

    def step(label: str, keep: np.ndarray) -> np.ndarray:
        if not keep.any():
            raise RecError(f"{name}: the {label} left no interactions (before it: {len(rows):,} interactions, "
                           f"{len(np.unique(user[rows])):,} users, {len(np.unique(item[rows])):,} items)")
        log.append(f"{label} -{int((~keep).sum()):,}")
        return rows[keep]

    if time_window is not None and columns.time is not None:
        rows = step(f"time window [{time_window[0]:.0f}, {time_window[1]:.0f})",
                    (time[rows] >= time_window[0]) & (time[rows] < time_window[1]))
    pair = user[rows].astype(np.int64) * (item.max() + 1) + item[rows]
    first = np.zeros(len(rows), dtype=bool)
    first[np.unique(pair, return_index=True)[1]] = True  # index of the first occurrence in chronological order
    rows = step("duplicate filter", first)
    if min_rating is not None:
        rows = step(f"rating >= {min_rating:g} filter", columns.rating[rows] >= min_rating)
    if k_core > 1:
        rows = step(f"{k_core}-core filter", k_core_filter(user[rows], item[rows], k_core))
    rows = np.sort(rows)                                  # file order: ids are numbered by first appearance
    data = Interactions.from_raw(user[rows], item[rows], None if columns.time is None else time[rows], name=name)
    return data, ", ".join(log) + f" -> {len(rows):,} interactions"


# ---------------------------------------------------------------- download
def download(url: str, destination_path: str, sha256: str | None = None, md5: str | None = None) -> str:
    """Fetch `url` to `destination_path` with a progress bar. The bytes go to `<destination>.part` and are renamed
    only when complete (Content-Length reached) and matching the checksums, so an interrupted, truncated or
    corrupted download never leaves a file that a later run would trust."""
    folder, file_name = os.path.split(os.path.abspath(destination_path))
    os.makedirs(folder, exist_ok=True)
    partial_path = destination_path + ".part"
    digests = {"sha256": hashlib.sha256(), "md5": hashlib.md5()}
    by_hand = f"download it by hand and save it as {file_name} in {folder}/"
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(partial_path, "wb") as out:
            expected_size, received = response.length, 0  # Content-Length, None when the server sends none
            with tqdm(total=expected_size, unit="B", unit_scale=True, desc=file_name) as bar:
                while chunk := response.read(1 << 20):
                    out.write(chunk)
                    for digest in digests.values():
                        digest.update(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
        if expected_size is not None and received != expected_size:
            raise http.client.IncompleteRead(b"", expected_size - received)
        for algorithm, expected in (("sha256", sha256), ("md5", md5)):
            actual = digests[algorithm].hexdigest()
            if expected is not None and actual != expected.lower():
                raise RecError(f"checksum mismatch for {url}: {algorithm} {actual}, expected {expected}; the "
                               f"download was discarded. If the owner has changed the file, {by_hand}")
        os.replace(partial_path, destination_path)
    except (OSError, http.client.HTTPException) as error:  # URLError, HTTPError, timeouts, IncompleteRead
        raise RecError(f"could not download {url} ({type(error).__name__}: {error}); {by_hand}") from None
    finally:
        if os.path.exists(partial_path):
            os.remove(partial_path)
    return destination_path


# ---------------------------------------------------------------- local files and cache
def _find_files(spec: DatasetSpec, folder: str):
    """The first accepted file set, by the spec's priority, in `folder` or one of its subfolders (name order)."""
    if not os.path.isdir(folder):
        return None
    subfolders = sorted(e.path for e in os.scandir(folder) if e.is_dir() and e.name != "processed")
    for names, fmt, member in spec.files:
        for directory in [folder] + subfolders:
            paths = [sorted(glob.glob(os.path.join(glob.escape(directory), name))) for name in names]
            if all(paths):
                return [p[0] for p in paths], fmt, member
    return None


def _cache_folders(folder: str, name: str) -> list:
    """<folder>/processed when the data folder is writable and not marked read-only (root may write anywhere,
    but a shared data folder without write bits stays untouched), then the user's cache."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    user_cache = os.path.join(base, "negsampling", name)
    writable = os.access(folder, os.W_OK) and os.stat(folder).st_mode & 0o222
    return ([os.path.join(folder, "processed")] if writable else []) + [user_cache]


def _save_cache(folders: list, file_name: str, data: Interactions, summary: str) -> str | None:
    """Atomic write (temporary file, then rename) into the first writable folder; None when none is."""
    for folder in folders:
        temporary = None
        try:
            os.makedirs(folder, exist_ok=True)
            handle, temporary = tempfile.mkstemp(dir=folder, suffix=".tmp")
            with os.fdopen(handle, "wb") as f:
                np.savez(f, user=data.user, item=data.item, n_users=data.n_users, n_items=data.n_items,
                         source=data.source, summary=summary)
            os.replace(temporary, os.path.join(folder, file_name))
            return os.path.join(folder, file_name)
        except OSError:  # read-only data folder: try the next one
            if temporary is not None and os.path.exists(temporary):
                os.remove(temporary)
    return None


def _load_cache(folders: list, file_name: str, name: str):
    for folder in folders:
        path = os.path.join(folder, file_name)
        if os.path.exists(path):
            with np.load(path, allow_pickle=False) as z:
                user = z["user"]
                data = Interactions(user, z["item"], positions_within_users(user), int(z["n_users"]),
                                    int(z["n_items"]), name, str(z["source"]))
                return data, str(z["summary"]), path
    return None


def load_dataset(name_or_path: str, data_dir: str = "data", min_rating: float | None = None,
                 k_core: int | None = None, use_cache: bool = True) -> Interactions:
    """Load a registered dataset (see DATASETS and the table above) or a custom file, preprocessed and cached.

    min_rating / k_core: None = the dataset's default for the file found (the table above); an explicit
    min_rating on a file without ratings is an error. Prints one line: the file, its format, the settings, what
    each step removed and the cache used.
    """
    if os.path.isfile(name_or_path):
        path = os.path.abspath(name_or_path)
        name, folder = os.path.splitext(os.path.basename(path))[0], os.path.dirname(path)
        spec = DatasetSpec("custom file", files=())
        found = [path], _CUSTOM, None
    elif name_or_path in DATASETS:
        name, spec = name_or_path, DATASETS[name_or_path]
        folder = os.path.join(data_dir, name)
        found = _find_files(spec, folder) or _fetch(spec, name, folder)
    else:
        raise RecError(f"unknown dataset {name_or_path!r} and no such file; known datasets: {', '.join(DATASETS)}; "
                       f"or give the path of a user,item[,rating[,timestamp]] CSV/TSV file")
    paths, fmt, member = found
    if fmt.published and min_rating is not None:
        raise RecError(f"{name}: {paths[0]} ({fmt.description}) has no ratings, so --min-rating cannot apply; "
                       f"place the official raw file in {folder}/")
    settings = {"min_rating": spec.min_rating if min_rating is None else min_rating,
                "k_core": (0 if fmt.published else spec.k_core) if k_core is None else k_core,
                "time_window": None if fmt.published else spec.time_window}
    stats = [(os.path.abspath(p), os.path.getsize(p), os.stat(p).st_mtime_ns) for p in paths]
    key = json.dumps({"version": 1, "files": stats, "member": member, "format": fmt.description, **settings})
    cache_name = f"{name}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.npz"
    where = " + ".join(paths) + (f" [{member}]" if member else "")

    folders = _cache_folders(folder, name)
    cached = _load_cache(folders, cache_name, name) if use_cache else None
    if cached is not None:
        data, summary, cache_path = cached
        print(f"[data] {name}: {where} ({fmt.description}); {summary}; from cache {cache_path}")
        return data
    try:
        columns = fmt.read([(p, member) for p in paths])
    except (EOFError, zipfile.BadZipFile, zlib.error, gzip.BadGzipFile) as error:
        raise RecError(f"{where} is truncated or corrupt ({type(error).__name__}: {error}); delete it and run "
                       f"again to download a fresh copy, or replace it by hand") from None
    except UnicodeDecodeError as error:
        raise RecError(f"{where}: not valid text ({error})") from None
    if len(columns.user) == 0:
        raise RecError(f"{name}: {where} holds no interactions")
    if columns.rating is None and min_rating is not None:
        raise RecError(f"{name}: {where} ({fmt.description}) has no rating column, so --min-rating cannot apply")
    data, summary = _preprocess(columns, name, settings["min_rating"] if columns.rating is not None else None,
                                settings["k_core"], settings["time_window"])
    data.source = f"{where} ({fmt.description})"
    cache_path = _save_cache(folders, cache_name, data, summary) if use_cache else None
    print(f"[data] {name}: {where} ({fmt.description}); {summary}; "
          f"{'cached to ' + cache_path if cache_path else 'not cached'}")
    return data


def _fetch(spec: DatasetSpec, name: str, folder: str):
    """Download the official files into `folder` (skipping those already there), or say where to get them."""
    accepted = ", ".join(" + ".join(names) for names, _, _ in spec.files)
    if not spec.downloads:
        raise RecError(f"{name}: no data file in {folder}/. {spec.manual} and put it in {folder}/ "
                       f"(accepted files, by priority: {accepted})")
    for url, file_name, sha256, md5 in spec.downloads:
        destination = os.path.join(folder, file_name)
        if not os.path.exists(destination):
            try:
                download(url, destination, sha256=sha256, md5=md5)
            except RecError as error:
                raise RecError(f"{name}: {error} (files accepted in {folder}/, by priority: {accepted})") from None
    return _find_files(spec, folder)


def add_data_arguments(parser) -> None:
    """--min-rating and --k-core; their defaults depend on the dataset and the file found (see the help)."""
    by_value = {}
    for name, spec in DATASETS.items():
        rule = "as published" if not spec.k_core else (
            f"{'all ratings' if spec.min_rating is None else f'rating >= {spec.min_rating:g}'}, {spec.k_core}-core")
        by_value.setdefault(rule, []).append(name)
    defaults = "; ".join(f"{', '.join(names)}: {rule}" for rule, names in by_value.items())
    parser.add_argument("--min-rating", type=float, default=None,
                        help="keep interactions rated >= this (files with ratings only). Default per dataset on "
                             "its official raw file: " + "; ".join(
                                 f"{n}: {s.min_rating:g}" for n, s in DATASETS.items() if s.min_rating is not None)
                             + " (ICPNS); all ratings elsewhere (S3-Rec, SASRec, NGCF). Community files (SASRec, "
                               "S3-Rec, LightGCN) have no ratings: setting it for them is an error")
    parser.add_argument("--k-core", type=int, default=None,
                        help="iterative k-core: drop users and items with fewer than k interactions until none "
                             "is left. Default on official raw files: " + defaults + ". Community preprocessed "
                             "files (SASRec, S3-Rec, LightGCN) are used as published unless this is set; "
                             "0 disables it")
