"""Our SASRec (the s3rec block) on a trained RecBole SASRec's weights gives RecBole's scores. CPU; not a test.

RecBole 1.2.1 is never imported here. With --recbole-python (the python of a venv where RecBole is installed: the
recipe is in bench/README.md) a driver trains RecBole's SASRec on the ml-100k copy inside its wheel, with
bench_recbole.py's settings (leave-one-out by time, 2 layers, 2 heads, D = 64, inner size 256, max_len 50,
dropout 0.5, BPR with one uniform negative, Adam lr 1e-3, batch 2048, seed 2020) for --steps steps. It then
writes its state_dict, the validation rows whose 50 input items fill the window, and RecBole's full-ranking scores
of them (`full_sort_predict` in eval mode). Here `common.SASRec` gets those weights under our names
(`our_state_dict`) and scores the same rows (queries @ item table^T); the largest gap must be <= --tol.

Full windows only: there the two position conventions agree. RecBole numbers the positions from a row's first
item, ours from its last (as the MDCNS code, `PositionalBackbone`); in a row of 50 items both put item t at t.
Without --recbole-python, or when RecBole does not import in it, nothing is checked: the script says so and
exits 0 (skipped). --smoke needs no RecBole: our own SASRec, exported under RecBole's names with its own scores,
stands in for the driver's output (the renaming, the loading and the comparison run, in seconds).

    python bench/recbole_parity.py --recbole-python /tmp/recbole-venv/bin/python
    python bench/recbole_parity.py --smoke
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from common import SASRec  # noqa: E402

DIM, MAX_LEN, LAYERS, HEADS, DROPOUT = 64, 50, 2, 2, 0.5

DRIVER = r'''
import json, os, sys
os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] = "1"
import torch
from recbole.config import Config
from recbole.data import create_dataset, data_preparation
from recbole.utils import get_model, init_seed

job = json.load(open(sys.argv[1]))
torch.set_num_threads(1)
config = Config(model="SASRec", dataset="ml-100k", config_dict={
    "seed": 2020, "reproducibility": True, "use_gpu": False, "show_progress": False, "state": "ERROR",
    "checkpoint_dir": job["work_dir"], "train_batch_size": 2048, "eval_batch_size": 4096, "loss_type": "BPR",
    "train_neg_sample_args": {"distribution": "uniform", "sample_num": 1, "alpha": 1.0, "dynamic": False,
                              "candidate_num": 0},
    "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "group_by": "user", "mode": "full"},
    "embedding_size": 64, "hidden_size": 64, "inner_size": 256, "n_layers": 2, "n_heads": 2,
    "MAX_ITEM_LIST_LENGTH": 50, "hidden_dropout_prob": 0.5, "attn_dropout_prob": 0.5})
init_seed(config["seed"], config["reproducibility"])
dataset = create_dataset(config)
train_data, valid_data, _ = data_preparation(config, dataset)
model = get_model("SASRec")(config, train_data._dataset)
optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
model.train()
steps = 0
while steps < job["steps"]:
    for interaction in train_data:
        optimizer.zero_grad()
        model.calculate_loss(interaction).backward()
        optimizer.step()
        steps += 1
        if steps == job["steps"]:
            break
model.eval()
sequences, scores = [], []
with torch.no_grad():
    for batch in valid_data:
        interaction = batch[0]
        full = interaction[model.ITEM_SEQ_LEN] == model.max_seq_length
        sequences.append(interaction[model.ITEM_SEQ][full])
        scores.append(model.full_sort_predict(interaction).view(len(full), -1)[full])
torch.save({"state_dict": model.state_dict(), "sequences": torch.cat(sequences), "scores": torch.cat(scores),
            "n_items": dataset.item_num, "steps": steps}, job["out"])
print("@@DONE@@", flush=True)
'''


def recbole_names(n_layers: int) -> dict:
    """Our SASRec's parameter names -> RecBole's (`recbole.model.sequential_recommender.sasrec.SASRec`): the
    embeddings and their LayerNorm, then per layer the attention (query, key, value, dense, LayerNorm) and the
    feed-forward (dense_1, dense_2, LayerNorm); ours keeps them as blocks[2 i] and blocks[2 i + 1]."""
    names = {"item_embedding.weight": "item_embedding.weight",
             "position_embedding.weight": "position_embedding.weight",
             "norm.weight": "LayerNorm.weight", "norm.bias": "LayerNorm.bias"}
    for i in range(n_layers):
        theirs = f"trm_encoder.layer.{i}"
        for ours, rb in (("query", "query"), ("key", "key"), ("value", "value"), ("output", "dense"),
                         ("norm", "LayerNorm")):
            for kind in ("weight", "bias"):
                names[f"blocks.{2 * i}.{ours}.{kind}"] = f"{theirs}.multi_head_attention.{rb}.{kind}"
        for ours, rb in (("ffn.0", "dense_1"), ("ffn.2", "dense_2"), ("norm", "LayerNorm")):
            for kind in ("weight", "bias"):
                names[f"blocks.{2 * i + 1}.{ours}.{kind}"] = f"{theirs}.feed_forward.{rb}.{kind}"
    return names


def our_state_dict(recbole_state: dict, n_layers: int) -> dict:
    return {ours: recbole_state[theirs] for ours, theirs in recbole_names(n_layers).items()}


def our_scores(saved: dict) -> torch.Tensor:
    """Our SASRec with the saved weights, eval mode: full-ranking scores of the saved rows, (R, n_items)."""
    model = SASRec(saved["n_items"] - 1, DIM, MAX_LEN, LAYERS, HEADS, DROPOUT)
    model.load_state_dict(our_state_dict(saved["state_dict"], LAYERS))              # strict: every name mapped
    model.eval()
    with torch.no_grad():
        queries, table = model(saved["sequences"])
        return queries @ table.T


def stand_in(seed: int = 0) -> dict:
    """--smoke: what the driver writes, from our own randomly initialised SASRec under RecBole's names."""
    torch.manual_seed(seed)
    model = SASRec(300, DIM, MAX_LEN, LAYERS, HEADS, DROPOUT).eval()
    sequences = torch.randint(1, 301, (16, MAX_LEN))
    with torch.no_grad():
        queries, table = model(sequences)
    state = model.state_dict()
    return {"state_dict": {theirs: state[ours] for ours, theirs in recbole_names(LAYERS).items()},
            "sequences": sequences, "scores": queries @ table.T, "n_items": 301, "steps": 0}


def run_driver(python: str, steps: int, work: str) -> dict | None:
    """The driver's output, or None (with the reason printed) when RecBole cannot run there."""
    probe = subprocess.run([python, "-c", "import recbole"], capture_output=True, text=True)
    if probe.returncode != 0:
        print(f"skipped: RecBole does not import in {python} ({probe.stderr.strip().splitlines()[-1:]})")
        return None
    driver, job, out = (os.path.join(work, name) for name in ("driver.py", "job.json", "recbole_sasrec.pt"))
    with open(driver, "w") as f:
        f.write(DRIVER)
    with open(job, "w") as f:
        json.dump({"steps": steps, "work_dir": work, "out": out}, f)
    result = subprocess.run([python, driver, job], capture_output=True, text=True, cwd=work,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    if result.returncode != 0 or "@@DONE@@" not in result.stdout:
        raise SystemExit(f"error: the RecBole driver failed (exit {result.returncode}):\n"
                         + "\n".join((result.stdout + result.stderr).splitlines()[-20:]))
    return torch.load(out, weights_only=False)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recbole-python", help="python of a venv with RecBole 1.2.1; without it: skipped")
    parser.add_argument("--steps", type=int, default=20, help="RecBole training steps before the check "
                                                              "(batches of 2048; default 20)")
    parser.add_argument("--tol", type=float, default=1e-5, help="largest allowed |score gap| (default 1e-5)")
    parser.add_argument("--smoke", action="store_true", help="no RecBole: our own SASRec as a stand-in")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.smoke:
        saved, who = stand_in(), "our own SASRec (stand-in, --smoke)"
    elif not args.recbole_python:
        print("skipped: no --recbole-python given (a venv with RecBole 1.2.1; recipe in bench/README.md)")
        return None
    else:
        with tempfile.TemporaryDirectory() as work:
            saved = run_driver(args.recbole_python, args.steps, work)
        if saved is None:
            return None
        who = f"RecBole 1.2.1's SASRec after {saved['steps']} training steps"
    got, want = our_scores(saved), saved["scores"]
    gap = (got - want).abs().max().item()
    print(f"{who}: {len(want)} rows of {MAX_LEN} items x {want.shape[1]} items; largest |score gap| {gap:.2e} "
          f"(scores up to {want.abs().max().item():.2f}); tolerance {args.tol:g}: "
          f"{'pass' if gap <= args.tol else 'FAIL'}")
    if gap > args.tol:
        raise SystemExit(1)
    return gap


if __name__ == "__main__":
    main()
