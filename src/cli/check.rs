use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;

use crate::pipeline::Pipeline;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// List every repaired polygon, not only the first ten.
    #[arg(long)]
    all_warnings: bool,
}

pub fn run(config_path: &Path, args: Args) -> anyhow::Result<ExitCode> {
    let config = super::load_config(config_path)?;
    let (pipeline, warnings) = Pipeline::load(&config).context("loading the pipeline")?;
    let rules = pipeline.rules();
    let grid = pipeline.grid();
    let t = rules.thresholds();
    let mut out = super::stdout();
    writeln!(out, "{}: OK", config_path.display())?;
    writeln!(
        out,
        "rules       {} rules in \"{}\" ({}), version {}",
        rules.rules().len(),
        rules.name(),
        config.resolve(&config.rules.path).display(),
        rules.version()
    )?;
    writeln!(out, "levels      {t}")?;
    writeln!(
        out,
        "grid        {} cells, {} stations, {} roster entries; {} cells with no community officer \
         (their station's duty desk takes their tasks)",
        grid.cells().len(),
        grid.stations().len(),
        grid.officer_count(),
        grid.cells_without_officer()
    )?;
    writeln!(
        out,
        "cell table  {} base-station cells",
        pipeline.cell_table().len()
    )?;
    let d = &config.dispatch;
    writeln!(
        out,
        "dispatch    tasks from level {}, suppression window {}, snap distance {} m, \
         unmatched tasks to {}",
        d.min_level,
        humantime::format_duration(d.suppression_window),
        config.grid.snap_distance_m,
        d.fallback_desk
    )?;
    writeln!(
        out,
        "kafka       brokers {}, {} → {} (dead letters {}), group {}",
        config.kafka.brokers,
        config.kafka.input_topic,
        config.kafka.task_topic,
        config.kafka.dlq_topic,
        config.kafka.group_id
    )?;
    if !warnings.is_empty() {
        writeln!(
            out,
            "repaired    {} invalid polygons (set grid.strict = true to reject them instead):",
            warnings.len()
        )?;
        let shown = if args.all_warnings {
            warnings.len()
        } else {
            10
        };
        for w in warnings.iter().take(shown) {
            writeln!(out, "  - {w}")?;
        }
        if warnings.len() > shown {
            writeln!(
                out,
                "  ... {} more (--all-warnings)",
                warnings.len() - shown
            )?;
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}
