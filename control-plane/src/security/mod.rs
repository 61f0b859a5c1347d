//! Who may talk to the control plane: its own CA and the certificates it issues, how a pod's
//! bootstrap credential is authenticated, which pods are still alive, and who may inspect.
//!
//! Pure rules (identities, authorization, token files) are free of I/O; the Kubernetes calls
//! (CA Secret, TokenReview, the pod watch) are thin edges over them.

pub mod admin;
pub mod admin_cert;
pub mod admin_identity;
pub mod authorize;
pub mod ca;
pub mod ca_store;
pub mod identity;
pub mod pods;
pub mod revocation;
pub mod settings;
pub mod tokens;

pub use admin::{AdminAccess, AdminScope, AdminTokens};
pub use admin_identity::AdminIdentity;
pub use ca::{CertificateAuthority, IssuedCertificate};
pub use identity::{PeerCertificate, PodIdentity};
pub use pods::{PodLiveness, PodSet};
pub use revocation::{RevocationList, Revocations};
pub use settings::{Security, TlsMaterial};
pub use tokens::{Authenticator, BootstrapTokens, TokenReviewer};
