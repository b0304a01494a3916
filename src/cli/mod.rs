//! The command line: one subcommand per entry point. `args` says what
//! each takes, `handlers` turns it into the library's calls and an exit
//! code; each subcommand's work lives in its own module.
//!
//! Exit codes: 0 success, 1 the work did not fully succeed, 2 invalid input
//! (clap's own usage errors exit 2 as well); `apply` also exits 3 when a
//! signal or `--timeout` stopped it (what was confirmed is saved), and any
//! command 130 on a second signal (nothing more is waited for). `diff`
//! follows `kubectl diff`: 0 no difference, 1 differences, 2 an error.
//!
//! Installed (or linked) as `kubectl-groupban`, the binary is a kubectl
//! plugin: argv[0] decides, and only the usage text changes.

mod args;
mod check_command;
mod cluster_commands;
mod handlers;

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};

pub use args::Cli;
use args::{BenchCommand, Command};
pub use handlers::Failure;

/// The program's name when kubectl runs it as a plugin: `kubectl
/// groupban get` runs `kubectl-groupban get`.
pub const KUBECTL_PLUGIN_NAME: &str = "kubectl-groupban";

/// True when argv[0] names the kubectl plugin.
fn invoked_as_kubectl_plugin() -> bool {
    let program = std::env::args_os().next().unwrap_or_default();
    let name = std::path::Path::new(&program).file_name().unwrap_or_default().to_string_lossy().into_owned();
    name == KUBECTL_PLUGIN_NAME || name.strip_prefix(KUBECTL_PLUGIN_NAME).is_some_and(|rest| rest.starts_with('.'))
}

fn parse() -> Result<Cli, clap::Error> {
    let mut command = Cli::command();
    if invoked_as_kubectl_plugin() {
        // Usage and errors then read as the user typed it.
        command = command.name(KUBECTL_PLUGIN_NAME).bin_name("kubectl groupban");
    }
    Cli::from_arg_matches(&command.try_get_matches()?)
}

pub fn main() -> ExitCode {
    let cli = match parse() {
        Ok(cli) => cli,
        // Prints usage or help; exits 2 for errors, 0 for --help/--version.
        Err(error) => error.exit(),
    };
    crate::install_crypto_provider();
    // `diff` exits 1 for "differences found", as `kubectl diff` does, so
    // its errors exit 2.
    let failed_exit = if matches!(cli.command, Command::Diff(_)) { 2 } else { 1 };
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
        Command::Check(args) => block_on(check_command::check(args)),
        Command::Diff(args) => block_on(cluster_commands::diff(args)),
        Command::Get(args) => block_on(cluster_commands::get(args)),
        Command::Reconcile(args) => block_on(cluster_commands::reconcile(args)),
        Command::Suspend(args) => block_on(cluster_commands::suspend(args)),
        Command::Resume(args) => block_on(cluster_commands::resume(args)),
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
            ExitCode::from(failed_exit)
        }
    }
}

fn block_on<F: Future<Output = Result<ExitCode, Failure>>>(future: F) -> Result<ExitCode, Failure> {
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(|e| Failure::failed("Runtime", e))?;
    runtime.block_on(future)
}
