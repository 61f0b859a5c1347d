//! Label sets, with Goma's label names. Route names are shared `Arc<str>`s and methods static
//! strings, so building a label set on the request path never allocates.

use prometheus_client::encoding::{EncodeLabel, EncodeLabelSet, LabelSetEncoder};
use std::fmt::Error;
use std::sync::Arc;

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct RouteLabel {
    pub name: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct RouteMethod {
    pub name: Arc<str>,
    pub method: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct StatusLabels {
    pub status: u16,
    pub name: Arc<str>,
    pub method: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct ClusterLabel {
    pub cluster: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct HandshakeLabels {
    pub port: u16,
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct TypeLabel {
    pub r#type: &'static str,
}

pub(super) fn label(e: &mut LabelSetEncoder, key: &str, value: &str) -> Result<(), Error> {
    (key, value).encode(e.encode_label())
}

impl EncodeLabelSet for RouteLabel {
    fn encode(&self, e: &mut LabelSetEncoder) -> Result<(), Error> {
        label(e, "name", &self.name)
    }
}

impl EncodeLabelSet for RouteMethod {
    fn encode(&self, e: &mut LabelSetEncoder) -> Result<(), Error> {
        label(e, "name", &self.name)?;
        label(e, "method", self.method)
    }
}

impl EncodeLabelSet for StatusLabels {
    fn encode(&self, e: &mut LabelSetEncoder) -> Result<(), Error> {
        label(e, "status", &self.status.to_string())?;
        label(e, "name", &self.name)?;
        label(e, "method", self.method)
    }
}

impl EncodeLabelSet for ClusterLabel {
    fn encode(&self, e: &mut LabelSetEncoder) -> Result<(), Error> {
        label(e, "cluster", &self.cluster)
    }
}

impl EncodeLabelSet for HandshakeLabels {
    fn encode(&self, e: &mut LabelSetEncoder) -> Result<(), Error> {
        label(e, "port", &self.port.to_string())?;
        label(e, "result", self.result)
    }
}

impl EncodeLabelSet for TypeLabel {
    fn encode(&self, e: &mut LabelSetEncoder) -> Result<(), Error> {
        label(e, "type", self.r#type)
    }
}
