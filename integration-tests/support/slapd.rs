//! A real OpenLDAP `slapd` (Debian packages slapd and ldap-utils, installed when missing) on
//! free loopback ports (ldap:// with StartTLS, and ldaps://), with its own config, test
//! certificate and mdb database in a temporary directory.

use super::l4::TestPki;
use super::{TempDir, free_port};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BASE_DN: &str = "dc=example,dc=org";
pub const ADMIN_DN: &str = "cn=admin,dc=example,dc=org";
pub const ADMIN_PASSWORD: &str = "admin-secret";

pub struct Slapd {
    child: Child,
    /// ldap:// (StartTLS offered).
    pub port: u16,
    /// ldaps://, with a certificate from a private CA.
    pub tls_port: u16,
    _dir: TempDir,
}

impl Drop for Slapd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn install() {
    super::ensure_debian_packages(&["slapd", "ldap-utils"], || {
        std::path::Path::new("/usr/sbin/slapd").exists()
            && std::path::Path::new("/usr/sbin/slapadd").exists()
    });
}

impl Slapd {
    /// Starts slapd with `ldif` (entries under [`BASE_DN`]) loaded, once it accepts connections.
    pub fn start(ldif: &str) -> Slapd {
        install();
        let dir = TempDir::new("slapd");
        let db = dir.path().join("db");
        std::fs::create_dir_all(&db).expect("db dir");
        let (cert, key) = TestPki::new().leaf(&["localhost"]);
        dir.write("cert.pem", &cert);
        dir.write("key.pem", &key);
        let conf = format!(
            "include /etc/ldap/schema/core.schema\n\
             include /etc/ldap/schema/cosine.schema\n\
             include /etc/ldap/schema/nis.schema\n\
             include /etc/ldap/schema/inetorgperson.schema\n\
             pidfile {dir}/slapd.pid\n\
             TLSCertificateFile {dir}/cert.pem\n\
             TLSCertificateKeyFile {dir}/key.pem\n\
             modulepath /usr/lib/ldap\n\
             moduleload back_mdb\n\
             database mdb\n\
             maxsize 10485760\n\
             suffix \"{BASE_DN}\"\n\
             rootdn \"{ADMIN_DN}\"\n\
             rootpw {ADMIN_PASSWORD}\n\
             directory {db}\n",
            dir = dir.path().display(),
            db = db.display(),
        );
        dir.write("slapd.conf", &conf);
        let base = format!(
            "dn: {BASE_DN}\nobjectClass: dcObject\nobjectClass: organization\ndc: example\no: Example\n\n\
             dn: ou=people,{BASE_DN}\nobjectClass: organizationalUnit\nou: people\n\n{ldif}"
        );
        dir.write("seed.ldif", &base);
        let conf_path = dir.path().join("slapd.conf");
        let out = Command::new("/usr/sbin/slapadd")
            .arg("-f")
            .arg(&conf_path)
            .arg("-l")
            .arg(dir.path().join("seed.ldif"))
            .output()
            .expect("run slapadd");
        assert!(
            out.status.success(),
            "slapadd failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = free_port();
        let tls_port = free_port();
        let child = Command::new("/usr/sbin/slapd")
            .arg("-f")
            .arg(&conf_path)
            .args([
                "-h",
                &format!("ldap://127.0.0.1:{port}/ ldaps://127.0.0.1:{tls_port}/"),
                "-d",
                "0",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start slapd");
        let deadline = Instant::now() + Duration::from_secs(15);
        for p in [port, tls_port] {
            while std::net::TcpStream::connect(("127.0.0.1", p)).is_err() {
                assert!(Instant::now() < deadline, "slapd did not listen on {p}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Slapd {
            child,
            port,
            tls_port,
            _dir: dir,
        }
    }
}
