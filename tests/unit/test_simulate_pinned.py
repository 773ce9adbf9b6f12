"""The simulator's results, pinned: speeding up sim or policy must not change a single figure.

Every PolicyResult field but wall_seconds, for the three standard policies and a hot-spare
run, on small fleets (a few seconds in all). The figures were taken from the simulator
before any optimisation (commit c71f8ef). A change here is a change in behaviour: it
needs a reason in its commit, never a refresh to make the test pass.
"""

from __future__ import annotations

import dataclasses

import pytest

from valet.sim.fleet import FleetConfig, simulate

# One row per policy, every field's repr (floats exactly, nan as "nan"), in field order:
# policy spares ettr utilisation spot_gpu_hours spot_lost_gpu_hours swaps interruptions
# ttr_p50_minutes ttr_p99_minutes retired passes
PINNED = {
    "small": (
        FleetConfig(gpus=512, days=6, job_nodes=16, failure_scale=20, seed=3, hot=2),
        [
            "'no-buffer' 0 0.8249421296296297 0.8249421296296297 0.0 0.0"
            " 0 25 62.0 2935.6400000000035 0 122",
            "'idle-buffer' 4 0.9790123456790123 0.9178240740740741 0.0 0.0 18 22 11.0 11.0 1 100",
            "'valet' 4 0.9777391975308642 0.9640389901620371 3495.3333333333335 242.8"
            " 18 22 10.0 10.0 0 182",
            "'valet+hot' 4 0.9790123456790123 0.9363299334490741 1364.4 168.8"
            " 18 22 10.0 10.0 0 150",
        ],
    ),
    # Many failures, RMA returns within the run, hot spares sized by "auto".
    "faulty": (
        FleetConfig(
            gpus=768, days=4, job_nodes=24, failure_scale=60, seed=11, hot="auto", rma_days=1
        ),
        [
            "'no-buffer' 0 0.662890625 0.662890625 0.0 0.0 19 97 20.0 1463.0800000000002 3 390",
            "'idle-buffer' 5 0.8675385378510378 0.8223542390046297 0.0 0.0"
            " 71 94 11.0 20.839999999999918 3 359",
            "'valet' 5 0.8689121642246642 0.8443522135416667 1525.8666666666666 760.0"
            " 70 92 10.0 10.0 3 460",
            "'valet+hot' 5 0.8743990384615384 0.8422887731481481 990.2666666666667"
            " 568.9333333333333 69 91 10.0 10.0 3 387",
        ],
    ),
    "storm": (
        FleetConfig(
            gpus=512, days=3, job_nodes=16, failure_scale=150, seed=8, hot="auto", rma_days=0.5
        ),
        [
            "'no-buffer' 0 0.647800925925926 0.647800925925926 0.0 0.0"
            " 42 84 11.0 695.1399999999961 3 332",
            "'idle-buffer' 4 0.8072530864197531 0.7567997685185185 0.0 0.0 49 83 11.0 76.0 3 335",
            "'valet' 4 0.8258641975308642 0.7827582465277778 313.73333333333335"
            " 567.8666666666667 50 84 10.0 10.0 3 394",
            "'valet+hot' 4 0.8184104938271605 0.7723234953703704 186.66666666666666"
            " 279.3333333333333 50 84 10.0 10.180000000000007 3 345",
        ],
    ),
    # More than 100 spot pods created in one pass (1-GPU pods on half the fleet held spare).
    "spot-fill": (
        FleetConfig(
            gpus=256,
            days=1.5,
            job_nodes=8,
            failure_scale=80,
            seed=4,
            buffer_percent=50,
            spot_gpus_per_pod=1,
            shard_minutes=30,
            spot_grid_minutes=30,
            hot=2,
        ),
        [
            "'no-buffer' 0 0.8774305555555556 0.8774305555555556 0.0 0.0"
            " 0 16 62.0 116.39999999999996 0 70",
            "'idle-buffer' 16 0.9305555555555556 0.4652777777777778 0.0 0.0 8 11 11.0 11.0 0 54",
            "'valet' 16 0.9381944444444444 0.9346987123842593 4290.983333333334"
            " 42.93333333333333 8 10 12.0 12.0 0 133",
            "'valet+hot' 16 0.9317129629629629 0.8720883969907407 3743.8333333333335"
            " 41.43333333333333 8 11 11.0 11.0 0 128",
        ],
    ),
}


@pytest.mark.parametrize("name", sorted(PINNED))
def test_results_are_exactly_as_pinned(name: str) -> None:
    cfg, expected = PINNED[name]
    got = []
    for result in simulate(cfg):
        row = dataclasses.asdict(result)
        del row["wall_seconds"]
        got.append(" ".join(repr(value) for value in row.values()))
    assert got == expected
