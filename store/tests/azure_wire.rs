//! What the Azure client puts on the wire, checked against a loopback server that records every
//! request: CPK headers on every call that takes them (Azurite refuses them, so CPK cannot be
//! proven there), managed-identity bearer tokens, retries with Retry-After under one deadline,
//! `If-Match` on pinned reads, plain-http refusal, and no secret in any error message.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use encfs_store::azure::{AzureStore, Credentials};
use encfs_store::faults::RetryingStore;
use encfs_store::{BlobStore, BlockIds, Condition, CustomerKey, Metadata, RetryPolicy, StoreError};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// Ids of one writer's version, shared by every block a test stages.
fn block_id(index: u64) -> String {
    static IDS: std::sync::LazyLock<BlockIds> = std::sync::LazyLock::new(BlockIds::new);
    IDS.id(index)
}

#[derive(Debug, Clone)]
struct Recorded {
    request_line: String,
    headers: Vec<(String, String)>,
}

impl Recorded {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(h, _)| h.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

type Responder = Arc<dyn Fn(usize, &Recorded) -> String + Send + Sync>;

/// Starts a loopback HTTP/1.1 server; `respond(n, request)` gives the raw response to request n.
async fn recording_server(respond: Responder) -> (String, Arc<Mutex<Vec<Recorded>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    let log: Arc<Mutex<Vec<Recorded>>> = Arc::default();
    let server_log = log.clone();
    tokio::spawn(async move {
        loop {
            let Ok((socket, _)) = listener.accept().await else {
                return;
            };
            let (log, respond) = (server_log.clone(), respond.clone());
            tokio::spawn(async move {
                let (read, mut write) = socket.into_split();
                let mut reader = BufReader::new(read);
                loop {
                    let mut request_line = String::new();
                    if reader.read_line(&mut request_line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let mut headers = Vec::new();
                    loop {
                        let mut line = String::new();
                        reader.read_line(&mut line).await.unwrap();
                        let line = line.trim_end();
                        if line.is_empty() {
                            break;
                        }
                        let (name, value) = line.split_once(':').unwrap();
                        headers.push((name.trim().to_owned(), value.trim().to_owned()));
                    }
                    let recorded = Recorded {
                        request_line: request_line.trim_end().to_owned(),
                        headers,
                    };
                    let length: usize = recorded
                        .header("content-length")
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    let mut body = vec![0u8; length];
                    reader.read_exact(&mut body).await.unwrap();
                    let n = {
                        let mut log = log.lock().unwrap();
                        log.push(recorded.clone());
                        log.len() - 1
                    };
                    let response = respond(n, &recorded);
                    if write.write_all(response.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (address, log)
}

fn ok_response(_: usize, request: &Recorded) -> String {
    if request.request_line.starts_with("HEAD") {
        return "HTTP/1.1 200 OK\r\nContent-Length: 4\r\nETag: \"0x1\"\r\nLast-Modified: Fri, 26 Jun 2015 23:39:12 GMT\r\n\r\n".into();
    }
    if request.request_line.starts_with("GET") {
        return "HTTP/1.1 200 OK\r\nContent-Length: 4\r\nETag: \"0x1\"\r\n\r\ndata".into();
    }
    "HTTP/1.1 201 Created\r\nContent-Length: 0\r\nETag: \"0x1\"\r\n\r\n".into()
}

#[tokio::test]
async fn cpk_headers_go_on_every_call_that_takes_them() {
    let (address, log) = recording_server(Arc::new(ok_response)).await;
    let store = AzureStore::new(
        &format!("{address}/acct/cont"),
        Some(Credentials::Anonymous),
    )
    .unwrap();
    let key = CustomerKey::new([3; 32]);
    let none = Condition::None;
    store
        .put(
            "a b",
            Bytes::from_static(b"data"),
            &Metadata::new(),
            &none,
            Some(&key),
        )
        .await
        .unwrap();
    store
        .get("a b", Some(0..4), Some(&key), None)
        .await
        .unwrap();
    store.properties("a b", Some(&key)).await.unwrap();
    store
        .stage_block("a b", &block_id(0), Bytes::from_static(b"data"), Some(&key))
        .await
        .unwrap();
    store
        .commit_blocks("a b", &[block_id(0)], &Metadata::new(), &none, Some(&key))
        .await
        .unwrap();
    store.delete("a b", &none).await.unwrap();
    let log = log.lock().unwrap().clone();
    assert_eq!(log.len(), 6);
    for request in &log[..5] {
        assert_eq!(
            request.header("x-ms-encryption-key"),
            Some(key.key_base64().as_str()),
            "{}",
            request.request_line
        );
        assert_eq!(
            request.header("x-ms-encryption-key-sha256"),
            Some(key.sha256_base64().as_str())
        );
        assert_eq!(request.header("x-ms-encryption-algorithm"), Some("AES256"));
        assert!(
            request.request_line.contains("/acct/cont/a%20b"),
            "{}",
            request.request_line
        );
    }
    assert_eq!(
        log[5].header("x-ms-encryption-key"),
        None,
        "delete takes no key"
    );
    assert!(
        log[3].request_line.contains("comp=block")
            && log[4].request_line.contains("comp=blocklist")
    );
    assert_eq!(log[1].header("x-ms-range"), Some("bytes=0-3"));
}

#[tokio::test]
async fn managed_identity_tokens_are_fetched_once_and_sent_as_bearer() {
    let respond: Responder = Arc::new(|n, request: &Recorded| {
        if request.request_line.contains("/token") {
            let body = r#"{"access_token":"tok123","expires_in":"3600","token_type":"Bearer"}"#;
            return format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
        }
        ok_response(n, request)
    });
    let (address, log) = recording_server(respond).await;
    let credentials = Credentials::ManagedIdentity {
        endpoint: format!("{address}/token"),
        identity_header: None,
    };
    let store = AzureStore::new(&format!("{address}/acct/cont"), Some(credentials)).unwrap();
    store.get("x", None, None, None).await.unwrap();
    store.get("y", None, None, None).await.unwrap();
    let log = log.lock().unwrap().clone();
    let token_requests: Vec<_> = log
        .iter()
        .filter(|r| r.request_line.contains("/token"))
        .collect();
    assert_eq!(token_requests.len(), 1, "token cached");
    assert_eq!(token_requests[0].header("metadata"), Some("true"));
    assert!(
        token_requests[0]
            .request_line
            .contains("resource=https%3A%2F%2Fstorage.azure.com%2F"),
        "{}",
        token_requests[0].request_line
    );
    let data: Vec<_> = log
        .iter()
        .filter(|r| !r.request_line.contains("/token"))
        .collect();
    assert!(
        data.iter()
            .all(|r| r.header("authorization") == Some("Bearer tok123"))
    );
}

#[tokio::test]
async fn transient_errors_are_retried_honouring_retry_after() {
    let respond: Responder = Arc::new(|n, request: &Recorded| {
        match n {
        0 => "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 0\r\nx-ms-error-code: ServerBusy\r\nContent-Length: 0\r\n\r\n".into(),
        1 => "HTTP/1.1 429 Too Many Requests\r\nContent-Length: 0\r\n\r\n".into(),
        _ => ok_response(n, request),
    }
    });
    let (address, log) = recording_server(respond).await;
    let store = retrying(
        &format!("{address}/acct/cont"),
        RetryPolicy::default().with_first_delay(Duration::from_millis(5)),
    );
    store
        .put(
            "x",
            Bytes::from_static(b"1"),
            &Metadata::new(),
            &Condition::None,
            None,
        )
        .await
        .unwrap();
    assert_eq!(log.lock().unwrap().len(), 3);
}

#[tokio::test]
async fn persistent_errors_name_the_url_and_stop() {
    let respond: Responder = Arc::new(|_, _: &Recorded| {
        "HTTP/1.1 500 Internal Server Error\r\nx-ms-error-code: InternalError\r\nContent-Length: 0\r\n\r\n".into()
    });
    let (address, log) = recording_server(respond).await;
    let quick = RetryPolicy::default()
        .with_attempts(5)
        .with_first_delay(Duration::from_millis(1));
    let store = retrying(&format!("{address}/acct/cont"), quick);
    let error = store.get("blob", None, None, None).await.unwrap_err();
    assert!(
        matches!(error, StoreError::Http { status: 500, .. }),
        "{error}"
    );
    assert!(
        error.to_string().contains("/acct/cont/blob")
            && error.to_string().contains("InternalError"),
        "{error}"
    );
    assert_eq!(log.lock().unwrap().len(), 5, "five attempts");
    // Nothing listening: a network error naming the URL.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}/acct/cont", listener.local_addr().unwrap());
    drop(listener);
    let store = retrying(&dead, quick);
    let error = store.get("blob", None, None, None).await.unwrap_err();
    assert!(
        matches!(error, StoreError::Network { .. })
            && error.to_string().contains("/acct/cont/blob"),
        "{error}"
    );
}

/// An anonymous client for `url` behind the one retry layer, as `open_store` builds it.
fn retrying(url: &str, policy: RetryPolicy) -> RetryingStore<AzureStore> {
    RetryingStore::new(
        AzureStore::new(url, Some(Credentials::Anonymous)).unwrap(),
        policy,
    )
}

/// Each attempt once waited out the service's `Retry-After` in full (an hour here), on top of a
/// second retry loop in the mount. Now a wait is capped (5 s by default) and the call ends within
/// its deadline.
#[tokio::test]
async fn a_retry_after_of_an_hour_is_capped_and_the_deadline_holds() {
    let respond: Responder = Arc::new(|_, _: &Recorded| {
        "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 3600\r\nx-ms-error-code: ServerBusy\r\nContent-Length: 0\r\n\r\n".into()
    });
    let (address, log) = recording_server(respond).await;
    let deadline = Duration::from_secs(8);
    let store = retrying(
        &format!("{address}/acct/cont"),
        RetryPolicy::default().with_deadline(deadline),
    );
    let start = Instant::now();
    let result = tokio::time::timeout(Duration::from_secs(60), store.get("blob", None, None, None))
        .await
        .expect("the call outlived its deadline by far");
    let elapsed = start.elapsed();
    let error = result.unwrap_err();
    assert!(
        matches!(error, StoreError::Http { status: 503, .. }),
        "{error}"
    );
    assert!(elapsed < deadline, "{elapsed:?}");
    assert!(
        elapsed >= Duration::from_secs(4),
        "waited the capped Retry-After: {elapsed:?}"
    );
    assert_eq!(
        log.lock().unwrap().len(),
        2,
        "one retry after a 5 s wait, then the deadline"
    );
}

/// A server that accepts and never answers: the call fails at its deadline, naming the blob
/// (before, each of five attempts waited for a 60 s read timeout).
#[tokio::test]
async fn a_hanging_server_fails_at_the_deadline_naming_the_blob() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let deadline = Duration::from_secs(2);
    let store = retrying(
        &format!("{address}/acct/cont"),
        RetryPolicy::default().with_deadline(deadline),
    );
    let start = Instant::now();
    let error = tokio::time::timeout(
        Duration::from_secs(30),
        store.get("dir/blob", Some(0..10), None, None),
    )
    .await
    .expect("the call outlived its deadline by far")
    .unwrap_err();
    assert!(
        start.elapsed() < deadline + Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
    assert!(
        matches!(error, StoreError::Timeout { .. }) && error.to_string().contains("dir/blob"),
        "{error}"
    );
}

#[tokio::test]
async fn pinned_reads_send_if_match_and_a_changed_blob_is_an_error() {
    let respond: Responder = Arc::new(|n, request: &Recorded| {
        if request.header("if-match") == Some("\"0x2\"") {
            return "HTTP/1.1 412 Precondition Failed\r\nx-ms-error-code: ConditionNotMet\r\nContent-Length: 0\r\n\r\n".into();
        }
        ok_response(n, request)
    });
    let (address, log) = recording_server(respond).await;
    let store = retrying(&format!("{address}/acct/cont"), RetryPolicy::default());
    store.get("b", Some(0..4), None, Some("0x1")).await.unwrap();
    store
        .get("b", Some(0..4), None, Some("\"0x1\""))
        .await
        .unwrap();
    store.get("b", Some(0..4), None, None).await.unwrap();
    let error = store
        .get("b", Some(0..4), None, Some("0x2"))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, StoreError::Changed(name) if name == "b"),
        "{error}"
    );
    let log = log.lock().unwrap().clone();
    assert_eq!(
        log[0].header("if-match"),
        Some("\"0x1\""),
        "listing etags are quoted"
    );
    assert_eq!(log[1].header("if-match"), Some("\"0x1\""));
    assert_eq!(log[2].header("if-match"), None);
    assert_eq!(log.len(), 4, "a changed blob is not retried");
}

const SIGNATURE: &str = "c2VjcmV0LXNpZ25hdHVyZQ%3D%3D";

fn assert_no_secret(text: &str) {
    for secret in [SIGNATURE, "c2VjcmV0LXNpZ25hdHVyZQ", "secret-signature"] {
        assert!(!text.contains(secret), "secret in: {text}");
    }
}

/// Every error path of the client, with a SAS in the URL: a refused request, a missing blob, an
/// unreachable host, a timeout, a refused http address; and `Debug`.
#[tokio::test]
async fn no_error_message_shows_the_sas() {
    let respond: Responder = Arc::new(|n, request: &Recorded| {
        match n {
        0 => "HTTP/1.1 403 Forbidden\r\nx-ms-error-code: AuthenticationFailed\r\nContent-Length: 0\r\n\r\n".into(),
        1 => "HTTP/1.1 404 Not Found\r\nx-ms-error-code: BlobNotFound\r\nContent-Length: 0\r\n\r\n".into(),
        2 => "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n".into(),
        _ => ok_response(n, request),
    }
    });
    let (address, log) = recording_server(respond).await;
    let sas = format!("sv=2019-12-12&ss=b&srt=sco&sp=rl&se=2099-01-01&sig={SIGNATURE}");
    let url = format!("{address}/acct/cont?{sas}");
    let once = RetryPolicy::default().with_attempts(1);
    let store = RetryingStore::new(AzureStore::new(&url, None).unwrap(), once);
    let mut messages = Vec::new();
    for _ in 0..3 {
        let error = store.get("blob", None, None, None).await.unwrap_err();
        messages.push(format!("{error} {error:?}"));
    }
    assert!(
        log.lock().unwrap()[0].request_line.contains(SIGNATURE),
        "the SAS is sent"
    );
    let dead = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/acct/cont?{sas}", listener.local_addr().unwrap())
    };
    let store = RetryingStore::new(AzureStore::new(&dead, None).unwrap(), once);
    let error = store.list(&Default::default()).await.unwrap_err();
    assert!(matches!(error, StoreError::Network { .. }), "{error}");
    messages.push(format!("{error} {error:?}"));
    let hanging = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let slow = format!("http://{}/acct/cont?{sas}", hanging.local_addr().unwrap());
    let store = RetryingStore::new(
        AzureStore::new(&slow, None).unwrap(),
        RetryPolicy::default().with_deadline(Duration::from_millis(300)),
    );
    let error = store.get("blob", None, None, None).await.unwrap_err();
    messages.push(format!(
        "{error} {error:?} {store:?}",
        store = AzureStore::new(&slow, None).unwrap()
    ));
    for bad in [
        format!("http://192.0.2.1/acct/cont?{sas}"),
        format!("http://127.0.0.1:1/acct/Bad_Name?{sas}"),
        format!("http://127.0.0.1:1/?{sas}"),
    ] {
        let error = AzureStore::new(&bad, None).unwrap_err();
        messages.push(format!("{error} {error:?}"));
    }
    messages.push(format!(
        "{:?}",
        encfs_store::azure::ContainerUrl::parse(&url).unwrap()
    ));
    for message in &messages {
        assert_no_secret(message);
    }
    assert!(messages[0].contains("/acct/cont"), "{}", messages[0]);
}

#[tokio::test]
async fn plain_http_carries_secrets_only_to_loopback() {
    let key = Credentials::shared_key("acct", "c2VjcmV0LWtleQ==").unwrap();
    for remote in [
        "http://192.0.2.1/acct/cont",
        "http://storage.example/acct/cont",
        "http://[2001:db8::1]/acct/cont",
    ] {
        let error = AzureStore::new(remote, Some(key.clone()))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("refusing to send an account key over plain http://"),
            "{error}"
        );
        let error = AzureStore::new(
            remote,
            Some(Credentials::Sas("sv=1&sig=x".to_owned().into())),
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("a SAS token"), "{error}");
        // Anonymous access may use http, but a customer-provided key may not: refused before
        // anything is sent (192.0.2.1 would not answer).
        let anonymous = AzureStore::new(remote, Some(Credentials::Anonymous)).unwrap();
        let cpk = CustomerKey::new([1; 32]);
        let error = tokio::time::timeout(
            Duration::from_secs(5),
            anonymous.get("b", None, Some(&cpk), None),
        )
        .await
        .expect("refused at once")
        .unwrap_err()
        .to_string();
        assert!(error.contains("a customer-provided key"), "{error}");
    }
    for local in [
        "http://127.0.0.1:10000/acct/cont",
        "http://127.3.4.5/acct/cont",
        "http://localhost:10000/acct/cont",
        "http://[::1]:10000/acct/cont",
        "https://acct.blob.core.windows.net/cont",
    ] {
        AzureStore::new(local, Some(key.clone())).unwrap_or_else(|e| panic!("{local}: {e}"));
    }
}
