"""The trainer's logs: log.csv and the same rows as JSON lines (log.jsonl), kept across a resume."""

import csv
import json
from pathlib import Path

from conftest import write_train_folder
from vlmcodec.training.trainer import TrainConfig, train


def test_each_logged_row_is_in_the_csv_and_the_json_lines_across_a_resume(tmp_path):
    data = write_train_folder(tmp_path / "data", h=160, w=192)
    cfg = TrainConfig(data_dir=str(data), out_dir=str(tmp_path / "run"), N=8, M=12, lmbdas=(0.01, 0.05), crop=64,
                      batch=1, steps=4, warmup=1, threads=1, log_every=1, ckpt_every=2)
    train(TrainConfig(**{**cfg.__dict__, "steps": 2}), progress=False)
    train(cfg, progress=False)  # resumes at step 2
    rows = list(csv.DictReader((tmp_path / "run" / "log.csv").open()))
    lines = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == ["1", "2", "3", "4"] and [j["step"] for j in lines] == [1, 2, 3, 4]
    for r, j in zip(rows, lines, strict=True):
        assert all(isinstance(j[k], float) and j[k] == float(r[k]) for k in r if k not in ("step", "skipped"))
        assert j["skipped"] == int(r["skipped"]) == 0
        assert j["time"] > 0


def test_weight_average_is_kept_across_a_resume_and_exported_beside_the_last_weights(tmp_path):
    """ema_decay: model.safetensors is the average of the weights after each step, from the start
    weights, the same whether the run was resumed or not; model_last.safetensors the last step's."""
    from dataclasses import replace

    import pytest
    import torch

    from vlmcodec.errors import ConfigError
    from vlmcodec.models.checkpoint import load_model
    from vlmcodec.training.trainer import ema_update, export_checkpoint

    data = write_train_folder(tmp_path / "data", h=160, w=192)
    cfg = TrainConfig(data_dir=str(data), out_dir=str(tmp_path / "straight"), N=8, M=12, lmbdas=(0.01, 0.05),
                      crop=64, batch=1, steps=4, lr=1e-3, lr_final=1e-3, warmup=1, threads=1, log_every=1,
                      ckpt_every=1, ema_decay=0.5)  # a constant learning rate: 2 + 2 steps = 4 steps
    train(cfg, progress=False)
    resumed = replace(cfg, out_dir=str(tmp_path / "resumed"))
    train(replace(resumed, steps=2), progress=False)
    train(resumed, progress=False)  # resumes at step 2
    ema, last = (torch.load(tmp_path / d / "last.pt", weights_only=False) for d in ("straight", "resumed"))
    for k in ema["ema"]:
        torch.testing.assert_close(ema["ema"][k], last["ema"][k], rtol=0, atol=0)
        torch.testing.assert_close(ema["model"][k], last["model"][k], rtol=0, atol=0)
    run = tmp_path / "straight"
    average = load_model(run / "model.safetensors")
    final = load_model(run / "model_last.safetensors")
    assert average.fingerprint != final.fingerprint
    assert average.metadata["train_weights"] == "average (ema_decay 0.5)" and "train_weights" not in final.metadata
    w = "g_s.0.weight"
    torch.testing.assert_close(average.model.state_dict()[w], ema["ema"][w])
    torch.testing.assert_close(final.model.state_dict()[w], ema["model"][w])
    assert export_checkpoint(run / "last.pt", tmp_path / "a.safetensors") == average.fingerprint
    assert export_checkpoint(run / "last.pt", tmp_path / "b.safetensors", average=False) == final.fingerprint

    # the update itself: trained parameters averaged, frozen ones copied to the bit (where the
    # average of a value with itself would not give it back), and a checkpoint without an average
    m = torch.nn.Linear(2, 1)
    values = torch.linspace(0.1, 10, 1000)
    moved = values[(0.999 * values + 0.001 * values) != values]
    assert len(moved) > 0  # such values exist: the copy is needed
    m.bias.data.fill_(float(moved[0]))
    m.bias.requires_grad_(False)
    avg = {k: v.detach().clone() for k, v in m.state_dict().items()}
    avg["weight"].zero_()
    ema_update(avg, m, 0.999)
    torch.testing.assert_close(avg["weight"], 0.001 * m.weight.detach())
    assert torch.equal(avg["bias"], m.bias)
    plain = replace(cfg, out_dir=str(tmp_path / "plain"), ema_decay=0.0, steps=1)
    train(plain, progress=False)
    assert not (tmp_path / "plain" / "model_last.safetensors").exists()
    with pytest.raises(ConfigError, match="no weight average"):
        export_checkpoint(tmp_path / "plain" / "last.pt", tmp_path / "c.safetensors", average=True)
    with pytest.raises(ConfigError, match="ema_decay"):
        train(replace(plain, ema_decay=1.0), progress=False)


def test_rows_logged_after_the_checkpoint_are_not_logged_twice(tmp_path):
    """A run stopped between checkpoints (Ctrl-C, a crash) had logged steps its checkpoint does
    not hold; the resumed run logged them again (steps went backwards in log.csv and log.jsonl)."""
    data = write_train_folder(tmp_path / "data", h=160, w=192)
    run = tmp_path / "run"
    cfg = TrainConfig(data_dir=str(data), out_dir=str(run), N=8, M=12, lmbdas=(0.01, 0.05), crop=64,
                      batch=1, steps=6, warmup=1, threads=1, log_every=1, ckpt_every=2)
    train(TrainConfig(**{**cfg.__dict__, "steps": 4}), progress=False)  # checkpoint at step 4
    # as if steps 5 and 6 had been logged before the run was stopped, without a checkpoint
    with (run / "log.csv").open("a") as f:
        f.write("5,0.001,1,1,1,,1,1,0\n6,0.001,1,1,1,,1,1,0\n")
    with (run / "log.jsonl").open("a") as f:
        f.write(json.dumps({"step": 5}) + "\n" + json.dumps({"step": 6}) + "\n")
    train(cfg, progress=False)  # resumes at step 4
    rows = list(csv.DictReader((run / "log.csv").open()))
    lines = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == ["1", "2", "3", "4", "5", "6"]
    assert [j["step"] for j in lines] == [1, 2, 3, 4, 5, 6] and all("loss" in j for j in lines)


def test_a_checkpoint_is_resumed_only_by_its_own_architecture_and_a_damaged_one_is_named(tmp_path):
    """Resuming with another N, other quality levels or the pre-editor gave torch's "size mismatch"
    traceback; a damaged last.pt torch's zip-reader traceback or "invalid literal for int()"."""
    import pytest

    from vlmcodec.errors import ConfigError

    data = write_train_folder(tmp_path / "data", h=160, w=192)
    run = tmp_path / "run"
    cfg = TrainConfig(data_dir=str(data), out_dir=str(run), N=8, M=12, lmbdas=(0.01, 0.05), crop=64,
                      batch=1, steps=2, warmup=1, threads=1, log_every=1, ckpt_every=2)
    train(cfg, progress=False)
    for change, named in (({"N": 16}, "N 8 there, 16 here"), ({"lmbdas": (0.01, 0.02, 0.05)}, "lmbdas"),
                          ({"pre_editor": True}, "pre_editor False there, True here")):
        with pytest.raises(ConfigError, match=f"cannot resume from .*last.pt: it was trained with another {named}"):
            train(TrainConfig(**{**cfg.__dict__, **change, "steps": 4}), progress=False)
    ckpt = run / "last.pt"
    for damaged in (ckpt.read_bytes()[:1000], b"garbage\n"):
        ckpt.write_bytes(damaged)
        with pytest.raises(ConfigError, match="cannot resume from .*last.pt: not a readable checkpoint"):
            train(TrainConfig(**{**cfg.__dict__, "steps": 4}), progress=False)


class _Payload:
    """A pickle that runs code when loaded (as a crafted last.pt could)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_a_resume_never_runs_code_a_crafted_checkpoint_carries(tmp_path):
    """The resume read last.pt with weights_only=False: a pickle in it ran on resume (here it
    would make a file)."""
    import pytest
    import torch

    from vlmcodec.errors import ConfigError

    data = write_train_folder(tmp_path / "data", h=160, w=192)
    run = tmp_path / "run"
    cfg = TrainConfig(data_dir=str(data), out_dir=str(run), N=8, M=12, lmbdas=(0.01, 0.05), crop=64,
                      batch=1, steps=2, warmup=1, threads=1, log_every=1, ckpt_every=2)
    train(cfg, progress=False)
    state = torch.load(run / "last.pt", weights_only=True)
    marker = tmp_path / "ran"
    torch.save({**state, "lineage": _Payload(marker)}, run / "last.pt")
    with pytest.raises(ConfigError, match="cannot resume from .*last.pt: not a readable checkpoint"):
        train(TrainConfig(**{**cfg.__dict__, "steps": 4}), progress=False)
    assert not marker.exists()
    torch.save(state, run / "last.pt")  # and a checkpoint as training writes it resumes
    train(TrainConfig(**{**cfg.__dict__, "steps": 3}), progress=False)
    assert torch.load(run / "last.pt", weights_only=True)["step"] == 3


def test_a_resume_uses_the_new_configs_optimiser_settings(tmp_path):
    """A changed pre_editor_lr_mult or aux_lr was announced on resume ("the run goes on with …")
    but the optimisers' loaded state kept the checkpoint's: the pre-editor trained at 1× and the
    quantiles at the old aux_lr."""
    import warnings

    import torch

    data = write_train_folder(tmp_path / "data", h=160, w=192)
    run = tmp_path / "run"
    cfg = TrainConfig(data_dir=str(data), out_dir=str(run), N=8, M=12, lmbdas=(0.01, 0.05), crop=64, batch=1,
                      steps=2, warmup=1, threads=1, log_every=1, ckpt_every=1, pre_editor=True,
                      pre_editor_lr_mult=1.0, aux_lr=1e-3)
    train(cfg, progress=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(TrainConfig(**{**cfg.__dict__, "steps": 3, "pre_editor_lr_mult": 10.0, "aux_lr": 0.0}), progress=False)
    said = " ".join(str(w.message) for w in caught)
    assert "pre_editor_lr_mult 1.0 -> 10.0" in said and "aux_lr 0.001 -> 0.0" in said, said
    state = torch.load(run / "last.pt", weights_only=True)
    codec_group, pre_group = state["opt"]["param_groups"]
    assert (codec_group["lr_mult"], pre_group["lr_mult"]) == (1.0, 10.0)
    assert pre_group["lr"] == 10.0 * codec_group["lr"] > 0
    assert [g["lr"] for g in state["aux_opt"]["param_groups"]] == [0.0]
    assert state["cuda_rng"] is None  # (a CPU run: the noise is the CPU generator's, saved as torch_rng)
