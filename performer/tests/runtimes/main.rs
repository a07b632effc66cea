//! The performer runtimes against the real example performer, linked as one test binary:
//! `process` (local processes and remote endpoints) and `docker` (a real Docker Engine).

mod docker;
mod process;
