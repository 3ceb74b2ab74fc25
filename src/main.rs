//! `warren`: parses the command line and runs the broker. Nothing else.

use std::process::ExitCode;

use warren::config::Command;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let config = match Command::parse(&args) {
        Ok(Command::Run(c)) => c,
        Ok(Command::Help(h)) => {
            print!("{h}");
            return ExitCode::SUCCESS;
        }
        Ok(Command::Version) => {
            println!("warren {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("warren: {e} (try --help)");
            return ExitCode::from(2);
        }
    };
    env_logger::Builder::new()
        .parse_filters(&config.log_level)
        .format_timestamp_millis()
        .init();
    match warren::reactor::run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("warren: {e}");
            ExitCode::from(1)
        }
    }
}
