"""``pyrogen evaluate --ais/--gaps/--bdmc``: the tables beyond_is returns and the command writes."""

import pandas as pd
import pytest
from ground_truth import make_ppca, set_diagonal_guide

from pyrogen.bounds.extra import beyond_is, parse_steps
from pyrogen.cli import main
from pyrogen.errors import ConfigError


def test_beyond_is_returns_one_table_per_file():
    m, x = make_ppca(n=6)
    set_diagonal_guide(m, widen=1.5)
    tables = beyond_is(
        m,
        x,
        ais_steps=[3, 6],
        chains=3,
        leapfrog_steps=2,
        gaps=True,
        gap_steps=5,
        eval_particles=30,
        bdmc_points=4,
    )
    assert set(tables) == {"ais", "ais_summary", "gaps", "gaps_summary", "bdmc", "bdmc_summary"}
    assert list(tables["ais_summary"]["steps"]) == [3, 6]
    assert len(tables["ais"]) == 12 and set(tables["ais"]["point"]) == set(range(6))
    assert "ais" in tables["gaps"] and len(tables["gaps"]) == 6
    assert len(tables["bdmc"]) == 4 and tables["bdmc_summary"]["num_points"].iloc[0] == 4


@pytest.mark.slow
def test_evaluate_flags_write_the_tables_and_the_report_draws_them(tmp_path, capsys):
    run = tmp_path / "vae"
    tiny = ["--epochs", "1", "--latent-dim", "2", "--hidden-dims", "16", "--quiet"]
    assert main(["train", "vae", "--data", "digits", *tiny, "--out", str(run)]) == 0
    flags = "--ais --steps 3,6 --chains 2 --leapfrog 2 --gaps --gap-steps 3 --bdmc 5"
    args = ["evaluate", str(run), "--ks", "1,30", "--limit", "8", "--quiet", *flags.split()]
    assert main(args) == 0
    for name in ("ais", "ais_summary", "gaps", "gaps_summary", "bdmc", "bdmc_summary"):
        assert (run / f"{name}.csv").is_file(), name
    assert len(pd.read_csv(run / "gaps.csv")) == 8
    out = tmp_path / "rep.html"
    assert main(["report", str(run), "--out", str(out), "--mmd-samples", "20"]) == 0
    files = {p.name for p in (tmp_path / "rep_files").iterdir()}
    assert {"bound_ladder.png", "gap_decomposition.png", "ais_vs_steps.png"} <= files


def test_steps_are_parsed_and_bad_ones_named():
    assert parse_steps("500,50, 50") == [50, 500]
    for bad in ("", "x", "0,10"):
        with pytest.raises(ConfigError, match="--steps"):
            parse_steps(bad)
