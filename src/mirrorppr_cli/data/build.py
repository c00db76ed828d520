"""Build orchestration: a plan, shards as units of work, local or Ray execution, resume.

A build folder holds ``plan.json`` (sources and settings), ``shards/shard-NNNNNN.tar`` with a
``.json`` sidecar each (that shard's records, skipped sources and the tar's SHA-256, written
*after* the tar), and at the end ``manifest.jsonl`` and ``summary.json``. A shard counts as done
when its sidecar exists and matches its tar, so a build killed at any moment and started again
redoes only unfinished shards, and every sample appears exactly once.
"""

from __future__ import annotations

import json
import multiprocessing
import os
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .. import __version__
from ..errors import OutputError, UsageError
from ..extras import extra_imports
from ..inputs import expand_inputs
from .filters import PROFESSIONAL_FACE_FILTER, FaceFilter
from .pairs import PairSettings, make_professional_samples, make_samples
from .sampling import MAX_OPS
from .shards import sha256, tar_bytes, write_atomic, write_json_atomic
from .workers import die_with_parent

PLAN_FILE = "plan.json"
MANIFEST_FILE = "manifest.jsonl"
SUMMARY_FILE = "summary.json"
#: Training subsets ``build-dataset --subset`` makes (see :mod:`mirrorppr_cli.data.pairs`).
SUBSETS = ("simulated", "professional")


@dataclass(frozen=True)
class BuildPlan:
    """Everything that determines a build's bytes."""

    faces_dir: str
    sources: list[str]
    seed: int
    pairs: int
    augmentations: int
    area: int
    image_format: str
    shard_size: int
    face_filter: dict = field(default_factory=lambda: FaceFilter().to_dict())
    version: str = __version__
    subset: str = "simulated"
    max_ops: int = MAX_OPS

    @property
    def shard_count(self) -> int:
        return (len(self.sources) + self.shard_size - 1) // self.shard_size

    def shard_sources(self, index: int) -> list[str]:
        return self.sources[index * self.shard_size : (index + 1) * self.shard_size]

    def settings(self) -> PairSettings:
        return PairSettings(
            pairs=self.pairs,
            augmentations=self.augmentations,
            area=self.area,
            image_format=self.image_format,
            face_filter=FaceFilter(**self.face_filter),
            max_ops=self.max_ops,
        )

    def to_dict(self) -> dict:
        data = asdict(self)
        if self.subset == "simulated":  # plan.json of simulated builds as before subsets
            del data["subset"]
        if self.max_ops == MAX_OPS:  # … and as before --max-ops
            del data["max_ops"]
        return data


def make_plan(faces_dir: Path, *, subset: str = "simulated", **settings) -> BuildPlan:
    """A plan over every image in ``faces_dir`` (sorted, relative paths).

    ``subset``: one of :data:`SUBSETS`; the professional subset's default face filter is
    :data:`~mirrorppr_cli.data.filters.PROFESSIONAL_FACE_FILTER` (smaller faces).
    """
    if subset not in SUBSETS:
        raise UsageError(f"--subset must be one of {', '.join(SUBSETS)}, not {subset!r}")
    if subset != "simulated":
        if settings.get("max_ops", MAX_OPS) != MAX_OPS:
            raise UsageError("--max-ops applies to the simulated subset and the benchmark; the "
                             "professional subset draws 1-7 operations as the paper does")
        settings = {"subset": subset, **settings}
        settings.setdefault("face_filter", PROFESSIONAL_FACE_FILTER.to_dict())
    files = expand_inputs(faces_dir)
    sources = sorted(str(p.relative_to(faces_dir)) for p in files)
    return BuildPlan(faces_dir=str(faces_dir.resolve()), sources=sources, **settings)


def shard_path(out: Path, index: int) -> Path:
    return out / "shards" / f"shard-{index:06d}.tar"


def shard_done(out: Path, index: int) -> bool:
    """True when shard ``index`` and its sidecar are complete and consistent."""
    tar, side = shard_path(out, index), shard_path(out, index).with_suffix(".json")
    if not (tar.exists() and side.exists()):
        return False
    try:
        meta = json.loads(side.read_text())
    except (OSError, ValueError):
        return False
    return meta.get("tar_sha256") == sha256(tar.read_bytes())


def build_shard(plan_dict: dict, out: str, index: int) -> dict:
    """Make, write and return the sidecar of one shard. Runs in a worker (local or Ray)."""
    plan = BuildPlan(**plan_dict)
    settings = plan.settings()
    make = make_professional_samples if plan.subset == "professional" else make_samples
    members: list[tuple[str, bytes]] = []
    records: list[dict] = []
    skipped: dict[str, str] = {}
    failed: dict[str, str] = {}
    for source in plan.shard_sources(index):
        try:
            result = make(Path(plan.faces_dir), source, plan.seed, settings)
        except Exception as error:  # an unreadable file must not sink the build
            # relative paths only: the sidecar's bytes must not depend on where sources sit
            message = str(error).replace(str(Path(plan.faces_dir) / source), source)
            failed[source] = f"{type(error).__name__}: {message}"
            continue
        if result.skipped:
            skipped[source] = result.skipped
            continue
        members.extend(result.members)
        records.extend(result.records)
    data = tar_bytes(members)
    tar = shard_path(Path(out), index)
    write_atomic(tar, data)
    meta = {
        "shard": tar.name,
        "tar_sha256": sha256(data),
        "records": records,
        "skipped": skipped,
        "failed": failed,
    }
    write_json_atomic(tar.with_suffix(".json"), meta)
    return {"shard": index, "samples": len(records)}


def prepare_output(out: Path, plan: BuildPlan, *, force: bool) -> list[int]:
    """Check/record the plan in ``out``; return the shard indices still to build."""
    out.mkdir(parents=True, exist_ok=True)
    plan_file = out / PLAN_FILE
    if plan_file.exists() and not force:
        previous = json.loads(plan_file.read_text())
        if previous != json.loads(json.dumps(plan.to_dict())):
            raise OutputError(
                f"{out}: holds a different build (other sources or settings); "
                "use another --out, or --force to start it again"
            )
    elif force:
        for stale in (out / "shards").glob("shard-*"):
            stale.unlink()
        for name in (MANIFEST_FILE, SUMMARY_FILE):
            (out / name).unlink(missing_ok=True)
    # temporary files of a killed build (hidden, ".part"): never part of a finished shard,
    # nor of a finished manifest, summary or plan (a kill while finalize writes them)
    temps = [*(out / "shards").glob(".shard-*.part"),
             *(t for name in (PLAN_FILE, MANIFEST_FILE, SUMMARY_FILE)
               for t in out.glob(f".{name}.*.part"))]
    for temp in temps:
        temp.unlink(missing_ok=True)
    write_json_atomic(plan_file, plan.to_dict())
    return [i for i in range(plan.shard_count) if not shard_done(out, i)]


def run_local(
    plan: BuildPlan, out: Path, todo: list[int], workers: int, on_done: Callable[[int], None]
) -> None:
    """Build ``todo`` shards with ``workers`` processes (1: in this process)."""
    if workers <= 1:
        for index in todo:
            build_shard(plan.to_dict(), str(out), index)
            on_done(index)
        return
    # "spawn": a forked child inherits MediaPipe's native threads and deadlocks in them.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context,
                             initializer=die_with_parent, initargs=(os.getpid(),)) as pool:
        futures = {pool.submit(build_shard, plan.to_dict(), str(out), i): i for i in todo}
        for future in as_completed(futures):
            future.result()
            on_done(futures[future])


def run_ray(
    plan: BuildPlan, out: Path, todo: list[int], on_done: Callable[[int], None],
    address: str | None = None, num_cpus: int | None = None,
) -> None:
    """Build ``todo`` shards as Ray tasks (a running cluster at ``address``, or a local one)."""
    with extra_imports("ray", "--engine ray"):
        import ray
    started = not ray.is_initialized()
    if started:
        local = {} if address else {"_node_ip_address": "127.0.0.1"}  # stay on loopback
        ray.init(address=address, num_cpus=num_cpus, include_dashboard=False,
                 log_to_driver=False, configure_logging=False, **local)
    try:
        task = ray.remote(build_shard)
        pending = {task.remote(plan.to_dict(), str(out), i): i for i in todo}
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            ray.get(ready[0])
            on_done(pending.pop(ready[0]))
    finally:
        if started:
            ray.shutdown()


def finalize(plan: BuildPlan, out: Path) -> dict:
    """Merge shard sidecars into ``manifest.jsonl`` and ``summary.json``; return the summary.

    Professional builds also list, in the manifest, each pair's ``ops_skipped`` and, in the
    summary, the subset, the number of pairs per operation count (``ops_per_pair``), the
    instances of each operation (``op_instances``) and the sampled body operations that
    could not be applied (``ops_not_visible``). Simulated builds made with a ``--max-ops``
    below the official 8 list it and ``ops_per_pair``.
    """
    lines: list[str] = []
    per_pair: Counter = Counter()
    instances: Counter = Counter()
    not_visible = 0
    skipped: dict[str, str] = {}
    failed: dict[str, str] = {}
    for index in range(plan.shard_count):
        meta = json.loads(shard_path(out, index).with_suffix(".json").read_text())
        for record in meta["records"]:
            entry = {k: record[k] for k in ("key", "source", "pair_index", "ops", "size")}
            entry["augmentations"] = record["augmentations"]
            entry["shard"] = meta["shard"]
            if "ops_skipped" in record:
                entry["ops_skipped"] = record["ops_skipped"]
                not_visible += len(record["ops_skipped"])
            per_pair[len(record["ops"])] += 1
            instances.update(op["name"] for op in record["ops"])
            lines.append(json.dumps(entry, sort_keys=True))
        skipped.update(meta["skipped"])
        failed.update(meta["failed"])
    write_atomic(out / MANIFEST_FILE, ("\n".join(lines) + "\n" if lines else "").encode())
    summary = {
        "sources": len(plan.sources),
        "used": len(plan.sources) - len(skipped) - len(failed),
        "pairs": len(lines),
        "quadruplets": len(lines) * plan.augmentations,
        "skipped": dict(sorted(Counter(skipped.values()).items())),
        "skipped_sources": dict(sorted(skipped.items())),
        "failed_sources": dict(sorted(failed.items())),
        "shards": plan.shard_count,
        "seed": plan.seed,
    }
    if plan.subset != "simulated":
        summary["subset"] = plan.subset
        summary["ops_per_pair"] = {str(n): per_pair[n] for n in sorted(per_pair)}
        summary["op_instances"] = dict(sorted(instances.items()))
        summary["ops_not_visible"] = not_visible
    elif plan.max_ops != MAX_OPS:
        summary["max_ops"] = plan.max_ops
        summary["ops_per_pair"] = {str(n): per_pair[n] for n in sorted(per_pair)}
    write_json_atomic(out / SUMMARY_FILE, summary)
    return summary
