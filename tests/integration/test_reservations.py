"""Reservations left by stopped trials are released while a tune runs (ReservationJanitor)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

SCRIPT = r"""
import json, time
import ray
from ray.util.placement_group import placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy
from ray.util.state import list_placement_groups
from ray_jobs._ray import ReservationJanitor, connect, shutdown

connect(local_cpus=4, log_to_driver=False)

@ray.remote(num_cpus=1)
class Worker:
    def ping(self):
        return 1

def place(group):
    strategy = PlacementGroupSchedulingStrategy(group)
    actor = Worker.options(scheduling_strategy=strategy).remote()
    ray.get(actor.ping.remote())
    return actor

leftover = placement_group([{"CPU": 1}])   # what a killed controller leaves: nobody uses it
used = placement_group([{"CPU": 1}])
late = placement_group([{"CPU": 1}])       # its actor comes between the two looks
pending = placement_group([{"CPU": 64}])   # never fits: waits, and is left alone
ray.get([leftover.ready(), used.ready(), late.ready()])
keep = [place(used)]
janitor = ReservationJanitor(interval_s=0)
first = janitor.sweep()
keep.append(place(late))
second = janitor.sweep()
states = {g.placement_group_id: g.state for g in list_placement_groups(detail=True)}
out = {
    "first": first, "second": second,
    "leftover": states[leftover.id.hex()], "used": states[used.id.hex()],
    "late": states[late.id.hex()], "pending": states[pending.id.hex()],
}
# In the background, as the tune job runs it.
another = placement_group([{"CPU": 1}])
ray.get(another.ready())
with ReservationJanitor(interval_s=0.5) as background:
    deadline = time.monotonic() + 60
    while background.removed == 0 and time.monotonic() < deadline:
        time.sleep(0.2)
states = {g.placement_group_id: g.state for g in list_placement_groups(detail=True)}
out["background"] = states[another.id.hex()]
out["background_removed"] = background.removed
print("RESULT " + json.dumps(out))
shutdown()
"""


def test_janitor_releases_only_reservations_that_stay_unused(tmp_path: Path) -> None:
    ray_tmp = tempfile.mkdtemp(prefix="mtj-", dir="/tmp")  # Ray's socket paths must be short
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("RAY_")},
        "PYTHONPATH": str(REPO),
        "RAY_TMPDIR": ray_tmp,
    }
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    line = next(x for x in done.stdout.splitlines() if x.startswith("RESULT "))
    out = json.loads(line.removeprefix("RESULT "))
    # The first look only notes what is unused; the second removes what still is.
    assert out["first"] == 0 and out["second"] == 1
    assert out["leftover"] == "REMOVED"
    assert out["used"] == "CREATED" and out["late"] == "CREATED"
    assert out["pending"] == "PENDING"
    assert out["background"] == "REMOVED" and out["background_removed"] == 1
    assert "removed placement group" in done.stderr
