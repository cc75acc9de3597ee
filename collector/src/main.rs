//! The `vigil-collector` binary; all logic lives in the library.

fn main() -> std::process::ExitCode {
    match vigil_collector::main() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("vigil-collector: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
