use std::process::ExitCode;

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
