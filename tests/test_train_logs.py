"""The trainer's logs: log.csv and the same rows as JSON lines (log.jsonl), kept across a resume."""

import csv
import json

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
        assert all(isinstance(j[k], float) and j[k] == float(r[k]) for k in r if k != "step")
        assert j["time"] > 0
