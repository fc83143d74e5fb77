//! Authentication passes through untouched: Distribution with token auth (`auth.token`) and a tiny
//! token server in the test. The client gets the upstream's 401 challenge, fetches a token from
//! the realm itself, and pushes through the proxy with it.

use std::{
    io::{BufRead, BufReader, Write},
    net::TcpListener,
    sync::{Arc, Mutex},
    time::{SystemTime, UNIX_EPOCH},
};

use base64::{
    Engine,
    engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD},
};
use rcgen::{CertificateParams, KeyPair};
use ring::{
    rand::SystemRandom,
    signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair},
};
use serde_json::json;

use crate::support::{
    Registry, Regkeeper,
    http::HttpClient,
    image::{ImageSpec, Layout, skopeo_copy},
};

const USER: &str = "ci";
const PASSWORD: &str = "s3cret";
/// regkeeper's own account (for image configs and sync).
const READER: &str = "regkeeper";
const READER_PASSWORD: &str = "r3ader-only";
const SERVICE: &str = "regkeeper-test-registry";
const ISSUER: &str = "regkeeper-test-issuer";

/// Issues ES256 JWTs for `ci:s3cret`, granting what the `scope` parameters ask for.
struct TokenServer {
    realm: String,
    cert_pem: String,
    /// `Authorization` headers the server received (to show who asked for tokens).
    seen: Arc<Mutex<Vec<String>>>,
}

impl TokenServer {
    fn start() -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["token-issuer".into()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "regkeeper test token issuer");
        let cert = params.self_signed(&key).unwrap();
        let x5c = STANDARD.encode(cert.der());
        let signer = EcdsaKeyPair::from_pkcs8(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            &key.serialize_der(),
            &SystemRandom::new(),
        )
        .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let realm = format!("http://{}/token", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let seen_by_server = seen.clone();
        std::thread::spawn(move || {
            for mut stream in listener.incoming().flatten() {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut request_line = String::new();
                if reader.read_line(&mut request_line).is_err() {
                    continue;
                }
                let mut authorization = String::new();
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some((name, value)) = line.split_once(':')
                        && name.eq_ignore_ascii_case("authorization")
                    {
                        authorization = value.trim().to_string();
                    }
                }
                seen_by_server.lock().unwrap().push(authorization.clone());
                let accepted = [(USER, PASSWORD), (READER, READER_PASSWORD)]
                    .map(|(u, p)| format!("Basic {}", STANDARD.encode(format!("{u}:{p}"))));
                let response = if accepted.contains(&authorization) {
                    let path = request_line.split_whitespace().nth(1).unwrap_or("/");
                    let token = issue(&signer, &x5c, path);
                    let body = json!({"token": token, "access_token": token, "expires_in": 300})
                        .to_string();
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    )
                } else {
                    "HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                        .to_string()
                };
                let _ = stream.write_all(response.as_bytes());
            }
        });
        Self {
            realm,
            cert_pem: cert.pem(),
            seen,
        }
    }
}

/// A JWT granting the scopes in the query, signed with the issuer key, chain in `x5c`.
fn issue(signer: &EcdsaKeyPair, x5c: &str, path: &str) -> String {
    let query = path.split_once('?').map(|(_, q)| q).unwrap_or("");
    let access: Vec<serde_json::Value> = query
        .split('&')
        .filter_map(|pair| pair.strip_prefix("scope="))
        .map(|scope| {
            scope
                .replace("%3A", ":")
                .replace("%2F", "/")
                .replace("%2C", ",")
                .replace("%2A", "*")
        })
        .filter_map(|scope| {
            let mut parts = scope.splitn(3, ':');
            let (kind, name, actions) = (parts.next()?, parts.next()?, parts.next()?);
            Some(json!({"type": kind, "name": name, "actions": actions.split(',').collect::<Vec<_>>()}))
        })
        .collect();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let header = json!({"alg": "ES256", "typ": "JWT", "x5c": [x5c]});
    let claims = json!({
        "iss": ISSUER, "sub": USER, "aud": SERVICE,
        "exp": now + 300, "nbf": now - 10, "iat": now, "jti": format!("{now}-{}", access.len()),
        "access": access,
    });
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let signature = signer
        .sign(&SystemRandom::new(), signing_input.as_bytes())
        .unwrap();
    format!(
        "{signing_input}.{}",
        URL_SAFE_NO_PAD.encode(signature.as_ref())
    )
}

#[tokio::test]
async fn token_auth_challenge_passes_through_and_authenticated_push_works() {
    let tokens = TokenServer::start();
    let bundle_dir = tempfile::tempdir().unwrap();
    let bundle = bundle_dir.path().join("token-ca.pem");
    std::fs::write(&bundle, &tokens.cert_pem).unwrap();
    let registry = Registry::start_with(&format!(
        "auth:\n  token:\n    realm: {}\n    service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {}\n",
        tokens.realm,
        bundle.display()
    ));
    let proxy = Regkeeper::start(&registry.url());
    let client = HttpClient::default();

    // The challenge the client gets through the proxy is the upstream's, unchanged.
    let direct = client.get(&format!("{}/v2/", registry.url()), &[]).await;
    let proxied = client.get(&format!("{}/v2/", proxy.url()), &[]).await;
    assert_eq!(direct.status, 401);
    assert_eq!(proxied.status, 401);
    let challenge = proxied.header("www-authenticate");
    assert_eq!(challenge, direct.header("www-authenticate"));
    assert!(challenge.starts_with("Bearer realm=\""), "{challenge}");
    assert!(challenge.contains(&tokens.realm), "{challenge}");

    let work = tempfile::tempdir().unwrap();
    let mut layout = Layout::new(work.path());
    let manifest = layout.add_image(&ImageSpec::default());
    layout.tag("v1", &manifest);
    let remote = format!("docker://{}/secure/app:v1", proxy.host());
    let source = format!("oci:{}:v1", layout.dir.display());

    // Wrong password: the token server refuses, the push fails.
    let refused = std::process::Command::new("skopeo")
        .args([
            "copy",
            "--dest-tls-verify=false",
            "--dest-creds",
            &format!("{USER}:wrong"),
            &source,
            &remote,
        ])
        .output()
        .unwrap();
    assert!(!refused.status.success());

    // Right credentials: skopeo gets a token from the realm and pushes through the proxy.
    skopeo_copy(
        &source,
        &remote,
        &["--dest-creds", &format!("{USER}:{PASSWORD}")],
    );
    let anonymous = client
        .get(&format!("{}/v2/secure/app/tags/list", proxy.url()), &[])
        .await;
    assert_eq!(anonymous.status, 401, "regkeeper must not add credentials");
    let read_token = {
        // A token for reading, fetched as a client would.
        let url = format!(
            "{}?service={SERVICE}&scope=repository:secure/app:pull",
            tokens.realm
        );
        let basic = format!("Basic {}", STANDARD.encode(format!("{USER}:{PASSWORD}")));
        client.get(&url, &[("authorization", &basic)]).await.json()["token"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let bearer = format!("Bearer {read_token}");
    let tags = client
        .get(
            &format!("{}/v2/secure/app/tags/list", proxy.url()),
            &[("authorization", &bearer)],
        )
        .await;
    assert_eq!(tags.status, 200, "{:?}", tags.body);
    assert_eq!(tags.json()["tags"], json!(["v1"]));

    // The digest, read with credentials, is what was pushed.
    let inspected = std::process::Command::new("skopeo")
        .args([
            "inspect",
            "--tls-verify=false",
            "--raw",
            "--creds",
            &format!("{USER}:{PASSWORD}"),
            &remote,
        ])
        .output()
        .unwrap();
    assert!(inspected.status.success());
    assert_eq!(
        crate::support::image::sha256(&inspected.stdout),
        manifest.digest
    );

    // Tokens were asked for with the client's credentials by the client; regkeeper, which has
    // no credentials configured here, asked (for the image config) with none.
    let seen = tokens.seen.lock().unwrap();
    let client_basic = format!("Basic {}", STANDARD.encode(format!("{USER}:{PASSWORD}")));
    assert!(seen.contains(&client_basic), "{seen:?}");
    // `ci:` is three bytes, so its base64 is a prefix of every `ci:<password>` header.
    let any_ci_password = format!("Basic {}", STANDARD.encode(format!("{USER}:")));
    assert!(
        seen.iter()
            .all(|a| a.is_empty() || a.starts_with(&any_ci_password)),
        "{seen:?}"
    );
}

fn token_registry(tokens: &TokenServer, bundle_dir: &std::path::Path) -> Registry {
    let bundle = bundle_dir.join("token-ca.pem");
    std::fs::write(&bundle, &tokens.cert_pem).unwrap();
    Registry::start_with(&format!(
        "auth:\n  token:\n    realm: {}\n    service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {}\n",
        tokens.realm,
        bundle.display()
    ))
}

#[tokio::test]
async fn regkeeper_reads_configs_and_syncs_with_its_own_credentials() {
    let tokens = TokenServer::start();
    let bundle_dir = tempfile::tempdir().unwrap();
    let registry = token_registry(&tokens, bundle_dir.path());
    let own = [
        ("REGKEEPER_UPSTREAM_USERNAME", READER),
        ("REGKEEPER_UPSTREAM_PASSWORD", READER_PASSWORD),
    ];
    let proxy = Regkeeper::start_env(&registry.url(), &own);
    let work = tempfile::tempdir().unwrap();
    let mut layout = Layout::new(work.path());
    let manifest = layout.add_image(&ImageSpec {
        labels: &[("org.opencontainers.image.revision", "4444444ddddddd")],
        ..ImageSpec::default()
    });
    layout.tag("v1", &manifest);
    skopeo_copy(
        &format!("oci:{}:v1", layout.dir.display()),
        &format!("docker://{}/secure/app:v1", proxy.host()),
        &["--dest-creds", &format!("{USER}:{PASSWORD}")],
    );
    // The config was read with regkeeper's account: the label's commit is linked.
    let inspected = proxy
        .admin_until("/api/v1/inspect?reference=secure/app:v1", |i| {
            i["commits"].as_array().is_some_and(|c| !c.is_empty())
        })
        .await;
    assert_eq!(inspected["commits"][0]["commit"], "4444444ddddddd");
    let reader_basic = format!(
        "Basic {}",
        STANDARD.encode(format!("{READER}:{READER_PASSWORD}"))
    );
    assert!(tokens.seen.lock().unwrap().contains(&reader_basic));

    // sync crawls the protected registry with the same account (catalog scope included) …
    let sync_dir = tempfile::tempdir().unwrap();
    let config = crate::support::regkeeper::cli_config(sync_dir.path(), &registry.url(), "");
    let run = |env: &[(&str, &str)]| {
        crate::support::regkeeper::run_cli(&config, &["sync", "--output", "json"], env)
    };
    let report: serde_json::Value = serde_json::from_str(&run(&own).expect_ok()).unwrap();
    assert_eq!(report["tags_recorded"], 1, "{report:#}");
    // … and without credentials it fails, saying what to configure.
    std::fs::remove_dir_all(sync_dir.path().join("index")).unwrap();
    let anonymous = run(&[]);
    assert!(!anonymous.ok);
    assert!(
        anonymous.stderr.contains("upstream.credentials"),
        "{}",
        anonymous.stderr
    );
}
