//! The `vigil-collector` binary; all logic lives in the library.

/// jemalloc: ingest makes and drops many small strings per point on several threads at
/// once, where it is about twice as fast as the system allocator (ARCHITECTURE.md).
#[cfg(unix)]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    match vigil_collector::main() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("vigil-collector: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
