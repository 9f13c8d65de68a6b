use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use crate::grid::generate::{generate, GenOptions};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// District boundaries: a GeoJSON FeatureCollection with `district_code` and `name`.
    #[arg(long)]
    districts: PathBuf,
    /// Directory to write cells.geojson, stations.csv, roster.csv and cell-table.csv into.
    #[arg(long)]
    out: PathBuf,
    /// Seed for names, rosters and vacancies: the same seed gives the same files.
    #[arg(long, default_value_t = GenOptions::default().seed)]
    seed: u64,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let map = generate(
        &args.districts,
        GenOptions {
            seed: args.seed,
            ..GenOptions::default()
        },
    )
    .with_context(|| format!("generating a grid map from {}", args.districts.display()))?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    map.write(&args.out)
        .with_context(|| format!("writing the grid map to {}", args.out.display()))?;
    let mut out = super::stdout();
    writeln!(out, "{}", map.summary())?;
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}
