"""The Ray Train adapter: the one module that talks to Ray Train, and nothing in the processes
that only launch runs (trial drivers, the Train controller) loads TensorFlow."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ADAPTER = REPO / "ray_jobs" / "train_adapter.py"


def _python_files() -> list[Path]:
    return [
        p
        for folder in ("monolith", "ray_jobs", "bench")
        for p in sorted((REPO / folder).rglob("*.py"))
    ]


def _calls(tree: ast.AST, dotted: str) -> list[int]:
    """Lines where ``dotted`` (e.g. ``ray.train.report``) is called."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            parts, target = [], node.func
            while isinstance(target, ast.Attribute):
                parts.append(target.attr)
                target = target.value
            if isinstance(target, ast.Name):
                parts.append(target.id)
            if ".".join(reversed(parts)) == dotted:
                found.append(node.lineno)
    return found


def test_every_ray_train_report_and_trainer_is_in_the_adapter() -> None:
    elsewhere = {}
    for path in _python_files():
        tree = ast.parse(path.read_text())
        hits = _calls(tree, "ray.train.report") + _calls(tree, "DataParallelTrainer")
        hits += _calls(tree, "TensorflowTrainer")
        if hits and path != ADAPTER:
            elsewhere[str(path.relative_to(REPO))] = hits
    assert not elsewhere, f"Ray Train used outside the adapter: {elsewhere}"
    assert _calls(ast.parse(ADAPTER.read_text()), "ray.train.report")


def test_the_library_never_imports_ray_and_the_adapter_imports_only_monolith() -> None:
    for path in sorted((REPO / "monolith").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = (
                    [a.name for a in node.names]
                    if isinstance(node, ast.Import)
                    else [node.module or ""]
                )
                for name in names:
                    assert name.split(".")[0] not in ("ray",), f"{path}: imports {name}"
                    # the CLI reaches the Ray adapter only for --ray-address (lazily)
                    if name.startswith("ray_jobs"):
                        assert path.name == "cli.py", f"{path}: imports {name}"
    for node in ast.walk(ast.parse(ADAPTER.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("ray_jobs"):
            raise AssertionError(f"the adapter imports {node.module}: an import cycle waits")


@pytest.mark.parametrize(
    "module",
    ["ray_jobs.train_adapter", "ray_jobs.tune", "ray_jobs.train_final", "ray_jobs.prepare"],
)
def test_each_job_module_imports_alone_without_tensorflow(module: str) -> None:
    """No import cycle (each imports first, on its own) and no TensorFlow when it loads."""
    done = subprocess.run(
        [sys.executable, "-c", f"import sys, {module}; print(json.dumps('tensorflow' in sys.modules))"
         .replace("import sys,", "import sys, json,")],
        capture_output=True, text=True, cwd=REPO, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) is False


TRIAL_DRIVER = """
import json, sys
from ray_jobs._ray import connect
connect(local_cpus=2, log_to_driver=False)
import ray
from ray import tune
from monolith.config import load_config
from ray_jobs.train_adapter import (JobSpec, Resources, RunPlace, build_trainer, launch,
                                   start_report_relay)

def trial(config):  # a Tune trial driver, as ray_jobs.train_adapter.run_trial is
    cfg = load_config(config["config"])
    spec = JobSpec(task="trial", base_config=cfg.to_dict(), prepared=config["prepared"])
    trainer = build_trainer(spec, Resources(2, {"CPU": 1.0}), RunPlace("trial-x", config["runs"]),
                            cfg.hyperparameters())
    # A run through the same adapter (workers that report once), its report relayed here as
    # a trial's are: its actors are listed below.
    noop = JobSpec(task="noop", base_config=cfg.to_dict())
    seen = []
    launch(noop, Resources(1, {"CPU": 1.0}), RunPlace("noop-x", config["runs"]),
           progress=seen.append, relay=config["relay"])
    # The bench's second floor: workers that import TensorFlow (there only) before reporting.
    with_tf = JobSpec(task="noop", base_config=cfg.to_dict(), bench={"import_tensorflow": True})
    launch(with_tf, Resources(1, {"CPU": 1.0}), RunPlace("noop-tf", config["runs"]),
           progress=seen.append, relay=config["relay"])
    tune.report({"trainer": [c.__name__ for c in type(trainer).__mro__], "relayed": seen,
                 "tf": "tensorflow" in sys.modules, "keras": "keras" in sys.modules})

relay = start_report_relay()
space = {"prepared": sys.argv[1], "runs": sys.argv[2], "config": sys.argv[3], "relay": relay}
grid = tune.Tuner(trial, param_space=space,
                  run_config=tune.RunConfig(storage_path=sys.argv[2], verbose=0)).fit()
from ray.util.state import list_actors
out = {k: grid[0].metrics[k] for k in ("trainer", "relayed", "tf", "keras")}
out["actors"] = sorted({a.class_name for a in list_actors(limit=10000)})
out["open_channels"] = ray.get(relay.open_channels.remote())
print(json.dumps(out))
"""


@pytest.mark.integration
def test_a_trial_driver_builds_its_trainer_without_tensorflow(tmp_path: Path) -> None:
    """Ray's TensorflowTrainer imported TensorFlow in every trial driver (3-6 s each), Ray's
    trainer started a Ray Data actor for every run, datasets or not, and Ray's report
    callback a queue actor for every trial: a relay shared by the trials carries them."""
    import os
    import tempfile

    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    done = subprocess.run(
        [sys.executable, "-c", TRIAL_DRIVER, str(tmp_path / "prepared"), str(tmp_path / "runs"),
         str(REPO / "configs" / "local.yaml")],
        capture_output=True, text=True, cwd=REPO, timeout=300,
        env={**env, "RAY_TMPDIR": tempfile.mkdtemp(prefix="mtt-", dir="/tmp")},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert "DataParallelTrainer" in out["trainer"]
    assert (out["tf"], out["keras"]) == (False, False)
    # The run had its controller and workers, and no Ray Data actor: it has no Ray datasets.
    assert {"TrainController", "RayTrainWorker"} <= set(out["actors"]), out["actors"]
    assert "DatasetManager" not in out["actors"], out["actors"]
    # Each run's report came through the shared relay, which keeps no channel of an ended run;
    # the plain floor's workers never load TensorFlow, the second floor's do.
    assert [r["epoch"] for r in out["relayed"]] == [1, 1], out["relayed"]
    assert [r["tensorflow"] for r in out["relayed"]] == [0.0, 1.0], out["relayed"]
    assert "_ReportRelay" in out["actors"] and "_QueueActor" not in out["actors"], out["actors"]
    assert out["open_channels"] == 0


def test_job_spec_keeps_hyperparameters_apart() -> None:
    from ray_jobs.train_adapter import FinalSpec, JobSpec

    with pytest.raises(ValueError, match="task"):
        JobSpec(task="tune", base_config={})
    with pytest.raises(ValueError, match="final"):
        JobSpec(task="final", base_config={})
    spec = JobSpec(task="final", base_config={}, final=FinalSpec(best={"a": 1}, run_id="r"))
    with pytest.raises(AttributeError):
        spec.task = "trial"  # frozen


CONTROLLER = """
import json, sys
from ray_jobs._ray import connect
connect(local_cpus=2, log_to_driver=False)
from ray.train.v2.api.callback import UserCallback
from ray.util.queue import Queue
from monolith.config import load_config
from ray_jobs.train_adapter import JobSpec, Resources, RunPlace, build_trainer

class Probe(UserCallback):  # runs in the Train controller's process
    def __init__(self, queue):
        self.queue = queue
    def after_report(self, run_context, metrics, checkpoint):
        self.queue.put({"controller_tf": "tensorflow" in sys.modules,
                        "world_size_reports": len(metrics)})

queue = Queue()
spec = JobSpec(task="noop", base_config=load_config("configs/local.yaml").to_dict())
build_trainer(spec, Resources(2, {"CPU": 0.5}, watch_preemption=False),
              RunPlace("noop", sys.argv[1]), extra_callbacks=[Probe(queue)]).fit()
print(json.dumps(queue.get(timeout=30)))
"""


@pytest.mark.integration
def test_the_train_controller_runs_without_tensorflow(tmp_path: Path) -> None:
    """Ray's own TensorflowTrainer made the controller import TensorFlow (it unpickles the
    backend config); ours does not. Checked from inside the controller of a real run."""
    import os
    import tempfile

    ray_tmp = tempfile.mkdtemp(prefix="mta-", dir="/tmp")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    done = subprocess.run(
        [sys.executable, "-c", CONTROLLER, str(tmp_path / "runs")],
        capture_output=True, text=True, cwd=REPO, timeout=300,
        env={**env, "RAY_TMPDIR": ray_tmp},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out == {"controller_tf": False, "world_size_reports": 2}


WATCH = """
import json, sys, time
from ray_jobs._ray import connect
connect(local_cpus=2, log_to_driver=False)
import ray
from ray.train.v2.api.callback import UserCallback
from ray.util.state import list_actors
from monolith.config import load_config
from ray_jobs.train_adapter import (JobSpec, Resources, RunPlace, build_trainer,
                                    start_reservation_watch)

class Hold(UserCallback):  # in the controller: the run keeps its workers until it is killed
    def after_report(self, run_context, metrics, checkpoint):
        time.sleep(600)

runs = sys.argv[1]  # read here: a Ray worker's own sys.argv is Ray's
watch = start_reservation_watch()
spec = JobSpec(task="noop", base_config=load_config("configs/local.yaml").to_dict())
resources = Resources(1, {"CPU": 1.0}, watch_preemption=False, reservation_watch=watch)
# A run that ends by itself takes its reservation back: Train frees it.
build_trainer(spec, resources, RunPlace("done", runs)).fit()
out = {"after_a_finished_run": ray.get(watch.status.remote())}

@ray.remote(num_cpus=0)
def trial_driver():
    build_trainer(spec, resources, RunPlace("held", runs), extra_callbacks=[Hold()]).fit()

ref = trial_driver.remote()
deadline = time.time() + 120
while ray.get(watch.status.remote())["watched"] == 0 and time.time() < deadline:
    time.sleep(0.2)
out["cpus_free_while_held"] = ray.available_resources().get("CPU", 0.0)
out["actors"] = sorted({a.class_name for a in list_actors(limit=10000)})
ray.cancel(ref, force=True)  # its process ends, as Tune ends a stopped trial's driver
killed = time.time()
while ray.available_resources().get("CPU", 0.0) < 2.0 and time.time() < killed + 60:
    time.sleep(0.1)
out["seconds_to_free"] = time.time() - killed
out["cpus_free_after"] = ray.available_resources().get("CPU", 0.0)
out["after_the_kill"] = ray.get(watch.status.remote())
print(json.dumps(out))
"""


@pytest.mark.integration
def test_a_killed_runs_reservation_is_freed_by_the_shared_watch(tmp_path: Path) -> None:
    """Tune ends a trial by ending its driver, and with it the Train controller; Ray keeps
    the placement group a dead actor of a live job made. One watch per experiment frees it
    (in place of Ray Train's cleaner actor per run, which this run does not start)."""
    import os
    import tempfile

    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    done = subprocess.run(
        [sys.executable, "-c", WATCH, str(tmp_path / "runs")],
        capture_output=True, text=True, cwd=REPO, timeout=300,
        env={**env, "RAY_TMPDIR": tempfile.mkdtemp(prefix="mtw-", dir="/tmp")},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert (tmp_path / "runs" / "held").is_dir()  # the held run kept its storage here
    assert out["after_a_finished_run"] == {"watched": 0, "freed": 0}
    assert out["cpus_free_while_held"] == pytest.approx(1.0)  # the held run's worker
    assert "TrainController" in out["actors"], out["actors"]
    assert "PlacementGroupCleaner" not in out["actors"], out["actors"]
    assert out["cpus_free_after"] == pytest.approx(2.0)
    assert out["seconds_to_free"] < 10, out
    assert out["after_the_kill"] == {"watched": 0, "freed": 1}
