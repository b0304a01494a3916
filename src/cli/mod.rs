//! The command line: one subcommand per entry point. `args` says what
//! each takes, `handlers` turns it into the library's calls and an exit
//! code; each subcommand's work lives in its own module.
//!
//! Exit codes: 0 success, 1 the work did not fully succeed, 2 invalid input
//! (clap's own usage errors exit 2 as well); `apply` also exits 3 when a
//! signal or `--timeout` stopped it (what was confirmed is saved), and any
//! command 130 on a second signal (nothing more is waited for).

mod args;
mod handlers;

use std::process::ExitCode;

use clap::Parser;

pub use args::Cli;
use args::{BenchCommand, Command};
pub use handlers::Failure;

pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // Prints usage or help; exits 2 for errors, 0 for --help/--version.
        Err(error) => error.exit(),
    };
    crate::install_crypto_provider();
    let outcome = match cli.command {
        Command::Usersig(args) => handlers::print_usersig(args),
        Command::Crd => match crate::crd::render_yaml() {
            Ok(yaml) => {
                crate::write_stdout(&yaml);
                Ok(ExitCode::SUCCESS)
            }
            Err(error) => Err(Failure::failed("CrdRender", error)),
        },
        Command::Run(args) => block_on(handlers::run_controller(args)),
        Command::Apply(args) => block_on(handlers::apply(args)),
        Command::Demo => block_on(async {
            crate::telemetry::init("error");
            crate::tools::demo::run().await.map(|()| ExitCode::SUCCESS).map_err(Failure::from)
        }),
        Command::Simulate(args) => block_on(handlers::simulate(args)),
        Command::Bench(BenchCommand::Client(args)) => block_on(handlers::bench_client(args)),
        Command::Bench(BenchCommand::Apply(args)) => block_on(handlers::bench_apply(args)),
    };
    match outcome {
        Ok(code) => code,
        Err(Failure::InvalidInput(message)) => {
            eprintln!("error: {message}");
            ExitCode::from(2)
        }
        Err(Failure::Failed { category, error }) => {
            tracing::debug!(category, "Command failed");
            eprintln!("error: {}", crate::error_chain(&*error));
            ExitCode::from(1)
        }
    }
}

fn block_on<F: Future<Output = Result<ExitCode, Failure>>>(future: F) -> Result<ExitCode, Failure> {
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(|e| Failure::failed("Runtime", e))?;
    runtime.block_on(future)
}
