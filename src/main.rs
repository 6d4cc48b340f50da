//! The `moat` binary: everything lives in the library; see `moat --help`.

fn main() -> std::process::ExitCode {
    moat::cli::main()
}
