"""More than one process (torchrun): sharded evaluation equals one process exactly, a training step on a global batch
equals one process's to 1e-6, a run stopped on one rank resumes exactly, and every method file runs under
`torchrun --standalone --nproc_per_node 2`, writing one results.json.

The exactness tests share one spawn of 2 processes joined by gloo (torch.multiprocessing, a file:// rendezvous): each
process writes what it computed, and each test compares it with this process's own, single-process computation.
"""
import contextlib
import datetime
import io
import json
import os
import signal
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import baselines
import common
import icpns
import mdcns
from common import (LightGCN, MF, SASRec, bce_loss, build_backbone, evaluate, make_synthetic, split_dataset,
                    standard_loss, train_step, training_batches)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORLD = 2


@pytest.fixture(scope="module")
def spawned(tmp_path_factory):
    """The folder where WORLD processes joined by gloo wrote what they computed (`in_every_process`); spawned once
    for the module, as starting processes costs more than the checks. A failure in one process fails the tests."""
    folder = tmp_path_factory.mktemp("spawned")
    mp.spawn(in_every_process, args=(str(folder),), nprocs=WORLD, join=True)
    return folder


def in_every_process(rank, folder):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{folder}/rendezvous", rank=rank, world_size=WORLD,
                            timeout=datetime.timedelta(seconds=120))
    try:
        for task in (random_streams, sharded_evaluation, distributed_steps, stopped_and_resumed, ended_by_run_cli):
            task(rank, folder)
    finally:
        if dist.is_initialized():   # (ended_by_run_cli leaves it)
            dist.destroy_process_group()


# ---------------------------------------------------------------- random streams
def first_draws():
    """The first draws of the dropout stream (seed_everything) and of a sampler generator as fit seeds it."""
    common.seed_everything(5)
    dropout = torch.rand(4)
    return dropout, torch.rand(4, generator=torch.Generator().manual_seed(common.rank_seed(5 + 1)))


def random_streams(rank, folder):
    torch.save(first_draws(), os.path.join(folder, f"streams-{rank}.pt"))


def test_each_rank_draws_its_own_random_streams_rank_0_those_of_one_process(spawned):
    single = first_draws()
    ranks = [torch.load(spawned / f"streams-{rank}.pt") for rank in range(WORLD)]
    assert all(torch.equal(a, b) for a, b in zip(ranks[0], single))
    assert not any(torch.equal(a, b) for a, b in zip(ranks[1], ranks[0]))


# ---------------------------------------------------------------- evaluation
def splits():
    data = make_synthetic(0, n_users=150, n_items=80)
    return {"general": split_dataset(data, "ratio", 0, False), "sequential": split_dataset(data, "loo", 0, True, 20)}


def eval_models(split_by_kind):
    """Fixed models (seeded) on each split: MF, LightGCN (its cached propagation), SASRec."""
    torch.manual_seed(0)
    general, sequential = split_by_kind["general"], split_by_kind["sequential"]
    return {"mf": (MF(general.n_users, general.n_items, 8), general),
            "lightgcn": (LightGCN(general.n_users, general.n_items, 8, 2, general.train_user, general.train_item),
                         general),
            "sasrec": (SASRec(sequential.n_items, 8, 20, 1, 2, 0.2), sequential)}


def sharded_evaluation(rank, folder):
    out = {name: [evaluate(model, split.valid, [1, 5, 10], batch_size) for batch_size in (16, 1000)]
           for name, (model, split) in eval_models(splits()).items()}
    torch.save(out, os.path.join(folder, f"eval-{rank}.pt"))


def test_sharded_evaluation_equals_one_process_exactly(spawned):
    single = {name: [evaluate(model, split.valid, [1, 5, 10], batch_size) for batch_size in (16, 1000)]
              for name, (model, split) in eval_models(splits()).items()}
    # 150 rows: 10 batches of 16 (the last of 6), 5 to each process; or one batch of 1000, process 1 idle
    assert len(splits()["general"].valid) == len(splits()["sequential"].valid) == 150
    for rank in range(WORLD):
        assert torch.load(spawned / f"eval-{rank}.pt") == single   # every rank, every metric, to the last bit


# ---------------------------------------------------------------- one training step
def fixed_negatives(n_items):
    """A negative that depends only on the example (no generator), so every process draws what one process draws."""
    return lambda ex, generator: (ex.positives * 7 % n_items + 1).unsqueeze(1)


def step_cases(seed: int):
    """(model, batch_loss, [batches], sequential) for one or two Adam steps: general and sequential backbones, an L2
    term outside forward, MDCNS's pair (the peer outside the pair's forward; in its second step the peer gets no
    gradient, so Adam must skip it), and a batch of which rank 1 owns nothing. `seed`: the models' initial weights."""
    split_by_kind = splits()
    general, sequential = split_by_kind["general"], split_by_kind["sequential"]
    n_items = general.n_items
    batch = next(training_batches(general, 300, torch.Generator().manual_seed(3), "cpu"))
    rows = next(training_batches(sequential, 40, torch.Generator().manual_seed(3), "cpu"))
    even = tuple(t[batch[0] % WORLD == 0] for t in batch)                                   # rank 1: empty
    torch.manual_seed(seed)
    args = type("Args", (), dict(dim=8, layers=1, dropout=0.0, heads=2, sasrec_block="s3rec"))()
    pair = mdcns.SelfAndPeer(build_backbone("sasrec", sequential, args), build_backbone("gru4rec", sequential, args))
    self_loss = standard_loss(fixed_negatives(n_items), "bce")

    def both(model, batch_, generator):
        peer = common.examples(model.peer, batch_)
        peer_positive = (peer.queries * peer.item_table[peer.positives]).sum(-1, keepdim=True)
        negatives = fixed_negatives(n_items)(peer, generator)
        return self_loss(model, batch_, generator) + bce_loss(peer_positive, common.score_items(
            peer.queries, peer.item_table, negatives))

    calls = iter([both, self_loss])
    return {
        "mf": (MF(general.n_users, n_items, 8), standard_loss(fixed_negatives(n_items), "bpr", 0.05), [batch], False),
        "lightgcn": (LightGCN(general.n_users, n_items, 8, 2, general.train_user, general.train_item),
                     standard_loss(fixed_negatives(n_items), "bpr", 0.05), [batch], False),
        "sasrec": (SASRec(n_items, 8, 20, 1, 2, 0.0), standard_loss(fixed_negatives(n_items), "bce"), [rows], True),
        "mdcns-pair": (pair, lambda *a: next(calls)(*a), [rows, rows], True),
        "empty-shard": (MF(general.n_users, n_items, 8), standard_loss(fixed_negatives(n_items), "bpr"), [even],
                        False),
    }


def run_steps(model, batch_loss, batches, sequential):
    """Adam steps at --lr's default, as fit takes them; the losses, the weights and the last step's gradients."""
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    common.broadcast_parameters(model)
    losses = [train_step(model, optimizer, batch_loss, b, torch.Generator(), sequential, [])[0] for b in batches]
    return {"losses": losses, "state": model.state_dict(),
            "grads": [None if p.grad is None else p.grad.clone() for p in model.parameters()]}


def distributed_steps(rank, folder):
    # rank 1's models start elsewhere: the steps must start from rank 0's weights (broadcast_parameters)
    out = {name: run_steps(*case) for name, case in step_cases(1 + rank).items()}
    torch.save(out, os.path.join(folder, f"steps-{rank}.pt"))


def test_a_training_step_on_a_global_batch_equals_one_process(spawned):
    single = {name: run_steps(*case) for name, case in step_cases(1).items()}
    assert any(grad is None for grad in single["mdcns-pair"]["grads"])   # the peer had none in the second step
    for rank in range(WORLD):
        steps = torch.load(spawned / f"steps-{rank}.pt")
        for name, expected in single.items():
            got = steps[name]
            assert got["losses"] == pytest.approx(expected["losses"], rel=1e-6, abs=1e-7), name
            for grad, reference in zip(got["grads"], expected["grads"]):
                assert (grad is None) == (reference is None), name
                if reference is not None:
                    torch.testing.assert_close(grad, reference, rtol=1e-5, atol=1e-7, msg=name)
            for key, value in expected["state"].items():
                if value.is_floating_point():
                    torch.testing.assert_close(got["state"][key], value, rtol=0, atol=1e-6, msg=f"{name} {key}")


@pytest.mark.filterwarnings("ignore:std")
def test_every_batch_loss_accepts_an_empty_shard():
    """Under torchrun a rank may own no row of a batch: batch_loss is still called there (samplers count steps)."""
    split = splits()["sequential"]
    empty = tuple(t[:0] for t in next(training_batches(split, 64, torch.Generator().manual_seed(0), "cpu")))
    args = mdcns.build_parser().parse_args(["--peer", "gru4rec", "--dim", "8", "--layers", "1"])
    mdcns.check_args(args)
    pair = mdcns.SelfAndPeer(build_backbone("sasrec", split, args), build_backbone("gru4rec", split, args))
    mdcns.training_loss(args, common.training_positives(split, "cpu"))(pair, empty, torch.Generator())
    sampler = icpns.ICPNSampler(torch.arange(split.n_users) % 3, split.train_user, split.train_item, split.n_items, 3,
                                0.8)
    assert sampler.sample(empty[2], 1, torch.Generator()).shape == (0, 1)
    for backbone in ("lightgcn", "sasrec"):
        split = splits()["sequential" if backbone == "sasrec" else "general"]
        for sampler in baselines.SAMPLERS + baselines.MDCNS_SAMPLERS:
            args = baselines.resolve_sampler_args(baselines.build_parser().parse_args(
                ["--sampler", sampler, "--backbone", backbone, "--batch-size", "64"]))
            for name, value in common.BACKBONE_DEFAULTS[backbone].items():
                setattr(args, name, 8 if name == "dim" else value)
            model = build_backbone(backbone, split, args)
            batch_loss, on_epoch_start = baselines.make_batch_loss(args, split, common.training_positives(split, "cpu"))
            batch = next(training_batches(split, 64, torch.Generator().manual_seed(0), "cpu"))
            generator = torch.Generator().manual_seed(0)
            if on_epoch_start is not None:   # as fit calls it
                on_epoch_start(model, 1, generator)
            batch_loss(model, batch, generator)
            batch_loss(model, tuple(t[:0] for t in batch), generator)   # no error


def test_what_torchrun_cannot_split_is_refused_in_one_line(monkeypatch, tmp_path):
    monkeypatch.setenv("WORLD_SIZE", str(WORLD))   # as torchrun sets it; refused before the process group is joined
    with pytest.raises(common.RecError, match="--kd-reduction sum sums the KL over a whole batch"):
        mdcns.main(["--kd-reduction", "sum", "--out-dir", str(tmp_path / "kd")])
    monkeypatch.delenv("WORLD_SIZE")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "checkpoint.pt").write_bytes(b"")
    (tmp_path / "run" / "run.json").write_text(json.dumps({"command": ["baselines.py"], "config": {"world_size": 2}}))
    with pytest.raises(common.RecError, match="--resume with 1 process.*started with 2"):
        baselines.main(["--resume", "--out-dir", str(tmp_path / "run")])


# ---------------------------------------------------------------- stop on one rank, resume
STOP_RUN = ["--sampler", "srns", "--backbone", "sasrec", "--candidates", "40", "--epochs", "3", "--quiet", "--dim",
            "16", "--max-len", "20"]   # per-user state (SRNS's memories) in each rank's part of the checkpoint


def stopped_and_resumed(rank, folder):
    outcomes = {}
    with contextlib.redirect_stdout(io.StringIO()):
        outcomes["whole"] = baselines.main(STOP_RUN + ["--out-dir", os.path.join(folder, "whole")])
        batches, count = common.training_batches, iter(range(1, 1000))

        def counted(*args, **kwargs):   # SIGTERM to rank 1 alone, as it draws batch 10 (mid-epoch 2)
            for item in batches(*args, **kwargs):
                if next(count) == 10 and rank == 1:
                    os.kill(os.getpid(), signal.SIGTERM)
                yield item

        common.training_batches = counted
        cut = STOP_RUN + ["--out-dir", os.path.join(folder, "cut")]
        try:
            baselines.main(cut)
            raise AssertionError("the run was not stopped")
        except common.Interrupted as stopped:
            outcomes["stopped"] = str(stopped)
        common.training_batches = batches
        outcomes["resumed"] = baselines.main(cut + ["--resume"])
    torch.save({name: outcomes[name] if name == "stopped" else
                {key: outcomes[name][key] for key in ("test", "valid", "best_epoch", "history")}
                for name in outcomes}, os.path.join(folder, f"resume-{rank}.pt"))


def test_a_signal_to_one_rank_stops_every_rank_and_the_resumed_run_equals_the_whole_run(spawned):
    outcomes = [torch.load(spawned / f"resume-{rank}.pt") for rank in range(WORLD)]
    for rank, outcome in enumerate(outcomes):
        assert "stopped after 1 epochs and 3 batches" in outcome["stopped"], outcome["stopped"]   # the same step
        whole = [(h["epoch"], h["loss"], h["valid"]) for h in outcome["whole"]["history"]]
        assert [(h["epoch"], h["loss"], h["valid"]) for h in outcome["resumed"]["history"]] == whole
        assert outcome["resumed"]["test"] == outcome["whole"]["test"] == outcomes[0]["whole"]["test"]
    assert sorted(os.listdir(spawned / "cut")) == ["model.pt", "results.json", "test_rows.npz"]
    saved = json.loads((spawned / "cut" / "results.json").read_text())
    assert saved["config"]["world_size"] == WORLD and saved["test"] == outcomes[0]["whole"]["test"]


# ---------------------------------------------------------------- the end of a run
def ended_by_run_cli(rank, folder):
    kept = []   # the last collective's tensor, alive until the process exits, as a run's results are
    common.run_cli(lambda: kept.append(common.all_reduce_sum(torch.ones(1000))))
    torch.save({"joined": dist.is_initialized(), "sum": kept[0][0].item()}, os.path.join(folder, f"end-{rank}.pt"))


def test_run_cli_leaves_the_process_group_once_every_rank_is_done(spawned):
    """Left to the interpreter's exit, gloo's worker threads may free the last collective's tensors while Python
    finalizes: the process then aborts (`terminate called without an active exception`, SIGABRT), which made
    the torchrun test below fail now and then. run_cli destroys the group while the interpreter is whole."""
    for rank in range(WORLD):
        assert torch.load(spawned / f"end-{rank}.pt") == {"joined": False, "sum": WORLD}


# ---------------------------------------------------------------- torchrun, every method file
TINY = ["--quiet", "--dim", "16", "--max-len", "20"]
TORCHRUN_RUNS = {   # per-user sampler state (AdaSIR's pools), ICPNS's k-means inside training, MDCNS's two models
    "baselines": ["--sampler", "adasir", "--backbone", "sasrec", "--candidates", "40", "--epochs", "2", *TINY],
    "icpns": ["--backbone", "mf", "--batch-size", "4096", "--epochs", "2", "--pretrain-epochs", "1",
              "--recluster-every", "1", *TINY],
    "mdcns": ["--peer", "gru4rec", "--layers", "1", "--n-candidates", "20", "--top-m", "2", "--epochs", "1", *TINY],
}


def test_torchrun_runs_every_method_file_and_writes_one_results_json(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    runs = {script: subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone",
                                      "--nproc_per_node", str(WORLD), f"{script}.py", *argv,
                                      "--out-dir", str(tmp_path / script)],
                                     cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for script, argv in TORCHRUN_RUNS.items()}
    for script, process in runs.items():
        stdout, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr
        files = sorted(os.listdir(tmp_path / script))
        assert files == sorted(["model.pt", "results.json", "test_rows.npz"] +
                               (["pretrained.pt"] if script == "icpns" else []))
        result = json.loads((tmp_path / script / "results.json").read_text())
        assert result["config"]["world_size"] == WORLD
        assert stdout.count("best epoch") == 1 and stdout.count("wrote ") == 1 + (script == "icpns")  # rank 0 only
        assert result["test"]["ndcg@10"] > 0
