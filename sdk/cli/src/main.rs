//! The `cairn-plugin` binary. Everything lives in the library; this only hands over.

fn main() -> std::process::ExitCode {
    cairn_plugin_cli::main()
}
