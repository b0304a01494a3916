//! The `groupban-operator` binary: parses the command line and hands over.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    groupban_operator::cli::main()
}
