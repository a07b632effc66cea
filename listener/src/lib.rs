//! What every avsnode listener admits — the intake, the management API, `/metrics` and the remote
//! signer — so that no unauthenticated sender can hold what honest clients need:
//! [`connections`] gates connections and calls per listener and per source address, [`tls`]
//! serves TLS with certificates reloaded on SIGHUP and handshakes bounded in time and number.
//!
//! Which limits each of the node's listeners gets is the node's policy (`avsnode::listeners`).

pub mod connections;
pub mod tls;

pub use connections::{
    CallLimitLayer, ConnectionLimits, Connections, Gate, GatedListener, Guarded,
    HTTP1_REQUEST_LINE_MIN, HTTP2_PREFACE_LEN, bind, raise_open_files_limit,
};
pub use tls::{ClientCertificate, ServerTls, TlsConfig, TlsError};
