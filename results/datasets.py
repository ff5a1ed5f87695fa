"""The statistics the loader gives for every dataset of a data folder, next to the published ones.

    python results/datasets.py [--data-dir DIR] [--out results/DATASETS.md]

Each dataset is loaded exactly as the method files load it (`common.load_dataset` with its defaults: the file the
loader picks, its default rating threshold and k-core), so the table is what a run with `--dataset NAME` trains on.
"""
import argparse
import contextlib
import io
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from common import DATASETS, RecError, load_dataset  # noqa: E402

# Published (users, items, interactions) of the file each dataset folder holds, and where from.
PUBLISHED = {
    "ml-100k": ((943, 1682, 100_000), "GroupLens README (raw u.data, before filtering; ICPNS does not report its "
                                      "filtered counts)"),
    "ml-1m": ((6040, 3416, 999_611), "SASRec's ml-1m.txt as published (kang205/SASRec; the paper: 6,040 / 3,416, "
                                     "~1M actions)"),
    "beauty": ((22363, 12101, 198_502), "MDCNS Table 2 / S3-Rec"),
    "sports": ((35598, 18357, 296_337), "MDCNS Table 2 / S3-Rec"),
    "toys": ((19412, 11924, 167_597), "MDCNS Table 2 / S3-Rec"),
    "yelp": ((30431, 20033, 316_354), "S3-Rec (its Yelp.txt counts 11,830 repeat reviews)"),
    "lastfm": ((1090, 3646, 52_551), "MDCNS Table 2 / S3-Rec LastFM.txt"),
    "video-games": ((31013, 23715, 287_107), "SASRec Video.txt as published"),
    "gowalla": ((29858, 40981, 1_027_370), "LightGCN / NGCF (train 810,128 + test 217,242)"),
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default="data", help="folder with one subfolder per dataset (default data)")
    parser.add_argument("--out", default="results/DATASETS.md", help="markdown file written")
    args = parser.parse_args()
    lines = ["# Datasets as loaded", "",
             f"`python results/datasets.py --data-dir {args.data_dir}`: each dataset loaded with the loader's defaults "
             "(`common.load_dataset`), next to the published counts of the same file.", "",
             "| dataset | file and format used | preprocessing | users | items | interactions | mean length | "
             "published users / items / interactions | source of the published counts |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name in DATASETS:
        if not os.path.isdir(os.path.join(args.data_dir, name)):
            continue
        printed = io.StringIO()
        try:
            with contextlib.redirect_stdout(printed):
                data = load_dataset(name, args.data_dir)
        except RecError as error:
            lines.append(f"| `{name}` | error: {error} | | | | | | | |")
            continue
        report = printed.getvalue().strip().splitlines()[-1]
        steps = report.split("; ")[1] if "; " in report else ""
        s = data.statistics()
        published, source = PUBLISHED.get(name, (None, "not reported"))
        shown = " / ".join(f"{n:,}" for n in published) if published else "—"
        lines.append(f"| `{name}` | {data.source} | {steps} | {s['users']:,} | {s['items']:,} | "
                     f"{s['interactions']:,} | {s['mean_sequence_length']:.1f} | {shown} | {source} |")
        print(lines[-1])
    with open(args.out + ".tmp", "w") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(args.out + ".tmp", args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
