"""The Ray executor: training anywhere in a cluster, measurement only on the target's nodes.

Training is a Ray task (one CPU, or one GPU with ``train_device="cuda"``) that any node may
run; it returns the artifact's files through Ray's object store. Measurement is a Ray actor
pinned by a custom resource, ``petra-target:<name>``: one actor per unit of that resource,
so a node started with ``--resources '{"petra-target:edge-a": 1}'`` hosts exactly one actor,
and an actor serves one call at a time: one measurement per target node at a time, in the
same isolated worker process the local executors use. Target nodes should have ``--num-cpus
0`` so that no training task is ever scheduled beside their measurements.

The study (its store, the GA, results) stays with the driver. A training task lost with its
node is retried by Ray; a measurement lost with its node goes back to the queue for another
target node. Only when no target node is left does the run stop (with everything saved).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import uuid
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from petra.errors import ConfigError, PetraError
from petra.executors.base import Executor, Job, Outcome, failure_reason

RESOURCE_PREFIX = "petra-target:"
#: a job whose worker or node was lost this often is recorded FAIL instead of retried again
MAX_RETRIES = 3
#: how long to wait for a target node to (re)appear before the run stops
NODE_WAIT_S = 60.0


def target_resource(target: str) -> str:
    return RESOURCE_PREFIX + target


# -- what runs on the cluster ---------------------------------------------------------------
_BUILDERS: dict[str, object] = {}


def _train(recipe_ref: list, config, fidelity, threads: int) -> dict:
    """A Ray task: build one candidate (train, export, quantize) on whatever node runs it."""
    import ray

    from petra.pipeline import CandidateBuilder

    os.environ["PETRA_TORCH_THREADS"] = str(threads)
    key = recipe_ref[0].hex()
    if key not in _BUILDERS:  # one builder per worker process and study (the data is large)
        _BUILDERS.clear()
        # one folder per study on each node (each build removes its own artifact after sending it)
        workdir = Path(tempfile.gettempdir()) / "petra-ray-train" / key[:16]
        _BUILDERS[key] = CandidateBuilder.from_recipe(ray.get(recipe_ref[0]), workdir=workdir)
    builder = _BUILDERS[key]
    timings: dict[str, float] = {}
    art = builder.build(config, timings, fidelity)
    files = {f.name: f.read_bytes() for f in art.files}
    shutil.rmtree(art.path.parent, ignore_errors=True)  # the driver keeps its own copy
    return {"main": art.path.name, "files": files, "timings": timings,
            "node": ray.get_runtime_context().get_node_id()}


class TargetMeasurer:
    """A Ray actor on one target node: its isolated measurement worker, one call at a time."""

    def __init__(self, eval_ref: list) -> None:
        import ray

        from petra.profilers import IsolatedMeasurer

        self.node_id = ray.get_runtime_context().get_node_id()
        self.dir = Path(tempfile.mkdtemp(prefix="petra-ray-target-"))
        self.eval_paths = []
        for name, arr in zip(("val_x.npy", "test_x.npy"), ray.get(eval_ref[0])):
            np.save(self.dir / name, arr)
            self.eval_paths.append(self.dir / name)
        # the machine lock of this node still serializes against any local petra run
        self.measurer = IsolatedMeasurer()

    def shutdown(self) -> None:
        """Stop the measurement worker and remove this actor's files from its node."""
        self.measurer.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def node(self) -> str:
        """The Ray node id this actor runs on (also a cheap "is it placed and alive" call)."""
        return self.node_id

    def measure(self, req, main: str, files: dict[str, bytes], with_eval: bool):
        folder = self.dir / uuid.uuid4().hex
        folder.mkdir()
        try:
            for name, data in files.items():
                (folder / name).write_bytes(data)
            req = replace(req, artifact=folder / main,
                          eval_inputs=tuple(self.eval_paths) if with_eval else ())
            m = self.measurer.measure(req)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        return replace(m, node=self.node_id)


# -- the driver side ------------------------------------------------------------------------
@dataclass
class _RayFlight:
    """The jobs of one ``run``: training tasks, artifacts waiting for an actor, measurements."""

    idle: deque
    started: dict[int, float] = field(default_factory=dict)
    retries: dict[int, int] = field(default_factory=dict)
    training: dict = field(default_factory=dict)  # ObjectRef -> Job
    waiting: deque = field(default_factory=deque)  # (job, artifact, payload) ready to measure
    measuring: dict = field(default_factory=dict)  # ObjectRef -> (actor, job, artifact, payload, t0)


class RayExecutor(Executor):
    name = "ray"

    def __init__(self, address: str | None = None, target: str = "default", train_device: str = "cpu",
                 train_cpus: int = 1) -> None:
        self.address, self.target, self.train_device = address, target, train_device
        self.train_cpus = train_cpus
        self.resource = target_resource(target)
        self.actors: list = []
        self.nodes: dict[int, str] = {}  # id(actor) -> node id
        self.lost_nodes: list[str] = []
        self.requeued = 0
        self._started_ray = False

    # -- set-up -----------------------------------------------------------------------------
    def start(self, builder) -> None:
        super().start(builder)
        try:
            import ray
        except ImportError:
            raise ConfigError("--executor ray needs Ray: pip install 'petra[ray]'") from None
        self.ray = ray
        if not ray.is_initialized():
            kwargs: dict = {"namespace": "petra", "log_to_driver": False, "include_dashboard": False}
            if self.address is None:  # a one-machine cluster that is its own target
                kwargs["resources"] = {self.resource: 1}
            try:
                ray.init(address=self.address, **kwargs)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise ConfigError(f"cannot connect to the Ray cluster at {self.address!r} ({exc}); "
                                  "start one with `ray start --head` or pass --ray-address") from None
            self._started_ray = True
        units = int(ray.cluster_resources().get(self.resource, 0))
        if units < 1:
            raise ConfigError(
                f"no Ray node carries the resource {self.resource!r}; start the target node with "
                f"`ray start --address HEAD:6379 --num-cpus 0 --resources '{{\"{self.resource}\": 1}}'`")
        self._recipe_ref = [ray.put(builder.recipe())]
        self._eval_ref = [ray.put((np.ascontiguousarray(builder.task.val.x),
                                   np.ascontiguousarray(builder.task.test.x)))]
        self._train = ray.remote(_train).options(
            num_cpus=self.train_cpus, num_gpus=1 if self.train_device == "cuda" else 0, max_retries=3)
        self._actor_cls = ray.remote(TargetMeasurer).options(
            num_cpus=0, resources={self.resource: 1}, max_restarts=0, max_concurrency=1)
        self._spawn_actors(units)
        if not self.actors:
            raise ConfigError(f"no measurement actor could start on a {self.resource!r} node")

    def _spawn_actors(self, units: int) -> None:
        ray = self.ray
        fresh = [self._actor_cls.remote(self._eval_ref) for _ in range(units)]
        for actor in fresh:
            try:
                node = ray.get(actor.node.remote(), timeout=NODE_WAIT_S)
            except ray.exceptions.RayError:  # its node died, or it never got placed
                ray.kill(actor)
                continue
            self.actors.append(actor)
            self.nodes[id(actor)] = node
            if self._node_cpus(node) > 0:
                self.log(f"note: target node {node[:12]} also offers CPUs to training tasks; "
                         "start it with --num-cpus 0 so nothing trains beside its measurements")

    def _node_cpus(self, node_id: str) -> float:
        for n in self.ray.nodes():
            if n.get("NodeID") == node_id and n.get("Alive"):
                return n.get("Resources", {}).get("CPU", 0)
        return 0

    def _replace_lost(self) -> None:
        """No live actor: wait for a target node to come back (or stop the run)."""
        deadline = time.monotonic() + NODE_WAIT_S
        while time.monotonic() < deadline:
            units = int(self.ray.available_resources().get(self.resource, 0))
            if units >= 1:
                self._spawn_actors(units)
                if self.actors:
                    return
            time.sleep(1.0)
        raise PetraError(f"every node with {self.resource!r} was lost (lost: "
                         f"{', '.join(n[:12] for n in self.lost_nodes)}); finished trials are saved: "
                         "start a target node and `petra resume` the run")

    # -- jobs -------------------------------------------------------------------------------
    def _write(self, job: Job, payload: dict):
        """The trained artifact's files, into this study's folder (as a local build puts them)."""
        from petra.exporters import Artifact

        folder = self.builder.trial_dir(job.config, job.fidelity)
        folder.mkdir(parents=True, exist_ok=True)
        for name, data in payload["files"].items():
            tmp = folder / (name + ".tmp")
            tmp.write_bytes(data)
            os.replace(tmp, folder / name)
        return Artifact.of(folder / payload["main"])

    def _lose(self, actor) -> None:
        self.actors.remove(actor)
        self.lost_nodes.append(self.nodes.pop(id(actor), "?"))
        self.log(f"target node {self.lost_nodes[-1][:12]} lost; its measurement goes to another node")

    def _train_job(self, f: _RayFlight, job: Job) -> None:
        f.started.setdefault(job.index, time.monotonic())
        f.training[self._train.remote(self._recipe_ref, job.config, job.fidelity, self.train_cpus)] = job

    def _gave_up(self, f: _RayFlight, job: Job, reason: str) -> Outcome:
        return self.failed(job, reason, f.started[job.index], retries=f.retries.get(job.index, 0))

    def run(self, jobs: Iterable[Job]) -> Iterator[Outcome]:
        f = _RayFlight(idle=deque(self.actors))
        for job in jobs:
            self._train_job(f, job)
        try:
            while f.training or f.waiting or f.measuring:
                if not self.actors and (f.waiting or f.measuring):
                    self._replace_lost()
                    f.idle.extend(a for a in self.actors if a not in f.idle)
                while f.idle and f.waiting:
                    job, art, payload = f.waiting.popleft()
                    actor = f.idle.popleft()
                    req = self.request(job, art)
                    ref = actor.measure.remote(req, payload["main"], payload["files"], True)
                    f.measuring[ref] = (actor, job, art, payload, time.perf_counter())
                ready, _ = self.ray.wait(list(f.training) + list(f.measuring), num_returns=1, timeout=5.0)
                for ref in ready:
                    outcome = self._trained(f, ref) if ref in f.training else self._measured(f, ref)
                    if outcome is not None:
                        yield outcome
        finally:
            for ref in list(f.training) + list(f.measuring):  # budget spent: abandon the rest
                try:
                    self.ray.cancel(ref, force=ref in f.training)
                except Exception:  # noqa: BLE001 - cancelling is best effort
                    pass

    def _trained(self, f: _RayFlight, ref) -> Outcome | None:
        """A training task ended: its artifact waits for a measurement actor, or it failed."""
        ray, job = self.ray, f.training.pop(ref)
        try:
            payload = ray.get(ref)
        except ray.exceptions.RayTaskError as exc:
            return self._gave_up(f, job, failure_reason(exc.cause or exc))
        except ray.exceptions.RayError as exc:  # Ray's own retries were spent
            n = f.retries[job.index] = f.retries.get(job.index, 0) + 1
            if n > MAX_RETRIES:
                return self._gave_up(f, job, f"train: lost its Ray worker {n} times ({type(exc).__name__})")
            self._train_job(f, job)
            return None
        try:
            art = self._write(job, payload)
        except OSError as exc:
            return self._gave_up(f, job, f"transfer: {exc}")
        f.waiting.append((job, art, payload))
        return None

    def _measured(self, f: _RayFlight, ref) -> Outcome | None:
        """A measurement ended: score it, or put the job back when its actor was lost."""
        ray = self.ray
        actor, job, art, payload, t_measure = f.measuring.pop(ref)
        try:
            m = ray.get(ref)
        except ray.exceptions.RayTaskError as exc:
            f.idle.append(actor)
            return self._gave_up(f, job, failure_reason(exc.cause or exc))
        except ray.exceptions.RayActorError:
            self._lose(actor)
            self.requeued += 1
            f.retries[job.index] = f.retries.get(job.index, 0) + 1
            f.waiting.appendleft((job, art, payload))
            return None
        f.idle.append(actor)
        timings = payload["timings"] | {"measure_s": time.perf_counter() - t_measure}
        return self.score(job, art, m, timings, f.started[job.index],
                          retries=f.retries.get(job.index, 0), extra={"train_node": payload["node"]})

    def measure(self, config, artifact, policy):
        """Final re-measurement: always the first live target node, so the front's figures
        and the baseline's come from one machine."""
        req = self.builder.request(config, artifact, policy)
        files = {f.name: f.read_bytes() for f in artifact.files}
        while True:
            if not self.actors:
                self._replace_lost()
            actor = self.actors[0]
            try:
                return self.ray.get(actor.measure.remote(req, artifact.path.name, files, False))
            except self.ray.exceptions.RayTaskError as exc:
                raise (exc.cause or exc) from None
            except self.ray.exceptions.RayActorError:
                self._lose(actor)

    def describe(self) -> dict:
        return {"name": self.name, "address": self.address, "resource": self.resource,
                "target_nodes": list(self.nodes.values()), "lost_nodes": self.lost_nodes,
                "requeued_measurements": self.requeued, "train_device": self.train_device}

    def close(self) -> None:
        for actor in self.actors:
            try:
                self.ray.get(actor.shutdown.remote(), timeout=10)
            except Exception:  # noqa: BLE001 - the node may be gone already
                pass
            try:
                self.ray.kill(actor)
            except Exception:  # noqa: BLE001 - the node may be gone already
                pass
        self.actors.clear()
        if self._started_ray and self.ray.is_initialized():
            self.ray.shutdown()
