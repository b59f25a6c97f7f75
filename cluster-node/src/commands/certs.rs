//! `troupe-node certs`: a development CA and one certificate per node or client, for
//! mutual TLS. Production clusters should use their own PKI; SECURITY.md shows the
//! openssl commands that make the same files.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use time::{Duration, OffsetDateTime};

use crate::cli::CertsArgs;
use crate::exit;

/// Why certificates could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    /// A name is not usable as a file name and certificate name.
    #[error("{0:?} is not a usable name: use ASCII letters, digits, '-' and '_'")]
    BadName(String),
    /// Writing or reading a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// rcgen refused (a host that is neither an IP nor a DNS name, a bad CA key, ...).
    #[error("cannot make the certificate: {0}")]
    Cert(#[from] rcgen::Error),
    /// Only one of ca.pem and ca-key.pem exists.
    #[error("{0} has only one of ca.pem and ca-key.pem: remove it, or use another --dir")]
    HalfCa(PathBuf),
}

/// Runs `certs`.
pub fn run(a: CertsArgs) -> u8 {
    match make(&a) {
        Ok(written) => {
            for f in &written {
                println!("wrote {}", f.display());
            }
            let d = a.dir.display();
            let first = a.names.first().map(String::as_str).unwrap_or("n1");
            println!(
                "\nStart a node with:  --tls-cert {d}/{first}.pem --tls-key {d}/{first}-key.pem --tls-ca {d}/ca.pem\n\
                 These are development certificates: keep ca-key.pem secret, and use your own CA in production (see SECURITY.md)."
            );
            exit::OK
        }
        Err(e) => {
            eprintln!("troupe-node certs: {e}");
            exit::BAD_INPUT
        }
    }
}

/// The CA's parameters: always the same name and usages, so that a CA key read back from
/// ca-key.pem signs certificates that chain to the ca.pem made with it.
fn ca_params(days: u32) -> Result<CertificateParams, rcgen::Error> {
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    p.distinguished_name
        .push(DnType::CommonName, "Troupe development CA");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    validity(&mut p, days);
    Ok(p)
}

fn validity(p: &mut CertificateParams, days: u32) {
    let now = OffsetDateTime::now_utc();
    p.not_before = now - Duration::hours(1);
    p.not_after = now + Duration::days(i64::from(days.max(1)));
}

/// Makes (or reuses) the CA and one certificate per name; answers the files written.
pub fn make(a: &CertsArgs) -> Result<Vec<PathBuf>, CertsError> {
    for n in &a.names {
        if n.is_empty()
            || !n
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(CertsError::BadName(n.clone()));
        }
    }
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| CertsError::Io { path, source }
    };
    std::fs::create_dir_all(&a.dir).map_err(io(&a.dir))?;
    let mut written = Vec::new();
    let (ca_cert, ca_key) = (a.dir.join("ca.pem"), a.dir.join("ca-key.pem"));
    let issuer = match (ca_cert.exists(), ca_key.exists()) {
        (true, true) => {
            let pem = std::fs::read_to_string(&ca_key).map_err(io(&ca_key))?;
            Issuer::new(ca_params(a.days)?, KeyPair::from_pem(&pem)?)
        }
        (false, false) => {
            let key = KeyPair::generate()?;
            let params = ca_params(a.days)?;
            let cert = params.self_signed(&key)?;
            write(&ca_key, &key.serialize_pem(), true)?;
            write(&ca_cert, &cert.pem(), false)?;
            written.extend([ca_cert.clone(), ca_key.clone()]);
            Issuer::new(params, key)
        }
        _ => return Err(CertsError::HalfCa(a.dir.clone())),
    };
    for name in &a.names {
        let mut sans = vec![name.clone()];
        sans.extend(a.hosts.iter().filter(|h| *h != name).cloned());
        let mut p = CertificateParams::new(sans)?;
        p.distinguished_name.push(DnType::CommonName, name.as_str());
        p.use_authority_key_identifier_extension = true;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        // Every member both accepts and dials connections.
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        validity(&mut p, a.days);
        let key = KeyPair::generate()?;
        let cert = p.signed_by(&key, &issuer)?;
        let (cert_file, key_file) = (
            a.dir.join(format!("{name}.pem")),
            a.dir.join(format!("{name}-key.pem")),
        );
        write(&key_file, &key.serialize_pem(), true)?;
        write(&cert_file, &cert.pem(), false)?;
        written.extend([cert_file, key_file]);
    }
    Ok(written)
}

/// Writes `text` to `path`; private keys are readable by their owner only.
fn write(path: &Path, text: &str, private: bool) -> Result<(), CertsError> {
    let err = |source| CertsError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(if private { 0o600 } else { 0o644 })
        .open(path)
        .map_err(err)?;
    f.write_all(text.as_bytes()).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use troupe_runtime::tls::TlsFiles;

    fn args(dir: &Path, names: &[&str]) -> CertsArgs {
        CertsArgs {
            dir: dir.to_path_buf(),
            names: names.iter().map(|s| s.to_string()).collect(),
            hosts: vec!["localhost".into(), "127.0.0.1".into()],
            days: 30,
        }
    }

    #[test]
    fn makes_loadable_certificates_and_reuses_the_ca() {
        let dir = std::env::temp_dir().join(format!("troupe-certs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let first = make(&args(&dir, &["n1"])).expect("make");
        assert!(first.iter().any(|f| f.ends_with("ca.pem")));
        let ca = std::fs::read(dir.join("ca.pem")).expect("ca");
        // A later run adds a member under the same CA.
        let second = make(&args(&dir, &["n2"])).expect("make again");
        assert!(!second.iter().any(|f| f.ends_with("ca.pem")));
        assert_eq!(std::fs::read(dir.join("ca.pem")).expect("ca"), ca);
        for n in ["n1", "n2"] {
            TlsFiles {
                cert: dir.join(format!("{n}.pem")),
                key: dir.join(format!("{n}-key.pem")),
                ca: dir.join("ca.pem"),
            }
            .load()
            .unwrap_or_else(|e| panic!("{n}: {e}"));
        }
        let mode = std::fs::metadata(dir.join("n1-key.pem"))
            .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777)
            .unwrap_or(0);
        assert_eq!(mode, 0o600);
        assert!(matches!(
            make(&args(&dir, &["../evil"])),
            Err(CertsError::BadName(_))
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
