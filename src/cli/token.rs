//! `dissuade token`: a new sign-in token for the web views and the `[[web.tokens]]` entry
//! that admits it (the config keeps only the hash).

use std::process::ExitCode;

use anyhow::bail;

use crate::config::Config;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Who signs in with it: the whole centre, a station's duty desk, or an officer.
    #[arg(long, value_parser = ["centre", "station", "officer"])]
    scope: String,
    /// The station id (`station`) or officer id (`officer`), as in the grid's files.
    #[arg(long)]
    id: Option<String>,
}

pub fn run(config: &Config, args: Args) -> anyhow::Result<ExitCode> {
    match (args.scope.as_str(), &args.id) {
        ("centre", Some(_)) => bail!("--id: the centre's token names no station or officer"),
        ("station" | "officer", None) => {
            bail!("--id: a {} token names its {} id", args.scope, args.scope)
        }
        _ => {}
    }
    let (token, sha256) = crate::web::auth::new_token();
    let entry = crate::config::WebToken {
        scope: args.scope.clone(),
        id: args.id.clone(),
        sha256: sha256.clone(),
    };
    // Refuse an id the grid does not know now, not when the service starts.
    let (grid, _) = crate::pipeline::load_grid(config)?;
    crate::web::auth::Tokens::new(std::slice::from_ref(&entry), &grid)?;
    eprintln!("token (give it to its holder; it is not stored anywhere):");
    println!("{token}");
    eprintln!("\nadd to the config file:\n");
    eprintln!("[[web.tokens]]");
    eprintln!("scope = \"{}\"", args.scope);
    if let Some(id) = &args.id {
        eprintln!("id = \"{id}\"");
    }
    eprintln!("sha256 = \"{sha256}\"");
    Ok(ExitCode::SUCCESS)
}
