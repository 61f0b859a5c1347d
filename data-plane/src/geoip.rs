//! The GeoIP country database (a MaxMind `.mmdb` file such as GeoLite2-Country) that geoBlock
//! middlewares look clients up in. A file is read into memory once per process and shared by
//! every middleware and snapshot that uses it.

use maxminddb::{PathElement, Reader};
use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

pub struct GeoIp {
    path: PathBuf,
    reader: Reader<Vec<u8>>,
}

impl std::fmt::Debug for GeoIp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeoIp").field("path", &self.path).finish()
    }
}

/// Databases already loaded, by path.
static LOADED: OnceLock<Mutex<HashMap<PathBuf, Arc<GeoIp>>>> = OnceLock::new();

impl GeoIp {
    /// The database at `path`, read and checked the first time it is asked for. The binary
    /// opens it at start so a bad file fails fast, before serving.
    pub fn open(path: &Path) -> Result<Arc<GeoIp>, String> {
        let loaded = LOADED.get_or_init(Default::default);
        if let Some(db) = loaded.lock().unwrap_or_else(|e| e.into_inner()).get(path) {
            return Ok(db.clone());
        }
        let db = Arc::new(GeoIp::read(path)?);
        let mut loaded = loaded.lock().unwrap_or_else(|e| e.into_inner());
        Ok(loaded.entry(path.to_owned()).or_insert(db).clone())
    }

    fn read(path: &Path) -> Result<GeoIp, String> {
        let reader = Reader::open_readfile(path)
            .map_err(|e| format!("GeoIP database {}: {e}", path.display()))?;
        Ok(GeoIp {
            path: path.to_owned(),
            reader,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The ISO 3166-1 alpha-2 code of the client's country (upper case); None when the
    /// database does not know the address.
    pub fn country(&self, ip: IpAddr) -> Option<[u8; 2]> {
        let found = self.reader.lookup(ip.to_canonical()).ok()?;
        let code: &str = found
            .decode_path(&[PathElement::Key("country"), PathElement::Key("iso_code")])
            .ok()
            .flatten()?;
        match code.as_bytes() {
            [a, b] if a.is_ascii_alphabetic() && b.is_ascii_alphabetic() => {
                Some([a.to_ascii_uppercase(), b.to_ascii_uppercase()])
            }
            _ => None,
        }
    }
}
