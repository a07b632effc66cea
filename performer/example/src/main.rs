//! The example performer's command line.

use std::net::SocketAddr;
use std::process::ExitCode;

use avsnode_example_performer::{Options, Stopped, serve};
use clap::Parser;
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};

#[tokio::main]
#[allow(clippy::print_stderr)]
async fn main() -> ExitCode {
    let options = Options::parse();
    if options.exit_after == Some(0) {
        eprintln!("example performer: exiting at once (--exit-after 0)");
        return ExitCode::FAILURE;
    }
    let addr = SocketAddr::new(options.host, options.port);
    let listener = match TcpListener::bind(addr).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("example performer: cannot listen on {addr}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let local = listener.local_addr().unwrap_or(addr);
    eprintln!("example performer listening on {local}");
    match serve(listener, options, shutdown_signal()).await {
        Ok(Stopped::Shutdown) => ExitCode::SUCCESS,
        // A deliberate crash for the node's restart tests.
        Ok(Stopped::TaskLimit) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("example performer: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Completes on SIGINT or SIGTERM (container runtimes stop with SIGTERM).
async fn shutdown_signal() {
    match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(mut int), Ok(mut term)) => {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
        }
        // Without signal handlers, stop only when killed.
        _ => std::future::pending().await,
    }
}
