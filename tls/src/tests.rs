//! Handshakes in memory between a client config of each mode and servers whose certificates
//! do or do not prove what the mode asks.

use std::io::Write;
use std::sync::Arc;

use rustls::pki_types::ServerName;
use rustls::{ClientConnection, ServerConnection};

use super::*;
use crate::test_certs::TestCa;

struct Files {
    _dir: tempdir::Dir,
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

mod tempdir {
    /// A directory removed on drop (enough for these tests; no extra dependency).
    pub struct Dir(pub std::path::PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A server certificate for `names` from `signer`, and the root `trusted` as a file.
fn files(trusted: &TestCa, signer: &TestCa, names: &[&str]) -> Files {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("tls-test-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let issued = signer.issue(names);
    let f = Files {
        ca: dir.join("ca.pem"),
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
        _dir: tempdir::Dir(dir),
    };
    std::fs::write(&f.ca, trusted.pem()).unwrap();
    std::fs::write(&f.cert, issued.cert_pem).unwrap();
    std::fs::write(&f.key, issued.key_pem).unwrap();
    f
}

/// Runs a handshake to its end in memory; the first error either side meets.
fn handshake(client: ClientConfig, server: ServerConfig, host: &str) -> Result<(), rustls::Error> {
    let name = ServerName::try_from(host.to_owned()).unwrap();
    let mut c = ClientConnection::new(Arc::new(client), name)?;
    let mut s = ServerConnection::new(Arc::new(server))?;
    for _ in 0..20 {
        if !c.is_handshaking() && !s.is_handshaking() {
            // Application data both ways proves the keys agree.
            c.writer().write_all(b"ping").unwrap();
            pump(&mut c, &mut s)?;
            return Ok(());
        }
        pump(&mut c, &mut s)?;
    }
    panic!("handshake did not finish");
}

fn pump(c: &mut ClientConnection, s: &mut ServerConnection) -> Result<(), rustls::Error> {
    let mut buf = Vec::new();
    while c.wants_write() {
        c.write_tls(&mut buf).unwrap();
    }
    let mut rd = &buf[..];
    while !rd.is_empty() {
        s.read_tls(&mut rd).unwrap();
    }
    s.process_new_packets()?;
    let mut buf = Vec::new();
    while s.wants_write() {
        s.write_tls(&mut buf).unwrap();
    }
    let mut rd = &buf[..];
    while !rd.is_empty() {
        c.read_tls(&mut rd).unwrap();
    }
    c.process_new_packets()?;
    Ok(())
}

fn cert_error(r: Result<(), rustls::Error>) -> String {
    match r {
        Err(rustls::Error::InvalidCertificate(e)) => format!("{e:?}"),
        other => panic!("expected a certificate error, got {other:?}"),
    }
}

#[test]
fn each_mode_accepts_what_it_should_and_refuses_the_rest() {
    let ca = TestCa::new("test CA");
    let other = TestCa::new("someone else's CA");
    let good = files(&ca, &ca, &["db.test"]);
    let foreign = files(&ca, &other, &["db.test"]);
    let server = |f: &Files| server_config(&f.cert, &f.key).unwrap();

    // verify-full: right name and root only.
    let full = |f: &Files| client_config(Verify::Full, Some(&f.ca)).unwrap();
    handshake(full(&good), server(&good), "db.test").unwrap();
    let e = cert_error(handshake(full(&good), server(&good), "elsewhere.test"));
    assert!(e.contains("NotValidForName"), "{e}");
    let e = cert_error(handshake(full(&foreign), server(&foreign), "db.test"));
    assert!(e.contains("UnknownIssuer"), "{e}");

    // verify-ca: any name, the right root.
    let chain = |f: &Files| client_config(Verify::Chain, Some(&f.ca)).unwrap();
    handshake(chain(&good), server(&good), "elsewhere.test").unwrap();
    let e = cert_error(handshake(chain(&foreign), server(&foreign), "db.test"));
    assert!(e.contains("UnknownIssuer"), "{e}");

    // require: encryption with anyone.
    let any = |f: &Files| client_config(Verify::Nothing, Some(&f.ca)).unwrap();
    handshake(any(&foreign), server(&foreign), "elsewhere.test").unwrap();
    // The Mozilla roots do not include a test CA.
    let e = cert_error(handshake(
        client_config(Verify::Full, None).unwrap(),
        server(&good),
        "db.test",
    ));
    assert!(e.contains("UnknownIssuer"), "{e}");
}

#[test]
fn bad_files_are_named_in_the_error() {
    let ca = TestCa::new("test CA");
    let f = files(&ca, &ca, &["db.test"]);
    let missing = f.ca.with_file_name("missing.pem");
    let e = client_config(Verify::Full, Some(&missing))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("root certificate file") && e.contains("missing.pem"),
        "{e}"
    );
    // A key file where the certificate should be: no certificate in it.
    let e = server_config(&f.key, &f.key).unwrap_err().to_string();
    assert!(
        e.contains("certificate file") && e.contains("no PEM certificate"),
        "{e}"
    );
    // A certificate with another's key.
    let g = files(&ca, &ca, &["db.test"]);
    let e = server_config(&f.cert, &g.key).unwrap_err().to_string();
    assert!(e.contains("do not make a pair"), "{e}");
}
