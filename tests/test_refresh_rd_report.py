"""scripts/refresh_rd_report.py: an rd.json's BD tables recomputed from its curves (overlap added,
the report rewritten with its † marks), never written where a recomputed value differs."""

import importlib.util
import json
import shutil
from pathlib import Path

from conftest import needs_results

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("refresh_rd_report", ROOT / "scripts" / "refresh_rd_report.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@needs_results
def test_an_rd_json_without_overlap_gets_it_and_keeps_its_values(tmp_path, capsys):
    folder = tmp_path / "rd"
    folder.mkdir()
    shutil.copy(ROOT / "results" / "rd_kodak" / "rd.json", folder / "rd.json")
    result = json.loads((folder / "rd.json").read_text())
    stored = result["bd"]
    for rows in stored.values():  # as an rd.json of before the overlap fields
        for entry in rows.values():
            entry.pop("overlap", None), entry.pop("overlap_rate", None)
    (folder / "rd.json").write_text(json.dumps(result))
    script = _script()
    assert script.main([str(folder)]) == 0
    again = json.loads((folder / "rd.json").read_text())["bd"]
    vlm = again["psnr_vs_vtm"]["vlmcodec"]
    assert 0 < vlm["overlap"] < 0.75 and vlm["bd_rate"] == stored["psnr_vs_vtm"]["vlmcodec"]["bd_rate"]
    assert "vlmcodec | +203.2 % †" in (folder / "report.md").read_text()
    # a value that the curves do not give again: nothing written, the differences said
    again["psnr_vs_vtm"]["vlmcodec"]["bd_rate"] += 1.0
    result["bd"] = again
    (folder / "rd.json").write_text(json.dumps(result))
    before = (folder / "rd.json").read_bytes(), (folder / "report.md").read_bytes()
    assert script.main([str(folder)]) == 1
    assert "psnr_vs_vtm/vlmcodec/bd_rate" in capsys.readouterr().err
    assert ((folder / "rd.json").read_bytes(), (folder / "report.md").read_bytes()) == before
