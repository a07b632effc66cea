//! The example performer's command line.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    avsnode_example_performer::run(avsnode_example_performer::Options::parse())
}
