//! A small OCI distribution client: manifests (HEAD and GET, indexes resolved to a platform),
//! config blobs and tag lists, with the registry's own auth challenge answered (an anonymous or
//! credentialed bearer token, or HTTP basic). HTTPS everywhere but on loopback, as Docker does.

use std::collections::HashMap;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderMap, LINK, RETRY_AFTER, WWW_AUTHENTICATE};
use reqwest::{Method, Response, StatusCode};
use serde_json::Value;
use tokio::sync::Mutex;

use super::credentials::Credentials;
use crate::digest::sha256_digest;
use crate::error::{Error, Result};

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Every manifest type, indexes first, as Renovate and the Docker CLI ask.
const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
    application/vnd.docker.distribution.manifest.list.v2+json, \
    application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.v2+json";

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Tries for a request the registry answers 429 or 5xx (the first included).
const ATTEMPTS: u32 = 4;
const MAX_PAGES: usize = 200;
/// Redirects followed for one request (blobs go to a CDN in one).
const MAX_REDIRECTS: usize = 5;
/// The most read of an answer: manifests, config blobs and tag pages are small JSON.
const BODY_LIMIT: usize = 4 << 20;
/// The most read of a token service's answer.
const TOKEN_LIMIT: usize = 1 << 20;

pub struct Client {
    http: reqwest::Client,
    /// `https://host` (or `http://` on loopback).
    base: String,
    /// `host[:port]`, for messages.
    registry: String,
    credentials: Option<Credentials>,
    /// The `Authorization` value that worked, per token scope.
    authorizations: Mutex<HashMap<String, String>>,
}

/// A manifest or index, as the registry sent it.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub digest: String,
    pub media_type: String,
    pub size: u64,
    pub body: Value,
}

impl Manifest {
    pub fn is_index(&self) -> bool {
        matches!(self.media_type.as_str(), OCI_INDEX | DOCKER_LIST)
            || self.body["manifests"].is_array()
    }

    /// `(os/arch[/variant], digest)` of each image an index lists; attestations (platform
    /// unknown/unknown) left out.
    pub fn platforms(&self) -> Vec<(String, String)> {
        let entries = self.body["manifests"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        entries
            .iter()
            .filter_map(|m| {
                let p = &m["platform"];
                let os = p["os"].as_str()?;
                let arch = p["architecture"].as_str()?;
                let name = match p["variant"].as_str() {
                    Some(variant) => format!("{os}/{arch}/{variant}"),
                    None => format!("{os}/{arch}"),
                };
                Some((name, m["digest"].as_str()?.to_string()))
            })
            .filter(|(platform, _)| platform != "unknown/unknown")
            .collect()
    }
}

impl Client {
    /// A client for `registry` (`host[:port]`; the API host, e.g. `registry-1.docker.io`).
    pub fn new(registry: &str, credentials: Option<Credentials>) -> Result<Client> {
        let scheme = match is_loopback(registry) {
            true => "http",
            false => "https",
        };
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .user_agent(concat!("n10n-dev/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::custom(|attempt| {
                let from = attempt.previous().last().cloned();
                match attempt.previous().len() > MAX_REDIRECTS {
                    true => attempt.error(format!("more than {MAX_REDIRECTS} redirects")),
                    false => match from.map(|from| redirect_refused(&from, attempt.url())) {
                        Some(Some(why)) => attempt.error(why),
                        _ => attempt.follow(),
                    },
                }
            }))
            .build()
            .map_err(|e| Error::Other(format!("cannot set up an HTTP client: {e}")))?;
        Ok(Client {
            http,
            base: format!("{scheme}://{registry}"),
            registry: registry.to_string(),
            credentials,
            authorizations: Mutex::new(HashMap::new()),
        })
    }

    /// The digest `reference` (tag or digest) points to now; `None` when there is no such
    /// manifest. A HEAD request, which registries answer with `Docker-Content-Digest`.
    pub async fn manifest_digest(
        &self,
        repository: &str,
        reference: &str,
    ) -> Result<Option<String>> {
        let url = format!("{}/v2/{repository}/manifests/{reference}", self.base);
        let response = self
            .send(Method::HEAD, &url, repository, Some(MANIFEST_ACCEPT))
            .await?;
        if response.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let what = format!("{repository}:{reference}");
        let response = self.check(response, &what).await?;
        match content_digest(response.headers()) {
            Some(digest) => Ok(Some(digest)),
            // Not every registry sends it on HEAD; the body's own digest is the answer.
            None => Ok(Some(self.manifest(repository, reference).await?.digest)),
        }
    }

    pub async fn manifest(&self, repository: &str, reference: &str) -> Result<Manifest> {
        let url = format!("{}/v2/{repository}/manifests/{reference}", self.base);
        let what = format!("{repository}:{reference}");
        let response = self
            .send(Method::GET, &url, repository, Some(MANIFEST_ACCEPT))
            .await?;
        if response.status() == StatusCode::NOT_FOUND {
            return Err(Error::Other(format!(
                "{}/{what} does not exist",
                self.registry
            )));
        }
        let response = self.check(response, &what).await?;
        let media_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let bytes = self.body(response, &what).await?;
        let digest = sha256_digest(&bytes);
        if reference.starts_with("sha256:") && digest != reference {
            return Err(Error::Other(format!(
                "{} sent a manifest for {what} whose digest is {digest}",
                self.registry
            )));
        }
        let body: Value = serde_json::from_slice(&bytes).map_err(|e| {
            Error::Other(format!(
                "{} sent a manifest for {what} that is not JSON: {e}",
                self.registry
            ))
        })?;
        let media_type = match body["mediaType"].as_str() {
            Some(declared) => declared.to_string(),
            None => media_type,
        };
        Ok(Manifest {
            digest,
            media_type,
            size: bytes.len() as u64,
            body,
        })
    }

    /// The single-platform manifest for `platform` (`linux/amd64`): `manifest` itself when it
    /// is one, else the matching entry of the index.
    pub async fn image_manifest(
        &self,
        repository: &str,
        manifest: Manifest,
        platform: &str,
    ) -> Result<Manifest> {
        if !manifest.is_index() {
            return Ok(manifest);
        }
        let platforms = manifest.platforms();
        let chosen = platforms
            .iter()
            .find(|(p, _)| p == platform || p.starts_with(&format!("{platform}/")));
        match chosen {
            Some((_, digest)) => self.manifest(repository, digest).await,
            None => Err(Error::Other(format!(
                "{}/{repository}@{} has no {platform} image (it has {})",
                self.registry,
                manifest.digest,
                platforms
                    .iter()
                    .map(|(p, _)| p.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }

    /// The image's config blob (labels under `config.Labels`, the build time in `created`).
    pub async fn config(&self, repository: &str, image: &Manifest) -> Result<Value> {
        let digest = image.body["config"]["digest"].as_str().ok_or_else(|| {
            Error::Other(format!(
                "the manifest {} names no config blob",
                image.digest
            ))
        })?;
        let url = format!("{}/v2/{repository}/blobs/{digest}", self.base);
        let what = format!("{repository}@{digest}");
        let response = self.send(Method::GET, &url, repository, None).await?;
        let response = self.check(response, &what).await?;
        let bytes = self.body(response, &what).await?;
        if sha256_digest(&bytes) != digest {
            return Err(Error::Other(format!(
                "{} sent a config blob that does not match its digest {digest}",
                self.registry
            )));
        }
        serde_json::from_slice(&bytes)
            .map_err(|e| Error::Other(format!("the config blob {digest} is not JSON: {e}")))
    }

    /// Every tag of `repository`, following `Link` pagination.
    pub async fn tags(&self, repository: &str) -> Result<Vec<String>> {
        let mut url = format!("{}/v2/{repository}/tags/list?n=1000", self.base);
        let mut tags = Vec::new();
        for _ in 0..MAX_PAGES {
            let response = self.send(Method::GET, &url, repository, None).await?;
            let response = self
                .check(response, &format!("the tags of {repository}"))
                .await?;
            let next = next_link(response.headers());
            let bytes = self.body(response, "a tag list").await?;
            let page: Value = serde_json::from_slice(&bytes).map_err(|e| {
                Error::Other(format!(
                    "{} sent a tag list that is not JSON: {e}",
                    self.registry
                ))
            })?;
            let names = page["tags"].as_array().cloned().unwrap_or_default();
            tags.extend(names.iter().filter_map(|t| t.as_str().map(str::to_string)));
            match next? {
                Some(next) => url = self.same_origin(&next, "a tag list's next page")?,
                None => return Ok(tags),
            }
        }
        Ok(tags)
    }

    /// Send a request with the authorization that worked before for this repository; answer
    /// a 401 challenge once; retry 429 and 5xx with backoff.
    async fn send(
        &self,
        method: Method,
        url: &str,
        repository: &str,
        accept: Option<&str>,
    ) -> Result<Response> {
        let scope = format!("repository:{repository}:pull");
        let mut challenged = false;
        let mut attempt = 1;
        loop {
            let mut request = self.http.request(method.clone(), url);
            if let Some(accept) = accept {
                request = request.header(ACCEPT, accept);
            }
            if let Some(auth) = self.authorizations.lock().await.get(&scope) {
                request = request.header(AUTHORIZATION, auth);
            }
            let response = request.send().await.map_err(|e| self.unreachable(e))?;
            let status = response.status();
            if status == StatusCode::UNAUTHORIZED && !challenged {
                challenged = true;
                let challenge = header_text(response.headers(), WWW_AUTHENTICATE);
                let auth = self.answer(&challenge, &scope).await?;
                self.authorizations.lock().await.insert(scope.clone(), auth);
                continue;
            }
            let retryable = status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error();
            if retryable && attempt < ATTEMPTS {
                tokio::time::sleep(backoff(attempt, response.headers())).await;
                attempt += 1;
                continue;
            }
            return Ok(response);
        }
    }

    /// The `Authorization` value that answers a `WWW-Authenticate` challenge.
    async fn answer(&self, challenge: &str, scope: &str) -> Result<String> {
        let (scheme, params) = parse_challenge(challenge);
        match scheme.to_ascii_lowercase().as_str() {
            "bearer" => self.bearer_token(&params, scope).await,
            "basic" => match &self.credentials {
                Some(c) => Ok(basic(c)),
                None => Err(self.needs_login()),
            },
            _ => Err(Error::Other(format!(
                "{} asks for an authentication scheme n10n-dev does not speak: {challenge:?}",
                self.registry
            ))),
        }
    }

    /// `target` (absolute, or relative to the registry) when it is on the registry's own origin
    /// (scheme, host and port): a registry's answer must not send n10n-dev, and the
    /// authorization it holds for the registry, anywhere else.
    fn same_origin(&self, target: &str, what: &str) -> Result<String> {
        let base = reqwest::Url::parse(&self.base)
            .map_err(|e| Error::Other(format!("{} is not a URL: {e}", self.base)))?;
        let url = base.join(target).map_err(|e| {
            Error::Other(format!(
                "{} sent {what} that is not a URL ({target:?}): {e}",
                self.registry
            ))
        })?;
        if url.origin() != base.origin() {
            return Err(Error::Other(format!(
                "{} sent {what} on another server ({}); n10n-dev follows it only on {}",
                self.registry,
                url.origin().ascii_serialization(),
                base.origin().ascii_serialization()
            )));
        }
        Ok(url.into())
    }

    /// The token flow of the distribution spec: anonymous, or with the user's credentials. The
    /// credentials go only to a token service on the registry's own origin; one elsewhere
    /// (Docker Hub's) is asked anonymously, over HTTPS.
    async fn bearer_token(&self, params: &HashMap<String, String>, scope: &str) -> Result<String> {
        let realm = params.get("realm").ok_or_else(|| {
            Error::Other(format!(
                "{} sent a bearer challenge without a realm",
                self.registry
            ))
        })?;
        let (realm, credentials) = match self.same_origin(realm, "a token service") {
            Ok(own) => (own, self.credentials.as_ref()),
            Err(_) => (self.foreign_realm(realm)?, None),
        };
        let realm = realm.as_str();
        let mut query = vec![("scope", scope)];
        if let Some(service) = params.get("service") {
            query.push(("service", service));
        }
        let mut request = self.http.get(realm).query(&query);
        if let Some(c) = credentials {
            request = request.header(AUTHORIZATION, basic(c));
        }
        let response = request.send().await.map_err(|e| self.unreachable(e))?;
        match response.status() {
            s if s.is_success() => {}
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN if self.credentials.is_some() => {
                return Err(self.rejected());
            }
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => return Err(self.needs_login()),
            s => {
                return Err(Error::Other(format!(
                    "the token service of {} ({realm}) answered {s}",
                    self.registry
                )));
            }
        }
        let bytes = self.body_within(response, "a token", TOKEN_LIMIT).await?;
        let answer: Value = serde_json::from_slice(&bytes).unwrap_or_default();
        let token = answer["token"]
            .as_str()
            .or(answer["access_token"].as_str())
            .ok_or_else(|| {
                Error::Other(format!(
                    "the token service of {} ({realm}) sent no token",
                    self.registry
                ))
            })?;
        Ok(format!("Bearer {token}"))
    }

    /// A token service on another origin: only over HTTPS (plain HTTP only to a loopback
    /// address), and never with the user's credentials.
    fn foreign_realm(&self, realm: &str) -> Result<String> {
        let url = reqwest::Url::parse(realm).map_err(|e| {
            Error::Other(format!(
                "{} sent a token service that is not a URL ({realm:?}): {e}",
                self.registry
            ))
        })?;
        let loopback = url
            .host_str()
            .is_some_and(|host| is_loopback(&format!("{host}:0")));
        if url.scheme() != "https" && !(url.scheme() == "http" && loopback) {
            return Err(Error::Other(format!(
                "{} sent a token service over plain HTTP ({realm}); n10n-dev asks one only over HTTPS",
                self.registry
            )));
        }
        if self.credentials.is_some() {
            tracing::info!(
                "{}'s token service is on another server ({}): asking it without your credentials",
                self.registry,
                url.origin().ascii_serialization()
            );
        }
        Ok(url.into())
    }

    /// Turn a final answer that is not a success into a clear error.
    async fn check(&self, response: Response, what: &str) -> Result<Response> {
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let detail = registry_error_text(&response.bytes().await.unwrap_or_default());
        let registry = &self.registry;
        Err(match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN if self.credentials.is_some() => {
                self.rejected()
            }
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => self.needs_login(),
            StatusCode::NOT_FOUND => {
                Error::Other(format!("{registry}: {what} does not exist{detail}"))
            }
            StatusCode::TOO_MANY_REQUESTS => Error::Other(format!(
                "{registry} kept answering 429 Too Many Requests for {what} after {ATTEMPTS} tries{detail}; try again later"
            )),
            s if s.is_server_error() => Error::Other(format!(
                "{registry} kept failing with {s} for {what} after {ATTEMPTS} tries{detail}"
            )),
            s => Error::Other(format!("{registry} answered {s} for {what}{detail}")),
        })
    }

    async fn body(&self, response: Response, what: &str) -> Result<Vec<u8>> {
        self.body_within(response, what, BODY_LIMIT).await
    }

    /// The answer's body, read up to `limit` bytes: a registry (or whatever answers as one)
    /// cannot make n10n-dev hold an endless answer.
    async fn body_within(
        &self,
        mut response: Response,
        what: &str,
        limit: usize,
    ) -> Result<Vec<u8>> {
        let failed = |e: reqwest::Error| {
            Error::Other(format!("reading {what} from {} failed: {e}", self.registry))
        };
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(failed)? {
            if body.len() + chunk.len() > limit {
                return Err(Error::Other(format!(
                    "{} sent more than {} MiB for {what}; n10n-dev reads no more",
                    self.registry,
                    limit >> 20
                )));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    fn unreachable(&self, e: reqwest::Error) -> Error {
        let why = match e.is_timeout() {
            true => "it did not answer in time".to_string(),
            false => error_chain(&e),
        };
        Error::Other(format!(
            "cannot reach the registry {} ({}): {why}",
            self.registry, self.base
        ))
    }

    fn needs_login(&self) -> Error {
        let registry = &self.registry;
        Error::Other(format!(
            "{registry} wants credentials and none are set up here: run `docker login {registry}` \
             (n10n-dev reads the Docker config's credHelpers, credsStore and auths)"
        ))
    }

    fn rejected(&self) -> Error {
        let user = self
            .credentials
            .as_ref()
            .map(|c| c.username.as_str())
            .unwrap_or_default();
        Error::Other(format!(
            "{} refused the credentials of `{user}` from the Docker config: log in again \
             (`docker login {}`), or check that this user may read the repository",
            self.registry, self.registry
        ))
    }
}

/// `localhost`, or an address (not a name) in 127.0.0.0/8 or `::1`: `127.example.com` is a name
/// anyone can point anywhere.
/// Why a redirect from `from` to `to` is not followed, if it is not: to another origin only
/// over HTTPS (reqwest then sends no credentials), plain HTTP only from loopback to loopback; the
/// rules of a `Link` header's next page and of a token service.
fn redirect_refused(from: &reqwest::Url, to: &reqwest::Url) -> Option<String> {
    let on_loopback = |url: &reqwest::Url| {
        url.host_str()
            .is_some_and(|host| is_loopback(&format!("{host}:0")))
    };
    let loopback = on_loopback(from) && on_loopback(to);
    match to.scheme() {
        _ if to.origin() == from.origin() => None,
        "https" => None,
        "http" if loopback => None,
        scheme => Some(format!(
            "a redirect to {} ({scheme}); n10n-dev follows one to another server only over HTTPS",
            to.origin().ascii_serialization()
        )),
    }
}

fn is_loopback(registry: &str) -> bool {
    let host = match registry.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => registry.split(':').next().unwrap_or_default(),
    };
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn basic(c: &Credentials) -> String {
    format!(
        "Basic {}",
        STANDARD.encode(format!("{}:{}", c.username, c.password))
    )
}

fn header_text(headers: &HeaderMap, name: reqwest::header::HeaderName) -> String {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

fn content_digest(headers: &HeaderMap) -> Option<String> {
    let digest = header_text(
        headers,
        reqwest::header::HeaderName::from_static("docker-content-digest"),
    );
    super::reference::is_sha256_digest(&digest).then_some(digest)
}

/// `Retry-After` in seconds when the registry says (at most 10), else 1, 2, 4 s.
fn backoff(attempt: u32, headers: &HeaderMap) -> Duration {
    let said = header_text(headers, RETRY_AFTER).parse::<u64>().ok();
    Duration::from_secs(said.map_or(1 << (attempt - 1), |s| s.min(10)))
}

/// `Bearer realm="https://…",service="…",scope="repository:a:pull,push"` → scheme, params.
fn parse_challenge(challenge: &str) -> (String, HashMap<String, String>) {
    let (scheme, rest) = challenge
        .trim()
        .split_once(' ')
        .unwrap_or((challenge.trim(), ""));
    let mut params = HashMap::new();
    let mut rest = rest.trim();
    while let Some((key, after)) = rest.split_once('=') {
        let key = key
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        let (value, remainder) = match after.strip_prefix('"') {
            Some(quoted) => {
                let end = quoted.find('"').unwrap_or(quoted.len());
                (&quoted[..end], quoted.get(end + 1..).unwrap_or_default())
            }
            None => {
                let end = after.find(',').unwrap_or(after.len());
                (&after[..end], &after[end..])
            }
        };
        params.insert(key, value.to_string());
        rest = remainder.trim_start_matches(',').trim();
    }
    (scheme.to_string(), params)
}

/// The `rel="next"` target of a `Link` header (`<url>; rel="next"`); an error when the part
/// that says `next` has no `<…>` in that order.
fn next_link(headers: &HeaderMap) -> Result<Option<String>> {
    let link = header_text(headers, LINK);
    let Some(part) = link
        .split(',')
        .find(|part| part.contains("rel=\"next\"") || part.contains("rel=next"))
    else {
        return Ok(None);
    };
    let target = part
        .split_once('<')
        .and_then(|(_, rest)| rest.split_once('>'))
        .map(|(target, _)| target.to_string());
    target.map(Some).ok_or_else(|| {
        Error::Other(format!(
            "the registry sent a Link header without a <URL>: {link:?}"
        ))
    })
}

/// `: CODE: message` from a registry's `{"errors":[…]}` body, or nothing.
fn registry_error_text(body: &[u8]) -> String {
    let json: Value = serde_json::from_slice(body).unwrap_or_default();
    let errors = json["errors"].as_array().cloned().unwrap_or_default();
    let text: Vec<String> = errors
        .iter()
        .map(|e| {
            format!(
                "{}: {}",
                e["code"].as_str().unwrap_or("ERROR"),
                e["message"].as_str().unwrap_or_default()
            )
        })
        .collect();
    match text.is_empty() {
        true => String::new(),
        false => format!(" ({})", text.join("; ")),
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text = format!("{text}: {cause}");
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_are_parsed_with_quoted_commas() {
        let (scheme, params) = parse_challenge(
            r#"Bearer realm="https://public.ecr.aws/token/",service="public.ecr.aws",scope="repository:a:pull,push""#,
        );
        assert_eq!(scheme, "Bearer");
        assert_eq!(params["realm"], "https://public.ecr.aws/token/");
        assert_eq!(params["service"], "public.ecr.aws");
        assert_eq!(params["scope"], "repository:a:pull,push");
        let (scheme, params) = parse_challenge(r#"Basic realm="basic-realm""#);
        assert_eq!(
            (scheme.as_str(), params["realm"].as_str()),
            ("Basic", "basic-realm")
        );
    }

    #[test]
    fn links_errors_and_loopback() {
        let mut headers = HeaderMap::new();
        headers.insert(
            LINK,
            "</v2/x/tags/list?n=2&last=b>; rel=\"next\""
                .parse()
                .unwrap(),
        );
        assert_eq!(
            next_link(&headers).unwrap().as_deref(),
            Some("/v2/x/tags/list?n=2&last=b")
        );
        for broken in ["/v2/x>; rel=\"next\"", ">/v2/x<; rel=\"next\"", "rel=next"] {
            headers.insert(LINK, broken.parse().unwrap());
            assert!(next_link(&headers).is_err(), "{broken}");
        }
        assert_eq!(
            registry_error_text(br#"{"errors":[{"code":"NAME_UNKNOWN","message":"no repo"}]}"#),
            " (NAME_UNKNOWN: no repo)"
        );
        assert!(
            is_loopback("127.0.0.1:5000") && is_loopback("localhost") && is_loopback("[::1]:5000")
        );
        assert!(!is_loopback("public.ecr.aws") && !is_loopback("10.0.0.1:5000"));
        assert!(!is_loopback("127.example.com:5000") && !is_loopback("127.0.0.1.nip.io"));
        assert_eq!(
            sha256_digest(b""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    /// A one-answer-per-connection HTTP server on loopback: what it received, in order.
    fn server(
        answer: impl Fn(&str) -> String + Send + 'static,
    ) -> (u16, std::sync::mpsc::Receiver<String>) {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let (sender, received) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                while !request.ends_with(b"\r\n\r\n") {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let request = String::from_utf8_lossy(&request).into_owned();
                let _ = stream.write_all(answer(&request).as_bytes());
                let _ = sender.send(request);
            }
        });
        (port, received)
    }

    fn credentials() -> Option<Credentials> {
        Some(Credentials {
            username: "u".into(),
            password: "the-password".into(),
        })
    }

    #[tokio::test]
    async fn credentials_never_follow_a_link_or_a_realm_to_another_server() {
        let (elsewhere, seen_elsewhere) = server(|_| {
            "HTTP/1.1 200 OK\r\nContent-Length: 16\r\nConnection: close\r\n\r\n{\"token\":\"anon\"}"
                .into()
        });
        // A registry that wants basic auth, then points its next page at another server.
        let (registry, _) = server(move |request| {
            match request.to_ascii_lowercase().contains("authorization: basic") {
            false => "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"r\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".into(),
            true => format!(
                "HTTP/1.1 200 OK\r\nLink: <http://127.0.0.1:{elsewhere}/v2/x/tags/list?last=a>; rel=\"next\"\r\n\
                 Content-Length: 25\r\nConnection: close\r\n\r\n{{\"name\":\"x\",\"tags\":[\"a\"]}}"
            ),
        }
        });
        let client = Client::new(&format!("127.0.0.1:{registry}"), credentials()).unwrap();
        let error = client.tags("x").await.unwrap_err().to_string();
        assert!(error.contains("on another server"), "{error}");
        assert!(
            seen_elsewhere.try_recv().is_err(),
            "the other server was contacted"
        );

        // A bearer challenge whose token service is on another server: asked without them.
        let (registry, _) = server(move |request| {
            match request.to_ascii_lowercase().contains("authorization: bearer anon") {
            false => format!(
                "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer realm=\"http://127.0.0.1:{elsewhere}/token\",service=\"s\"\r\n\
                 Content-Length: 0\r\nConnection: close\r\n\r\n"
            ),
            true => "HTTP/1.1 200 OK\r\nContent-Length: 25\r\nConnection: close\r\n\r\n{\"name\":\"x\",\"tags\":[\"a\"]}".into(),
        }
        });
        let client = Client::new(&format!("127.0.0.1:{registry}"), credentials()).unwrap();
        assert_eq!(client.tags("x").await.unwrap(), ["a"]);
        let token_request = seen_elsewhere.recv().unwrap();
        assert!(
            !token_request.to_ascii_lowercase().contains("authorization"),
            "{token_request}"
        );
    }

    #[test]
    fn redirects_go_elsewhere_only_over_https() {
        let url = |u: &str| reqwest::Url::parse(u).unwrap();
        let registry = url("https://registry.example/v2/x/blobs/sha256:a");
        for allowed in [
            "https://registry.example/other",
            "https://cdn.example/blob?sig=1",
        ] {
            assert_eq!(
                redirect_refused(&registry, &url(allowed)),
                None,
                "{allowed}"
            );
        }
        let plain = redirect_refused(&registry, &url("http://cdn.example/blob"));
        assert!(plain.is_some_and(|why| why.contains("only over HTTPS")));
        assert!(redirect_refused(&registry, &url("http://127.0.0.1:9/x")).is_some());
        let local = url("http://127.0.0.1:5000/v2/x");
        assert_eq!(
            redirect_refused(&local, &url("http://127.0.0.1:5001/x")),
            None
        );
        assert!(redirect_refused(&local, &url("http://cdn.example/x")).is_some());
    }

    #[tokio::test]
    async fn redirects_are_followed_where_the_rules_allow_and_not_round_in_circles() {
        let (cdn, _) = server(|_| {
            "HTTP/1.1 200 OK\r\nContent-Length: 25\r\nConnection: close\r\n\r\n{\"name\":\"x\",\"tags\":[\"a\"]}"
                .into()
        });
        let (registry, _) = server(move |_| {
            format!(
                "HTTP/1.1 307 Temporary Redirect\r\nLocation: http://127.0.0.1:{cdn}/tags\r\n\
                 Content-Length: 0\r\nConnection: close\r\n\r\n"
            )
        });
        let client = Client::new(&format!("127.0.0.1:{registry}"), None).unwrap();
        assert_eq!(client.tags("x").await.unwrap(), ["a"]);
        let (circle, _) = server(|_| {
            "HTTP/1.1 302 Found\r\nLocation: /v2/x/tags/list\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                .into()
        });
        let client = Client::new(&format!("127.0.0.1:{circle}"), None).unwrap();
        let error = client.tags("x").await.unwrap_err().to_string();
        assert!(error.contains("more than 5 redirects"), "{error}");
    }

    #[tokio::test]
    async fn an_endless_answer_is_cut_off_at_its_limit() {
        let (registry, _) = server(|_| {
            let body = format!("{{\"name\":\"x\",\"tags\":[\"{}\"]}}", "a".repeat(5 << 20));
            format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
        });
        let client = Client::new(&format!("127.0.0.1:{registry}"), None).unwrap();
        let error = client.tags("x").await.unwrap_err().to_string();
        assert!(error.contains("more than 4 MiB"), "{error}");
    }
}
