"""Validation: what checking a job's input against its model's JSON Schema costs, per call and
as a share of intake.

1. Per call, in a process of its own (`python -m bench.benchmarks.validation micro`): the
   old pydantic path (`ImagineArt2Input`, re-created below as the baseline) against
   `shipped_models()[id].normalise_input` (fastjsonschema, defaults filled in; jsonschema
   explains a refused input) on the same inputs: a minimal valid one, a full valid one, the
   intake body's and an invalid one. Each shipped model's valid path is timed too. Microseconds
   per call: the median of many short timeit rounds, the two paths alternating.
2. Intake: two falrelay api processes on one database, `POST /v1/jobs` of the usual body at a
   fixed concurrency, in turn (ABBA): falrelay as shipped, and falrelay with ImagineArt's
   input through the old pydantic path (patched in-process, as bench/variants.py does).
   Reported: jobs/s, p50/p99 and each api's CPU per request (/proc). To get validation's
   share, both apis wrap `normalise_input` in a thread-CPU timer, so its cost is measured
   inside the server, on the same requests, over that CPU. A hot loop understates that cost:
   the server's other work evicts its caches between calls. The share is CPU accounting, not
   py-spy: always available, no sampling error, and it names the one function it is about.
"""

from __future__ import annotations

import array
import asyncio
import atexit
import copy
import json
import secrets
import statistics
import sys
import time
import timeit
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from app.catalog.registry import shipped_models
from app.catalog.spec import InputInvalid, InputIssue, ModelSpec
from bench import stats
from bench.benchmarks.common import check_errors, chosen_experiments, load_summary
from bench.context import Context, create_api_key, falrelay_env
from bench.load import LoadResult, LoadSpec
from bench.processes import HOST, Process, Processes, free_port, python_argv
from bench.report import Figure, Report
from bench.workload import PROMPT, job_request, job_request_json

MODEL_ID = "imagineart/imagineart-2.0-preview/text-to-image"
CONNECTIONS = 64
LOAD_SECONDS = 5.0
# A timeit round: long enough that the clock's resolution does not matter, short enough that
# many rounds fit in a few seconds and a noisy neighbour spoils only a few of them.
ROUND_S = 0.02
ROUNDS = 25
SMOKE_ROUND_S = 0.002
SMOKE_ROUNDS = 3
# Our reading of "stays off the intake profile": a smaller share than the smallest of our
# own steps named in the intake profile (bench/README.md: the idempotency fingerprint, 1.0 %).
SHARE_GOAL_PCT = 1.0


# The baseline: ImagineArt2Input as app/catalog/imagineart.py defined it at 5bd3092. The old
# catalog called it as `model_validate(raw).model_dump(mode="json", exclude_none=True)`.
# e494372 deleted that file and a025440 replaced the pydantic path with the JSON Schema one.
# This is a copy, so the baseline runs on the pydantic installed today.
MAX_PROMPT_LENGTH = 4000
MAX_SEED = 2**53 - 1
AspectRatio = Literal[
    "1:1", "16:9", "9:16", "4:3", "3:4", "3:1", "1:3", "3:2", "2:3", "21:9", "4:5", "5:4", "4:1",
    "1:4",
]  # fmt: skip
Resolution = Literal["1K", "2K"]
Reasoning = Literal["low", "high"]


class ImagineArt2Input(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, title="ImagineArt2Input")

    prompt: str = Field(
        min_length=1, max_length=MAX_PROMPT_LENGTH, description="What the image shows."
    )
    aspect_ratio: AspectRatio = "1:1"
    resolution: Resolution = Field(
        default="2K", description="1K targets about 1024 px; 2K about 2048 px."
    )
    seed: int | None = Field(
        default=None, ge=-1, le=MAX_SEED, description="Same seed, same image; 0 and -1 mean random."
    )
    reasoning: Reasoning = Field(
        default="low", description="high takes longer and reasons more about the prompt."
    )

    @field_validator("prompt")
    @classmethod
    def _prompt_has_text(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("prompt must contain more than white space")
        return value


def pydantic_normalise(raw: Mapping[str, Any]) -> dict[str, Any]:
    """The old `ModelSpec.normalise_input`."""
    return ImagineArt2Input.model_validate(raw).model_dump(mode="json", exclude_none=True)


def pydantic_explain(raw: Mapping[str, Any]) -> list[Any]:
    """The old error path: the service turned `exc.errors()` into the API's issues."""
    try:
        pydantic_normalise(raw)
    except ValidationError as exc:
        return list(exc.errors())
    raise AssertionError("the invalid input was accepted")


def schema_explain(spec: ModelSpec, raw: Mapping[str, Any]) -> list[Any]:
    try:
        spec.normalise_input(raw)
    except InputInvalid as exc:
        return exc.issues
    raise AssertionError("the invalid input was accepted")


# The ImagineArt inputs both paths are timed on.
BODY_INPUT: dict[str, Any] = job_request()["input"]
CASES: dict[str, dict[str, Any]] = {
    "minimal": {"prompt": PROMPT},
    "full": {"prompt": PROMPT, "aspect_ratio": "16:9", "resolution": "1K", "seed": 42,
             "reasoning": "high"},
    "intake body": BODY_INPUT,
    # Three faults: a value outside the enum, a string for an integer, an unknown field.
    "invalid": {"prompt": PROMPT, "aspect_ratio": "7:5", "seed": "42", "colour": "red"},
}  # fmt: skip
CASE_LABELS = {
    "minimal": "valid minimal input (prompt only)",
    "full": "valid full input (all 5 fields)",
    "intake body": "valid, the intake body's input (4 fields)",
    "invalid": "invalid input (3 faults), explained",
}
FILE_URL = "https://v3.fal.media/files/bench/input.png"


def full_input(spec: ModelSpec) -> dict[str, Any]:
    """Every top-level field of the model set to its default, or to a plain valid value:
    the most work a valid input asks of the check."""
    properties: Mapping[str, Any] = spec.input_schema.get("properties") or {}
    made: dict[str, Any] = {}
    for name, schema in properties.items():
        if "default" in schema:
            made[name] = schema["default"]
        elif schema.get("enum"):
            made[name] = schema["enum"][0]
        elif name.endswith("_url"):
            made[name] = FILE_URL
        elif name.endswith("_urls"):
            made[name] = [FILE_URL]
        elif schema.get("type") == "string":
            made[name] = PROMPT if name == "prompt" else "bench"
        elif schema.get("type") == "integer":
            made[name] = max(int(schema.get("minimum", 42)), 42)
        elif schema.get("type") == "number":
            made[name] = schema.get("minimum", 1.0)
        elif schema.get("type") == "boolean":
            made[name] = False
    return made


# 1. Per call ---------------------------------------------------------------------------------


def _per_call_us(call: Callable[[], object], round_s: float) -> Callable[[], float]:
    """A timer of `call` whose rounds take about `round_s`; each returns µs per call."""
    started = time.perf_counter()
    for _ in range(10):
        call()
    once = max((time.perf_counter() - started) / 10, 1e-7)
    number = max(1, round(round_s / once))
    timer = timeit.Timer(call)
    return lambda: 1e6 * timer.timeit(number) / number


def _copy(raw: Mapping[str, Any]) -> dict[str, Any]:
    """What `ModelSpec.normalise_input` does before its check."""
    return copy.deepcopy(dict(raw))


def micro(rounds: int, round_s: float) -> dict[str, Any]:
    """µs per call of both paths on each case, and of each shipped model's valid path: the
    median of `rounds` rounds; within a round the paths alternate which goes first."""
    models = shipped_models()
    spec = models[MODEL_ID]
    agree: dict[str, bool] = {}
    timers: dict[str, Callable[[], float]] = {}
    for case, raw in CASES.items():
        if case == "invalid":
            old = pydantic_explain(raw)
            new = schema_explain(spec, raw)
            agree[case] = len(old) == len(new)
            # Refused and explained: pydantic's `errors()`, the schema's issues.
            timers[f"pydantic {case}"] = _per_call_us(partial(pydantic_explain, raw), round_s)
            timers[f"schema {case}"] = _per_call_us(partial(schema_explain, spec, raw), round_s)
        else:
            agree[case] = pydantic_normalise(raw) == spec.normalise_input(raw)
            timers[f"pydantic {case}"] = _per_call_us(partial(pydantic_normalise, raw), round_s)
            timers[f"schema {case}"] = _per_call_us(partial(spec.normalise_input, raw), round_s)
    # The part of the schema path that is not the check: the copy that keeps the compiled
    # check's filled-in defaults out of the caller's dict.
    timers["copy intake body"] = _per_call_us(partial(_copy, BODY_INPUT), round_s)
    refused: dict[str, str] = {}
    for model_id, model in models.items():
        raw = full_input(model)
        try:
            model.normalise_input(raw)
        except InputInvalid as exc:
            refused[model_id] = str(exc)
            continue
        timers[f"model {model_id}"] = _per_call_us(partial(model.normalise_input, raw), round_s)
    samples: dict[str, list[float]] = {name: [] for name in timers}
    names = list(timers)
    for i in range(rounds):
        for name in names if i % 2 == 0 else reversed(names):
            samples[name].append(timers[name]())
    return {
        "us_per_call": {name: statistics.median(values) for name, values in samples.items()},
        "rounds": rounds,
        "same_result": agree,
        "issues": {
            "pydantic": len(pydantic_explain(CASES["invalid"])),
            "schema": len(schema_explain(spec, CASES["invalid"])),
        },
        "refused_generated_inputs": refused,
    }


async def _micro_run(rounds: int, round_s: float) -> dict[str, Any]:
    # A process of its own: timeit would block the harness's loop, and in a thread it would
    # share a GIL with it.
    child = await asyncio.create_subprocess_exec(
        *python_argv("-m", "bench.benchmarks.validation", "micro", str(rounds), str(round_s)),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await child.communicate()
    if child.returncode != 0:
        raise RuntimeError(f"micro run failed ({child.returncode}): {err.decode()[-2000:]}")
    data: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return data


# 2. Share of intake --------------------------------------------------------------------------

PATHS = ("schema", "pydantic")


def serve_timed(path: str, out: Path, argv: list[str]) -> None:
    """`falrelay <argv>` with `ModelSpec.normalise_input` wrapped in a thread-CPU timer. Under
    `pydantic`, ImagineArt's input goes through the old pydantic path instead. Each call's CPU
    and when it ended are written to `out` when the process exits (SIGTERM drains it)."""
    from app.catalog import spec as spec_module

    original = spec_module.ModelSpec.normalise_input

    def old_path(self: ModelSpec, raw: Mapping[str, Any]) -> dict[str, Any]:
        if self.id != MODEL_ID:
            return original(self, raw)
        try:
            return pydantic_normalise(raw)
        except ValidationError as exc:
            issues = [InputIssue(tuple(e["loc"]), e["msg"], e["type"]) for e in exc.errors()]
            raise InputInvalid(issues) from exc

    check = old_path if path == "pydantic" else original
    clock = time.thread_time_ns  # a system call, about 1 µs here between other work
    spans = array.array("q")  # ns of thread CPU from one clock read to the next, around a call
    empties = array.array("q")  # the same with nothing between: subtracted, call by call
    ended = array.array("d")  # time.time() when the call ended: which load run it was in

    def timed(self: ModelSpec, raw: Mapping[str, Any]) -> dict[str, Any]:
        before = clock()
        started = clock()
        try:
            return check(self, raw)
        finally:
            spans.append(clock() - started)
            empties.append(started - before)
            ended.append(time.time())

    spec_module.ModelSpec.normalise_input = timed  # type: ignore[method-assign]

    def write() -> None:
        out.write_text(
            json.dumps({"spans": list(spans), "empties": list(empties), "ended": list(ended)})
        )

    atexit.register(write)
    from app.cli import main as falrelay

    falrelay(argv)


async def _start_timed_api(
    procs: Processes, database_url: str, path: str, out: Path
) -> tuple[Process, str]:
    port = free_port()
    url = f"http://{HOST}:{port}"
    argv = python_argv(
        "-m", "bench.benchmarks.validation", "timed-api", path, str(out),
        "api", "--host", HOST, "--port", str(port),
    )  # fmt: skip
    # No queued-jobs cap: with no worker draining them, the load queues more jobs than the
    # default cap (10,000 a client) holds, and the cap's count of them grows with every run.
    env = falrelay_env(database_url, default_max_queued_jobs="unlimited")
    process = procs.start(f"falrelay-api-{path}", argv, env)
    await process.wait_http(f"{url}/readyz")
    return process, url


def _in_windows(timed: dict[str, Any], windows: list[tuple[float, float]]) -> list[list[float]]:
    """The µs of each call made during each window (one load run), less its clock read."""
    calls = list(zip(timed["spans"], timed["empties"], timed["ended"], strict=True))
    return [
        [(span - empty) / 1000 for span, empty, at in calls if start <= at <= end]
        for start, end in windows
    ]


async def run(ctx: Context) -> Report:
    opts = ctx.options
    report = ctx.report(
        "validation",
        "a job's input checked against its model's JSON Schema: µs per call, and intake",
        baseline="the pydantic path the schema replaced: ImagineArt2Input (strict, "
        "extra=forbid) from app/catalog/imagineart.py at 5bd3092, model_validate + "
        "model_dump(mode='json', exclude_none=True), on the same inputs; at intake, a "
        "falrelay api with that path in place of the schema",
        goal=f"schema validation < {SHARE_GOAL_PCT:g} % of the api's CPU per request",
    )
    chosen_experiments(report, [], opts.experiments)
    if opts.profile:
        report.notes.append("--profile: not used; the share comes from CPU accounting")
    rounds, round_s = (SMOKE_ROUNDS, SMOKE_ROUND_S) if opts.smoke else (ROUNDS, ROUND_S)
    duration = 1.0 if opts.smoke else min(opts.duration_s, LOAD_SECONDS)
    runs = 1 if opts.smoke else opts.runs
    database_url = await ctx.postgres.create_database("validation")
    _, key = await create_api_key(database_url)
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}
    token = secrets.token_hex(3)
    outs = {path: ctx.work_dir / f"validation-{path}-{token}.json" for path in PATHS}

    micros: list[dict[str, Any]] = []
    loads: dict[str, list[LoadResult]] = {path: [] for path in PATHS}
    cpu: dict[str, list[dict[str, float]]] = {path: [] for path in PATHS}
    windows: dict[str, list[tuple[float, float]]] = {path: [] for path in PATHS}
    with ctx.processes("validation") as procs:
        started = await asyncio.gather(
            *(_start_timed_api(procs, database_url, path, outs[path]) for path in PATHS)
        )
        apis = dict(zip(PATHS, started, strict=True))

        def spec(url: str, label: str, seconds: float) -> LoadSpec:
            return LoadSpec(
                base_url=url,
                paths=["/v1/jobs"],
                method="POST",
                headers=headers,
                body=job_request_json(),
                idempotency_prefix=f"{token}-{label}-",
                connections=CONNECTIONS,
                duration_s=seconds,
            )

        # Warm-up: the pools, prepared statements, the key cache.
        for path, (_, url) in apis.items() if not opts.smoke else ():
            await ctx.load(spec(url, f"warm{path}", opts.warmup_s))
        # A micro run, then each api in turn (ABBA), so the machine's drift falls on all.
        for i in range(runs):
            micros.append(await _micro_run(rounds, round_s))
            for path in PATHS if i % 2 == 0 else reversed(PATHS):
                process, url = apis[path]
                meter = ctx.cpu_meter(server=process)
                meter.start()
                began = time.time()
                result = await ctx.load(spec(url, f"r{i}{path}", duration))
                windows[path].append((began, time.time()))
                cpu[path].append(meter.per_unit(result.ok))
                check_errors(result, f"{path} run {i + 1}", report.notes)
                loads[path].append(result)
        for process, _ in apis.values():
            process.stop()
    calls: dict[str, list[list[float]]] = {}
    for path in PATHS:
        if outs[path].exists():
            calls[path] = _in_windows(json.loads(outs[path].read_text()), windows[path])
        else:
            report.notes.append(f"the {path} api's timer wrote nothing: no in-server figures")
            calls[path] = []

    report.figures = _figures(micros, loads, cpu, calls)
    for m in micros:
        for case, same in m["same_result"].items():
            if not same:
                report.notes.append(f"{case}: pydantic and the schema did not agree")
        for model_id, why in m["refused_generated_inputs"].items():
            report.notes.append(f"{model_id}: its generated full input was refused ({why})")
    report.settings = {
        "rounds": rounds,
        "round_s": round_s,
        "runs": runs,
        "connections": CONNECTIONS,
        "duration_s": duration,
        "driver": loads["schema"][0].driver if loads["schema"] else None,
        "falrelay": "two falrelay api processes on one database, default settings but "
        "FALRELAY_DEFAULT_MAX_QUEUED_JOBS=unlimited: "
        "normalise_input as shipped, and with ImagineArt's input through the pydantic path; "
        "both wrapped in a thread-CPU timer (the cost of a clock read, measured beside each "
        "call, subtracted)",
        "inputs": CASES,
        "model_inputs": {model_id: full_input(m) for model_id, m in shipped_models().items()},
    }
    report.details["share_method"] = (
        "CPU accounting, not py-spy: validation's thread CPU per call, timed inside each api, "
        "over the api's CPU per request from /proc, run by run; and the isolated µs per call "
        "of the micro runs over the same CPU per request"
    )
    report.details["micro_runs"] = micros
    report.details["cpu_ms_per_request"] = cpu
    report.details["in_api_us_per_call"] = {
        path: [_summary(values) for values in per_run] for path, per_run in calls.items()
    }
    report.details["runs"] = {path: [load_summary(r) for r in rs] for path, rs in loads.items()}
    return report


def _figures(
    micros: list[dict[str, Any]],
    loads: dict[str, list[LoadResult]],
    cpu: dict[str, list[dict[str, float]]],
    calls: dict[str, list[list[float]]],
) -> list[Figure]:
    def us(name: str) -> list[float]:
        return [m["us_per_call"][name] for m in micros if name in m["us_per_call"]]

    def both(name: str, unit: str, of: Callable[[str], list[float]]) -> Figure:
        return Figure(name, unit, of("schema"), of("pydantic"))

    server_ms = {path: [c.get("server", 0.0) for c in cpu[path]] for path in PATHS}
    mean_in_api = {path: [statistics.fmean(v) for v in calls[path] if v] for path in PATHS}
    figures = [
        Figure(f"per call, {CASE_LABELS[case]}", "µs", us(f"schema {case}"),
               us(f"pydantic {case}"))
        for case in ("intake body", "minimal", "full", "invalid")
    ]  # fmt: skip
    figures.insert(1, Figure("per call, the intake body's input: of it, the deepcopy", "µs",
                             us("copy intake body")))  # fmt: skip
    figures += [
        Figure(f"per call, every field set: {model_id}", "µs", us(f"model {model_id}"))
        for model_id in shipped_models()
        if us(f"model {model_id}")
    ]
    share = both(
        "in the api: validation's share of its CPU per request",
        "%",
        lambda path: _shares(mean_in_api[path], server_ms[path]),
    )
    share.goal = f"< {SHARE_GOAL_PCT:g} %"
    share.met = share.value is not None and share.value < SHARE_GOAL_PCT
    figures += [
        both("in the api: validation, thread CPU per call (mean)", "µs", mean_in_api.__getitem__),
        both(
            "in the api: validation, thread CPU per call (median)",
            "µs",
            lambda path: [statistics.median(v) for v in calls[path] if v],
        ),
        share,
        both(
            "isolated µs per call / the api's CPU per request",
            "%",
            lambda path: _shares(us(f"{path} intake body"), server_ms[path]),
        ),
        both(
            f"intake POST /v1/jobs, {CONNECTIONS} connections",
            "jobs/s",
            lambda path: [r.rps for r in loads[path]],
        ),
        both("intake p50 latency", "ms", lambda path: [r.p50_ms or 0.0 for r in loads[path]]),
        both("intake p99 latency", "ms", lambda path: [r.p99_ms or 0.0 for r in loads[path]]),
        both("api CPU per request", "ms", server_ms.__getitem__),
    ]
    return [f for f in figures if f.runs]


def _summary(values: list[float]) -> dict[str, float | int | None]:
    return {
        "calls": len(values),
        "mean_us": round(statistics.fmean(values), 2) if values else None,
        "median_us": round(statistics.median(values), 2) if values else None,
        "p99_us": stats.percentile(values, 99),
    }


def _shares(us_per_call: list[float], cpu_ms: list[float]) -> list[float]:
    """Run by run: µs of validation per request as a % of the api's ms of CPU per request."""
    return [100 * u / (1000 * c) for u, c in zip(us_per_call, cpu_ms, strict=False) if c]


def main(argv: list[str]) -> None:
    if argv[:1] == ["micro"]:
        sys.stdout.write(json.dumps(micro(int(argv[1]), float(argv[2]))) + "\n")
    elif argv[:1] == ["timed-api"] and argv[1] in PATHS:
        serve_timed(argv[1], Path(argv[2]), argv[3:])
    else:
        raise SystemExit(
            "usage: python -m bench.benchmarks.validation micro ROUNDS ROUND_S | "
            "timed-api schema|pydantic OUT api --host H --port P"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
