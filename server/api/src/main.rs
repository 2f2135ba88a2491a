//! The `cairn` binary. Everything lives in the library; this only hands over.

fn main() -> std::process::ExitCode {
    cairn_server::cli::main()
}
