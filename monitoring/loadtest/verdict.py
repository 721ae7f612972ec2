"""The load test's arithmetic and verdict: a summary per concurrency level, and whether the box
is bound by the gateway's gate, by VRAM or by compute.

Per level it computes the aggregate tokens/s (the sum of eval_count of the successful requests
divided by the level's wall time, first request sent to last one finished), the median and range
of per-request tokens/s, TTFT and queue-wait medians, the largest ``in_flight_at_start`` seen,
the number of model reloads, and the peak GPU memory as a share of the total.

The verdict (a heuristic; see :data:`HEURISTIC`)
-------------------------------------------------
Over the levels that had successful requests, in this order:

- **gate-bound**: ``in_flight_at_start`` never rose with concurrency: the gateway's gate
  (``OLLAMA_MAX_CONCURRENCY``, default 1) let one generation run at a time and the rest queued
  at the gateway; the run measured the gate, not the GPU. When the gate only capped the higher
  levels (``in_flight_at_start`` stopped at N < the level), those levels are left out and the
  verdict says so.
- **VRAM-bound**: the model was reloaded (``load_duration`` > 0.5 s) at a level above the first,
  or GPU memory reached 95 % of the total: there is not room for the model and the extra
  context (KV cache) of parallel requests, so Ollama evicts, reloads or spills to the CPU.
- Otherwise it finds the *knee*: the first level that no higher level beats by 25 % in
  aggregate tokens/s.

  - knee at the highest level, **not saturated**: the aggregate kept growing: parallel
    requests are batched and the box has headroom (try higher levels);
  - **compute-bound**: past the knee per-request tokens/s fell below 75 % while the aggregate
    stayed flat: the GPU is saturated, more requests only share it;
  - **serialised by Ollama**: past the knee per-request speed held, the aggregate stayed flat
    and TTFT rose: the extra requests took turns inside Ollama, which runs as many at once as
    the knee's level (``OLLAMA_NUM_PARALLEL``, or too little VRAM for more parallel slots,
    which Ollama then reduces).

GPU figures come from the snapshots the gateway takes on *its own* machine (NVML). With no
NVIDIA GPU or driver there (or with Ollama on another machine) the GPU columns are empty and the
verdict says so: the VRAM judgement then rests on model reloads alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from core.stats import mean, percentile, present

if TYPE_CHECKING:
    from monitoring.loadtest.driver import RequestResult

#: Ollama's load_duration above this (seconds) counts as a model (re)load.
RELOAD_SECONDS = 0.5
#: GPU memory used at or above this share of the total counts as full.
VRAM_FULL_FRACTION = 0.95
#: Per-request tokens/s below this share of the lowest level's counts as a drop.
PER_REQUEST_DROP = 0.75
#: Aggregate tokens/s at or above this multiple of the lowest level's counts as growth.
AGGREGATE_GROWTH = 1.25

HEURISTIC = f"""\
How the verdict is reached (levels with successful requests; the "knee" is the level after which
aggregate tokens/s grows by less than {AGGREGATE_GROWTH - 1:.0%}):
- gate-bound: in_flight_at_start never rose with concurrency: requests queued at the gateway's
  gate (OLLAMA_MAX_CONCURRENCY) and the GPU was never asked for more (levels above the gate's
  limit are left out of the rest);
- VRAM-bound: model reloads (load_duration > {RELOAD_SECONDS} s) above the first level, or GPU
  memory at {VRAM_FULL_FRACTION:.0%} of its total or more;
- not saturated: aggregate tokens/s kept growing up to the highest level: there is headroom;
- compute-bound: past the knee, per-request tokens/s fell below {PER_REQUEST_DROP:.0%} while the
  aggregate stayed flat: the GPU is saturated and requests share it;
- serialised by Ollama: past the knee, per-request speed held and the aggregate stayed flat
  while TTFT rose: requests took turns inside Ollama (OLLAMA_NUM_PARALLEL, or too little VRAM
  for more parallel slots).
Per-request tokens/s is Ollama's eval_count / eval_duration (decode speed, waiting excluded);
aggregate tokens/s is all tokens generated in a level / the level's wall time."""


def fmt(value: float | None, digits: int = 1) -> str:
    """A figure for people: ``-`` when missing, thousands separated."""
    return "-" if value is None else f"{value:,.{digits}f}"


# --------------------------------------------------------------------------- per level


@dataclass
class LevelSummary:
    concurrency: int
    requests: int
    ok: int
    failed: int
    wall_seconds: float
    eval_tokens: int
    aggregate_tokens_per_second: float | None
    per_request_tps_p50: float | None
    per_request_tps_min: float | None
    per_request_tps_max: float | None
    ttft_p50: float | None
    ttft_p95: float | None
    client_ttft_p50: float | None
    queue_wait_p50: float | None
    queue_wait_max: float | None
    max_in_flight: int | None
    reloads: int
    gpu_count: int
    gpu_memory_used_mb_max: float | None
    gpu_memory_total_mb: float | None
    gpu_memory_fraction_max: float | None
    gpu_utilization_after_avg: float | None
    gpu_memory_delta_avg: float | None
    errors: list[str] = field(default_factory=list)


def summarize(concurrency: int, results: list[RequestResult], wall: float) -> LevelSummary:
    good = [r for r in results if r.ok]
    rates = present(r.tokens_per_second for r in good)
    tokens = sum(r.eval_count or 0 for r in good)
    totals = present(r.gpu_memory_total_mb for r in good)
    used = present(r.gpu_memory_used_mb_after for r in good)
    fractions = present(
        r.gpu_memory_used_mb_after / r.gpu_memory_total_mb
        for r in good
        if r.gpu_memory_used_mb_after is not None and r.gpu_memory_total_mb
    )
    levels = [r.in_flight_at_start for r in good if r.in_flight_at_start is not None]
    return LevelSummary(
        concurrency=concurrency,
        requests=len(results),
        ok=len(good),
        failed=len(results) - len(good),
        wall_seconds=wall,
        eval_tokens=tokens,
        aggregate_tokens_per_second=tokens / wall if good and wall > 0 else None,
        per_request_tps_p50=percentile(rates, 0.5),
        per_request_tps_min=min(rates, default=None),
        per_request_tps_max=max(rates, default=None),
        ttft_p50=percentile(present(r.time_to_first_token_seconds for r in good), 0.5),
        ttft_p95=percentile(present(r.time_to_first_token_seconds for r in good), 0.95),
        client_ttft_p50=percentile(present(r.client_ttft_seconds for r in good), 0.5),
        queue_wait_p50=percentile(present(r.queue_wait_seconds for r in good), 0.5),
        queue_wait_max=max(present(r.queue_wait_seconds for r in good), default=None),
        max_in_flight=max(levels, default=None),
        reloads=sum(1 for r in good if r.reloaded),
        gpu_count=max((r.gpu_count for r in good), default=0),
        gpu_memory_used_mb_max=max(used, default=None),
        gpu_memory_total_mb=max(totals, default=None),
        gpu_memory_fraction_max=max(fractions, default=None),
        gpu_utilization_after_avg=mean(present(r.gpu_utilization_percent_after for r in good)),
        gpu_memory_delta_avg=mean(present(r.gpu_memory_used_mb_delta for r in good)),
        errors=sorted({r.error for r in results if r.error})[:5],
    )


# --------------------------------------------------------------------------- the verdict


def hints_for(results: Sequence[RequestResult]) -> list[str]:
    codes = {r.error_code for r in results if r.error_code}
    hints = []
    if codes & {"rate_limited", "too_many_generations"}:
        hints.append(
            "Requests were refused by the per-user limits (HTTP 429): run the server with "
            "CHAT_MESSAGES_PER_MINUTE=0 and CHAT_MAX_GENERATIONS_PER_USER=0 for the test, then "
            "restore them."
        )
    if "queue_full" in codes:
        hints.append(
            "The gateway's queue was full (HTTP 503): raise OLLAMA_MAX_QUEUE to at least the "
            "highest concurrency level."
        )
    if codes & {"model_not_found"}:
        hints.append("The model is not installed on the Ollama hosts: pull it first.")
    return hints


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b <= 0:
        return None
    return a / b


def _knee(levels: Sequence[LevelSummary]) -> LevelSummary:
    """The level after which aggregate tokens/s stops growing: the first one that no later
    level beats by :data:`AGGREGATE_GROWTH` (the last level when it kept growing)."""
    for i, lv in enumerate(levels):
        later = levels[i + 1 :]
        if all(
            (other.aggregate_tokens_per_second or 0.0)
            < AGGREGATE_GROWTH * (lv.aggregate_tokens_per_second or 0.0)
            for other in later
        ):
            return lv
    return levels[-1]


def verdict(levels: Sequence[LevelSummary]) -> list[str]:
    """A one-line verdict (first) and the lines that support it; see :data:`HEURISTIC`."""
    measured = [
        lv for lv in levels if lv.ok and lv.per_request_tps_p50 and lv.aggregate_tokens_per_second
    ]
    measured.sort(key=lambda lv: lv.concurrency)
    notes: list[str] = []
    has_gpu = any(lv.gpu_count for lv in measured)
    if not has_gpu:
        notes.append(
            "No GPU figures in the metrics: no NVIDIA GPU or driver is visible on the gateway's "
            "machine (the snapshots are taken where the gateway runs, not on a remote Ollama "
            "host), so the VRAM judgement rests on model reloads alone."
        )
    if len(measured) < 2:
        return [
            "Verdict: not enough data: at least two concurrency levels with successful "
            "requests are needed.",
            *notes,
        ]
    base, top = measured[0], measured[-1]

    def ttft(a: LevelSummary, b: LevelSummary) -> str:
        return (
            f"TTFT p50 {fmt(a.ttft_p50, 2)} -> {fmt(b.ttft_p50, 2)} s, queue wait p50 "
            f"{fmt(a.queue_wait_p50, 2)} -> {fmt(b.queue_wait_p50, 2)} s"
        )

    # The gateway's gate: in_flight_at_start is what it admitted at once.
    cap = max((lv.max_in_flight or 1) for lv in measured)
    if cap <= (base.max_in_flight or 1):
        return [
            f"Verdict: gate-bound, not a GPU limit: the gateway never ran more than {cap} "
            f"generation(s) at once, so higher concurrency only queued at its gate "
            f"({ttft(base, top)}). Set OLLAMA_MAX_CONCURRENCY (and OLLAMA_NUM_PARALLEL on the "
            f"Ollama server) to at least {top.concurrency} to measure the hardware.",
            *notes,
        ]
    if cap < top.concurrency:
        notes.insert(
            0,
            f"The gateway's gate admitted at most {cap} generations at once "
            "(OLLAMA_MAX_CONCURRENCY): the levels above it queued at the gateway and are left "
            "out of the verdict.",
        )
        measured = [lv for lv in measured if lv.concurrency <= cap] or measured[:1]
        top = measured[-1]
        if len(measured) < 2:
            return ["Verdict: not enough data below the gate's limit.", *notes]

    reloads = [lv for lv in measured[1:] if lv.reloads]
    full = [
        lv
        for lv in measured
        if lv.gpu_memory_fraction_max is not None
        and lv.gpu_memory_fraction_max >= VRAM_FULL_FRACTION
    ]
    peak = max(
        (lv.gpu_memory_fraction_max for lv in measured if lv.gpu_memory_fraction_max is not None),
        default=None,
    )

    def rates(a: LevelSummary, b: LevelSummary) -> tuple[float, float, str]:
        per = _ratio(b.per_request_tps_p50, a.per_request_tps_p50) or 0.0
        agg = _ratio(b.aggregate_tokens_per_second, a.aggregate_tokens_per_second) or 0.0
        text = (
            f"from concurrency {a.concurrency} to {b.concurrency}: per-request tokens/s "
            f"{fmt(a.per_request_tps_p50)} -> {fmt(b.per_request_tps_p50)} (x{per:.2f}), "
            f"aggregate {fmt(a.aggregate_tokens_per_second)} -> "
            f"{fmt(b.aggregate_tokens_per_second)} (x{agg:.2f})"
        )
        return per, agg, text

    knee = _knee(measured)
    if reloads or full:
        why = []
        if reloads:
            why.append(
                f"the model was reloaded (load_duration > {RELOAD_SECONDS} s) at concurrency "
                + ", ".join(f"{lv.concurrency} ({lv.reloads}x)" for lv in reloads)
            )
        if full:
            why.append(
                "GPU memory reached "
                + ", ".join(
                    f"{lv.gpu_memory_fraction_max:.0%} at concurrency {lv.concurrency}"
                    for lv in full
                )
            )
        head = (
            f"Verdict: VRAM-bound: {'; '.join(why)}. There is not room for the model and the "
            "context of parallel requests: use a smaller model or quantisation, a shorter "
            f"num_ctx, or fewer parallel slots ({rates(base, top)[2]})."
        )
    elif knee is top:
        per, _agg, text = rates(base, top)
        head = f"Verdict: not saturated: {text}. Parallel requests are batched; there is headroom"
        head += (
            ", though each request is slowing: saturation is near."
            if per < PER_REQUEST_DROP
            else ": try higher concurrency levels."
        )
    else:
        per, _agg, text = rates(knee, top)
        where = (
            "from the first level"
            if knee is base
            else f"at concurrency {knee.concurrency} (aggregate "
            f"x{_ratio(knee.aggregate_tokens_per_second, base.aggregate_tokens_per_second):.2f} "
            f"over concurrency {base.concurrency})"
        )
        if per < PER_REQUEST_DROP:
            head = (
                f"Verdict: compute-bound {where}: {text}. The GPU is saturated: more "
                "concurrent requests only share it (each gets slower, the total stays flat)."
            )
        else:
            head = (
                f"Verdict: serialised by Ollama {where}: {text}; {ttft(knee, top)}. Each "
                "request kept its speed but the extra ones took turns inside Ollama: "
                f"it runs {knee.concurrency} generation(s) of this model at once "
                "(OLLAMA_NUM_PARALLEL, or too little VRAM for more parallel slots, which "
                "Ollama then reduces)."
            )
    lines = [head]
    if peak is not None and not full:
        lines.append(f"GPU memory peaked at {peak:.0%} of the total.")
    return lines + notes
