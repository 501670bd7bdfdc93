//! What the Azure client puts on the wire, checked against a loopback server that records every
//! request: CPK headers on every call that takes them (Azurite refuses them, so CPK cannot be
//! proven there), managed-identity bearer tokens, and retries with Retry-After.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use encfs_store::azure::{AzureStore, Credentials};
use encfs_store::{BlobStore, BlockIds, Condition, CustomerKey, Metadata, StoreError};
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
    store.get("a b", Some(0..4), Some(&key)).await.unwrap();
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
    store.get("x", None, None).await.unwrap();
    store.get("y", None, None).await.unwrap();
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
    let store = AzureStore::new(
        &format!("{address}/acct/cont"),
        Some(Credentials::Anonymous),
    )
    .unwrap()
    .with_retry_base(Duration::from_millis(5));
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
    let store = AzureStore::new(
        &format!("{address}/acct/cont"),
        Some(Credentials::Anonymous),
    )
    .unwrap()
    .with_retry_base(Duration::from_millis(1));
    let error = store.get("blob", None, None).await.unwrap_err();
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
    let store = AzureStore::new(&dead, Some(Credentials::Anonymous))
        .unwrap()
        .with_retry_base(Duration::from_millis(1));
    let error = store.get("blob", None, None).await.unwrap_err();
    assert!(
        matches!(error, StoreError::Network { .. })
            && error.to_string().contains("/acct/cont/blob"),
        "{error}"
    );
}
