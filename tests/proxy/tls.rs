//! The proxy's TLS listener: a client that trusts only a test CA pushes through `https://`, and
//! HTTP/2 is negotiated by ALPN.

use std::process::Command;

use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};

use crate::support::{
    Registry, Regkeeper,
    image::{ImageSpec, Layout, skopeo},
    process::run_ok,
};

struct TestCa {
    dir: tempfile::TempDir,
}

impl TestCa {
    /// A CA and a server certificate for 127.0.0.1/localhost, as PEM files.
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "regkeeper test CA");
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let key = KeyPair::generate().unwrap();
        let params =
            CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
        let cert = params.signed_by(&key, &issuer).unwrap();
        std::fs::create_dir_all(dir.path().join("certs.d")).unwrap();
        std::fs::write(dir.path().join("certs.d/ca.crt"), ca.pem()).unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        std::fs::write(dir.path().join("tls.crt"), cert.pem()).unwrap();
        std::fs::write(dir.path().join("tls.key"), key.serialize_pem()).unwrap();
        Self { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }
}

#[test]
fn client_trusting_test_ca_pushes_over_https_and_gets_h2() {
    let ca = TestCa::new();
    let registry = Registry::start();
    let proxy = Regkeeper::start_with(
        &registry.url(),
        &format!(
            "tls:\n  cert: {}\n  key: {}\n",
            ca.path("tls.crt"),
            ca.path("tls.key")
        ),
    );
    let work = tempfile::tempdir().unwrap();
    let mut layout = Layout::new(work.path());
    let manifest = layout.add_image(&ImageSpec::default());
    layout.tag("v1", &manifest);

    // skopeo verifies the proxy's certificate against the test CA only.
    let remote = format!("docker://{}/secure/app:v1", proxy.host());
    let certs = ca.path("certs.d");
    skopeo(&[
        "copy",
        "--dest-cert-dir",
        &certs,
        &format!("oci:{}:v1", layout.dir.display()),
        &remote,
    ]);
    let raw = skopeo(&["inspect", "--cert-dir", &certs, "--raw", &remote]);
    assert_eq!(
        crate::support::image::sha256(raw.as_bytes()),
        manifest.digest
    );

    // Without the CA the client refuses the certificate.
    let untrusted = Command::new("skopeo")
        .args(["inspect", "--raw", &remote])
        .output()
        .unwrap();
    assert!(!untrusted.status.success());

    // ALPN: curl asks for HTTP/2 and gets it.
    let version = run_ok(Command::new("curl").args([
        "-sS",
        "--http2",
        "--cacert",
        &ca.path("ca.pem"),
        "-o",
        "/dev/null",
        "-w",
        "%{http_version}",
        &format!("https://{}/v2/", proxy.host()),
    ]));
    assert_eq!(String::from_utf8_lossy(&version.stdout), "2");
}

#[tokio::test]
async fn https_upstream_is_verified_against_the_configured_ca_bundle() {
    let ca = TestCa::new();
    let registry = Registry::start_tls(&ca.path("tls.crt"), &ca.path("tls.key"));
    assert!(registry.url().starts_with("https://"));
    let client = crate::support::http::HttpClient::default();

    // Trusting only the public web roots, the test CA's certificate is refused: 502, not a
    // silent downgrade.
    let strict = Regkeeper::start(&registry.url());
    let refused = client.get(&format!("{}/v2/", strict.url()), &[]).await;
    assert_eq!(refused.status, 502);
    assert_eq!(refused.json()["errors"][0]["code"], "UNAVAILABLE");

    // With the CA bundle configured, pushes go through to the https upstream.
    let trusting = Regkeeper::start_env(
        &registry.url(),
        &[("REGKEEPER_UPSTREAM_CA_BUNDLE", &ca.path("ca.pem"))],
    );
    let work = tempfile::tempdir().unwrap();
    let mut layout = Layout::new(work.path());
    // A layer of a few MiB: its pull back streams through many reads, not one.
    let manifest = layout.add_image(&ImageSpec {
        layers: vec![crate::support::image::tar_gz_layer(
            "noise.bin",
            &crate::support::image::noise(3 << 20, 5),
            true,
        )],
        ..ImageSpec::default()
    });
    layout.tag("v1", &manifest);
    let remote = format!("docker://{}/tls/upstream:v1", trusting.host());
    crate::support::image::skopeo_copy(&format!("oci:{}:v1", layout.dir.display()), &remote, &[]);
    assert_eq!(
        crate::support::image::remote_digest(&remote),
        manifest.digest
    );
    // And pulls come back whole over TLS: skopeo checks every blob against its digest.
    let pulled = work.path().join("pulled");
    crate::support::image::skopeo_copy(&remote, &format!("oci:{}:v1", pulled.display()), &[]);

    // insecureSkipVerify accepts the certificate without the bundle (labs only) and says so.
    let lab = Regkeeper::start_env(
        &registry.url(),
        &[("REGKEEPER_UPSTREAM_INSECURE_SKIP_VERIFY", "true")],
    );
    let base = client.get(&format!("{}/v2/", lab.url()), &[]).await;
    assert_eq!(base.status, 200);
    assert!(lab.logs().contains("insecureSkipVerify"), "{}", lab.logs());
}
