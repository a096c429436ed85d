//! The credential chain in order, the ECS role against a local fake metadata service, redaction.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::http::HeaderMap;
use axum::routing::{get, put};

use super::*;

fn key_config(secret: SecretSource) -> CredentialsSpec {
    CredentialsSpec::AccessKey {
        access_key_id: "cfg-id".into(),
        secret,
        security_token: None,
    }
}

const ENV_KEYS: &[(&str, &str)] = &[
    ("ALIBABA_CLOUD_ACCESS_KEY_ID", "env-id"),
    ("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "env-secret"),
    ("ALIBABA_CLOUD_SECURITY_TOKEN", "env-token"),
];

fn write_ini(dir: &Path, text: &str) -> PathBuf {
    let d = dir.join(".alibabacloud");
    std::fs::create_dir_all(&d).expect("mkdir");
    let p = d.join("credentials");
    std::fs::write(&p, text).expect("write ini");
    p
}

#[tokio::test]
async fn config_block_wins_over_environment_and_file() {
    let home = tempfile::tempdir().expect("tempdir");
    write_ini(
        home.path(),
        "[default]\naccess_key_id = ini-id\naccess_key_secret = ini-secret\n",
    );
    let env = Environment::new(ENV_KEYS, Some(home.path()));
    let cfg = key_config(SecretSource::Inline(Secret::new("cfg-secret")));
    let p = CredentialsProvider::resolve(Some(&cfg), &env).expect("resolves");
    assert_eq!(p.origin(), &Origin::ConfigFile);
    let c = p.get().await.expect("credential");
    assert_eq!(
        (c.access_key_id.as_str(), c.access_key_secret.expose()),
        ("cfg-id", "cfg-secret")
    );
}

#[tokio::test]
async fn secret_file_is_read_and_trimmed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let f = dir.path().join("secret");
    std::fs::write(&f, "file-secret\n").expect("write");
    let cfg = key_config(SecretSource::File(f.clone()));
    let p = CredentialsProvider::resolve(Some(&cfg), &Environment::default()).expect("resolves");
    assert_eq!(
        p.get().await.expect("cred").access_key_secret.expose(),
        "file-secret"
    );

    std::fs::write(&f, "\n").expect("write");
    let err = CredentialsProvider::resolve(Some(&cfg), &Environment::default()).expect_err("empty");
    assert!(err.to_string().contains("is empty"), "{err}");
    let missing = key_config(SecretSource::File(dir.path().join("nope")));
    let err =
        CredentialsProvider::resolve(Some(&missing), &Environment::default()).expect_err("missing");
    assert!(err.to_string().contains("nope"), "{err}");
}

#[tokio::test]
async fn the_systemd_credential_of_the_same_name_wins_over_the_file() {
    let host = tempfile::tempdir().expect("tempdir");
    let creds = tempfile::tempdir().expect("tempdir");
    let file = host.path().join("access-key-secret");
    let cfg = key_config(SecretSource::File(file.clone()));
    let dir = creds.path().display().to_string();
    let env = Environment::new(&[(CREDENTIALS_DIRECTORY, &dir)], None);
    let secret = |env: &Environment| read_secret_file(&file, env).map(|s| s.expose().to_owned());

    // Under systemd: LoadCredential= copied the file into $CREDENTIALS_DIRECTORY.
    std::fs::write(creds.path().join("access-key-secret"), "loaded\n").expect("write");
    assert_eq!(secret(&env).expect("from the credential"), "loaded");
    let p = CredentialsProvider::resolve(Some(&cfg), &env).expect("resolves");
    assert_eq!(
        p.get().await.expect("cred").access_key_secret.expose(),
        "loaded"
    );

    // The unit's empty SetCredential= fallback: the file itself is read.
    std::fs::write(creds.path().join("access-key-secret"), "").expect("write");
    std::fs::write(&file, "on-disk\n").expect("write");
    assert_eq!(secret(&env).expect("from the file"), "on-disk");
    // From a shell (no $CREDENTIALS_DIRECTORY) the same setting reads the file.
    assert_eq!(secret(&Environment::default()).expect("shell"), "on-disk");

    // Neither: the error names the key and the file.
    std::fs::remove_file(&file).expect("rm");
    let err = secret(&env).expect_err("nothing to read").to_string();
    assert!(
        err.contains("credentials.access_key_secret_file")
            && err.contains(&file.display().to_string()),
        "{err}"
    );
}

#[tokio::test]
async fn environment_wins_over_file() {
    let home = tempfile::tempdir().expect("tempdir");
    write_ini(
        home.path(),
        "[default]\naccess_key_id = ini-id\naccess_key_secret = ini-secret\n",
    );
    let env = Environment::new(ENV_KEYS, Some(home.path()));
    let p = CredentialsProvider::resolve(None, &env).expect("resolves");
    assert_eq!(p.origin(), &Origin::Environment);
    let c = p.get().await.expect("cred");
    assert_eq!(c.access_key_id, "env-id");
    assert_eq!(
        c.security_token.as_ref().map(Secret::expose),
        Some("env-token")
    );
}

#[tokio::test]
async fn file_profile_is_used_and_selected_by_env() {
    let home = tempfile::tempdir().expect("tempdir");
    let path = write_ini(
        home.path(),
        "# comment\n[default]\ntype = access_key\naccess_key_id = d-id\naccess_key_secret = d-secret\n\n[prod]\naccess_key_id = p-id\naccess_key_secret = p-secret\n[role]\ntype = ecs_ram_role\nrole_name = R\n[arn]\ntype = ram_role_arn\n",
    );
    let env = Environment::new(&[], Some(home.path()));
    let p = CredentialsProvider::resolve(None, &env).expect("default profile");
    assert_eq!(p.get().await.expect("cred").access_key_id, "d-id");

    let env = Environment::new(&[("ALIBABA_CLOUD_PROFILE", "prod")], Some(home.path()));
    let p = CredentialsProvider::resolve(None, &env).expect("prod profile");
    assert_eq!(
        p.origin(),
        &Origin::Profile {
            file: path.clone(),
            name: "prod".into()
        }
    );
    assert_eq!(p.get().await.expect("cred").access_key_id, "p-id");

    let p = CredentialsProvider::resolve(Some(&CredentialsSpec::Profile("role".into())), &env)
        .expect("role profile");
    assert_eq!(
        p.origin(),
        &Origin::EcsRamRole {
            role: Some("R".into())
        }
    );

    let err = CredentialsProvider::resolve(Some(&CredentialsSpec::Profile("arn".into())), &env)
        .expect_err("unsupported");
    assert!(err.to_string().contains("ram_role_arn"), "{err}");
    let env = Environment::new(&[("ALIBABA_CLOUD_PROFILE", "missing")], Some(home.path()));
    let err = CredentialsProvider::resolve(None, &env).expect_err("missing profile");
    assert!(err.to_string().contains("[missing]"), "{err}");
}

#[test]
fn nothing_found_with_metadata_disabled_is_a_clear_error() {
    let home = tempfile::tempdir().expect("tempdir");
    let env = Environment::new(
        &[("ALIBABA_CLOUD_ECS_METADATA_DISABLED", "true")],
        Some(home.path()),
    );
    let err = CredentialsProvider::resolve(None, &env).expect_err("nothing");
    assert!(err.to_string().contains("no credentials found"), "{err}");
}

#[test]
fn falls_back_to_the_ecs_role_last() {
    let home = tempfile::tempdir().expect("tempdir");
    let env = Environment::new(
        &[("ALIBABA_CLOUD_ECS_METADATA", "MyRole")],
        Some(home.path()),
    );
    // Resolving does not contact the metadata service; only `get` does.
    let p = CredentialsProvider::resolve(None, &env).expect("resolves");
    assert_eq!(
        p.origin(),
        &Origin::EcsRamRole {
            role: Some("MyRole".into())
        }
    );
}

/// A local stand-in for the ECS metadata service that insists on the IMDSv2 token.
async fn fake_metadata(expires_in: chrono::Duration) -> (String, Arc<AtomicUsize>) {
    let fetches = Arc::new(AtomicUsize::new(0));
    let counter = fetches.clone();
    let app = Router::new()
        .route("/latest/api/token", put(|h: HeaderMap| async move {
            assert_eq!(
                h.get("x-aliyun-ecs-metadata-token-ttl-seconds").and_then(|v| v.to_str().ok()),
                Some("21600")
            );
            "imds-token"
        }))
        .route("/latest/meta-data/ram/security-credentials/", get(|| async { "MyRole\n" }))
        .route(
            "/latest/meta-data/ram/security-credentials/MyRole",
            get(move |h: HeaderMap| {
                let counter = counter.clone();
                async move {
                    if h.get("x-aliyun-ecs-metadata-token").and_then(|v| v.to_str().ok()) != Some("imds-token") {
                        return (axum::http::StatusCode::UNAUTHORIZED, String::new());
                    }
                    let n = counter.fetch_add(1, Ordering::SeqCst);
                    let exp = (Utc::now() + expires_in).format("%Y-%m-%dT%H:%M:%SZ");
                    (
                        axum::http::StatusCode::OK,
                        format!(
                            r#"{{"Code":"Success","AccessKeyId":"STS.id{n}","AccessKeySecret":"sts-secret","SecurityToken":"sts-token","Expiration":"{exp}","LastUpdated":"2026-01-01T00:00:00Z"}}"#
                        ),
                    )
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), fetches)
}

#[tokio::test]
async fn ecs_role_credentials_are_fetched_with_imdsv2_and_cached() {
    let (endpoint, fetches) = fake_metadata(chrono::Duration::hours(6)).await;
    let env = Environment::new(&[("CAS_RENEWD_ECS_METADATA_ENDPOINT", &endpoint)], None);
    let cfg = CredentialsSpec::EcsRamRole {
        role_name: String::new(),
        metadata_endpoint: None,
    };
    let p = CredentialsProvider::resolve(Some(&cfg), &env).expect("resolves");
    let c = p.get().await.expect("fetched");
    assert_eq!(c.access_key_id, "STS.id0");
    assert_eq!(
        c.security_token.as_ref().map(Secret::expose),
        Some("sts-token")
    );
    assert!(c.expiration.is_some());
    p.get().await.expect("cached");
    assert_eq!(
        fetches.load(Ordering::SeqCst),
        1,
        "a fresh credential is reused"
    );
}

#[tokio::test]
async fn ecs_role_credentials_are_refreshed_before_they_expire() {
    // Expires in 100 s: inside the 180 s refresh margin, so every use refreshes.
    let (endpoint, fetches) = fake_metadata(chrono::Duration::seconds(100)).await;
    let url = reqwest::Url::parse(&endpoint).expect("url");
    let cfg = CredentialsSpec::EcsRamRole {
        role_name: "MyRole".into(),
        metadata_endpoint: Some(url),
    };
    let p = CredentialsProvider::resolve(Some(&cfg), &Environment::default()).expect("resolves");
    assert_eq!(p.get().await.expect("first").access_key_id, "STS.id0");
    assert_eq!(p.get().await.expect("second").access_key_id, "STS.id1");
    assert_eq!(fetches.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn unreachable_metadata_service_is_a_clear_error() {
    // Bind then drop a listener so the port is very likely closed.
    let addr = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind")
        .local_addr()
        .expect("addr");
    let url = reqwest::Url::parse(&format!("http://{addr}")).expect("url");
    let cfg = CredentialsSpec::EcsRamRole {
        role_name: "R".into(),
        metadata_endpoint: Some(url),
    };
    let env = Environment::new(&[("ALIBABA_CLOUD_IMDSV1_DISABLED", "true")], None);
    let p = CredentialsProvider::resolve(Some(&cfg), &env).expect("resolves");
    let err = p.get().await.expect_err("unreachable");
    assert!(
        err.to_string()
            .contains("ECS metadata service at http://127.0.0.1"),
        "{err}"
    );
}

#[tokio::test]
async fn debug_output_never_shows_secrets() {
    let cfg = CredentialsSpec::AccessKey {
        access_key_id: "id".into(),
        secret: SecretSource::Inline(Secret::new("super-secret-value")),
        security_token: Some(Secret::new("sts-token-value")),
    };
    let p = CredentialsProvider::resolve(Some(&cfg), &Environment::default()).expect("resolves");
    let c = p.get().await.expect("cred");
    for shown in [format!("{p:?}"), format!("{c:?}"), format!("{cfg:?}")] {
        assert!(!shown.contains("super-secret-value"), "{shown}");
        assert!(!shown.contains("sts-token-value"), "{shown}");
    }
}
