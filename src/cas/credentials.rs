//! Where the AccessKey comes from: the config file, the environment, the
//! `~/.alibabacloud/credentials` profile, or the ECS instance RAM role (IMDSv2).
//!
//! The first source that has credentials wins, in that order, as in Alibaba's own
//! SDKs. Temporary credentials (ECS role) are refreshed before they expire.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::Mutex;

use crate::secret::Secret;

/// Credentials given in the configuration file. Which kind wins is decided by
/// [`CredentialsProvider`]; this only says what the file holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialsSpec {
    AccessKey {
        access_key_id: String,
        secret: SecretSource,
        security_token: Option<Secret>,
    },
    Profile(String),
    EcsRamRole {
        /// Empty: ask the metadata service which role the instance has.
        role_name: String,
        metadata_endpoint: Option<reqwest::Url>,
    },
}

/// Where an AccessKey secret given in the configuration is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    Inline(Secret),
    File(PathBuf),
}

/// Where systemd puts a unit's `LoadCredential=` files.
pub const CREDENTIALS_DIRECTORY: &str = "CREDENTIALS_DIRECTORY";

/// The ECS metadata service's address on every instance.
pub const DEFAULT_METADATA_ENDPOINT: &str = "http://100.100.100.200";
/// Temporary credentials are replaced when less than this is left, as the SDK does.
pub const REFRESH_BEFORE_EXPIRY: Duration = Duration::from_secs(180);
/// IMDSv2 token lifetime the SDK asks for (6 h).
const METADATA_TOKEN_TTL_SECONDS: &str = "21600";

/// One set of credentials, possibly temporary.
#[derive(Clone, Debug)]
pub struct Credential {
    pub access_key_id: String,
    pub access_key_secret: Secret,
    pub security_token: Option<Secret>,
    /// When temporary credentials stop working; `None` for a long-lived AccessKey.
    pub expiration: Option<DateTime<Utc>>,
}

#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error(
        "credentials.access_key_secret_file: cannot read the AccessKey secret from {path}: {source}"
    )]
    SecretFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("credentials.access_key_secret_file: the AccessKey secret file {0} is empty")]
    EmptySecretFile(PathBuf),
    #[error("credentials file {path}: {message}")]
    Profile { path: PathBuf, message: String },
    #[error("ECS metadata service at {endpoint}: {message}")]
    Metadata { endpoint: String, message: String },
    #[error(
        "no credentials found: none in the config file, ALIBABA_CLOUD_ACCESS_KEY_ID/_SECRET are not set, {file} has no usable profile, and the ECS metadata service is disabled"
    )]
    NotFound { file: String },
}

/// The environment as the credential chain sees it, so tests need not mutate the
/// process environment.
#[derive(Debug, Clone, Default)]
pub struct Environment {
    vars: HashMap<String, String>,
    home: Option<PathBuf>,
}

impl Environment {
    /// Snapshot of the variables the chain reads, and `$HOME`.
    pub fn from_process() -> Self {
        let vars = std::env::vars()
            .filter(|(k, _)| {
                k.starts_with("ALIBABA_CLOUD_")
                    || k.starts_with("CAS_RENEWD_")
                    || k == CREDENTIALS_DIRECTORY
            })
            .collect();
        Environment {
            vars,
            home: std::env::var_os("HOME").map(PathBuf::from),
        }
    }

    pub fn new(vars: &[(&str, &str)], home: Option<&Path>) -> Self {
        Environment {
            vars: vars
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            home: home.map(Path::to_owned),
        }
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.vars
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    fn is_true(&self, key: &str) -> bool {
        self.get(key)
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
    }

    fn credentials_file(&self) -> Option<PathBuf> {
        match self.get("ALIBABA_CLOUD_CREDENTIALS_FILE") {
            Some(p) => Some(PathBuf::from(p)),
            None => self
                .home
                .as_ref()
                .map(|h| h.join(".alibabacloud").join("credentials")),
        }
    }

    fn metadata_endpoint(&self) -> String {
        // Not an SDK variable: lets tests and unusual networks point at another
        // metadata service without a config file.
        self.get("CAS_RENEWD_ECS_METADATA_ENDPOINT")
            .unwrap_or(DEFAULT_METADATA_ENDPOINT)
            .trim_end_matches('/')
            .to_owned()
    }
}

/// Which source the credentials came from, for logs and `status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    ConfigFile,
    Environment,
    Profile { file: PathBuf, name: String },
    EcsRamRole { role: Option<String> },
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::ConfigFile => f.write_str("config file"),
            Origin::Environment => f.write_str("environment (ALIBABA_CLOUD_ACCESS_KEY_ID)"),
            Origin::Profile { file, name } => {
                write!(f, "profile {name:?} in {}", file.display())
            }
            Origin::EcsRamRole { role: Some(r) } => write!(f, "ECS instance RAM role {r:?}"),
            Origin::EcsRamRole { role: None } => f.write_str("ECS instance RAM role"),
        }
    }
}

enum Source {
    Static(Credential),
    EcsRamRole(EcsRole),
}

struct EcsRole {
    endpoint: String,
    role_name: Option<String>,
    require_token: bool,
    http: reqwest::Client,
}

/// Hands out current credentials from the source the chain picked.
pub struct CredentialsProvider {
    origin: Origin,
    source: Source,
    cached: Mutex<Option<Credential>>,
}

impl std::fmt::Debug for CredentialsProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialsProvider")
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

impl CredentialsProvider {
    /// A provider for fixed credentials (tests, the simulator's demo).
    pub fn fixed(credential: Credential) -> Self {
        CredentialsProvider {
            origin: Origin::ConfigFile,
            source: Source::Static(credential),
            cached: Mutex::new(None),
        }
    }

    /// Walks the chain: config block, environment, credentials file, ECS role.
    /// Reads files now; contacts the metadata service only on first use.
    pub fn resolve(
        config: Option<&CredentialsSpec>,
        env: &Environment,
    ) -> Result<Self, CredentialsError> {
        let (origin, source) = match config {
            Some(c) => from_config(c, env)?,
            None => match from_env(env) {
                Some(cred) => (Origin::Environment, Source::Static(cred)),
                None => match from_credentials_file(env, None)? {
                    Some(found) => found,
                    None if env.is_true("ALIBABA_CLOUD_ECS_METADATA_DISABLED") => {
                        return Err(CredentialsError::NotFound {
                            file: env
                                .credentials_file()
                                .map_or("~/.alibabacloud/credentials".into(), |p| {
                                    p.display().to_string()
                                }),
                        });
                    }
                    None => {
                        let role = env.get("ALIBABA_CLOUD_ECS_METADATA").map(str::to_owned);
                        (
                            Origin::EcsRamRole { role: role.clone() },
                            ecs_source(env.metadata_endpoint(), role, env),
                        )
                    }
                },
            },
        };
        Ok(CredentialsProvider {
            origin,
            source,
            cached: Mutex::new(None),
        })
    }

    pub fn origin(&self) -> &Origin {
        &self.origin
    }

    /// Current credentials; fetches new temporary ones when the cached set is
    /// missing or expires within [`REFRESH_BEFORE_EXPIRY`].
    pub async fn get(&self) -> Result<Credential, CredentialsError> {
        match &self.source {
            Source::Static(c) => Ok(c.clone()),
            Source::EcsRamRole(role) => {
                let mut cached = self.cached.lock().await;
                if let Some(c) = cached.as_ref() {
                    let fresh = c.expiration.is_none_or(|exp| {
                        exp - Utc::now()
                            > chrono::Duration::from_std(REFRESH_BEFORE_EXPIRY)
                                .unwrap_or(chrono::Duration::MAX)
                    });
                    if fresh {
                        return Ok(c.clone());
                    }
                    tracing::info!(origin = %self.origin, "temporary credentials expire soon; refreshing");
                }
                let c = role.fetch().await?;
                *cached = Some(c.clone());
                Ok(c)
            }
        }
    }
}

fn ecs_source(endpoint: String, role_name: Option<String>, env: &Environment) -> Source {
    Source::EcsRamRole(EcsRole {
        endpoint,
        role_name,
        require_token: env.is_true("ALIBABA_CLOUD_IMDSV1_DISABLED"),
        http: reqwest::Client::builder()
            // The metadata service answers locally; a slow answer means it is not there.
            .connect_timeout(Duration::from_secs(1))
            .timeout(Duration::from_secs(3))
            .no_proxy()
            .build()
            .unwrap_or_default(),
    })
}

fn from_config(
    c: &CredentialsSpec,
    env: &Environment,
) -> Result<(Origin, Source), CredentialsError> {
    match c {
        CredentialsSpec::AccessKey {
            access_key_id,
            secret,
            security_token,
        } => {
            let access_key_secret = match secret {
                SecretSource::Inline(s) => s.clone(),
                SecretSource::File(path) => read_secret_file(path, env)?,
            };
            Ok((
                Origin::ConfigFile,
                Source::Static(Credential {
                    access_key_id: access_key_id.clone(),
                    access_key_secret,
                    security_token: security_token.clone(),
                    expiration: None,
                }),
            ))
        }
        CredentialsSpec::Profile(name) => match from_credentials_file(env, Some(name))? {
            Some(found) => Ok(found),
            None => Err(CredentialsError::Profile {
                path: env.credentials_file().unwrap_or_default(),
                message: "the file does not exist".into(),
            }),
        },
        CredentialsSpec::EcsRamRole {
            role_name,
            metadata_endpoint,
        } => {
            let role = (!role_name.is_empty()).then(|| role_name.clone());
            let endpoint = metadata_endpoint.as_ref().map_or_else(
                || env.metadata_endpoint(),
                |u| u.as_str().trim_end_matches('/').to_owned(),
            );
            Ok((
                Origin::EcsRamRole { role: role.clone() },
                ecs_source(endpoint, role, env),
            ))
        }
    }
}

/// Reads a secret from a file, dropping the trailing newline editors add.
///
/// One setting works under systemd and from a shell: `access_key_secret_file`
/// names the file on the host, and when `$CREDENTIALS_DIRECTORY` holds a
/// non-empty credential of the same file name (`LoadCredential=access-key-secret:
/// /etc/cas-renewd/access-key-secret`, or an encrypted one) that copy is read
/// instead. An empty credential is the unit's `SetCredential=` fallback for hosts
/// without the file, so it counts as absent.
pub fn read_secret_file(path: &Path, env: &Environment) -> Result<Secret, CredentialsError> {
    if let Some(dir) = env.get(CREDENTIALS_DIRECTORY)
        && let Some(name) = path.file_name()
    {
        let loaded = Path::new(dir).join(name);
        match read_trimmed(&loaded) {
            Ok(Some(secret)) => return Ok(secret),
            Ok(None) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(CredentialsError::SecretFile {
                    path: loaded,
                    source,
                });
            }
        }
    }
    match read_trimmed(path) {
        Ok(Some(secret)) => Ok(secret),
        Ok(None) => Err(CredentialsError::EmptySecretFile(path.to_owned())),
        Err(source) => Err(CredentialsError::SecretFile {
            path: path.to_owned(),
            source,
        }),
    }
}

/// The file's text without surrounding white space; `None` when that is empty.
fn read_trimmed(path: &Path) -> std::io::Result<Option<Secret>> {
    let text = crate::secret::read_secret_text(path)?;
    let value = text.trim();
    Ok((!value.is_empty()).then(|| Secret::new(value)))
}

fn from_env(env: &Environment) -> Option<Credential> {
    let id = env.get("ALIBABA_CLOUD_ACCESS_KEY_ID")?;
    let secret = env.get("ALIBABA_CLOUD_ACCESS_KEY_SECRET")?;
    Some(Credential {
        access_key_id: id.to_owned(),
        access_key_secret: Secret::new(secret),
        security_token: env.get("ALIBABA_CLOUD_SECURITY_TOKEN").map(Secret::new),
        expiration: None,
    })
}

/// Parses the INI credentials file into sections of key/value pairs.
fn parse_ini(text: &str) -> HashMap<String, HashMap<String, String>> {
    let mut sections: HashMap<String, HashMap<String, String>> = HashMap::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            let name = name.trim().to_owned();
            sections.entry(name.clone()).or_default();
            current = Some(name);
        } else if let (Some(section), Some((k, v))) = (&current, line.split_once('=')) {
            sections
                .entry(section.clone())
                .or_default()
                .insert(k.trim().to_owned(), v.trim().to_owned());
        }
    }
    sections
}

/// Looks up a profile in the INI file. `explicit` is the profile the config names;
/// otherwise `ALIBABA_CLOUD_PROFILE`, then `default`. A missing file is `None`; a
/// missing profile is an error only when someone asked for it by name.
fn from_credentials_file(
    env: &Environment,
    explicit: Option<&str>,
) -> Result<Option<(Origin, Source)>, CredentialsError> {
    let Some(path) = env.credentials_file() else {
        return Ok(None);
    };
    let text = match crate::secret::read_secret_text(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(CredentialsError::Profile {
                path,
                message: e.to_string(),
            });
        }
    };
    let env_profile = env.get("ALIBABA_CLOUD_PROFILE");
    let named = explicit.or(env_profile);
    let name = named.unwrap_or("default");
    let sections = parse_ini(&text);
    let err = |message: String| CredentialsError::Profile {
        path: path.clone(),
        message,
    };
    let Some(section) = sections.get(name) else {
        return match named {
            Some(_) => Err(err(format!("has no profile [{name}]"))),
            None => Ok(None),
        };
    };
    let origin = Origin::Profile {
        file: path.clone(),
        name: name.to_owned(),
    };
    let field = |k: &str| section.get(k).map(String::as_str).filter(|v| !v.is_empty());
    match field("type").unwrap_or("access_key") {
        "access_key" => {
            let (Some(id), Some(secret)) = (field("access_key_id"), field("access_key_secret"))
            else {
                return Err(err(format!(
                    "profile [{name}] of type access_key needs access_key_id and access_key_secret"
                )));
            };
            Ok(Some((
                origin,
                Source::Static(Credential {
                    access_key_id: id.to_owned(),
                    access_key_secret: Secret::new(secret),
                    security_token: None,
                    expiration: None,
                }),
            )))
        }
        "ecs_ram_role" => {
            let role = field("role_name").map(str::to_owned);
            Ok(Some((
                Origin::EcsRamRole { role: role.clone() },
                ecs_source(env.metadata_endpoint(), role, env),
            )))
        }
        other => Err(err(format!(
            "profile [{name}] has type {other:?}; cas-renewd supports access_key and ecs_ram_role"
        ))),
    }
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct MetadataCredentials {
    code: String,
    access_key_id: Option<String>,
    access_key_secret: Option<Secret>,
    security_token: Option<Secret>,
    expiration: Option<String>,
}

impl EcsRole {
    fn error(&self, message: impl Into<String>) -> CredentialsError {
        CredentialsError::Metadata {
            endpoint: self.endpoint.clone(),
            message: message.into(),
        }
    }

    async fn text(
        &self,
        req: reqwest::RequestBuilder,
        what: &str,
    ) -> Result<String, CredentialsError> {
        let resp = req
            .send()
            .await
            .map_err(|e| self.error(format!("{what}: {}", e.without_url())))?;
        let status = resp.status();
        let body = resp
            .text()
            .await
            .map_err(|e| self.error(format!("{what}: {}", e.without_url())))?;
        if !status.is_success() {
            return Err(self.error(format!("{what}: HTTP {status}")));
        }
        Ok(body)
    }

    /// IMDSv2: a session token first, then the role name (unless configured), then
    /// the role's temporary credentials.
    async fn fetch(&self) -> Result<Credential, CredentialsError> {
        let token = match self
            .text(
                self.http
                    .put(format!("{}/latest/api/token", self.endpoint))
                    .header(
                        "X-aliyun-ecs-metadata-token-ttl-seconds",
                        METADATA_TOKEN_TTL_SECONDS,
                    ),
                "IMDSv2 token",
            )
            .await
        {
            Ok(t) => Some(t.trim().to_owned()),
            Err(e) if self.require_token => return Err(e),
            Err(e) => {
                tracing::warn!(error = %e, "no IMDSv2 token; continuing without one (set ALIBABA_CLOUD_IMDSV1_DISABLED=true to forbid)");
                None
            }
        };
        let with_token = |req: reqwest::RequestBuilder| match &token {
            Some(t) => req.header("X-aliyun-ecs-metadata-token", t),
            None => req,
        };
        let base = format!(
            "{}/latest/meta-data/ram/security-credentials/",
            self.endpoint
        );
        let role = match &self.role_name {
            Some(r) => r.clone(),
            None => {
                let r = self
                    .text(with_token(self.http.get(&base)), "role name")
                    .await?;
                let r = r.lines().next().unwrap_or_default().trim().to_owned();
                if r.is_empty() {
                    return Err(self.error("the instance has no RAM role attached"));
                }
                r
            }
        };
        let body = self
            .text(
                with_token(self.http.get(format!("{base}{role}"))),
                "role credentials",
            )
            .await?;
        let parsed: MetadataCredentials = serde_json::from_str(&body)
            .map_err(|e| self.error(format!("role credentials are not the expected JSON: {e}")))?;
        if parsed.code != "Success" {
            return Err(self.error(format!("role credentials answer Code {:?}", parsed.code)));
        }
        let (Some(id), Some(secret), Some(token), Some(exp)) = (
            parsed.access_key_id,
            parsed.access_key_secret,
            parsed.security_token,
            parsed.expiration,
        ) else {
            return Err(self.error(
                "role credentials lack AccessKeyId, AccessKeySecret, SecurityToken or Expiration",
            ));
        };
        let expiration = DateTime::parse_from_rfc3339(&exp)
            .map_err(|e| self.error(format!("Expiration {exp:?} is not a UTC timestamp: {e}")))?
            .with_timezone(&Utc);
        tracing::info!(role = %role, expiration = %expiration, "fetched ECS RAM role credentials");
        Ok(Credential {
            access_key_id: id,
            access_key_secret: secret,
            security_token: Some(token),
            expiration: Some(expiration),
        })
    }
}

#[cfg(test)]
mod tests;
