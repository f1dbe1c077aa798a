"""The ``conure`` command: run, learn, validate, backfill, report, predict, ui, serve, server.

Every error is one line (what went wrong and where to look) with the exit code of its kind
(``conure_cli.exits``: 3 bad input, 4 refused, 1 internal error); ``--debug`` shows the traceback. Results go to stdout (``--json`` for machines); progress and messages go to stderr.
"""
from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path
from typing import List, Optional

import typer

from conure_cli import exits
from conure_cli.display import StageBars, console, error, print_report

_STATE = {"debug": os.environ.get("CONURE_DEBUG") == "1"}


class _App(typer.Typer):
    """Typer app that turns any exception into one line on stderr and the exit code of its kind."""

    def __call__(self, *args, **kwargs):
        import gc
        import signal

        # A command is a batch job that imports Prefect, MLflow, torch and GX (a heap of millions of
        # objects): the collector's default (a young collection every 700 allocations, a full one
        # when the old generation grew by a quarter) spent seconds walking that heap; every 20,000
        # allocations it spends a fraction of that (``_settle_heap`` then takes the imports out of its view).
        gc.set_threshold(20_000, 20, 20)
        # A command started in the background of a script inherits SIGINT ignored; Ctrl-C or
        # `kill -INT` must still stop it (``_interrupted``).
        signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            return super().__call__(*args, **kwargs)
        except SystemExit:
            raise
        except KeyboardInterrupt:
            _interrupted()
        except BaseException as exc:  # noqa: BLE001 - the top of the program: report, never a traceback
            if _STATE["debug"]:
                traceback.print_exc()
            error(describe(exc))
            sys.exit(exits.exit_code(exc))
        finally:
            import gc

            gc.freeze()  # the exit's garbage collections skip the heap (seconds on a loaded machine)


def _interrupted() -> None:
    """Ctrl-C: one line and exit 130. Prefect has marked the interrupted runs Crashed on the way out
    (the shared server is outside the terminal's process group, so it is still there to hear it); a
    second Ctrl-C while Prefect flushes its logs exits at once."""
    import signal

    signal.signal(signal.SIGINT, lambda *_: os._exit(exits.INTERRUPTED))
    sys.stderr.write("conure: interrupted; re-run to resume.\n")
    sys.exit(exits.INTERRUPTED)


def _stops_on_ctrl_c(command):
    """Ctrl-C inside ``command`` ends in ``_interrupted`` (typer would turn it into a silent exit 130)."""
    import functools

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except KeyboardInterrupt:
            _interrupted()
    return wrapper


def describe(exc: BaseException) -> str:
    """One sentence for an exception: our own errors carry theirs; others get where to look."""
    msg = " ".join(str(exc).split()) or exc.__class__.__name__
    if exits.is_own(exc):
        return msg
    home = os.environ.get("CONURE_HOME", ".conure")
    return (f"unexpected {type(exc).__name__}: {msg[:300]}; re-run with --debug for the traceback "
            f"(run files: {home}, MLflow: `conure ui`).")


app = _App(name="conure", add_completion=False, pretty_exceptions_enable=False, no_args_is_help=True,
           help="Conure: continual user-representation learning as a Prefect + MLflow pipeline. "
                "Run files live under $CONURE_HOME (default ./.conure). " + exits.HELP)


@app.callback()
def _main(debug: bool = typer.Option(False, "--debug", help="Show tracebacks and Prefect's own logs.")) -> None:
    _STATE["debug"] = _STATE["debug"] or debug
    from tasks.settings import configure_process

    configure_process()  # this command's own process (importing `tasks` changes nothing)


def _flows(early_server: bool = True):
    """Import the flows (and Prefect) only when a command needs them; keep Prefect's console quiet.

    early_server: attach to this home's shared Prefect server, starting it in parallel with the
    imports when none runs (``tasks.prefect_server``; not for `serve`, which needs a server with its
    scheduler, see deployments/serve.py)."""
    from tasks import prefect_server

    # a new server boots in parallel with the imports below; one already up has nothing to wait for
    booting = not early_server or (prefect_server.attach() is not None and not prefect_server.answering())
    import flows.backfill  # noqa: F401
    import flows.learn  # noqa: F401
    from tasks.settings import quiet_prefect_console

    quiet_prefect_console(_STATE["debug"])
    if booting:
        _warm_imports()
    prefect_server.wait_ready(say=lambda text: console.print(text, highlight=False, soft_wrap=True))
    _settle_heap()
    return sys.modules["flows.learn"], sys.modules["flows.backfill"]


def _settle_heap() -> None:
    """Move what the imports made (modules, classes, functions: long-lived) out of the garbage
    collector's view: its full collections walk the whole heap, seconds per command otherwise."""
    import gc

    gc.freeze()


def _warm_imports() -> None:
    """While Prefect's server boots: import MLflow (and open its store), torch, GX (and make its
    context) and matplotlib in a thread. Only then: with a server up (a re-run), the flow starts at
    once and imports what its steps need, when they need it (a cached step needs no GX nor figures),
    instead of sharing the interpreter with a thread importing everything."""
    import importlib
    import threading

    def work() -> None:
        try:
            importlib.import_module("tasks.tracking").warm_store()  # MLflow import + store migrations
            for name in ("conure_core.lineage", "conure_core.checkpoint", "data_contracts.ingest"):
                importlib.import_module(name)
            importlib.import_module("data_contracts.suites").context()  # GX import + its context
            importlib.import_module("matplotlib.backends.backend_agg")  # the figures (no pyplot)
        except Exception:  # noqa: BLE001 - the flow imports them again and reports properly
            return
        _settle_heap()

    threading.Thread(target=work, name="conure-warm-imports", daemon=True).start()


def _emit(report: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(report))
    else:
        print_report(report)


LINEAGE = typer.Option("default", "--lineage", "-l", help="Lineage name (one model accumulating tasks).")
NPROC = typer.Option(1, "--nproc", min=1, help="Ranks per training stage: >1 runs each train/retrain stage "
                                               "data-parallel as a torchrun job (one GPU per rank, or gloo on CPU).")


def _use_ranks(nproc: int) -> None:
    """Every training stage of this command runs on ``nproc`` ranks (read by tasks.steps.stage_ranks)."""
    os.environ["CONURE_NPROC"] = str(nproc)


@app.command()
@_stops_on_ctrl_c
def run(lineage: Optional[str] = typer.Option(None, "--lineage", "-l",
                                              help="Lineage name (default: 'default', or the suite's name)."),
        preset: str = typer.Option("quick", help="quick (minutes on a laptop CPU), paper, or a JSON preset file."),
        suite: str = typer.Option("default", help="Bundled suite: default (the six paper-style tasks) or signal "
                                                   "(history, era, genre, rater, rating: tasks that carry signal)."),
        as_json: bool = typer.Option(False, "--json", help="Print the report as one JSON object."),
        nproc: int = NPROC) -> None:
    """Learn the six bundled MovieLens-100K tasks (clicks, liked, loved, gender, age, occupation) in order
    and print the accuracy matrix (``--suite signal``: the signal suite). A second run re-uses every step."""
    from conure_core.data.suites import check_suite

    check_suite(suite)  # one line naming the valid suites, before any flow starts
    _use_ranks(nproc)
    lineage = lineage or ("default" if suite == "default" else suite)
    home = os.environ.get("CONURE_HOME", ".conure")
    console.print(f"conure run: lineage '{lineage}', suite '{suite}', preset '{preset}', run files under {home}; "
                  "loading Prefect, MLflow and PyTorch ...", highlight=False, soft_wrap=True)
    learn_mod, _ = _flows()
    with StageBars():
        report = learn_mod.run_default(lineage=lineage, preset=preset, suite=suite)
    _emit(report, as_json)
    if not as_json:
        _where(report)


@app.command()
@_stops_on_ctrl_c
def learn(task_dir: Path = typer.Argument(..., help="Task folder: task.yaml + data.parquet/.csv."),
          lineage: str = LINEAGE,
          preset: Optional[str] = typer.Option(None, help="Preset when the lineage is new (default quick)."),
          floor: float = typer.Option(0.5, help="Least share of the task's users known to T1."),
          as_json: bool = typer.Option(False, "--json", help="Print the report as one JSON object."),
          nproc: int = NPROC) -> None:
    """Validate a task folder and teach it to a lineage (the first task of a lineage must be its T1 sequence task)."""
    _use_ranks(nproc)
    console.print(f"conure learn: {task_dir} onto lineage '{lineage}'; loading Prefect, MLflow and PyTorch ...",
                  highlight=False, soft_wrap=True)
    learn_mod, _ = _flows()
    with StageBars():
        report = learn_mod.learn_task(task_dir=str(task_dir), lineage=lineage, preset=preset, floor=floor)
    _emit(report, as_json)


@app.command()
def validate(task_dir: Path = typer.Argument(..., help="Task folder to check."),
             lineage: Optional[str] = typer.Option(None, "--lineage", "-l",
                                                   help="Also check the join to this lineage's T1 (item/class "
                                                        "tasks: share of users known to T1, users to quarantine); "
                                                        "without it the output says that check was not done."),
             floor: float = typer.Option(0.5, help="Least share of the task's users known to T1."),
             as_json: bool = typer.Option(False, "--json", help="Print one JSON object: ok, name, kind, file, rows, "
                                                                "users, unknown_users, failures, unchecked, lineage.")
             ) -> None:
    """Check a task folder against its data contract (Great Expectations) without learning it; nothing is
    written. Exit code 0 when it passes, 3 when it does not (4 for an unknown --lineage)."""
    from data_contracts.errors import ContractError
    from data_contracts.ingest import validate_task_dir
    from tasks.adapters import abs_path
    from tasks.errors import PipelineError
    from tasks.settings import Layout
    from tasks.store import LineageStore

    if not Path(task_dir).is_dir():
        raise ContractError(f"task folder {task_dir} does not exist; pass a folder holding task.yaml and a table.",
                            file=str(task_dir))
    t1 = None
    if lineage:
        head = LineageStore().require_head(lineage)
        if not head.tasks:
            raise PipelineError(f"lineage '{lineage}' has no T1 yet; learn its sequence task first, "
                                f"or validate without --lineage.")
        t1 = abs_path(Layout().root, head.tasks[0].prepared_path)
    summary = validate_task_dir(task_dir, t1=t1, known_user_floor=floor)
    summary.unchecked = [f"{u}; pass --lineage NAME to check it" for u in summary.unchecked]
    if as_json:
        print(json.dumps({**summary.model_dump(mode="json"), "lineage": lineage}))
    else:
        print(str(summary))
    if not summary.ok:
        raise typer.Exit(exits.BAD_INPUT)


@app.command()
def land(src: Path = typer.Argument(..., help="Task folder to land (task.yaml + table)."),
         landing: Optional[Path] = typer.Option(None, help="Landing folder (default $CONURE_HOME/landing)."),
         name: Optional[str] = typer.Option(None, help="Folder name in landing (default: SRC's name)."),
         replace: bool = typer.Option(False, "--replace", help="Swap a landed folder of that name for SRC."),
         in_place: bool = typer.Option(False, "--in-place", help="Seal SRC where it is (a folder already "
                                                                  "copied into landing) instead of copying it.")) -> None:
    """Copy a task folder into the landing folder and seal it last: its _SUCCESS marker lists every file
    with its size and SHA-256, so the landing watch learns it only complete and unchanged."""
    from data_contracts import landing as contract
    from data_contracts.errors import ContractError
    from tasks.errors import PipelineError
    from tasks.settings import Layout

    try:
        final = contract.land(src, landing or Layout().landing, name, replace, in_place=in_place)
    except FileExistsError as exc:
        raise PipelineError(str(exc)) from None
    except ValueError as exc:
        raise ContractError(str(exc), file=str(src)) from None
    files = contract.read_marker(final) or {}
    print(f"landed {final}: {len(files)} file(s), {sum(f['size'] for f in files.values()):,} bytes, "
          f"sealed by {contract.MARKER}")


@app.command()
def rollback(lineage: str = typer.Option(..., "--lineage", "-l", help="Lineage to move back."),
             to: int = typer.Option(..., "--to", help="Keep the first N tasks: the lineage's state after task N."),
             as_json: bool = typer.Option(False, "--json", help="Print one JSON object.")) -> None:
    """Move a lineage back to its state after task N (HEAD, registry alias head, an MLflow run saying so).
    Nothing is deleted; replace the wrongly learned folder and learn it again."""
    from tasks.rollback import rollback as roll_back

    out = roll_back(lineage, to)
    if as_json:
        print(json.dumps(out))
    elif not out["changed"]:
        print(f"lineage '{lineage}' already holds {to} task(s); nothing changed.")
    else:
        version = out["mlflow"]["head_version"]
        print(f"lineage '{lineage}': {out['from_tasks']} -> {out['to_tasks']} tasks (dropped "
              f"{', '.join(out['dropped'])}); state {out['to_state'][:12]}; registry alias head -> "
              f"{'version ' + version if version else 'no version (none registered)'}; previous HEAD kept in "
              f"{out['history']}")


@app.command()
@_stops_on_ctrl_c
def backfill(lineage: str = typer.Option(..., "--lineage", "-l", help="Source lineage whose tasks are re-ordered."),
             order: List[str] = typer.Option(..., help="Comma-separated task names, T1 first (repeat for several)."),
             strategy: str = typer.Option("conure", help="conure, or a baseline: sinmo, sinmoall, finesmax, "
                                                          "fineall, peterrec, mtl, dnn, conure-."),
             from_prefix: int = typer.Option(0, "--from-prefix", help="Share the source's first K learned states."),
             into: Optional[List[str]] = typer.Option(None, help="Target lineage name per --order "
                                                                 "(default <lineage>--<strategy>--<order>)."),
             parallel: int = typer.Option(1, help="Orderings learned at once."),
             as_json: bool = typer.Option(False, "--json", help="Print the reports as one JSON list."),
             nproc: int = NPROC) -> None:
    """Learn other orderings of a lineage's tasks (or a baseline strategy) from a prefix of it, each into its own lineage."""
    _use_ranks(nproc)
    _, backfill_mod = _flows()
    with StageBars():
        reports = backfill_mod.backfill(lineage=lineage, orders=list(order), strategy=strategy,
                                        from_prefix=from_prefix, into=list(into) if into else None, parallel=parallel)
    if as_json:
        print(json.dumps(reports))
    else:
        for r in reports:
            print_report(r)


@app.command()
def refresh(update_dir: Path = typer.Argument(..., help="T1 update folder: task.yaml (kind sequence) + the users' "
                                                        "current histories (new or longer rows)."),
            lineage: str = LINEAGE,
            as_json: bool = typer.Option(False, "--json", help="Print one JSON object.")) -> None:
    """Refresh the users' stored histories that `predict --user` and the registered model read, from a T1
    update folder, without retraining: a new registered version of the same weights (tracked in MLflow)."""
    _flows()
    from flows.refresh import refresh_histories

    out = refresh_histories(update_dir=str(update_dir), lineage=lineage)
    if as_json:
        print(json.dumps(out))
        return
    h = out["histories"]
    print(f"lineage '{lineage}': histories {h['digest']} ({h['users']:,} users: {h['updated']:,} updated, "
          f"{h['added']:,} added; {h['unknown_items']:,} unknown item ids dropped, {h['skipped_users']:,} users "
          f"with no known item skipped); registered {out['model']} version {out['version']} (same weights)")


@app.command()
def report(lineage: str = LINEAGE,
           as_json: bool = typer.Option(False, "--json", help="One JSON object: lineage, strategy, tasks, metric, "
                                                              "matrix, free_capacity, state_digest, backfills.")) -> None:
    """Accuracy matrix, free capacity and the comparison with backfilled orderings / strategies of a lineage."""
    from tasks.reporting import lineage_report

    result = lineage_report(lineage)
    if as_json:
        print(json.dumps(result))
        return
    print_report(result)
    if result.get("backfills"):
        from conure_cli.display import comparison_table, out

        out.print(comparison_table(result))
    _where(result)


@app.command()
def predict(lineage: str = LINEAGE,
            task: str = typer.Option(..., "--task", "-t", help="A learned task of the lineage."),
            user: Optional[str] = typer.Option(None, "--user", "-u", help="User id as in the stored histories (T1, "
                                                                          "or the latest `conure refresh`)."),
            items: Optional[str] = typer.Option(None, "--items", help="A history instead of a user: item ids, oldest "
                                                                      "first, comma-separated (e.g. 12,54,77)."),
            k: int = typer.Option(10, "-k", help="How many items (item tasks)."),
            exclude_seen: bool = typer.Option(True, "--exclude-seen/--keep-seen",
                                              help="Item answers leave out items of the history."),
            as_json: bool = typer.Option(False, "--json", help="Print one JSON object.")) -> None:
    """Top-k items (item tasks, T1), the class with its probabilities (class tasks) or a number
    (regression tasks) for one user or one history (``--items``)."""
    from tasks.serving import predict_user

    history = None if items is None else [i.strip() for i in items.split(",") if i.strip()]
    answer = predict_user(lineage, task, user, k, history, exclude_seen)
    if as_json:
        print(json.dumps(answer))
        return
    who = f"user {user}" if user is not None else f"history of {len(history)} item(s)" + (
        f" ({answer['unknown_items']} unknown, dropped)" if answer.get("unknown_items") else "")
    if "value" in answer:
        print(f"{who} · {task}: {answer['value']:.4f}")
    elif "label" in answer:
        probs = ", ".join(f"{l}: {p:.3f}" for l, p in sorted(answer["probabilities"].items(), key=lambda x: -x[1])[:5])
        print(f"{who} · {task}: {answer['label']}  ({probs})")
    else:
        print(f"{who} · {task}: top-{len(answer['items'])} " +
              ", ".join(f"{i} ({s:.3f})" for i, s in zip(answer["items"], answer["scores"])))


@app.command()
def ui(lineage: str = LINEAGE,
       port: Optional[int] = typer.Option(None, help="Port on 127.0.0.1 (default: CONURE_MLFLOW_UI's port, else 5000)."),
       dry_run: bool = typer.Option(False, "--dry-run", help="Print the URL and the command, start nothing.")) -> None:
    """Start the MLflow UI on 127.0.0.1 and print the URL of the lineage's runs in the model-training view
    (until Ctrl-C / SIGTERM). Links in Prefect artifacts point at CONURE_MLFLOW_UI (default http://127.0.0.1:5000)."""
    from urllib.parse import urlsplit

    from tasks.settings import Layout
    from tasks.stores import ensure_tracking_store
    from tasks.tracking import WORKFLOW, MlflowClient, ui_base

    lay = Layout()
    ensure_tracking_store(lay.tracking_uri())  # never let the UI server create (and half-make) it
    links = ui_base()
    port = port or urlsplit(links).port or 5000
    base = f"http://127.0.0.1:{port}"
    exp = MlflowClient(tracking_uri=lay.tracking_uri()).get_experiment_by_name(lineage)
    url = f"{base}/#/experiments/{exp.experiment_id}/runs?{WORKFLOW}" if exp else f"{base}/#/experiments?{WORKFLOW}"
    if exp is None:
        console.print(f"no MLflow experiment for lineage '{lineage}' yet; showing all experiments")
    if urlsplit(links).port not in (None, port) and not lay.tracking_uri().startswith("http"):
        console.print(f"links in Prefect artifacts point at {links}; set CONURE_MLFLOW_UI={base} before runs "
                      "to make them point here", highlight=False)
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", lay.tracking_uri(),
           "--default-artifact-root", lay.artifacts.as_uri(), "--host", "127.0.0.1", "--port", str(port)]
    print(f"MLflow UI: {url}")
    print(f"Prefect UI: run `PREFECT_HOME={lay.prefect_home} .venv/bin/prefect server start` "
          "(flow runs of the embedded server are kept in its database)")
    if dry_run:
        print(" ".join(cmd))
        return
    sys.stdout.flush()
    raise typer.Exit(_run_server(cmd))


def _run_server(cmd: list[str]) -> int:
    """Run a server child in its own process group until it exits; SIGTERM / SIGINT here stop the
    whole group first (``mlflow ui`` runs its web server as a grandchild), and a killed ``conure``
    takes the child with it (Linux parent-death signal)."""
    import signal
    import subprocess

    from tasks.prefect_server import die_with_parent
    from tasks.settings import child_env

    proc = subprocess.Popen(cmd, start_new_session=True, env=child_env(),
                            preexec_fn=die_with_parent if sys.platform.startswith("linux") else None)

    def on_signal(signum, _frame):
        stop_group(proc)
        raise SystemExit(128 + signum)

    before = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        return proc.wait()
    finally:
        stop_group(proc)
        for s, handler in before.items():
            signal.signal(s, handler)


def stop_group(proc, grace: float = 10.0) -> None:
    """SIGTERM the child's process group, SIGKILL what is left after ``grace`` seconds."""
    import signal
    import subprocess
    import time

    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            return  # the group is gone
        try:
            proc.wait(wait)
        except subprocess.TimeoutExpired:
            continue
        deadline = time.time() + wait  # the child is gone; give its own children the same grace
        while time.time() < deadline:
            try:
                os.killpg(proc.pid, 0)
            except (ProcessLookupError, PermissionError):
                return
            time.sleep(0.1)


@app.command()
def serve(landing: Optional[Path] = typer.Option(None, help="Landing folder (default $CONURE_HOME/landing)."),
          lineage: str = LINEAGE,
          interval: int = typer.Option(300, help="Seconds between landing-folder checks."),
          preset: Optional[str] = typer.Option(None, help="Preset when the landing watch creates the lineage.")) -> None:
    """Serve the deployments locally (landing watch on a schedule, backfills and learning on demand) until Ctrl-C.

    Starts a local Prefect server (UI included) for as long as it serves, unless PREFECT_API_URL is set."""
    import signal

    _flows(early_server=False)
    from deployments.serve import serve_all

    def on_term(_signum, _frame):  # as Ctrl-C: serve_all's exits stop the Prefect server child
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    serve_all(landing=str(landing) if landing else None, lineage=lineage, interval=interval, preset=preset)


server_app = typer.Typer(no_args_is_help=True,
                         help="This home's local Prefect server: started on demand by run, learn and backfill, "
                              "shared by the commands that follow (and concurrent ones), stopped after "
                              "CONURE_SERVER_IDLE seconds (default 600) without a command using it.")
app.add_typer(server_app, name="server")


@server_app.command("status")
def server_status(as_json: bool = typer.Option(False, "--json", help="Print one JSON object.")) -> None:
    """Whether the server runs: its URL, pid, and the commands using it."""
    from tasks import prefect_server

    info = prefect_server.status()
    if as_json:
        print(json.dumps(info))
    elif info["running"]:
        print(f"Prefect server: {info['url']} (pid {info['pid']}, up {info['up_s']:.0f} s, "
              f"{'answering' if info['answers'] else 'starting'}); commands using it: "
              f"{', '.join(map(str, info['clients'])) or 'none'}; log: {info['log']}")
    else:
        print(f"Prefect server: not running (starts with the next run, learn or backfill); home {info['home']}")


@server_app.command("start")
@_stops_on_ctrl_c
def server_start() -> None:
    """Start the server now (or find the running one) and wait until it answers."""
    from tasks import prefect_server

    url = prefect_server.attach()
    if url is None:
        print(f"PREFECT_API_URL is set ({os.environ['PREFECT_API_URL']}): that server is used, none is started.")
        return
    prefect_server.wait_ready(say=lambda text: console.print(text, highlight=False, soft_wrap=True))
    print(f"Prefect server: {url}")


@server_app.command("stop")
def server_stop() -> None:
    """Stop the server (a command still using it fails; the next one starts a fresh server)."""
    from tasks import prefect_server

    state = prefect_server.stop()
    print(f"stopped the Prefect server at {state['url']} (pid {state['pid']})" if state
          else "no Prefect server was running")


def _where(report: dict) -> None:
    console.print(f"details: `conure ui --lineage {report['lineage']}` (MLflow), "
                  f"`conure report --lineage {report['lineage']}`", highlight=False)


if __name__ == "__main__":
    app()
