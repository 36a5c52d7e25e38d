//! The `hxp-events` binary: everything lives in the library (`cli`).

fn main() -> std::process::ExitCode {
    hxp_events::cli::main()
}
