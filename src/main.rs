use std::process::ExitCode;

/// glibc's allocator keeps argon2's 19 MiB working areas resident in per-thread arenas
/// (hundreds of MiB under a cold-path flood); mimalloc returns them to the system.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    match portcullis::cli::run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: the error and its causes, never a backtrace of secrets.
            eprintln!("portcullis: {e:#}");
            ExitCode::FAILURE
        }
    }
}
