//! Performer runtimes: where an AVS's tasks actually execute.
//!
//! Will own (DESIGN §7): the runtime interface's implementations — `docker` (containers managed
//! through the Docker Engine API with bollard: private bridge network, no published ports,
//! hardened by default, labelled for adoption), `process` (a local executable started with
//! `PORT`) and `remote` (an endpoint the node does not manage) — plus health checks
//! (`grpc.health.v1.Health/Check` must say SERVING), restarts with capped backoff and crash-loop
//! detection, blue/green deploys, and the gRPC client for the Hourglass `PerformerService`.
//!
//! Does not own: which performer serves which task (the node's pipeline), or the management API
//! (the node). The runtime trait lives here with its implementations, because the node depends on
//! this crate and not the other way round.
