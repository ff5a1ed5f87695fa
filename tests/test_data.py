"""Real-data loading: parsers, preprocessing, k-core, cache, downloader. No network, no shared data: every file is
written by the test, every download comes from a local HTTP server. Runs in a few seconds."""
import argparse
import dataclasses
import gzip
import hashlib
import http.server
import io
import os
import socket
import sys
import threading
import zipfile
from collections import Counter

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from common import (DATASETS, RecError, _read_user_items, add_data_arguments,  # noqa: E402
                           download, k_core_filter, load_dataset)


@pytest.fixture(autouse=True)
def user_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "user-cache"))
    return tmp_path / "user-cache"


def put(path, content):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


def gz(text: str) -> bytes:
    return gzip.compress(text.encode())


def sequences(data):
    """Each user's items in order, as lists (users and items numbered by first appearance in the file)."""
    assert (np.diff(data.user) >= 0).all()
    return [data.item[data.user == u].tolist() for u in range(data.n_users)]


def load(tmp_path, name, **settings):
    return load_dataset(name, data_dir=str(tmp_path / "data"), **settings)


# ---------------------------------------------------------------- parsers and preprocessing
U_DATA = ("1\t10\t5\t300\n"      # (1, 10) again below, earlier in time: this later duplicate is dropped
          "1\t20\t4\t100\n"
          "1\t10\t3\t50\n"
          "2\t20\t1\t10\n"
          "2\t30\t5\t10\n")      # same second as the row above: file order decides


def test_movielens_order_duplicates_and_rating_filter(tmp_path, capsys):
    put(tmp_path / "data/ml-100k/u.data", U_DATA)
    data = load(tmp_path, "ml-100k", min_rating=0, k_core=0)
    # file order of the kept rows numbers items 20 -> 1, 10 -> 2, 30 -> 3
    assert sequences(data) == [[2, 1], [1, 3]]
    assert data.position.tolist() == [0, 1, 0, 1]
    assert "u.data" in capsys.readouterr().out
    # duplicates go first (RecBole's order): (1, 10) keeps its first rating, 3, which rating >= 4 then drops
    assert sequences(load(tmp_path, "ml-100k", min_rating=3, k_core=0)) == [[2, 1], [3]]
    assert sequences(load(tmp_path, "ml-100k", min_rating=4, k_core=0)) == [[1], [2]]


def test_filters_that_empty_the_dataset_say_which_and_how_many(tmp_path):
    put(tmp_path / "data/ml-100k/u.data", U_DATA)
    with pytest.raises(RecError, match=r"10-core filter left no interactions \(before it: 3 interactions, 2 users"):
        load(tmp_path, "ml-100k")  # defaults: rating >= 3, 10-core
    with pytest.raises(RecError, match=r"rating >= 9 filter left no interactions \(before it: 4 interactions"):
        load(tmp_path, "ml-100k", min_rating=9, k_core=0)


RATINGS_DAT = "1::1193::5::978300760\n1::661::3::978300000\n2::1193::4::978298413\n"


def test_ml1m_from_archive_member_and_from_an_extracted_subfolder(tmp_path, capsys):
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("ml-1m/ratings.dat", RATINGS_DAT)
        z.writestr("ml-1m/movies.dat", "1::Mis\xe9rables (1995)::Drama\n".encode("latin-1"))
    put(tmp_path / "data/ml-1m/ml-1m.zip", archive.getvalue())
    from_zip = load(tmp_path, "ml-1m", min_rating=0, k_core=0)
    assert "ml-1m.zip [ml-1m/ratings.dat]" in capsys.readouterr().out
    assert sequences(from_zip) == [[2, 1], [1]]  # user 1: 661 rated before 1193
    put(tmp_path / "other/ml-1m/ml-1m/ratings.dat", RATINGS_DAT)  # as `unzip ml-1m.zip` leaves it
    extracted = load_dataset("ml-1m", data_dir=str(tmp_path / "other"), min_rating=0, k_core=0)
    assert sequences(extracted) == sequences(from_zip)


def test_official_raw_file_wins_over_community_files(tmp_path, capsys):
    put(tmp_path / "data/ml-1m/ml-1m.txt", "1 1\n1 2\n")
    put(tmp_path / "data/ml-1m/ratings.dat", RATINGS_DAT)
    put(tmp_path / "data/ml-1m/recbole/ml-1m.inter", "user_id:token\titem_id:token\n1\t1\n")
    load(tmp_path, "ml-1m", min_rating=0, k_core=0)
    assert "ratings.dat (official MovieLens" in capsys.readouterr().out


def test_sasrec_pairs_and_s3rec_lines_read_the_same_and_keep_first_repeats(tmp_path, capsys):
    put(tmp_path / "a/beauty/Beauty.txt", "1 5 6 7 5\n2 6 8\n")            # S3-Rec; item 5 repeated (Yelp has those)
    put(tmp_path / "b/beauty/Beauty.txt", "1 5\n1 6\n1 7\n1 5\n2 6\n2 8\n")  # SASRec
    a = load_dataset("beauty", data_dir=str(tmp_path / "a"))
    b = load_dataset("beauty", data_dir=str(tmp_path / "b"))
    assert sequences(a) == sequences(b) == [[1, 2, 3], [2, 4]]
    assert "duplicate filter -1" in capsys.readouterr().out
    with pytest.raises(RecError, match="has no ratings"):
        load_dataset("beauty", data_dir=str(tmp_path / "a"), min_rating=4)
    with pytest.raises(RecError, match="2-core filter left no interactions"):  # an explicit k-core applies
        load_dataset("beauty", data_dir=str(tmp_path / "a"), k_core=2)


def test_lightgcn_train_then_test_in_file_order(tmp_path):
    put(tmp_path / "data/gowalla/train.txt", "0 4 2\n1 2 5\n")
    put(tmp_path / "data/gowalla/test.txt", "0 3\n1\n")  # a user without test items
    data = load(tmp_path, "gowalla")
    assert sequences(data) == [[1, 2, 4], [2, 3]]  # items numbered 4->1, 2->2, 5->3, 3->4
    put(tmp_path / "data/lastfm/lightgcn/data1.txt", "3\t9\t120\n4\t9\t7\n")
    put(tmp_path / "data/lastfm/lightgcn/test1.txt", "3\t8\t55\n")
    assert sequences(load(tmp_path, "lastfm")) == [[1, 2], [1]]


def test_amazon_yelp_steam_records(tmp_path):
    put(tmp_path / "data/beauty/reviews_Beauty_5.json.gz", gz(
        '{"reviewerID": "A1", "asin": "B2", "overall": 5.0, "unixReviewTime": 200}\n'
        '{"reviewerID": "A1", "asin": "B1", "overall": 2.0, "unixReviewTime": 100}\n'
        '{"reviewerID": "A2", "asin": "B2", "overall": 4.0, "unixReviewTime": 100}\n'))
    assert sequences(load(tmp_path, "beauty", k_core=0)) == [[2, 1], [1]]
    assert sequences(load(tmp_path, "beauty", k_core=0, min_rating=3)) == [[1], [1]]
    put(tmp_path / "data/yelp/yelp_academic_dataset_review.json",
        '{"user_id": "u", "business_id": "b1", "stars": 5, "date": "2019-03-01 10:00:00"}\n'
        '{"user_id": "u", "business_id": "b0", "stars": 5, "date": "2018-12-31 23:59:59"}\n'
        '{"user_id": "u", "business_id": "b2", "stars": 1, "date": "2019-02-01 10:00:00"}\n')
    assert sequences(load(tmp_path, "yelp", k_core=0)) == [[2, 1]]  # the 2018 review is outside S3-Rec's window
    put(tmp_path / "data/steam/steam_reviews.json.gz", gz(
        "{'username': 'Zoë', 'product_id': '10', 'date': '2017-12-17', 'text': \"it's fine\", 'early_access': False}\n"
        "{'username': 'Zoë', 'product_id': '20', 'date': '2017-01-01', 'hours': 0.1}\n"))
    assert sequences(load(tmp_path, "steam", k_core=0)) == [[2, 1]]


def test_hetrec_and_gowalla_keep_the_first_event_of_each_pair(tmp_path):
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("user_taggedartists-timestamps.dat", "userID\tartistID\ttagID\ttimestamp\n"
                   "2\t51\t13\t1238536800000\n2\t52\t15\t1238536700000\n2\t51\t18\t1238536600000\n")
    put(tmp_path / "data/lastfm/hetrec2011-lastfm-2k.zip", archive.getvalue())
    # 51 was first tagged before 52; ids follow the file order of the kept rows (52 -> 1, 51 -> 2)
    assert sequences(load(tmp_path, "lastfm", k_core=0)) == [[2, 1]]
    put(tmp_path / "data/gowalla/loc-gowalla_totalCheckins.txt.gz", gz(
        "0\t2010-10-19T23:55:27Z\t30.23\t-97.79\t22847\n0\t2010-10-18T22:17:43Z\t30.26\t-97.75\t420315\n"
        "0\t2010-10-20T10:00:00Z\t30.23\t-97.79\t420315\n"))
    assert sequences(load(tmp_path, "gowalla", k_core=0)) == [[2, 1]]


def test_recbole_inter_columns_by_name(tmp_path):
    put(tmp_path / "data/ml-100k/atomic/ml-100k.inter",
        "item_id:token\tuser_id:token\ttimestamp:float\trating:float\n10\t1\t20\t5\n11\t1\t10\t2\n")
    assert sequences(load(tmp_path, "ml-100k", k_core=0)) == [[1]]  # default rating >= 3 drops item 11
    assert sequences(load(tmp_path, "ml-100k", k_core=0, min_rating=0)) == [[2, 1]]


@pytest.mark.parametrize("content, expected", [
    ("user,item,rating,timestamp\nu1,i1,5,100\nu1,i2,4,50\nu2,i1,3,70\n", [[2, 1], [1]]),   # header, comma
    ("1\t2\n1\t3\n\n2\t2\n", [[1, 2], [1]]),                                                # tab, blank line
    ("1 2 3.5 2019-05-01\n1 3 4 2019-04-01T10:00:00Z\n", [[2, 1]]),                       # spaces, ISO dates
    ('"Acme, Inc",x,1\n"Acme, Inc",y,2\n', [[1, 2]]),                                      # quoted comma field
    ("userID::movieID\n7::8\n", [[1]]),                                                     # `::` with header
])
def test_custom_files(tmp_path, content, expected):
    assert sequences(load_dataset(str(put(tmp_path / "mine.csv", content)))) == expected


def test_custom_latin1_file_keeps_its_item_names_apart(tmp_path, capsys):
    path = put(tmp_path / "movies.dat", "1::Les Mis\xe9rables (1995)::5\n1::Les Miserables (1995)::4\n"
                                        "2::Les Mis\xe9rables (1995)::3\n".encode("latin-1"))
    data = load_dataset(str(path))
    assert sequences(data) == [[1, 2], [1]] and data.n_items == 2
    assert "movies.dat" in capsys.readouterr().out


@pytest.mark.parametrize("file, content, line", [
    ("data/ml-100k/u.data", "1\t10\t5\t300\n1\t20\t4\t100\n2\t30\t5\n", 3),          # missing field
    ("data/ml-100k/u.data", "1\t10\t5\t300\n\n1\t20\tfive\t100\n", 3),               # rating not a number
    ("data/beauty/Beauty.txt", "1 2 3\n2 4 x5\n", 2),                                 # id not an integer
    ("data/beauty/reviews_Beauty_5.json.gz", '{"reviewerID": "A", "asin": "B", "overall": 5, '
                                              '"unixReviewTime": 1}\n{"reviewerID": "A"}\n', 2),  # field missing
    ("mine.csv", "user,item,rating\n1,2,5\n1,3\n", 3),
    ("mine.csv", "user,item,rating\n1,2,5\n1,3,4\n2,3,5\n24\n", 5),                   # no separator at all
    ("mine.csv", "1,2,5\n1,3,4\n2,3,5\n2,3,5\n2;4;5\n", 5),                            # another separator
    ("mine.csv", "user,item,rating\n1,2,5\n1,3,4\n2,3,5\n2,4,x\n", 5),                 # rating not a number
])
def test_malformed_line_names_file_and_line(tmp_path, file, content, line):
    path = put(tmp_path / file, gz(content) if file.endswith(".gz") else content)
    name = str(path) if file.startswith("mine") else file.split("/")[1]
    with pytest.raises(RecError, match=rf"{path}.*line {line}\b") as error:
        load_dataset(name, data_dir=str(tmp_path / "data"), k_core=0)
    assert "np.str_" not in str(error.value)


def test_a_bad_value_is_shown_as_the_file_has_it(tmp_path):
    path = put(tmp_path / "mine.csv", "user,item,rating\n1,2,5\n2,4,x\n")
    with pytest.raises(RecError, match=r"line 3: rating 'x' is not valid$"):
        load_dataset(str(path), k_core=0)


def test_integer_lines_parse_the_same_in_small_pieces_and_count_lines_across_them(tmp_path):
    rng = np.random.default_rng(0)
    text = "".join(f"{u} " + " ".join(map(str, rng.integers(0, 10**6, rng.integers(0, 6)))) + "\n"
                   for u in range(300))
    path = put(tmp_path / "lines.txt", text + "\n7 8 9\n")
    whole, pieces = _read_user_items([(str(path), None)]), _read_user_items([(str(path), None)], piece_bytes=50)
    np.testing.assert_array_equal(whole.user, pieces.user)
    np.testing.assert_array_equal(whole.item, pieces.item)
    expected = [(int(line.split()[0]), int(i)) for line in text.splitlines() for i in line.split()[1:]]
    assert list(zip(whole.user.tolist(), whole.item.tolist())) == expected + [(7, 8), (7, 9)]
    put(tmp_path / "bad.txt", text + "\n7 8 9.5\n")
    with pytest.raises(RecError, match=r"bad.txt, line 302: .*'7 8 9.5'"):
        _read_user_items([(str(tmp_path / "bad.txt"), None)], piece_bytes=50)


def test_unknown_dataset_lists_the_known_ones():
    with pytest.raises(RecError) as error:
        load_dataset("ml-20m")
    assert all(name in str(error.value) for name in DATASETS)


@pytest.mark.parametrize("typed, meant", [("ml1m", "ml-1m"), ("Beauty", "beauty"), ("amazon_book", "amazon-book"),
                                           ("kuairand1", "kuairand")])
def test_unknown_dataset_says_which_one_was_meant(typed, meant):
    with pytest.raises(RecError, match=f"unknown dataset '{typed}' and no such file; did you mean '{meant}'\\?"):
        load_dataset(typed)


def test_every_dataset_of_the_papers_is_registered_with_its_published_statistics():
    mdcns = {"health": (66519, 28237, 485163), "sports": (35598, 18357, 296337), "beauty": (22363, 12101, 198502),
             "toys": (19412, 11924, 167597), "lastfm": (1090, 3646, 52551), "kuairand": (18642, 7566, 231471)}
    assert {name: DATASETS[name].published[:3] for name in mdcns} == mdcns          # MDCNS, Table 2
    assert all("MDCNS" in DATASETS[name].published[3] for name in mdcns)
    assert {"ml-100k", "ml-1m", "yelp", "beauty"} <= DATASETS.keys()                # ICPNS's (no statistics published)


@pytest.mark.parametrize("name, file_name", [("health", "Health.txt"), ("kuairand", "KuaiRand.txt")])
def test_health_and_kuairand_load_by_name_from_their_files(tmp_path, capsys, name, file_name):
    with pytest.raises(RecError) as error:
        load(tmp_path, name)
    message = str(error.value)
    assert "Li et al., SIGIR 2026, Table 2" in message and file_name in message and "\n" not in message
    assert ("kuairand.com" in message) == (name == "kuairand")
    put(tmp_path / "data" / name / file_name, "1 5 6 7\n2 6 8\n")                # as the MDCNS code writes it
    assert sequences(load(tmp_path, name)) == [[1, 2, 3], [2, 4]]
    published = DATASETS[name].published
    assert f"{published[0]:,} users, {published[1]:,} items, {published[2]:,} interactions in MDCNS" in \
        capsys.readouterr().out
    put(tmp_path / "inter" / name / "x.inter", "user_id:token\titem_id:token\ttimestamp:float\n1\t5\t2\n1\t6\t1\n")
    assert sequences(load_dataset(name, data_dir=str(tmp_path / "inter"), k_core=0)) == [[2, 1]]   # by time


def test_yelp_without_files_says_where_to_get_them(tmp_path):
    with pytest.raises(RecError, match=r"yelp.com/dataset.*" + str(tmp_path / "data" / "yelp")):
        load(tmp_path, "yelp")


def test_truncated_archives_fail_clearly_and_leave_no_cache(tmp_path):
    records = "".join(f'{{"reviewerID": "A{u}", "asin": "B{u % 7}", "overall": 5, "unixReviewTime": {u}}}\n'
                      for u in range(2000))
    put(tmp_path / "data/beauty/reviews_Beauty_5.json.gz", gz(records)[:3000])
    with pytest.raises(RecError, match="truncated or corrupt"):
        load(tmp_path, "beauty", k_core=0)
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("ml-1m/ratings.dat", RATINGS_DAT * 100)
    put(tmp_path / "data/ml-1m/ml-1m.zip", archive.getvalue()[:-30])
    with pytest.raises(RecError, match="truncated or corrupt"):
        load(tmp_path, "ml-1m")
    assert not list(tmp_path.rglob("*.npz"))


# ---------------------------------------------------------------- k-core
def naive_k_core(user, item, k):
    """The literal rule: while some kept interaction has a user or an item with fewer than k kept interactions,
    drop one such interaction."""
    kept = list(range(len(user)))
    while True:
        user_count, item_count = Counter(user[j] for j in kept), Counter(item[j] for j in kept)
        weak = [j for j in kept if user_count[user[j]] < k or item_count[item[j]] < k]
        if not weak:
            return np.isin(np.arange(len(user)), kept)
        kept.remove(weak[0])


@pytest.mark.parametrize("seed", range(6))
def test_k_core_matches_the_naive_loop(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(50, 200))
    user = rng.integers(0, 30, n)
    item = (rng.zipf(1.6, n) % 40) * 3 + 100  # skewed, arbitrary ids
    for k in (2, 3, 5):
        np.testing.assert_array_equal(k_core_filter(user, item, k), naive_k_core(user, item, k))


def test_k_core_is_iterative():
    # one pass drops (B, z) and (C, y); that leaves B and y with one interaction each, and so on until nothing
    user, item = np.array(list("AABBC")), np.array(list("xyxzy"))
    assert not k_core_filter(user, item, 2).any()
    assert k_core_filter(user, item, 1).all()


# ---------------------------------------------------------------- cache
def test_cache_is_reused_and_invalidated_by_settings_and_by_the_file(tmp_path, capsys):
    path = put(tmp_path / "data/ml-100k/u.data", U_DATA)
    first = load(tmp_path, "ml-100k", min_rating=0, k_core=0)
    assert "cached to " + str(tmp_path / "data/ml-100k/processed") in capsys.readouterr().out
    again = load(tmp_path, "ml-100k", min_rating=0, k_core=0)
    assert "from cache" in capsys.readouterr().out
    for field in ("user", "item", "position"):
        np.testing.assert_array_equal(getattr(first, field), getattr(again, field))
    stricter = load(tmp_path, "ml-100k", min_rating=4, k_core=0)
    assert "from cache" not in capsys.readouterr().out and len(stricter.user) < len(first.user)
    path.write_text(U_DATA + "3\t40\t5\t1\n")
    os.utime(path, ns=(os.stat(path).st_atime_ns, os.stat(path).st_mtime_ns + 10**9))
    changed = load(tmp_path, "ml-100k", min_rating=0, k_core=0)
    assert "from cache" not in capsys.readouterr().out and changed.n_users == 3
    assert not list(tmp_path.rglob("*.tmp"))
    load(tmp_path, "ml-100k", min_rating=1, k_core=0, use_cache=False)
    assert len(list(tmp_path.rglob("*.npz"))) == 3


def test_read_only_data_folder_caches_in_the_user_cache(tmp_path, user_cache, capsys):
    folder = put(tmp_path / "data/ml-100k/u.data", U_DATA).parent
    folder.chmod(0o555)
    try:
        load(tmp_path, "ml-100k", min_rating=0, k_core=0)
        assert "cached to " + str(user_cache / "negsampling" / "ml-100k") in capsys.readouterr().out
        assert not (folder / "processed").exists()
        load(tmp_path, "ml-100k", min_rating=0, k_core=0)
        assert "from cache" in capsys.readouterr().out
    finally:
        folder.chmod(0o755)


def test_cache_goes_to_one_folder_printed_on_every_load(tmp_path, user_cache, capsys):
    put(tmp_path / "data/ml-100k/u.data", U_DATA)
    cache = tmp_path / "my-cache"
    for said in ("cached to ", "from cache "):
        load(tmp_path, "ml-100k", min_rating=0, k_core=0, cache_dir=str(cache))
        assert said + str(cache / "ml-100k-") in capsys.readouterr().out
    assert [p.parent for p in tmp_path.rglob("*.npz")] == [cache]                  # nothing beside the data
    # --no-cache: nothing read, nothing written, and the load says so
    load(tmp_path, "ml-100k", min_rating=0, k_core=0, use_cache=False, cache_dir=str(cache))
    assert "not cached (--no-cache)" in capsys.readouterr().out and len(list(tmp_path.rglob("*.npz"))) == 1
    # a custom file: processed/ beside it by default, or --cache-dir
    csv = put(tmp_path / "mine/my.csv", "user,item\n1,2\n1,3\n")
    load_dataset(str(csv))
    assert "cached to " + str(tmp_path / "mine/processed/my-") in capsys.readouterr().out
    # a cache folder that cannot be written: the data is read all the same, and the line says why it is not cached
    blocked = put(tmp_path / "a-file", "")
    load(tmp_path, "ml-100k", min_rating=1, k_core=0, cache_dir=str(blocked / "below"))
    assert f"not cached: {blocked / 'below'} cannot be written" in capsys.readouterr().out


# ---------------------------------------------------------------- downloads (local server)
PAYLOAD = os.urandom(300_000)


class Handler(http.server.BaseHTTPRequestHandler):
    """/good: the payload; /drop: announces twice its length, sends half, hangs up (HTTP/1.0 closes)."""

    def do_GET(self):
        body = {"/good": PAYLOAD, "/drop": PAYLOAD, "/ml-100k.zip": U_ZIP}.get(self.path, b"")
        self.send_response(200 if body else 404)
        self.send_header("Content-Length", str(2 * len(PAYLOAD) if self.path == "/drop" else len(body)))
        self.end_headers()
        self.wfile.write(PAYLOAD[: len(PAYLOAD) // 2] if self.path == "/drop" else body)

    def log_message(self, *args):
        pass


def _zip_bytes():
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("ml-100k/u.data", U_DATA)
    return archive.getvalue()


U_ZIP = _zip_bytes()


@pytest.fixture(scope="module")
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_download_verifies_and_never_leaves_an_untrusted_file(tmp_path, server):
    target = tmp_path / "d" / "file.bin"
    sha = hashlib.sha256(PAYLOAD).hexdigest()
    with pytest.raises(RecError, match=r"checksum mismatch.*file.bin"):
        download(server + "/good", str(target), sha256="0" * 64)
    assert not target.parent.exists() or not list(target.parent.iterdir())
    with pytest.raises(RecError, match=rf"could not download {server}/drop .*IncompleteRead.*file.bin in "):
        download(server + "/drop", str(target), sha256=sha)
    assert not list(target.parent.iterdir())
    with pytest.raises(RecError, match=r"could not download .*404"):
        download(server + "/missing", str(target))
    download(server + "/good", str(target), sha256=sha, md5=hashlib.md5(PAYLOAD).hexdigest())
    assert target.read_bytes() == PAYLOAD and [p.name for p in target.parent.iterdir()] == ["file.bin"]


def test_load_dataset_downloads_on_first_use(tmp_path, server, monkeypatch):
    spec = DATASETS["ml-100k"]
    good = (server + "/ml-100k.zip", "ml-100k.zip", hashlib.sha256(U_ZIP).hexdigest(), None)
    monkeypatch.setitem(DATASETS, "ml-100k", dataclasses.replace(spec, downloads=(good,)))
    assert sequences(load(tmp_path, "ml-100k", min_rating=0, k_core=0)) == [[2, 1], [1, 3]]
    monkeypatch.setitem(DATASETS, "ml-100k", dataclasses.replace(spec, downloads=(good[:2] + ("0" * 64, None),)))
    with pytest.raises(RecError, match="checksum mismatch"):
        load(tmp_path / "fresh", "ml-100k")
    assert not (tmp_path / "fresh/data/ml-100k/ml-100k.zip").exists()


def test_offline_error_names_url_folder_and_file(tmp_path, monkeypatch):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}/ml-1m.zip"
    spec = DATASETS["ml-1m"]
    monkeypatch.setitem(DATASETS, "ml-1m", dataclasses.replace(spec, downloads=((url, "ml-1m.zip", None, None),)))
    with pytest.raises(RecError) as error:
        load(tmp_path, "ml-1m")
    message = str(error.value)
    assert url in message and str(tmp_path / "data" / "ml-1m") in message and "ml-1m.zip" in message
    assert "\n" not in message and not (tmp_path / "data/ml-1m/ml-1m.zip").exists()


def test_data_arguments():
    parser = argparse.ArgumentParser()
    add_data_arguments(parser)
    args = parser.parse_args(["--min-rating", "4", "--k-core", "5"])
    assert (args.min_rating, args.k_core) == (4.0, 5)
    assert parser.parse_args([]).min_rating is None
    assert "ICPNS" in parser.format_help()
