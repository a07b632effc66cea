//! The gRPC wire protocol of avsnode.
//!
//! Owns the `.proto` sources in `proto/` and the tonic/prost code generated from them at build time
//! (with protox, so no system `protoc` is needed). Two families:
//!
//! - **Hourglass-compatible** (`eigenlayer.hourglass.v1…`): `ExecutorService`,
//!   `ExecutorManagementService` and the performer's `PerformerService`. Package names, message
//!   names and field numbers are exactly those of the EigenLayer Hourglass executor, so an
//!   unmodified Hourglass aggregator and any Hourglass performer image talk to avsnode unchanged.
//! - **avsnode's own** (`avsnode.v1`): the streaming intake `TaskStream`; and
//!   (`avsnode.signer.v1`) the remote signer's `Signer` service.
//!
//! This crate holds no logic: validation, signing and the meaning of fields live in the node and
//! signer crates.

#![allow(
    unreachable_pub,
    missing_debug_implementations,
    clippy::all,
    rust_2018_idioms
)]

/// `TaskSubmission.version` of an Hourglass task: no signed deadline.
pub const HOURGLASS_TASK_VERSION: u32 = 1;

/// `TaskSubmission.version` of avsnode's signed-deadline layout: `deadline_unix_ms` (field 1001)
/// is part of the aggregator's signed message. Numbers from 1000 up are avsnode's, so Hourglass's
/// own next version (2) can never be mistaken for it.
pub const SIGNED_DEADLINE_TASK_VERSION: u32 = 1001;

/// The Hourglass packages, laid out so prost's relative paths between them resolve.
pub mod eigenlayer {
    pub mod hourglass {
        /// `package eigenlayer.hourglass.v1` (executor and management services).
        pub mod v1 {
            tonic::include_proto!("eigenlayer.hourglass.v1");

            /// `package eigenlayer.hourglass.v1.common`.
            pub mod common {
                tonic::include_proto!("eigenlayer.hourglass.v1.common");
            }

            /// `package eigenlayer.hourglass.v1.performer` (what performers serve).
            pub mod performer {
                tonic::include_proto!("eigenlayer.hourglass.v1.performer");
            }
        }
    }
}

/// avsnode's own packages.
pub mod avsnode {
    /// `package avsnode.v1`: the streaming intake.
    pub mod v1 {
        tonic::include_proto!("avsnode.v1");
    }

    /// `package avsnode.signer`.
    pub mod signer {
        /// `package avsnode.signer.v1`: the remote signer (`avsnode signer serve`).
        pub mod v1 {
            tonic::include_proto!("avsnode.signer.v1");
        }
    }
}

/// The remote signer's package, under a shorter name.
pub use avsnode::signer::v1 as signer;
/// avsnode's streaming package, under a shorter name.
pub use avsnode::v1 as stream;
/// The Hourglass executor package, under a shorter name.
pub use eigenlayer::hourglass::v1 as executor;
/// The Hourglass performer package, under a shorter name.
pub use eigenlayer::hourglass::v1::performer;

/// The encoded `FileDescriptorSet` of every proto above (with imports), for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/avsnode_descriptor.bin"));
