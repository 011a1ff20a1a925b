"""`formation grade`: grade a lot from the store with a rules file; store the grades, write the logistics CSV."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from formation.cli.app import console, print_problem
from formation.cli.feed import MqttOpt
from formation.errors import FormationError


def grade(
    lot: Annotated[str, typer.Argument(help="Lot to grade")],
    rules: Annotated[str, typer.Option(help="Grading rules: a TOML file or a built-in name (a recipe's name)")],
    out: Annotated[Path, typer.Option(help="Logistics report CSV path")] = Path("report.csv"),
    plots: Annotated[Path | None, typer.Option(help="Directory for metric histograms (PNG)")] = None,
    site: Annotated[Path | None, typer.Option(help="Site configuration (TOML)")] = None,
    db: Annotated[str | None, typer.Option(help="Database URL (overrides the site's)")] = None,
    mqtt: MqttOpt = None,
) -> None:
    """Grade every cell of LOT from its latest run, store the grades, write the CSV and print the summary."""
    from formation.cli.feed import feed_config, publish_grading
    from formation.cli.run import open_store, output_dir, output_file
    from formation.config import SiteConfig, apply_env, load_site_config
    from formation.grading import (
        check_lot_cycles,
        grade_cells,
        load_lot_metrics,
        resolve_rules,
        summarize,
        summary_table,
        write_histograms,
        write_report_csv,
    )

    # Rules and output paths first: bad input is refused before the database is touched.
    parsed = resolve_rules(rules)
    output_file(out, "--out")
    if plots is not None:
        output_dir(plots, "--plots")
    site_cfg = load_site_config(site) if site is not None else apply_env(SiteConfig())
    broker = feed_config(site_cfg.mqtt, mqtt)
    _, store = open_store(site, db)
    with store:
        cells = load_lot_metrics(store, lot, parsed)
        check_lot_cycles(store, cells, parsed)  # a cycle the lot's recipe does not have: refused, nothing written
        ok = cells["fault"] == ""
        for metric, source in parsed.metrics.items():
            if ok.any() and cells.loc[ok, metric].isna().all():
                print_problem(
                    "warning:",
                    f"no finished run of lot {lot} has {metric} from step {source.step!r}",
                    style="yellow",
                )
        grading = grade_cells(cells, parsed)
        # Grades and report together or neither: the report is written beside its path first, the grades are
        # stored, then the report takes its name; a failure on the way leaves no half of the pair.
        staged = out.with_name(f".{out.name}.partial")
        try:
            write_report_csv(grading, staged)
            store.save_grades(grading.cells, rules_sha256=parsed.sha256, rules_name=parsed.name)
        except BaseException as exc:
            staged.unlink(missing_ok=True)
            if isinstance(exc, OSError):  # e.g. a full disk: one line, nothing stored
                raise FormationError(f"cannot write the report {out}: {exc.strerror or exc}") from None
            raise
    staged.replace(out)
    title = f"lot {escape(lot)}: {escape(parsed.name)} {escape(parsed.version)}"
    summary = summarize(grading)
    console.print(summary_table(summary, title=title))
    console.print(f"wrote {escape(str(out))} ({len(cells)} cells, rules sha256 {parsed.sha256[:12]})", highlight=False)
    if plots is not None:
        paths = write_histograms(grading, plots)
        console.print(f"wrote {len(paths)} histograms to {escape(str(plots))}", highlight=False)
    publish_grading(broker, site_cfg.site, site_cfg.line, summary, parsed.sha256)
