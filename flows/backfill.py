"""Backfill flow: learn another ordering, or a baseline strategy, from a prefix of a lineage.

Each ordering is its own lineage (its own HEAD and lock) but logs into the SOURCE lineage's MLflow
experiment, tagged ``conure.order`` / ``conure.strategy`` / ``conure.backfill_of``, so one runs
table compares orderings and strategies."""
from __future__ import annotations

import contextvars
from concurrent.futures import ThreadPoolExecutor

from prefect import flow

from flows.chain import FlowRun, ref_of
from flows.learn import learn_ref
from tasks import steps
from tasks.errors import PipelineError
from tasks.reporting import report_of
from tasks.store import Head, LineageStore, check_name


def target_name(lineage: str, order: list[str], strategy: str) -> str:
    """Default name of a backfilled lineage: ``<source>--<strategy>--<t1>-<t2>...``."""
    return check_name(f"{lineage}--{strategy}--{'-'.join(order)}")


def parse_order(order: str | list[str]) -> list[str]:
    names = [n.strip() for n in (order.split(",") if isinstance(order, str) else order) if n.strip()]
    if not names:
        raise PipelineError("an --order is empty; give task names separated by commas, e.g. clicks,loved,liked.")
    if len(set(names)) != len(names):
        raise PipelineError(f"order {','.join(names)} names a task twice; list each task once.")
    return names


def backfill_one(source: Head, order: list[str], strategy: str, from_prefix: int, into: str | None,
                 lock_timeout: float | None) -> dict:
    """Learn ``order`` into a new lineage that shares ``source``'s first ``from_prefix`` states."""
    learned = [t.name for t in source.tasks]
    missing = [n for n in order if n not in learned]
    if missing:
        raise PipelineError(f"lineage '{source.lineage}' has not learned {', '.join(missing)}; an order may only "
                            f"use its tasks ({', '.join(learned)}).")
    if not 0 <= from_prefix <= len(order) or order[:from_prefix] != learned[:from_prefix]:
        raise PipelineError(f"--from-prefix {from_prefix}: the order's first {from_prefix} task(s) "
                            f"{order[:from_prefix]} must be lineage '{source.lineage}''s first ones "
                            f"{learned[:from_prefix]}.")
    refs = [ref_of(source.task(n)) for n in order]
    target = into or target_name(source.lineage, order, strategy)
    params = {"source": source.lineage, "order": order, "strategy": strategy, "from_prefix": from_prefix}
    tags = {"conure.order": ",".join(order), "conure.strategy": strategy, "conure.backfill_of": source.lineage,
            "conure.from_prefix": str(from_prefix)}
    with FlowRun(target, "backfill", params, lock_timeout, experiment=experiment_of(source), tags=tags) as fr:
        head = fr.store.read_head(target)
        if head is None:
            head = Head(lineage=target, strategy=strategy, preset=source.preset, config=source.config,
                        parent={"lineage": source.lineage, "prefix": from_prefix, "order": order})
        elif head.strategy != strategy:
            raise PipelineError(f"lineage '{target}' exists with strategy '{head.strategy}'; pick another --into name.")
        fr.log_params({"strategy": strategy, "config": head.config})
        if strategy == "conure":
            if not head.tasks and from_prefix:  # share the source's prefix states as they are
                head.tasks = [t.model_copy() for t in source.tasks[:from_prefix]]
                head.matrix = [list(r) for r in source.matrix[:from_prefix]]
                fr.store.write_head(head)
            for ref in refs:  # each: train -> prune -> retrain -> evaluate -> register (flows/learn.py)
                head = learn_ref(fr, head, ref)
        else:
            out = fr.stats.call(steps.baseline, lineage=target, strategy=strategy, refs=refs, preset=head.config,
                                track=fr.track(len(refs), strategy))
            head = _baseline_head(head, source, order, out["report"])
            fr.store.write_head(head)
        result = report_of(head)
        fr.publish(result)
        result["run"] = fr.stats.to_dict()
    return result


def experiment_of(source: Head) -> str:
    """The MLflow experiment of a lineage: its own, or its source's for a backfill of a backfill."""
    return (source.parent or {}).get("lineage") or source.lineage


def _baseline_head(head: Head, source: Head, order: list[str], report: dict) -> Head:
    head.tasks = [source.task(n).model_copy(update={"stages": {}, "state_digest": "", "free_capacity": {}})
                  for n in order]
    n = len(order)
    head.matrix = [[v for v in row[: i + 1]] for i, row in enumerate(report["matrix"][:n])]
    return head


def _run_name() -> str:
    """``<lineage> backfill <strategy>: <order> | <order>`` from the flow run's parameters."""
    from prefect.runtime import flow_run

    p = flow_run.parameters
    orders = " | ".join(o if isinstance(o, str) else ",".join(o) for o in p.get("orders") or [])
    return f"{p.get('lineage', '?')} backfill {p.get('strategy', 'conure')}: {orders}"


@flow(name="backfill", flow_run_name=_run_name, log_prints=False)
def backfill(lineage: str, orders: list[str], strategy: str = "conure", from_prefix: int = 0,
             into: list[str] | None = None, parallel: int = 1, lock_timeout: float | None = None) -> list[dict]:
    """Learn each ordering (``"clicks,loved,liked"``) of ``lineage``'s tasks into its own lineage.

    strategy: conure (default) or a baseline of conure_core.strategies (sinmo, fineall, ...);
    from_prefix: share the source's first K states (their steps are not recomputed; with K = 0 the
    shared prefix is still a cache hit); into: target lineage names (default
    ``<lineage>--<strategy>--<order>``); parallel: orderings run at once (threads; 1 on small CPUs).
    """
    source = LineageStore().require_head(lineage)
    parsed = [parse_order(o) for o in orders]
    names = list(into or [None] * len(parsed))
    if len(names) != len(parsed):
        raise PipelineError(f"{len(names)} --into name(s) for {len(parsed)} --order(s); give one per order or none.")
    jobs = [(o, n) for o, n in zip(parsed, names)]
    if parallel <= 1 or len(jobs) == 1:
        return [backfill_one(source, o, strategy, from_prefix, n, lock_timeout) for o, n in jobs]
    with ThreadPoolExecutor(max_workers=parallel) as pool:  # each thread keeps the flow's Prefect context
        futures = [pool.submit(contextvars.copy_context().run, backfill_one, source, o, strategy, from_prefix, n,
                               lock_timeout) for o, n in jobs]
        return [f.result() for f in futures]
