//! Generated protocol types: the delta discovery transport (`discovery`) and the config resources (`config`).

pub mod codec;

pub mod google {
    pub mod rpc {
        tonic::include_proto!("google.rpc");
    }
}

/// Module nesting mirrors the proto packages, which generated cross-package paths rely on.
pub mod sluice {
    pub mod discovery {
        pub mod v1 {
            tonic::include_proto!("sluice.discovery.v1");
        }
    }
    pub mod config {
        // Middleware kinds differ in size; they are built once per configuration, not per request.
        #[allow(clippy::large_enum_variant)]
        pub mod v1 {
            tonic::include_proto!("sluice.config.v1");
        }
    }
}

pub use sluice::config::v1 as config;
pub use sluice::discovery::v1 as discovery;

/// Encoded `FileDescriptorSet` of every message, for gRPC reflection (grpcurl expands `Any` with it).
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("sluice_descriptor");

/// Type URLs of the resource types, in make-before-break order: what is referenced comes first.
pub mod type_url {
    pub const SECRET: &str = "type.googleapis.com/sluice.config.v1.Secret";
    pub const CLUSTER: &str = "type.googleapis.com/sluice.config.v1.Cluster";
    pub const LISTENER: &str = "type.googleapis.com/sluice.config.v1.Listener";
    pub const ROUTE: &str = "type.googleapis.com/sluice.config.v1.Route";

    /// Every type, referenced types first: upserts go in this order, removals in reverse.
    pub const ALL: [&str; 4] = [SECRET, CLUSTER, LISTENER, ROUTE];
}
