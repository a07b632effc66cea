//! The keystore formats from outside the crate, linked as one test binary: the shared vectors,
//! round trips, malformed and hostile input.

mod malformed;
mod no_panic;
mod roundtrip;
mod vectors;
