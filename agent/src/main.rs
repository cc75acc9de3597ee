fn main() -> std::process::ExitCode {
    vigil_agent::cli::main()
}
