"""Which quality levels the trainer's batches train: every level in every batch of at least as
many items as levels; a smaller (or uneven) batch takes them in turn over consecutive steps."""

from dataclasses import replace

import pytest
import torch

from conftest import write_train_folder
from vlmcodec.models import MeanScaleHyperprior
from vlmcodec.training.trainer import TrainConfig, train


def _levels_seen(monkeypatch) -> list[list[int]]:
    seen: list[list[int]] = []
    real = MeanScaleHyperprior.forward

    def forward(self, x, levels, *args, **kwargs):
        seen.append([int(v) for v in levels])
        return real(self, x, levels, *args, **kwargs)

    monkeypatch.setattr(MeanScaleHyperprior, "forward", forward)
    return seen


def _cfg(tmp_path, **kw) -> TrainConfig:
    data = write_train_folder(tmp_path / "data", h=96, w=96)
    base = dict(data_dir=str(data), out_dir=str(tmp_path / "run"), N=8, M=12, lmbdas=(0.001, 0.01, 0.05, 0.1),
                crop=64, batch=2, steps=5, warmup=1, threads=1, log_every=5, ckpt_every=5, lr=1e-2)
    return TrainConfig(**{**base, **kw})


def test_a_batch_smaller_than_the_levels_trains_every_level_in_turn(tmp_path, monkeypatch):
    """Batch 2 with 4 levels: levels 2 and 3 were never trained (arange(batch) % K), their gain
    rows left as initialised, silently."""
    seen = _levels_seen(monkeypatch)
    cfg = _cfg(tmp_path)
    torch.manual_seed(cfg.seed)
    init = MeanScaleHyperprior(cfg.model_config()).state_dict()
    train(cfg, progress=False)
    assert seen == [[0, 1], [2, 3], [0, 1], [2, 3], [0, 1]]
    trained = torch.load(tmp_path / "run" / "last.pt", weights_only=False)["model"]
    for key in ("gain", "inv_gain"):
        assert all(not torch.equal(trained[key][i], init[key][i]) for i in range(4)), key


def test_the_rotation_continues_across_a_resume(tmp_path, monkeypatch):
    seen = _levels_seen(monkeypatch)
    cfg = _cfg(tmp_path, lmbdas=(0.001, 0.01, 0.05), batch=2, steps=2, ckpt_every=1)
    train(cfg, progress=False)
    train(replace(cfg, steps=4), progress=False)  # (resumes at step 2)
    assert seen == [[0, 1], [2, 0], [1, 2], [0, 1]]


@pytest.mark.parametrize("lmbdas, batch", [((0.01, 0.05), 4), ((0.001, 0.01, 0.05, 0.1), 4), ((0.01,), 3)])
def test_a_batch_that_is_a_multiple_of_the_levels_has_them_as_before(tmp_path, monkeypatch, lmbdas, batch):
    """(the runs trained so far keep their sequences: arange(batch) % K at every step)"""
    seen = _levels_seen(monkeypatch)
    train(_cfg(tmp_path, lmbdas=lmbdas, batch=batch, steps=3), progress=False)
    assert seen == [[i % len(lmbdas) for i in range(batch)]] * 3


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (torch.cuda.is_available() is False)")
def test_a_cuda_run_resumes(tmp_path):
    """The checkpoint's RNG states are CPU byte tensors that map_location moved to the GPU: the
    second slice of a GPU session could not resume ("RNG state must be a torch.ByteTensor")."""
    cfg = _cfg(tmp_path, device="cuda", steps=2, ckpt_every=1)
    train(cfg, progress=False)
    train(replace(cfg, steps=4), progress=False)
    assert torch.load(tmp_path / "run" / "last.pt", map_location="cpu", weights_only=False)["step"] == 4
