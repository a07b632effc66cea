//! Every metric avsnode exports, declared in one place, and the HTTP server that exposes them.
//!
//! Will own (DESIGN §8): the `avsnode_*` metric families with their help texts and low-cardinality
//! labels (never task ids), registered at start-up so that a registration failure stops the node
//! instead of silently losing a metric; timer guards for stage latencies; and the `/metrics`,
//! `/healthz`, `/readyz` endpoints on the metrics listener.
