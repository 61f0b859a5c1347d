//! Metrics of TCP, UDP and TLS listeners: connections (UDP: sessions) opened and refused, and
//! bytes relayed, by listener and protocol.

use super::labels::label;
use prometheus_client::encoding::{EncodeLabelSet, LabelSetEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use std::sync::Arc;

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct L4Labels {
    pub listener: Arc<str>,
    pub protocol: &'static str,
}

impl EncodeLabelSet for L4Labels {
    fn encode(&self, e: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        label(e, "listener", &self.listener)?;
        label(e, "protocol", self.protocol)
    }
}

#[derive(Default)]
pub struct L4Families {
    opened: Family<L4Labels, Counter>,
    refused: Family<L4Labels, Counter>,
    received: Family<L4Labels, Counter>,
    sent: Family<L4Labels, Counter>,
}

/// The counters of one listener, resolved once per connection or session.
#[derive(Clone, Debug, Default)]
pub struct L4Stats {
    /// Bytes from clients, relayed to backends.
    pub received: Counter,
    /// Bytes from backends, relayed to clients.
    pub sent: Counter,
}

impl L4Families {
    pub fn register(&self, r: &mut Registry) {
        r.register(
            "sluice_l4_connections",
            "Connections (UDP: sessions) forwarded by TCP, UDP and TLS listeners",
            self.opened.clone(),
        );
        r.register(
            "sluice_l4_refused",
            "Connections (UDP: sessions) closed without a backend: no route, no usable backend, or no ClientHello",
            self.refused.clone(),
        );
        r.register(
            "sluice_l4_received_bytes",
            "Bytes received from clients of TCP, UDP and TLS listeners",
            self.received.clone(),
        );
        r.register(
            "sluice_l4_sent_bytes",
            "Bytes sent to clients of TCP, UDP and TLS listeners",
            self.sent.clone(),
        );
    }

    /// Counts an opened connection and returns its byte counters.
    pub fn opened(&self, labels: &L4Labels) -> L4Stats {
        self.opened.get_or_create(labels).inc();
        L4Stats {
            received: self.received.get_or_create(labels).clone(),
            sent: self.sent.get_or_create(labels).clone(),
        }
    }

    pub fn refused(&self, labels: &L4Labels) {
        self.refused.get_or_create(labels).inc();
    }
}
