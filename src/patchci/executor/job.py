"""One executor run sent to a worker host: what the message on the broker carries.

Pure data. A job names its run on the server (`job_id`, the key results are stored under),
where the worker fetches the branch from, and the executor as the server resolved it
(ExecutorSettings, stream defaults filled in), so a worker needs no server configuration.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from pydantic import ValidationError

from patchci.config import ExecutorSettings

# Where a job stands on the server. "queued": sent, no worker has started it; "running":
# started (a heartbeat renews it); "done": a result is stored; "error": ours, not run.
QUEUED, RUNNING, DONE, ERROR = "queued", "running", "done", "error"
JOB_STATES = (QUEUED, RUNNING, DONE, ERROR)
FINISHED = (DONE, ERROR)
# Starts a job gets: the first, and one more after a lost worker; then it is ERROR (ours).
MAX_STARTS = 2

TASK_NAME = "patchci.run_job"


class BadJob(ValueError):
    """A broker message that is not a job this version can run."""


OPTIONAL = frozenset({"durations"})  # keys a job from an older server lacks


@dataclass(frozen=True)
class JobSpec:
    job_id: str
    run_id: int
    tree: str
    branch: str
    head: str
    base: str
    fetch_url: str  # a git URL (or a path on a shared host) that has refs/heads/<branch>
    queue: str
    deadline: float  # seconds the whole run may take
    executor: dict[str, Any]  # ExecutorSettings, as JSON
    # [group, name, seconds] of the executor's last run: the longest tests go first
    durations: list[list[Any]] = field(default_factory=list)

    def settings(self) -> ExecutorSettings:
        return ExecutorSettings.model_validate(self.executor)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: object) -> JobSpec:
        if not isinstance(data, dict):
            raise BadJob("job is not a JSON object")
        fields = cls.__dataclass_fields__
        missing = sorted(set(fields) - data.keys() - OPTIONAL)
        if missing:
            raise BadJob(f"job lacks {', '.join(missing)}")
        extra = sorted(data.keys() - set(fields))
        if extra:
            raise BadJob(f"job has unknown keys {', '.join(extra)} (a newer server?)")
        spec = cls(**{k: data[k] for k in fields if k in data})
        if not all(isinstance(d, list) and len(d) == 3 for d in spec.durations):
            raise BadJob("job.durations is not a list of [group, name, seconds]")
        for key in ("job_id", "tree", "branch", "head", "base", "fetch_url", "queue"):
            if not isinstance(getattr(spec, key), str) or not getattr(spec, key):
                raise BadJob(f"job.{key} is not a non-empty string")
        if not isinstance(spec.run_id, int) or not isinstance(spec.deadline, int | float):
            raise BadJob("job.run_id or job.deadline is not a number")
        try:
            spec.settings()
        except ValidationError as e:
            raise BadJob(f"job.executor: {e.errors()[0]['msg']}") from e
        return spec

    def duration_map(self) -> dict[tuple[str, str], float]:
        return {(str(g), str(n)): float(s) for g, n, s in self.durations}

    @classmethod
    def from_json(cls, text: str) -> JobSpec:
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as e:
            raise BadJob(f"job is not JSON: {e}") from e
