"""The shipped LWM-Spectro model (models/lwm-spectro-tiny), as a user reaches it by name.

A regression test of the trained weights that ship: the technology adapter scores well above
chance on freshly generated examples it never saw (a different seed from its training set),
and `spectrumfm run --model lwm-spectro-tiny` replays the demo with its technology decisions.
No modulation adapter ships with it (its card says why), which the engine says in one line.
"""

import json
from pathlib import Path

from sfm_testutil import read_jsonl, run_cli
from test_bad_input import assert_one_line_error

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "models" / "lwm-spectro-tiny"
DEMO = ROOT / "data" / "demo" / "demo.sigmf-meta"


def _last_json(res):
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_the_shipped_folder_is_complete():
    config = json.loads((MODEL / "config.json").read_text())
    assert config["arch"] == "lwm-spectro-tiny" and config["features"]["recipe"] == "stft-db-corpus"
    assert sorted(p.name for p in (MODEL / "adapters").iterdir()) == ["technology"]
    for name in ("adapter.safetensors", "adapter_config.json", "head.safetensors",
                 "MODEL_CARD.md"):
        assert (MODEL / "adapters" / "technology" / name).is_file(), name
    assert (MODEL / "MODEL_CARD.md").is_file()
    assert not list(MODEL.rglob("*.pt")) and not list(MODEL.rglob("*.bin")), "pickles shipped"


def test_technology_adapter_on_unseen_examples(tmp_path):
    data = tmp_path / "tech"
    res = run_cli("generate", "--recipe", ROOT / "recipes" / "technology.yaml", "--length", 8256,
                  "--n-per-class", 12, "--snr-range", "10,25", "--seed", 4321, "--workers", 1,
                  "-q", "--out", data, timeout=300)
    assert res.returncode == 0, res.stderr
    out = _last_json(run_cli("evaluate", "--model", MODEL / "adapters" / "technology",
                             "--data", f"shards:{data}", "--split", "all", "--device", "cpu",
                             "--json", timeout=300))
    # 11 classes, chance 0.09; the card gives 0.565 on its own test split (SNR -10..25 dB)
    # and 0.59..0.80 from 5 dB up. 0.35 is more than 5 standard errors under 0.6 at n = 132.
    assert out["n"] == 132 and out["split"] == "all"
    assert out["accuracy"] >= 0.35, out


def test_run_replays_the_demo_with_the_lwm_model(tmp_path):
    out = tmp_path / "d.jsonl"
    res = run_cli("run", DEMO, "--model", "lwm-spectro-tiny", "--fast", "--headless",
                  "--decisions", out, timeout=300)
    assert res.returncode == 0, res.stderr
    decisions = read_jsonl(out)
    tech = [d for d in decisions if d["task"] == "technology"]
    assert tech and {d["model"] for d in tech} == {"lwm-spectro-tiny/technology"}
    assert not [d for d in decisions if d["task"] == "modulation"]
    res = run_cli("run", DEMO, "--model", "lwm-spectro-tiny", "--tasks", "modulation",
                  "--fast", "--headless", "--decisions", tmp_path / "m.jsonl", timeout=120)
    assert_one_line_error(res, "--tasks modulation", "no adapter")
