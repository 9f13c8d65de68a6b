use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = dissuade::cli::Cli::parse();
    dissuade::cli::init_logging();
    match dissuade::cli::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", dissuade::cli::error_message(&e));
            std::process::ExitCode::FAILURE
        }
    }
}
