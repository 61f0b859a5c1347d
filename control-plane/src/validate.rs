//! `sluice validate`: every problem in a directory of manifests, without serving anything.

use crate::model::{Object, ObjectKey};
use crate::provider::file::load_dir;
use crate::translate::goma::{translate_gateway, translate_route};
use std::collections::BTreeMap;
use std::path::Path;

#[derive(Debug, Default)]
pub struct Report {
    pub objects: usize,
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
}

pub fn validate_dir(dir: &Path) -> Report {
    let (objects, diagnostics) = load_dir(dir);
    let mut report = Report {
        objects: objects.len(),
        errors: diagnostics.iter().map(|d| d.to_string()).collect(),
        warnings: Vec::new(),
    };
    let by_key: BTreeMap<ObjectKey, Object> =
        objects.iter().map(|o| (o.key(), o.clone())).collect();
    for o in &objects {
        let key = o.key();
        match o {
            Object::GomaGateway(g) => match translate_gateway(g) {
                Ok((_, warnings)) => report
                    .warnings
                    .extend(warnings.into_iter().map(|w| format!("{key}: {w}"))),
                Err(e) => report.errors.push(e.to_string()),
            },
            Object::GomaRoute(r) => match translate_route(r, &by_key) {
                Ok(Some(t)) => report
                    .warnings
                    .extend(t.warnings.into_iter().map(|w| format!("{key}: {w}"))),
                Ok(None) => {}
                Err(e) => report.errors.push(e.to_string()),
            },
            _ => {}
        }
    }
    report
}
