"""The projection from a measured batch-latency table (paratta.planning.latency): interpolation, labels."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from paratta.planning.latency import NO_TABLE, LatencyTable, project, table_for

TABLE = LatencyTable(model="m", device="NVIDIA H200", rows=(1, 2, 4, 8), ms=(1.0, 1.0, 2.0, 4.0))


def test_call_latency_interpolates_and_chunks_beyond_the_table() -> None:
    assert TABLE.call_ms(2) == 1.0 and TABLE.call_ms(3) == pytest.approx(1.5)  # halfway between 2 and 4
    assert TABLE.call_ms(6) == pytest.approx(3.0)
    assert TABLE.call_ms(20) == pytest.approx(4.0 + 4.0 + 2.0)  # 8 + 8 + 4 rows
    assert TABLE.call_ms(0) == 0.0


def test_projection_sums_iterations_and_charges_guidance_two_rows() -> None:
    # T = 8, three iterations over windows 8, 6, 2; unguided: 1 row per timestep.
    p = project(TABLE, [8, 6, 2], steps=8, guidance=1.0)
    assert p.parallel_s == pytest.approx((4.0 + 3.0 + 1.0) / 1000)
    assert p.sequential_s == pytest.approx(8 * 1.0 / 1000)
    assert p.speedup == pytest.approx(1.0)
    guided = project(TABLE, [4], steps=8, guidance=3.0)  # 4 timesteps = 8 rows
    assert guided.parallel_s == pytest.approx(4.0 / 1000) and guided.sequential_s == pytest.approx(8e-3)
    split = project(TABLE, [4], steps=8, guidance=3.0, max_batch=1)  # four calls of 2 rows
    assert split.parallel_s == pytest.approx(4.0 / 1000)
    assert "projected on NVIDIA H200" in p.label and "not measured here" in p.label


def test_tables_are_found_by_key_or_alias_and_absent_tables_are_none(tmp_path: Path) -> None:
    doc = {
        "device": "NVIDIA H200 (141 GB)",
        "models": {
            "sd15": {"aliases": ["stable-diffusion-v1-5/stable-diffusion-v1-5"], "rows": [1, 2], "ms": [9, 9]}
        },
    }
    path = tmp_path / "latency.json"
    path.write_text(json.dumps(doc))
    assert table_for("stable-diffusion-v1-5/stable-diffusion-v1-5", path).ms == (9.0, 9.0)
    assert table_for("sd15", path).device == "NVIDIA H200 (141 GB)"
    assert table_for("shapes", path) is None
    assert table_for("shapes", tmp_path / "missing.json") is None and "no latency table" in NO_TABLE
    with pytest.raises(ValueError, match="increasing"):
        LatencyTable(model="bad", device="x", rows=(2, 1), ms=(1.0, 1.0))
