//! Access-log events carrying fields named at runtime (the accessLog middleware's
//! `header.x-user`, `query.page`, ...), so they are real fields in both log formats (JSON keys,
//! `key=value` in text) rather than one opaque string.
//!
//! `tracing` field names are static: each distinct list of extra names gets one callsite,
//! built once and kept for the life of the process (the lists come from configuration, so there
//! are few; past [`MAX_CALLSITES`] the caller falls back to a single joined field).

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, OnceLock, RwLock};
use tracing_core::callsite::{Callsite, Identifier};
use tracing_core::field::FieldSet;
use tracing_core::metadata::Kind;
use tracing_core::subscriber::Interest;
use tracing_core::{Level, Metadata};

/// The fields every access-log line has, in order, before the extra ones.
pub(super) const BASE_FIELDS: [&str; 13] = [
    "message",
    "method",
    "path",
    "host",
    "status",
    "route",
    "cluster",
    "endpoint",
    "duration_ms",
    "request_bytes",
    "response_bytes",
    "client_ip",
    "request_id",
];

/// Distinct extra-field lists given their own callsite.
pub(super) const MAX_CALLSITES: usize = 1024;

/// A callsite made at runtime; its metadata is set right after it is leaked (it needs the
/// callsite's own address) and before it is registered or used.
struct RuntimeCallsite {
    meta: OnceLock<Metadata<'static>>,
}

impl Callsite for RuntimeCallsite {
    fn set_interest(&self, _: Interest) {
        // Interest is asked of the dispatcher on every event instead (see `metadata`'s users).
    }

    fn metadata(&self) -> &Metadata<'_> {
        self.meta
            .get()
            .expect("runtime callsite metadata is set before registration")
    }
}

type ByNames = HashMap<Box<[Arc<str>]>, &'static Metadata<'static>>;

static CALLSITES: LazyLock<RwLock<ByNames>> = LazyLock::new(Default::default);

/// The metadata of an access event with [`BASE_FIELDS`] then `extra`; None when too many
/// distinct lists were seen.
pub(super) fn metadata(extra: &[Arc<str>]) -> Option<&'static Metadata<'static>> {
    if let Ok(known) = CALLSITES.read()
        && let Some(meta) = known.get(extra)
    {
        return Some(meta);
    }
    let mut known = CALLSITES
        .write()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(meta) = known.get(extra) {
        return Some(meta);
    }
    if known.len() >= MAX_CALLSITES {
        return None;
    }
    let names: Vec<&'static str> = BASE_FIELDS
        .iter()
        .copied()
        .chain(
            extra
                .iter()
                .map(|n| &*Box::leak(n.to_string().into_boxed_str())),
        )
        .collect();
    let names: &'static [&'static str] = Box::leak(names.into_boxed_slice());
    let callsite: &'static RuntimeCallsite = Box::leak(Box::new(RuntimeCallsite {
        meta: OnceLock::new(),
    }));
    let meta = Metadata::new(
        "access log",
        "access",
        Level::INFO,
        Some(file!()),
        Some(line!()),
        Some(module_path!()),
        FieldSet::new(names, Identifier(callsite)),
        Kind::EVENT,
    );
    let meta = callsite.meta.get_or_init(|| meta);
    tracing_core::callsite::register(callsite);
    known.insert(extra.into(), meta);
    Some(meta)
}
