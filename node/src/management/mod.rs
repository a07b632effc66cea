//! The management API (DESIGN §7): `ExecutorManagementService` on its own listener, and the
//! challenge scheme that authenticates it.

pub(crate) mod auth;
mod client;
mod service;

pub use auth::sign_request;
pub use client::AdminClient;
pub use service::{Management, image_reference, methods, serve};
